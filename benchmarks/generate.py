"""Generation speed: bytes/s of the cached engine against the uncached loop.

    python benchmarks/generate.py                      # everything (long: the uncached loop is slow)
    python benchmarks/generate.py --configs small --dtypes fp32 --batches 1 --budget 120

Random-weight models of the `small` and `paper` presets, with max_patches raised to 513 so
that an 8 KiB output fits after the header patch (the presets hold 4 KiB and 8 KiB - 16 B).
Each case generates `size` bytes per sample from an empty prompt, seeded sampling (top_k=0),
the end of file forbidden until `size` bytes (`min_bytes`), so every case produces exactly
batch x size bytes; the time includes the prompt pass and sampling. bytes/s = batch*size/time,
best of --repeats. The JSON lines also hold the process's CPU seconds: on a shared machine,
bytes per CPU-second is closer to what an idle one would give (with --threads 1).

Engines: "cached" (the default engine), "uncached" (both decoders over the whole prefix for
every byte: `BGPT.next_byte_logits_naive`), "reference" (the public bGPT script's loop: the
patch decoder over the whole prefix once per patch, the byte decoder over the patch prefix once
per byte). A case whose time, extrapolated from the same engine's previous size (uncached cost
grows with the square of the size), would exceed --budget seconds is skipped and reported as
such; nothing is extrapolated into the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bgpt.process import tune_process

tune_process()  # before torch loads, as `bgpt train` and `bgpt bench` do
import torch  # noqa: E402

from bgpt.bench import machine  # noqa: E402
from bgpt.config import resolve_config  # noqa: E402
from bgpt.generate import generate  # noqa: E402
from bgpt.model import BGPT  # noqa: E402

SIZES = {"256 B": 256, "1 KB": 1024, "4 KB": 4096, "8 KB": 8192}


def build(config_name: str, max_patches: int) -> BGPT:
    torch.manual_seed(0)
    return BGPT(resolve_config(config_name, max_patches=max_patches, dropout=0.0)).eval()


def run_case(model: BGPT, size: int, batch: int, dtype: str, engine: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to generate batch x size bytes."""
    t, c = time.perf_counter(), time.process_time()
    outs = generate(
        model,
        [b""] * batch,
        "bin",
        seed=0,
        max_bytes=size,
        min_bytes=size,
        dtype=dtype,
        engine=engine,
    )
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    assert all(len(o.data) == size for o in outs), [(len(o.data), o.stop) for o in outs]
    return elapsed, cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--configs", nargs="+", default=["small", "paper"])
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    p.add_argument(
        "--engines",
        nargs="+",
        default=["cached", "uncached"],
        choices=["cached", "uncached", "reference"],
    )
    p.add_argument(
        "--max-patches",
        type=int,
        default=513,
        help="context of the benchmark models (default 513: 8 KiB after the header)",
    )
    p.add_argument("--repeats", type=int, default=1, help="best of this many runs per case")
    p.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="skip a case expected to take longer than this many seconds",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="append one JSON line per case to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {machine()}", flush=True)
    print(
        "# python benchmarks/generate.py " + " ".join(sys.argv[1:] if argv is None else argv),
        flush=True,
    )
    print("| config | dtype | batch | engine | " + " | ".join(args.sizes) + " |", flush=True)
    print("|---" * (4 + len(args.sizes)) + "|", flush=True)
    for config_name in args.configs:
        model = build(config_name, args.max_patches)
        for dtype in args.dtypes:
            for batch in args.batches:
                for engine in args.engines:
                    run_case(model, 32, batch, dtype, engine)  # warm-up
                    cells, last = [], None  # last: (size, seconds)
                    for label in args.sizes:
                        size = SIZES[label]
                        if last is not None:
                            grow = size / last[0] if engine == "cached" else (size / last[0]) ** 2
                            if last[1] * grow * args.repeats > args.budget:
                                cells.append(f"skipped (~{last[1] * grow:.0f} s)")
                                continue
                        elapsed, cpu = min(
                            run_case(model, size, batch, dtype, engine) for _ in range(args.repeats)
                        )
                        last = (size, elapsed)
                        rate = batch * size / elapsed
                        cells.append(f"{rate:,.0f}")
                        if args.json:
                            with open(args.json, "a") as f:
                                f.write(
                                    json.dumps(
                                        dict(
                                            config=config_name,
                                            dtype=dtype,
                                            batch=batch,
                                            engine=engine,
                                            size=size,
                                            seconds=elapsed,
                                            cpu_seconds=cpu,
                                            bytes_per_s=rate,
                                            load=os.getloadavg()[0],
                                        )
                                    )
                                    + "\n"
                                )
                    print(
                        f"| {config_name} | {dtype} | {batch} | {engine} | "
                        + " | ".join(cells)
                        + " |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
