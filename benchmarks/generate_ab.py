"""A/B of the cached engine against another checkout's, in one process, runs alternating.

    git worktree add /tmp/base <commit>
    python benchmarks/generate_ab.py /tmp/base --runs 6

Loads `bgpt/generate.py` of the other checkout as a second module (the rest of the package is
this one's), then times `generate` (`generate_many` before the options object) of both on the same random `small` model (4 KB, fp32,
batch 1, one thread), alternating, and prints the medians. On a machine whose memory
bandwidth drifts between runs, alternating in one process is what makes a 5 % change visible.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

import bgpt.generate as current
from bgpt.config import resolve_config
from bgpt.model import BGPT


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("base", help="another checkout of this repository")
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--nbytes", type=int, default=4096)
    args = p.parse_args()
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location(
        "bgpt.generate_base", Path(args.base) / "bgpt" / "generate.py"
    )
    base = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = base  # dataclasses look their module up
    spec.loader.exec_module(base)
    torch.manual_seed(0)
    model = BGPT(resolve_config("small", max_patches=513, dropout=0.0)).eval()

    def rate(module) -> float:
        t = time.perf_counter()
        getattr(
            module, "generate_many", module.generate
        )(  # generate_many before the options object
            model, [b""], "bin", seed=0, max_bytes=args.nbytes, min_bytes=args.nbytes, dtype="fp32"
        )
        return args.nbytes / (time.perf_counter() - t)

    rate(base), rate(current)  # warm-up
    rates: dict[str, list[float]] = {"base": [], "current": []}
    for _ in range(args.runs):
        rates["base"].append(rate(base))
        rates["current"].append(rate(current))
    for name, xs in rates.items():
        print(f"{name:8s} median {statistics.median(xs):,.0f} B/s  best {max(xs):,.0f}")
    print(
        f"current / base (medians): {statistics.median(rates['current']) / statistics.median(rates['base']):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
