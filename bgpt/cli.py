"""`bgpt`: one entry point, thin subcommands that call the library.

Each command is a pair (add_arguments, run) registered in COMMANDS; user errors
(BGPTError) become one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from bgpt.errors import BGPTError

# name -> (module, help); the module has add_arguments(parser) and run(args) -> int | None
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("bgpt.cli", "show a model's config and size (reference .pth, saved or run folder)"),
    "import": ("bgpt.cli", "convert a reference .pth checkpoint into a bgpt model folder"),
}


# ----------------------------------------------------------------------------- info

def info_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="reference .pth, saved model folder or run folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def info_run(args: argparse.Namespace) -> int:
    from bgpt.checkpoint import load

    model = load(args.model)
    c = model.config
    report = {"kind": "classifier" if c.is_classifier else "generative", "parameters": model.num_parameters(), "config": c.to_dict()}
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


# ----------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgpt", description="Byte models: train, evaluate, generate and convert with bGPT.")
    parser.add_argument("--version", action="version", version=f"bgpt {__import__('bgpt').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        prefix = "" if module_name != __name__ else name.replace("-", "_") + "_"
        p = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, prefix + "add_arguments")(p)
        p.set_defaults(_run=getattr(module, prefix + "run"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args._run(args) or 0
    except BGPTError as e:
        print(f"bgpt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bgpt {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permission denied... : the user's environment, one line
        print(f"bgpt {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
