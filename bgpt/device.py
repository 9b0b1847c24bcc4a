"""One device helper: CPU, CUDA and autocast share one path.

`resolve_device("auto")` picks CUDA when present; `autocast(device, dtype)` gives the
mixed-precision context (bf16 on CPU, bf16 or fp16 on CUDA) or a no-op for fp32;
`keep_freed_memory()` stops glibc from handing large CPU tensors' pages back to the kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform

import torch

from bgpt.errors import BGPTError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BGPTError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BGPTError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 where it is fast (CPU with bf16 support, CUDA with bf16), else fp32."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16
    if name not in DTYPES:
        raise BGPTError(f"unknown dtype {name!r} (use auto, {', '.join(DTYPES)})")
    if name == "fp16" and device.type == "cpu":
        raise BGPTError("fp16 autocast is for CUDA; on CPU use bf16 or fp32")
    return DTYPES[name]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that a timer reads true."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision for the forward pass; weights stay fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TOP_PAD = 1 << 30
"""Bytes the heap grows by beyond each request (fewer, larger extensions)."""
_NEVER = -1
"""M_TRIM_THRESHOLD -1: glibc never hands the top of the heap back (mallopt(3))."""
_kept = False


def keep_freed_memory() -> bool:
    """Serve large CPU tensors from glibc's heap and keep freed memory for the next ones.

    glibc's malloc gives every block over 32 MB (its largest mmap threshold) fresh pages from
    the kernel and unmaps them on free, so each large activation of every training step faults
    all its pages in again: for `paper` training at batch 8 on the benchmark CPU, 9 million page
    faults and kernel time 27 s of a 34 s step (2 threads). With mmap off, trimming off and
    1 GiB of top padding, freed blocks are reused: no faults once warm. (Trimming merely raised to
    1 GiB still handed back the several GB freed after each backward pass: 180-230 thousand
    faults and 1.2-1.5 s of kernel time in each ~10 s step.) The price
    is that memory freed after a peak stays with the process (RSS does not fall back), which a
    training or evaluation process does not mind. Linux with glibc only: elsewhere a no-op.
    Process-wide and idempotent; the CLI sets it for every command. Returns whether it is on."""
    global _kept
    if _kept:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    _kept = all(
        mallopt(param, value) == 1
        for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER), (_M_TOP_PAD, _TOP_PAD))
    )
    return _kept
