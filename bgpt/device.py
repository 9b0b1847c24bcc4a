"""One device helper: CPU, CUDA and autocast share one path.

`resolve_device("auto")` picks CUDA when present; `autocast(device, dtype)` gives the
mixed-precision context (bf16 on CPU, bf16 or fp16 on CUDA) or a no-op for fp32.
"""

from __future__ import annotations

import contextlib

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


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision for the forward pass; weights stay fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
