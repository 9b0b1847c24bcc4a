"""bgpt: byte models that read and write the raw bytes of any file (bGPT, arXiv 2402.19155)."""

from bgpt.checkpoint import load, save_pretrained
from bgpt.config import PRESETS, BGPTConfig
from bgpt.errors import BGPTError, CheckpointError
from bgpt.model import BGPT, BGPTClassifier

__version__ = "0.1.0"

__all__ = ["BGPT", "BGPTClassifier", "BGPTConfig", "BGPTError", "CheckpointError", "PRESETS", "load", "save_pretrained"]
