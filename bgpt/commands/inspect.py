"""`bgpt inspect MODEL FILE... --html OUT.html`: what the model thinks of each byte, as a page."""

from __future__ import annotations

import argparse
from pathlib import Path

from bgpt.errors import BGPTError
from bgpt.validation import int_at_least


def inspect_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", help="generative model: run folder, saved folder, reference .pth or hf://..."
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="files to score (with --conversion: the pairs' files)",
    )
    p.add_argument(
        "--html",
        required=True,
        metavar="OUT.html",
        help="page to write (self-contained: no network)",
    )
    p.add_argument(
        "--conversion",
        default=None,
        help="score FILE pairs of the same stem as conversion pairs, e.g. 'abc->mid': input and target parts apart",
    )
    p.add_argument(
        "--max-bytes",
        type=int_at_least(16, 1 << 22),
        default=16384,
        help="bytes of each file shown on the page (every byte is scored; default 16384)",
    )
    p.add_argument("-f", "--force", action="store_true", help="replace OUT.html if it exists")


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise BGPTError(f"{path}: no such file")
    data = path.read_bytes()
    if not data:
        raise BGPTError(f"{path}: the file is empty")
    return data


def inspect_run(args: argparse.Namespace) -> int:
    from bgpt.checkpoint import load
    from bgpt.data import parse_conversion
    from bgpt.files import atomic_write_text, check_output_file
    from bgpt.inspect import analyse, analyse_pair, render
    from bgpt.model import BGPT
    from bgpt.stream import extension_of

    out = check_output_file(args.html, args.files, args.force)
    if out.suffix.lower() not in (".html", ".htm"):
        raise BGPTError(f"{out}: the page's name must end in .html")
    files = [Path(f) for f in args.files]
    contents = {f: _read(f) for f in files}
    model = load(args.model)
    if not isinstance(model, BGPT):
        raise BGPTError(
            f"{args.model}: a classifier has no byte-level predictions to show; give a generative model"
        )
    parts = []
    if args.conversion:
        directions = parse_conversion(args.conversion)
        if len(directions) != 1:
            raise BGPTError("--conversion takes one direction here, e.g. 'abc->mid'")
        src, dst = directions[0]
        by_stem = {(f.parent / f.stem, extension_of(f)): f for f in files}
        pairs = [
            (f, by_stem[(f.parent / f.stem, dst)])
            for f in files
            if extension_of(f) == src and (f.parent / f.stem, dst) in by_stem
        ]
        if not pairs:
            raise BGPTError(f"no .{src}/.{dst} pairs with the same stem among the files")
        for x, y in pairs:
            parts += analyse_pair(
                model, contents[x], src, contents[y], dst, title=str(x.with_suffix(""))
            )
    else:
        for f in files:
            part = analyse(model, contents[f], extension_of(f), title=str(f))
            part.sections += _task_sections(model, contents[f], part.bits)
            parts.append(part)
    page = render(f"bgpt inspect: {len(parts)} part(s) under {args.model}", parts, args.max_bytes)
    atomic_write_text(out, page)
    for p in parts:
        print(f"{p.title}: {p.bpb:.4f} bits per byte over {len(p.data):,} bytes")
    print(f"wrote {out}")
    return 0


def _task_sections(model, data: bytes, bits) -> list[str]:
    """Extra views a task knows how to draw: CPU-state files get their table of states."""
    from bgpt.tasks.cpu.evaluate import Instance, one_step_predictions, states_html
    from bgpt.tasks.cpu.isa import STATE_SIZE, CPUError

    if model.config.patch_size != STATE_SIZE:
        return []
    try:
        inst = Instance.parse(data, "file")
    except CPUError:
        return []
    if 1 + 64 + len(inst.states) + 1 > model.config.max_patches:
        return []
    predicted = one_step_predictions(model, [inst])[0]
    return [states_html(inst, predicted, bits)]
