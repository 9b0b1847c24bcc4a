"""Process-wide tuning for long CPU jobs, in one explicit call (never at import).

`tune_process()` is what `bgpt train`, `train-classifier`, `eval`, `bench` and `demo` call
first; a library user training on a CPU calls it too, before importing torch if possible:

- `GOMP_SPINCOUNT=30000` (only when torch has not loaded its OpenMP runtime yet, which reads it
  once; a value the user set wins): libgomp's idle threads spin 30,000 rounds after a parallel
  region instead of 300,000. Those spinning threads took a core from the compiled kernels
  (`bgpt.kernels`) that follow each matmul (docs/benchmarks.md, session 6).
- `bgpt.device.keep_freed_memory()`: glibc keeps large freed blocks for the next step instead of
  handing them back to the kernel (a `paper` training step faulted its activations in again
  every time; docs/benchmarks.md).

Both are for a process that trains or evaluates for a long time; nothing else needs them.
"""

from __future__ import annotations

import os
import sys


def tune_process() -> dict[str, object]:
    """Apply both settings; returns what is in force (for reports and tests)."""
    if "torch" not in sys.modules:
        os.environ.setdefault("GOMP_SPINCOUNT", "30000")
    from bgpt.device import keep_freed_memory

    return {
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
        "keep_freed_memory": keep_freed_memory(),
    }
