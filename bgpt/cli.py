"""`bgpt`: one entry point, thin subcommands that call the library.

Each command is a pair (add_arguments, run) registered in COMMANDS; user errors
(BGPTError) become one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bgpt.errors import BGPTError
from bgpt.validation import finite_float

# name -> (module in bgpt.commands, prefix, help); the module has {prefix}add_arguments(parser)
# and {prefix}run(args) -> int | None. Modules are imported only to build the parser.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": (
        "demo",
        "demo_",
        "the main job: train a small model to simulate a CPU, evaluate it, report",
    ),
    "inspect": (
        "inspect",
        "inspect_",
        "a page of a file's bytes, coloured by the bits a model spends on each, with its top-5 guesses",
    ),
    "info": (
        "model",
        "info_",
        "show a model's config and size (reference .pth, saved or run folder)",
    ),
    "import": ("model", "import_", "convert a reference .pth checkpoint into a bgpt model folder"),
    "generate": (
        "generate",
        "generate_",
        "sample new files (cached, batched, written as they grow)",
    ),
    "convert": (
        "generate",
        "convert_",
        "convert files into another format with a conversion model",
    ),
    "train": (
        "train",
        "train_",
        "train a generative model on folders of files (or conversion pairs)",
    ),
    "train-classifier": (
        "train",
        "classifier_",
        "train a classifier (label = file name up to '_'), from a generative model (--init) or from scratch",
    ),
    "eval": (
        "train",
        "eval_",
        "bits per byte (generative) or accuracy (classifier) on folders of files",
    ),
    "classify": ("train", "classify_", "label files with a classifier"),
    "pack": ("train", "pack_", "pack folders of files into a few shards read by memory map"),
    "cpu": (
        "cpu",
        "cpu_",
        "CPU states: generate programs and traces, assemble, translate, run and evaluate models",
    ),
    "bench": (
        "bench",
        "bench_",
        "measure bytes/s, peak memory and MFU of training, evaluation, generation, data",
    ),
    "media": (
        "media",
        "media_",
        "convert audio/images to the paper's WAV/BMP formats; build labelled sets",
    ),
    "music": ("music", "music_", "ABC <-> MIDI: build the paired set, check generated files"),
    "compress": (
        "compress",
        "compress_",
        "compress files losslessly with a byte model (arithmetic coding): FILE -> FILE.bgz",
    ),
    "decompress": (
        "compress",
        "decompress_",
        "restore files compressed by bgpt compress with the same model",
    ),
}


# ----------------------------------------------------------------------------- main


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`bgpt CMD: error: ...`, exit 2, no usage dump), no
    abbreviated flags (`--hidden` is an error, not a silent `--hidden-size`) and finite floats
    only (`--minutes inf`, `--offset nan` are errors). Subcommand parsers are of the same class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.register("type", float, finite_float())  # every `type=float` flag: finite numbers only

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bgpt",
        description="Byte models: train, evaluate, generate and convert with bGPT.",
        epilog="Outputs never go through a symlink or onto an input. generate, convert, compress, "
        "decompress, pack, import, inspect, cpu assemble and media audio/image/spectrogram replace an "
        "existing output only with --force; train refuses another run's folder (--resume continues "
        "it). See docs/reliability.md.",
    )
    parser.add_argument(
        "--version", action="version", version=f"bgpt {__import__('bgpt').__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, prefix, help_text) in COMMANDS.items():
        module = importlib.import_module(f"bgpt.commands.{module_name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, prefix + "add_arguments")(p)
        p.set_defaults(_run=getattr(module, prefix + "run"))
        _add_verbosity(p)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    """-q/--quiet and -v/--verbose on every command, the same way (sub-subcommands included)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subs:
        for child in subs[0].choices.values():
            _add_verbosity(child)
        return
    group = parser.add_argument_group("output")
    group.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars"
    )
    group.add_argument("-v", "--verbose", action="store_true", help="also debug messages")


class _Console(logging.Handler):
    """The CLI's view of the `bgpt` logger: information on stdout as plain lines, warnings and
    errors on stderr as `warning: ...` / `error: ...`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.levelno >= logging.WARNING:
                print(f"{record.levelname.lower()}: {msg}", file=sys.stderr, flush=True)
            else:  # tqdm.write: a progress bar on the console is cleared and drawn again below
                from tqdm import tqdm

                tqdm.write(msg, file=sys.stdout)
                sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Route the `bgpt` logger to the console at the level the flags ask for (library code
    only logs; it configures nothing)."""
    log = logging.getLogger("bgpt")
    for h in [h for h in log.handlers if isinstance(h, _Console)]:
        log.removeHandler(h)
    log.addHandler(_Console())
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed as one line
        return e.code if isinstance(e.code, int) else 0
    configure_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
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
