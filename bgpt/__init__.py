"""bgpt: byte models that read and write the raw bytes of any file (bGPT, arXiv 2402.19155).

Importing bgpt changes nothing in the process and loads no torch: the public names below are
imported on first use. Process-wide tuning for long CPU jobs (OpenMP spinning, glibc's
allocator) is one explicit call, `bgpt.device.tune_process()`, which `bgpt train`, `eval`,
`bench` and `demo` make.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load": "bgpt.checkpoint",
    "save_pretrained": "bgpt.checkpoint",
    "PRESETS": "bgpt.config",
    "BGPTConfig": "bgpt.config",
    "BGPTError": "bgpt.errors",
    "CheckpointError": "bgpt.errors",
    "BGPT": "bgpt.model",
    "BGPTClassifier": "bgpt.model",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bgpt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
