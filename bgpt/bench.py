"""`bgpt bench`: throughput, memory and model FLOP utilisation, measured the same way
every time: warm-up steps, then the median of timed steps.

FLOPs are counted from the model's matmuls (see `flops_per_byte`): for every patch
the patch-level blocks (12 H^2 multiply-adds per layer, plus attention over the
causal prefix) and for every byte the byte-level blocks and the tied output head.
The patch embedding is a table lookup, not a matmul, and is not counted. Training
costs three forward passes (forward, and backward for inputs and weights); one
multiply-add is two FLOPs. MFU divides the achieved FLOP/s by the machine's matmul
peak, measured in the same run with a large matmul of the same dtype.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

import torch

from bgpt.config import BGPTConfig
from bgpt.device import autocast, synchronize
from bgpt.model import BGPT
from bgpt.stream import VOCAB_SIZE, Batch


def machine() -> str:
    """One line naming this machine for benchmark reports: CPU model, CPU count, torch, threads."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"


def flops_per_byte(c: BGPTConfig, context_patches: int | None = None, train: bool = True) -> float:
    """Matmul FLOPs per input byte at the given context (default: full), forward only or
    forward + backward."""
    h, s = c.hidden_size, c.patch_size
    p = context_patches or c.max_patches
    block = 12 * h * h  # qkv (3H^2) + proj (H^2) + MLP (8H^2) multiply-adds per token
    patch = c.patch_layers * (
        block + h * (p + 1) / 2 * 2
    )  # attention: QK^T and AV over the mean causal prefix
    byte = c.byte_layers * (block + h * (s + 1) / 2 * 2) + VOCAB_SIZE * h
    macs = patch / s + byte
    return 2 * macs * (3 if train else 1)


def matmul_peak(
    dtype: torch.dtype, device: torch.device, n: int | None = None, reps: int = 10
) -> float:
    """FLOP/s of a large square matmul in `dtype` (the machine's practical peak): the best of
    `reps`, not their median, since on a shared machine a slow moment during this measurement
    inflated the MFU (docs/benchmarks.md). n = 2048 on CPU; 8192 on CUDA, where 2048 is too
    small to fill a large GPU (about half of an H100's peak)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    times = []
    for _ in range(reps):
        synchronize(device)
        t = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_batch(c: BGPTConfig, batch: int, device: torch.device, seed: int = 0) -> Batch:
    """Full-context batch of random bytes (every patch real)."""
    g = torch.Generator().manual_seed(seed)
    patches = torch.randint(0, 256, (batch, c.max_patches, c.patch_size), generator=g)
    mask = torch.ones(batch, c.max_patches, dtype=torch.bool)
    return Batch(patches, mask, torch.ones_like(patches, dtype=torch.uint8), mask.clone()).to(
        device
    )


def time_steps(
    step: Callable[[], None], device: torch.device, warmup: int, steps: int
) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronize(device)
        t = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return times


def bench_train(
    model: torch.nn.Module,
    c: BGPTConfig,
    batch_size: int,
    dtype: torch.dtype,
    device: torch.device,
    warmup: int,
    steps: int,
    loss_fn=None,
) -> dict:
    """One optimizer step per timed step: forward, backward, AdamW (as `bgpt train` makes it)."""
    from bgpt.train import new_optimizer

    batch = random_batch(c, batch_size, device)
    opt = new_optimizer(model.parameters(), 1e-4)
    model.train()
    loss_fn = loss_fn or (lambda m, b: m(b.patches, b.mask).loss)

    def step():
        with autocast(device, dtype):
            loss = loss_fn(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = time_steps(step, device, warmup, steps)
    return _report(
        times,
        batch_size * c.max_patches * c.patch_size,
        flops_per_byte(c, train=True),
        dtype,
        device,
    )


@torch.inference_mode()
def bench_eval(
    model: BGPT,
    c: BGPTConfig,
    batch_size: int,
    dtype: torch.dtype,
    device: torch.device,
    warmup: int,
    steps: int,
) -> dict:
    batch = random_batch(c, batch_size, device)
    model.eval()

    def step():
        with autocast(device, dtype):
            model.symbol_logprobs(batch.patches, batch.mask)

    times = time_steps(step, device, warmup, steps)
    return _report(
        times,
        batch_size * c.max_patches * c.patch_size,
        flops_per_byte(c, train=False),
        dtype,
        device,
    )


def _report(
    times: list[float], nbytes: int, fpb: float, dtype: torch.dtype, device: torch.device
) -> dict:
    """bytes/s from the median step, FLOP/s against the matmul peak of `dtype`, peak memory
    (read before the peak's own matmul allocates)."""
    t = statistics.median(times)
    memory = {"peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        memory["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    achieved = nbytes * fpb / t
    peak = matmul_peak(
        dtype if dtype != torch.float16 or device.type == "cuda" else torch.float32, device
    )
    return {
        "bytes_per_s": nbytes / t,
        "step_s": t,
        "steps_timed": len(times),
        "flops_per_byte": fpb,
        "achieved_flops": achieved,
        "peak_flops": peak,
        "mfu": achieved / peak,
        **memory,
    }


def bench_generate(
    model: BGPT, nbytes: int, batch_size: int, dtype: str, engine: str = "cached", repeats: int = 3
) -> dict:
    """Generated bytes per second: `batch_size` samples of exactly `nbytes` bytes each."""
    from bgpt.device import DTYPES
    from bgpt.generate import generate

    device = next(model.parameters()).device
    model.eval()

    def step():
        generate(
            model,
            [b""] * batch_size,
            "bin",
            seed=0,
            max_bytes=nbytes,
            min_bytes=nbytes,
            dtype=dtype,
            engine=engine,
        )

    times = time_steps(step, device, 1, repeats)
    c = model.config
    return _report(
        times,
        batch_size * nbytes,
        flops_per_byte(c, context_patches=1 + nbytes // c.patch_size, train=False),
        DTYPES[dtype],
        device,
    )
