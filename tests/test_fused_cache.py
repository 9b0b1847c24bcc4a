"""The fused step (bgpt.fused) loaded from numba's on-disk cache in a later process.

numba compiles `_step` once per signature (the number of layers is part of it) and caches the
machine code. A cached serial function calling a parallel one segfaulted when loaded from the
cache by a later process if it had been compiled in a process that itself loaded its callees
from the cache (numba/numba#8578): a user's second run of a model of a new depth crashed. Every
kernel: one sample in fp32 and int8 (FusedStep), an int8 batch of two (RowsStep)."""

import os
import subprocess
import sys

import pytest

CHILD = """
import sys
import torch
from bgpt.config import BGPTConfig
from bgpt.generate import Generation, Sampling, generation_prompt
from bgpt.model import BGPT
from bgpt.quantize import quantize

layers = int(sys.argv[1])
torch.manual_seed(layers)
config = BGPTConfig(patch_size=4, max_patches=16, hidden_size=64, heads=2,
                    patch_layers=layers, byte_layers=layers)
model = BGPT(config).eval()
prompts = [generation_prompt(p, "txt", 4) for p in (b"ab", b"abcde")]

def run(prompts):
    gen = Generation(model, prompts, sampling=Sampling(top_k=1), max_bytes=40, min_bytes=40)
    return [o.data.hex() for o in gen.run()]

fp32 = run(prompts[:1])
model = quantize(model, "int8")  # in place
print(" ".join(fp32 + run(prompts[:1]) + run(prompts)))  # every kernel
"""


def test_fused_step_runs_from_numbas_cache_in_a_later_process(tmp_path):
    pytest.importorskip("numba")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))

    def run(layers: int) -> str:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(layers)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (layers, done.returncode, done.stderr[-2000:])
        return done.stdout.strip()

    run(1)  # compiles the step and its callees for one layer
    compiled = run(2)  # a new depth: the step compiled again, its callees from the cache
    assert [len(x) for x in compiled.split()] == [80, 80, 80, 80]
    assert run(2) == compiled  # the two-layer step itself from the cache
