"""Training throughput: our model (fp32, bf16 autocast) against a straightforward fp32
implementation on Hugging Face GPT-2 modules (the reference's construction,
tests/reference_bgpt.py), same config (dropout 0.1 unless --dropout says otherwise), same
batch; each with its own AdamW step (ours fused, as `bgpt train` makes it; the reference's
PyTorch's default).

    python benchmarks/train.py --config small --batch-size 8
    python benchmarks/train.py --config paper --batch-size 8 --steps 3

Cases run interleaved (ours fp32, ours bf16, reference fp32, repeated) so that a busy
machine slows them alike; bytes/s is the median over the timed steps of each case.
Requires `transformers` (the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from bgpt.process import tune_process

tune_process()  # before torch loads, as `bgpt train` and `bgpt bench` do
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bgpt.bench import peak_rss_mb, random_batch  # noqa: E402
from bgpt.config import resolve_config  # noqa: E402
from bgpt.device import keep_freed_memory  # noqa: E402
from bgpt.model import BGPT  # noqa: E402
from bgpt.train import new_optimizer  # noqa: E402
from tests.reference_bgpt import RefBGPT  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="small")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--dropout", type=float, default=None, help="default: the config's (0.1)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    keep_freed_memory()  # as the bgpt CLI does: both implementations reuse freed pages
    c = resolve_config(args.config)
    if args.dropout is not None:
        c = c.replace(dropout=args.dropout)
    batch = random_batch(c, args.batch_size, torch.device("cpu"))
    torch.manual_seed(0)
    ours = BGPT(c)
    ref = RefBGPT(
        c.patch_size, c.max_patches, c.hidden_size, c.patch_layers, c.byte_layers, dropout=c.dropout
    )
    cases = {
        "bgpt fp32": (ours, torch.float32, lambda m: m(batch.patches, batch.mask).loss),
        "bgpt bf16": (ours, torch.bfloat16, lambda m: m(batch.patches, batch.mask).loss),
        "HF GPT-2 reference fp32": (
            ref,
            torch.float32,
            lambda m: m(batch.patches, batch.mask.long()).loss,
        ),
    }
    opts = {
        name: new_optimizer(m.parameters(), 1e-5)
        if name.startswith("bgpt")
        else torch.optim.AdamW(m.parameters(), lr=1e-5)
        for name, (m, _, _) in cases.items()
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _r in range(args.rounds):
        for name, (model, dtype, loss_fn) in cases.items():
            model.train()
            for s in range(args.steps + 1):
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                    loss = loss_fn(model)
                loss.backward()
                opts[name].step()
                opts[name].zero_grad(set_to_none=True)
                if s:  # the first step of each round warms up
                    times[name].append(time.perf_counter() - t)
    nbytes = args.batch_size * c.max_patches * c.patch_size
    rows = {name: nbytes / statistics.median(ts) for name, ts in times.items()}
    base = rows["HF GPT-2 reference fp32"]
    result = {
        "config": args.config,
        "batch_size": args.batch_size,
        "dropout": c.dropout,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bytes_per_s": rows,
        "speedup_vs_reference": {k: v / base for k, v in rows.items()},
        "peak_rss_mb": peak_rss_mb(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"config {args.config}, batch {args.batch_size}, {torch.get_num_threads()} threads, torch {torch.__version__}"
        )
        for name, v in rows.items():
            print(f"  {name:<26}{v:12.0f} B/s   {v / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
