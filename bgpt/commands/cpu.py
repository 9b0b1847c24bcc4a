"""`bgpt cpu generate | translate | assemble | run | evaluate`: thin commands over the CPU task
(`bgpt.tasks.cpu`), registered in the `bgpt` command table like every other command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bgpt.commands._args import add_weights
from bgpt.errors import BGPTError

HELP = (
    "CPU-state task: generate the dataset, assemble and translate programs, run and evaluate models"
)


def cpu_add_arguments(parser: argparse.ArgumentParser) -> None:
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
    p.add_argument("--out", required=True, help="instance file to write (.bin); never the source")
    p.add_argument("-f", "--force", action="store_true", help="replace --out if it exists")
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

    p = sub.add_parser(
        "run", help="let a model execute a program: its trace beside the simulator's"
    )
    p.add_argument(
        "model", help="run folder, saved model folder or reference .pth (e.g. weights-cpu.pth)"
    )
    p.add_argument(
        "program", help="an instance file (.bin) or an assembly program (.asm, see assemble)"
    )
    p.add_argument("--state", default="", help="start values for an .asm program, e.g. 'ACC=5,A=1'")
    p.add_argument(
        "--seed", type=int, default=None, help="random start values not given by --state"
    )
    p.add_argument("--dtype", default="fp32", help="fp32 or bf16 (default %(default)s)")
    add_weights(p)

    p = sub.add_parser(
        "evaluate", help="predicted traces vs the simulator on a folder of instances"
    )
    p.add_argument("model", help="run folder, saved model folder or reference .pth")
    p.add_argument("data", nargs="+", help="folders (or packed sets) of instance files")
    p.add_argument("--max-files", type=int, default=None, help="evaluate only the first N files")
    p.add_argument(
        "--batch-size", type=int, default=8, help="files per batch (default %(default)s)"
    )
    p.add_argument("--dtype", default="fp32", help="fp32 or bf16 (default %(default)s)")
    add_weights(p)
    p.add_argument(
        "--plot", default=None, help="write a PNG of accuracy against program length here"
    )
    p.add_argument("--no-free-run", action="store_true", help="only the one-step protocol (faster)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


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
    from bgpt.files import atomic_write_bytes, check_output_file
    from bgpt.tasks.cpu.assembler import assemble
    from bgpt.tasks.cpu.simulator import make_instance, run_program

    out = check_output_file(args.out, [args.program], args.force)
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
        atomic_write_bytes(out, data)
    except OSError as e:
        raise BGPTError(f"cannot write {args.out}: {e.strerror}") from None
    print(
        f"wrote {args.out}: {len(states) - 1} instructions, {len(states)} states, {len(data)} bytes"
    )
    return 0


def _load_model(path: str, weights: str = "fp32"):
    from bgpt.checkpoint import load
    from bgpt.model import BGPT

    model = load(path, weights=weights)
    if not isinstance(model, BGPT):
        raise BGPTError(f"{path} is a classifier; CPU simulation needs a generative model")
    return model


def _run_model(args: argparse.Namespace) -> int:
    import numpy as np

    from bgpt.tasks.cpu.evaluate import (
        Instance,
        bytes_to_states,
        format_trace,
        free_run_predictions,
    )

    if args.program.endswith(".asm"):
        from bgpt.tasks.cpu.assembler import assemble
        from bgpt.tasks.cpu.simulator import make_instance, run_program

        memory = assemble(_read(args.program).decode("utf-8", errors="replace"))
        acc, regs = parse_state(args.state, args.seed)
        data = make_instance(memory, run_program(memory, acc, regs))
    else:
        data = _read(args.program)
    inst = Instance.parse(data, args.program)
    model = _load_model(args.model, args.weights)
    out = free_run_predictions(model, [inst], 1, args.dtype)[0]
    pred = bytes_to_states(out)
    print(format_trace(inst, pred))
    n = len(inst.states) - 1
    p = np.full((n, 16), -1)
    p[: min(n, len(pred))] = pred[:n]
    ok = p == inst.states[1:]
    print(
        f"byte accuracy {ok.mean():.4f}, states right {int(ok.all(1).sum())}/{n}"
        + ("" if len(pred) == n else f" (the model wrote {len(pred)} states)")
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from bgpt.data import StreamDataset, open_files
    from bgpt.evaluate import evaluate_generative
    from bgpt.tasks.cpu.evaluate import BASELINE_NAMES, Instance, evaluate_cpu, plot_by_length

    if args.batch_size < 1 or (args.max_files is not None and args.max_files < 1):
        raise BGPTError("--batch-size and --max-files must be >= 1")
    model = _load_model(args.model, args.weights)
    files = open_files(args.data)
    n = len(files) if args.max_files is None else min(args.max_files, len(files))
    instances = [Instance.parse(files.read(i), files.names[i]) for i in range(n)]
    c = model.config
    too_long = [i.name for i in instances if 1 + 64 + len(i.states) + 1 > c.max_patches]
    if too_long:
        raise BGPTError(
            f"{len(too_long)} file(s) longer than the model's context ({c.max_patches} patches), e.g. {too_long[0]}"
        )
    report = evaluate_cpu(
        model, instances, args.batch_size, args.dtype, free_run=not args.no_free_run
    )
    report.pop("predictions", None)
    ds = StreamDataset(files, c.patch_size, c.max_patches)
    report["bpb"] = evaluate_generative(model, ds, args.batch_size, max_items=n)["bpb"]
    if args.plot:
        plot_by_length(report, args.plot)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{n} programs, BPB {report['bpb']:.4f}")
    for proto in ("free_run", "one_step"):
        if proto not in report:
            continue
        r = report[proto]
        print(f"\n{proto.replace('_', '-')}:        byte acc  state acc  exact")
        for key, label in (("model", "model"), *BASELINE_NAMES.items()):
            v = r[key]
            print(
                f"  {label:<34}{v['byte_accuracy']:9.4f}{v['state_accuracy']:11.4f}{v['exact_rate']:7.3f}"
            )
    for proto in ("free_run", "one_step"):
        if proto in report:
            by_byte = report[proto]["model"]["by_byte"]
            print(f"\n{proto.replace('_', '-')} byte accuracy by state byte (model):")
            print("  " + "  ".join(f"{k} {v:.3f}" for k, v in by_byte.items()))
    effects = report.get("by_effect", report["one_step"]["by_effect"])
    print("\nbyte accuracy by the instruction a state shows the effect of:")
    print("  " + "  ".join(f"{k} {v:.3f}" for k, v in effects.items()))
    return 0


_COMMANDS = {
    "generate": _generate,
    "translate": _translate,
    "assemble": _assemble,
    "run": _run_model,
    "evaluate": _evaluate,
}


def cpu_run(args: argparse.Namespace) -> int:
    """Run the ``cpu`` subcommand chosen in ``args``; user errors raise BGPTError."""
    return _COMMANDS[args.cpu_command](args)
