"""`bgpt compress` and `bgpt decompress`: a byte model as a lossless compressor (bgpt.compress).

    bgpt compress MODEL FILE... [-o OUT]        FILE -> FILE.bgz (the input is kept)
    bgpt decompress MODEL FILE.bgz... [-o OUT]  FILE.bgz -> FILE

Outputs are written atomically, and only once complete: a decompressed file appears only after
its length and CRC-32 have been checked. An existing output is kept unless --force is given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bgpt.commands._args import add_weights
from bgpt.config import WEIGHTS
from bgpt.errors import BGPTError


def _add_common(p: argparse.ArgumentParser, what: str, output_help: str) -> None:
    p.add_argument("model", help="generative model: saved folder, run folder or reference .pth")
    p.add_argument("files", nargs="+", metavar="FILE", help=what)
    p.add_argument("-o", "--output", default=None, help=output_help)
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing output files")


def _outputs(args: argparse.Namespace, name_of) -> list[tuple[Path, Path]]:
    """(input, output) pairs, checked before any work is done."""
    from bgpt.files import check_output_file

    if args.output is not None and len(args.files) != 1:
        raise BGPTError(f"-o names one output file, but {len(args.files)} files were given")
    pairs, seen = [], {}
    for name in args.files:
        src = Path(name)
        if not src.exists():
            raise BGPTError(f"{src}: no such file")
        if not src.is_file():
            raise BGPTError(f"{src}: not a regular file")
        dst = check_output_file(
            Path(args.output) if args.output is not None else name_of(src), args.files, args.force
        )
        key = dst.resolve()
        if key in seen:
            raise BGPTError(f"{seen[key]} and {src} would both be written to {dst}")
        seen[key] = src
        pairs.append((src, dst))
    return pairs


def _load(path: str, device_name: str, weights: str):
    from bgpt.checkpoint import load
    from bgpt.compress import Codec
    from bgpt.device import resolve_device

    device = resolve_device(device_name)
    return Codec(load(path, weights=weights).to(device))


def _bar(total: int, quiet: bool, desc: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        disable=quiet,
        leave=False,
        desc=desc,
        dynamic_ncols=True,
        file=sys.stderr,
    )


def _write(path: Path, data: bytes) -> None:
    from bgpt.files import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / max(seconds, 1e-9) / 1e3:.2f} KB/s"


# ----------------------------------------------------------------------------- compress


def compress_add_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(
        p,
        "files to compress (each is kept; its extension is stored and conditions the model)",
        "output file, when one FILE is given (default: FILE.bgz beside it)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (default) or cuda[:N]; a file must be decompressed on the same kind of device",
    )
    add_weights(p)


def compress_run(args: argparse.Namespace) -> int:
    from bgpt.compress import SUFFIX
    from bgpt.stream import extension_of

    pairs = _outputs(args, lambda src: src.with_name(src.name + SUFFIX))
    codec = _load(args.model, args.device, args.weights)
    total_in = total_out = 0
    total_bits = 0.0
    start = time.perf_counter()
    for src, dst in pairs:
        data = src.read_bytes()
        t0 = time.perf_counter()
        with _bar(len(data) + 1, args.quiet, src.name) as bar:
            out = codec.compress(data, extension_of(src), progress=bar.update)
        seconds = time.perf_counter() - t0
        _write(dst, out.data)
        n = len(data)
        bpb = (
            f"{8 * len(out.data) / n:.3f} bits/byte (model {out.model_bits / n:.3f})"
            if n
            else "empty file"
        )
        print(f"{src} -> {dst}: {n} -> {len(out.data)} bytes, {bpb}, {_rate(n, seconds)}")
        total_in, total_out, total_bits = (
            total_in + n,
            total_out + len(out.data),
            total_bits + out.model_bits,
        )
    if len(pairs) > 1:
        seconds = time.perf_counter() - start
        ratio = f"ratio {total_in / total_out:.2f}, " if total_out else ""
        print(
            f"{len(pairs)} files: {total_in} -> {total_out} bytes, {ratio}{_rate(total_in, seconds)}"
        )
    return 0


# ----------------------------------------------------------------------------- decompress


def decompress_add_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(
        p,
        ".bgz files made by bgpt compress with the same model",
        "output file, when one FILE is given (default: FILE without .bgz beside it)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="cpu or cuda[:N] (default: the kind of device the file was compressed on)",
    )
    p.add_argument(
        "--weights",
        choices=WEIGHTS,
        default=None,
        help="form of the weights (default: the one the file was compressed with, from its header)",
    )


def decompress_run(args: argparse.Namespace) -> int:
    from bgpt.compress import SUFFIX, FormatError, read_header

    def name_of(src: Path) -> Path:
        if not src.name.endswith(SUFFIX) or src.name == SUFFIX:
            raise BGPTError(f"{src}: the name does not end in {SUFFIX}; name the output with -o")
        return src.with_name(src.name[: -len(SUFFIX)])

    pairs = _outputs(args, name_of)
    blobs = []
    for src, _ in pairs:  # foreign, truncated or corrupt headers: reported before loading a model
        blob = src.read_bytes()
        try:
            header = read_header(blob)
        except FormatError as e:
            raise BGPTError(f"{src}: {e}") from None
        blobs.append((blob, header))
    device = args.device or blobs[0][1].compute
    codec = _load(args.model, device, args.weights or blobs[0][1].weights)
    start = time.perf_counter()
    total = 0
    for (src, dst), (blob, header) in zip(pairs, blobs, strict=True):
        t0 = time.perf_counter()
        try:
            codec.check(blob)  # a different model: one line before any progress bar
            with _bar(header.length + 1, args.quiet, src.name) as bar:
                data = codec.decompress(blob, progress=bar.update)
        except FormatError as e:
            raise BGPTError(f"{src}: {e}") from None
        seconds = time.perf_counter() - t0
        _write(dst, data)
        total += len(data)
        print(f"{src} -> {dst}: {len(blob)} -> {len(data)} bytes, {_rate(len(data), seconds)}")
    if len(pairs) > 1:
        print(f"{len(pairs)} files: {total} bytes, {_rate(total, time.perf_counter() - start)}")
    return 0
