"""`bgpt bench train|eval|generate|data`: bytes/s, peak memory, MFU (see bgpt.bench)."""

from __future__ import annotations

import argparse
import json


def bench_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["train", "eval", "generate", "data"], help="what to measure")
    p.add_argument(
        "--config", default="small", help="preset (small, paper) or JSON config (default: small)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step (default: 8)")
    p.add_argument(
        "--dtype",
        default="bf16",
        choices=["fp32", "bf16", "fp16"],
        help="autocast dtype (default: bf16)",
    )
    p.add_argument(
        "--steps", type=int, default=5, help="timed steps; the median is reported (default: 5)"
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    p.add_argument(
        "--nbytes",
        type=int,
        default=1024,
        help="generate: bytes per sample; data: instances (default: 1024)",
    )
    p.add_argument(
        "--engine",
        default="cached",
        help="generate: cached, uncached or reference (default: cached)",
    )
    p.add_argument(
        "--dropout",
        type=float,
        default=None,
        help="train: dropout rate (default: the config's own, 0.1 for the presets, as `bgpt train` uses)",
    )
    p.add_argument(
        "--gradient-checkpointing", action="store_true", help="train: recompute activations"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def bench_run(args: argparse.Namespace) -> int:
    from bgpt.process import tune_process

    tune_process()  # before torch loads: a long CPU job (see bgpt/process.py)
    import torch

    from bgpt import bench
    from bgpt.config import resolve_config
    from bgpt.device import resolve_device, resolve_dtype
    from bgpt.errors import BGPTError
    from bgpt.model import BGPT

    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0 or args.nbytes < 1:
        raise BGPTError("--batch-size, --steps and --nbytes must be >= 1, --warmup >= 0")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    config = resolve_config(args.config)
    if args.dropout is not None:
        config = config.replace(dropout=args.dropout)
    info = {
        "what": args.what,
        "config": args.config,
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "dropout": config.dropout if args.what == "train" else 0.0,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if args.what == "data":
        from bgpt.tasks.cpu.data import bench_data

        result = bench_data(args.nbytes)
    else:
        if args.what == "generate":
            config = config.replace(
                max_patches=max(config.max_patches, 2 + -(-args.nbytes // config.patch_size))
            )
        torch.manual_seed(0)
        model = BGPT(config).to(device)
        model.set_gradient_checkpointing(args.gradient_checkpointing)
        if args.compile:
            model = torch.compile(model)
        if args.what == "train":
            result = bench.bench_train(
                model, config, args.batch_size, dtype, device, args.warmup, args.steps
            )
        elif args.what == "eval":
            result = bench.bench_eval(
                model, config, args.batch_size, dtype, device, args.warmup, args.steps
            )
        else:
            result = bench.bench_generate(
                model, args.nbytes, args.batch_size, args.dtype, args.engine, args.steps
            )
    report = {**info, **result}
    if args.json:
        print(json.dumps(report))
        return 0
    for k, v in report.items():
        if isinstance(v, float):
            v = f"{v:.4g}" if k != "mfu" else f"{100 * v:.1f} %"
        print(f"{k:>16}  {v}")
    return 0
