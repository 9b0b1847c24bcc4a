"""bgpt: byte models that read and write the raw bytes of any file (bGPT, arXiv 2402.19155)."""

import os

# Before torch loads its OpenMP runtime (GNU libgomp), which reads this once: its idle threads
# spin 30,000 rounds after a parallel region instead of 300,000 (~3 ms). Those spinning threads
# took a core from the compiled kernels (bgpt.kernels) that follow each matmul: each kernel
# call ran 2-4 ms longer, ~4 % of a `paper` training step; generation, whose operations follow
# each other closely, is as fast as before (measured: docs/benchmarks.md). A value already
# set wins, and so does an import of torch before bgpt.
os.environ.setdefault("GOMP_SPINCOUNT", "30000")

from bgpt.checkpoint import load, save_pretrained
from bgpt.config import PRESETS, BGPTConfig
from bgpt.errors import BGPTError, CheckpointError
from bgpt.model import BGPT, BGPTClassifier

__version__ = "0.1.0"

__all__ = ["BGPT", "BGPTClassifier", "BGPTConfig", "BGPTError", "CheckpointError", "PRESETS", "load", "save_pretrained"]
