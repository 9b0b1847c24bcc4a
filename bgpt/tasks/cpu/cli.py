"""`bgpt cpu generate | translate | assemble`: thin commands over the CPU-task modules.

The top-level CLI registers ``add_arguments``/``run`` (or ``add_parsers``/``main``);
``python -m bgpt.tasks.cpu.cli ...`` runs the same commands on their own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bgpt.errors import BGPTError

HELP = "CPU-state task: generate the dataset, assemble programs, translate instance files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``generate``, ``translate`` and ``assemble`` subcommands to the ``cpu`` parser."""
    sub = parser.add_subparsers(dest="cpu_command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "generate", help="write random programs and their traces as train/ and test/ instance files"
    )
    p.add_argument("--out", required=True, help="folder to create train/ and test/ in")
    p.add_argument(
        "--train",
        type=int,
        default=210,
        help="training instances (paper: 2.1 M; default %(default)s)",
    )
    p.add_argument(
        "--test", type=int, default=21, help="test instances (paper: 21 K; default %(default)s)"
    )
    p.add_argument(
        "--min-len",
        type=int,
        default=1,
        help="fewest instructions per program, final HLT included (default %(default)s)",
    )
    p.add_argument(
        "--max-len",
        type=int,
        default=255,
        help="most instructions per program, at most 255 (default %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; the same seed gives the same files (default %(default)s)",
    )
    p.add_argument(
        "--packed",
        action="store_true",
        help="write packed shards (bgpt.data.PackWriter) instead of one file per instance",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "translate", help="print an instance file as a program and a table of states"
    )
    p.add_argument(
        "file", help="instance file (.bin): 1024 bytes of memory followed by 16-byte states"
    )
    p.add_argument(
        "--no-check", action="store_true", help="do not compare the states with the simulator"
    )

    p = sub.add_parser("assemble", help="assemble a program and run it into an instance file")
    p.add_argument("program", help="assembly source: one instruction per line, e.g. 'ADD A B C'")
    p.add_argument("--out", required=True, help="instance file to write (.bin)")
    p.add_argument(
        "--state",
        default="",
        help="start values, e.g. 'ACC=5,A=1,B=2'; the others are 0 (or random with --seed)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="draw the start values not given by --state at random from this seed",
    )


def add_parsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``cpu`` command to a top-level CLI's subparsers; dispatch with ``main(args)``."""
    parser = subparsers.add_parser("cpu", help=HELP, description=HELP)
    add_arguments(parser)
    parser.set_defaults(_run=main)
    return parser


def parse_state(text: str, seed: int | None = None) -> tuple[int, list[int]]:
    """(ACC, [A..J]) from 'ACC=5,A=1 B=2'; values not given are 0, or random from ``seed``."""
    from bgpt.tasks.cpu.isa import NUM_REGISTERS, REGISTER_NAMES

    values = [0] * (1 + NUM_REGISTERS)
    if seed is not None:
        import numpy as np

        if seed < 0:
            raise BGPTError(f"--seed must be >= 0, got {seed}")
        values = np.random.default_rng(seed).integers(0, 256, size=1 + NUM_REGISTERS).tolist()
    names = ("ACC", *REGISTER_NAMES)
    for item in text.replace(",", " ").split():
        key, sep, value = item.partition("=")
        if not sep or key.upper() not in names:
            raise BGPTError(
                f"--state: expected NAME=VALUE with NAME one of ACC, A..J, got {item!r}"
            )
        try:
            v = int(value, 0)
        except ValueError:
            raise BGPTError(f"--state: {key} must be a number 0..255, got {value!r}") from None
        if not 0 <= v <= 255:
            raise BGPTError(f"--state: {key} must be 0..255, got {v}")
        values[names.index(key.upper())] = v
    return values[0], values[1:]


def _read(path: str) -> bytes:
    p = Path(path)
    if not p.exists():
        raise BGPTError(f"no such file: {path}")
    if not p.is_file():
        raise BGPTError(f"not a file: {path}")
    return p.read_bytes()


def _generate(args: argparse.Namespace) -> int:
    from bgpt.tasks.cpu.data import generate_dataset

    r = generate_dataset(
        args.out,
        args.train,
        args.test,
        args.min_len,
        args.max_len,
        args.seed,
        packed=args.packed,
        progress=not args.quiet,
    )
    print(
        f"wrote {r.n_train} train and {r.n_test} test instances to {r.out_dir} in {r.seconds:.1f} s"
    )
    return 0


def _translate(args: argparse.Namespace) -> int:
    from bgpt.tasks.cpu.assembler import translate

    sys.stdout.write(translate(_read(args.file), check=not args.no_check, what=args.file))
    return 0


def _assemble(args: argparse.Namespace) -> int:
    from bgpt.tasks.cpu.assembler import assemble
    from bgpt.tasks.cpu.simulator import make_instance, run_program

    try:
        text = _read(args.program).decode("utf-8")
    except UnicodeDecodeError as e:
        raise BGPTError(f"{args.program} is not UTF-8 text: {e}") from None
    try:
        memory = assemble(text)
    except BGPTError as e:
        raise type(e)(f"{args.program}: {e}") from None
    acc, regs = parse_state(args.state, args.seed)
    states = run_program(memory, acc, regs)
    data = make_instance(memory, states)
    try:
        Path(args.out).write_bytes(data)
    except OSError as e:
        raise BGPTError(f"cannot write {args.out}: {e.strerror}") from None
    print(
        f"wrote {args.out}: {len(states) - 1} instructions, {len(states)} states, {len(data)} bytes"
    )
    return 0


_COMMANDS = {"generate": _generate, "translate": _translate, "assemble": _assemble}


def main(args: argparse.Namespace) -> int:
    """Run the ``cpu`` subcommand chosen in ``args``; user errors raise BGPTError."""
    return _COMMANDS[args.cpu_command](args)


run = main  # the name the top-level CLI's command table calls


def _standalone(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bgpt cpu", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return main(args)
    except BGPTError as e:
        print(f"bgpt cpu {args.cpu_command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_standalone())
