"""The fused step (bgpt.fused) loaded from numba's on-disk cache in a later process.

numba compiles `_step` once per signature (the number of layers is part of it) and caches the
machine code. A cached serial function calling a parallel one segfaulted when loaded from the
cache by a later process if it had been compiled in a process that itself loaded its callees
from the cache (numba/numba#8578): a user's second run of a model of a new depth crashed. Every
kernel: one sample (FusedStep) and a batch of two (RowsStep), in fp32 and in int8. A process
that compiles them says so once (the first run with a new shape waits for it); one that loads
them from the cache says nothing."""

import os
import subprocess
import sys

import pytest

CHILD = """
import logging
import sys
import torch
from bgpt.config import BGPTConfig
from bgpt.generate import Generation, Sampling, generation_prompt
from bgpt.model import BGPT
from bgpt.quantize import quantize

logging.basicConfig(level=logging.INFO)  # bgpt.fused says when it compiles
layers = int(sys.argv[1])
torch.manual_seed(layers)
config = BGPTConfig(patch_size=4, max_patches=16, hidden_size=64, heads=2,
                    patch_layers=layers, byte_layers=layers)
model = BGPT(config).eval()
prompts = [generation_prompt(p, "txt", 4) for p in (b"ab", b"abcde")]

def run(prompts):
    gen = Generation(model, prompts, sampling=Sampling(top_k=1), max_bytes=40, min_bytes=40)
    return [o.data.hex() for o in gen.run()]

fp32 = run(prompts[:1]) + run(prompts)
model = quantize(model, "int8")  # in place
print(" ".join(fp32 + run(prompts[:1]) + run(prompts)))  # every kernel
"""


def test_fused_step_runs_from_numbas_cache_in_a_later_process(tmp_path):
    pytest.importorskip("numba")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))

    def run(layers: int) -> tuple[str, bool]:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(layers)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (layers, done.returncode, done.stderr[-2000:])
        return done.stdout.strip(), "compiling the generation kernels" in done.stderr

    assert run(1)[1]  # compiles the steps and their callees for one layer (and says so)
    compiled, said = run(2)  # a new depth: the steps compiled again, callees from the cache
    assert said and [len(x) for x in compiled.split()] == [80] * 6
    assert run(2) == (compiled, False)  # the two-layer steps themselves from the cache
