"""`bgpt info` and `bgpt import`: look at a checkpoint, convert a reference one."""

from __future__ import annotations

import argparse
import json

# ----------------------------------------------------------------------------- info


def info_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="reference .pth, saved model folder or run folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def info_run(args: argparse.Namespace) -> int:
    from bgpt.checkpoint import load

    model = load(args.model)
    c = model.config
    report = {
        "kind": "classifier" if c.is_classifier else "generative",
        "parameters": model.num_parameters(),
        "config": c.to_dict(),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.model}: {report['kind']} bGPT, {report['parameters'] / 1e6:.2f} M parameters")
        for k, v in c.to_dict().items():
            print(f"  {k:13s} {v}")
    return 0


# ----------------------------------------------------------------------------- import


def import_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="reference bGPT .pth (e.g. weights-cpu.pth)")
    p.add_argument("--out", required=True, help="folder to write model.safetensors + config.json")


def import_run(args: argparse.Namespace) -> int:
    from bgpt.checkpoint import load_reference, save_pretrained

    model = load_reference(args.checkpoint)
    out = save_pretrained(model, args.out, extra={"source": str(args.checkpoint)})
    print(f"wrote {out} ({model.num_parameters() / 1e6:.2f} M parameters)")
    return 0
