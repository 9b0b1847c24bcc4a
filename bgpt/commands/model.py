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
    from bgpt.hub import published_task

    report = {
        "kind": "classifier" if c.is_classifier else "generative",
        "parameters": model.num_parameters(),
        "config": c.to_dict(),
        "published_task": published_task(args.model),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.model}: {report['kind']} bGPT, {report['parameters'] / 1e6:.2f} M parameters")
        if report["published_task"]:
            print(f"  one of the paper's published checkpoints: {report['published_task']}")
        for k, v in c.to_dict().items():
            print(f"  {k:13s} {v}")
    return 0


# ----------------------------------------------------------------------------- import


def import_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="reference bGPT .pth (e.g. weights-cpu.pth)")
    p.add_argument(
        "--out",
        required=True,
        help="folder to write model.safetensors + config.json (new or empty; a saved model there is replaced only with --force, a run folder never)",
    )
    p.add_argument(
        "-f", "--force", action="store_true", help="replace a saved model already in --out"
    )


def import_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bgpt.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_reference, save_pretrained
    from bgpt.errors import BGPTError
    from bgpt.files import check_output_folder

    out = check_output_folder(args.out, [args.checkpoint])
    if out.is_dir() and any(out.iterdir()):
        saved_model = {p.name for p in out.iterdir()} <= {CONFIG_NAME, WEIGHTS_NAME}
        if not saved_model:
            raise BGPTError(f"{out}: holds other files (a run folder?); give a new or empty --out")
        if not args.force:
            raise BGPTError(f"{out}: holds a saved model; pass --force to replace it")
    model = load_reference(Path(args.checkpoint))
    out = save_pretrained(model, args.out, extra={"source": str(args.checkpoint)})
    print(f"wrote {out} ({model.num_parameters() / 1e6:.2f} M parameters)")
    return 0
