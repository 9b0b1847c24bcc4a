"""`bgpt media`: convert audio and images to the paper's formats; build labelled sets.

bgpt media audio IN... --out DIR         any audio -> 8 kHz mono 8-bit 1 s WAV (8044 bytes)
bgpt media image IN... --out DIR         any image -> 32x32 RGB 24-bit BMP (3126 bytes)
bgpt media spectrogram IN... --out DIR   1 s of audio -> 32x32 BMP spectrogram
bgpt media build NAME --out DIR          speech, digits, text or filetypes -> DIR/{train,test}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bgpt.errors import BGPTError
from bgpt.tasks.media.build import SETS
from bgpt.validation import finite_float


def media_add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="media_command", metavar="SUBCOMMAND", required=True)

    def converter(name: str, help_text: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help_text, description=help_text + ". A file that cannot be "
                           "converted gets one error line and the others still convert (exit status 1).")  # fmt: skip
        q.add_argument(
            "inputs",
            nargs="+",
            metavar="IN",
            help="files, or folders (converted recursively, sub-folders kept)",
        )
        q.add_argument(
            "--out",
            required=True,
            help="output folder (file names kept, new extension); never an input folder",
        )
        q.add_argument("-f", "--force", action="store_true", help="replace output files that exist")
        return q

    a = converter(
        "audio",
        "any audio soundfile reads -> 8 kHz mono unsigned 8-bit PCM WAV of exactly 1 s (8044 bytes)",
    )
    a.add_argument(
        "--offset",
        type=finite_float(0.0),
        default=0.0,
        help="start this many seconds in (default: 0)",
    )
    a.add_argument(
        "--normalize", action="store_true", help="scale to a peak of 0.9 before 8-bit quantisation"
    )
    i = converter("image", "any image Pillow reads -> 32x32 RGB 24-bit BMP (3126 bytes)")
    i.add_argument("--fit", choices=("crop", "stretch", "pad"), default="crop",
                   help="crop: centre square then resize; stretch: whole image; pad: whole image, black borders (default: crop)")  # fmt: skip
    s = converter(
        "spectrogram", "1 s of audio (8 kHz) -> 32x32 RGB BMP log-mel spectrogram (3126 bytes)"
    )
    s.add_argument(
        "--offset",
        type=finite_float(0.0),
        default=0.0,
        help="start this many seconds in (default: 0)",
    )
    s.add_argument(
        "--colormap",
        default="gray",
        help="gray, or a matplotlib colormap such as viridis (default: gray)",
    )

    b = sub.add_parser("build", help="build a labelled set locally into DIR/train and DIR/test",
                       description="Build a labelled set into DIR/train and DIR/test (files LABEL_N.ext, "
                       "deterministic split) and DIR/manifest.json; print files per label and split. "
                       "speech: espeak-ng words; digits: scikit-learn's handwritten digits as BMP; "
                       "text: standard-library docstrings labelled by package; filetypes: this "
                       "machine's files by type, source packages never split.")  # fmt: skip
    b.add_argument("name", choices=SETS, help="which set")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument(
        "--test-fraction",
        type=finite_float(0.0, 1.0),
        default=0.2,
        help="share of each label in test (default: 0.2)",
    )
    b.add_argument("--per-label", type=int, default=None,
                   help="files per label, train + test (default: speech and filetypes 100, digits and text all)")  # fmt: skip
    b.add_argument(
        "--labels",
        default=None,
        help="comma-separated labels to build (default: all); speech accepts any words",
    )
    b.add_argument(
        "--seed", type=int, default=0, help="seed of the split and of the sampling (default: 0)"
    )
    b.add_argument(
        "--overwrite", action="store_true", help="replace DIR/train and DIR/test if they hold files"
    )
    b.add_argument(
        "--jobs", type=int, default=2, help="speech: espeak-ng processes at once (default: 2)"
    )
    b.add_argument(
        "--spectrogram",
        action="store_true",
        help="speech: write 32x32 BMP spectrograms instead of WAV",
    )
    b.add_argument("--max-bytes", type=int, default=None,
                   help="filetypes: cut files to this many bytes (default: 8160 = 510 patches of 16, the paper's 512-patch context with header and end patch)")  # fmt: skip
    b.add_argument("--roots", nargs="+", default=None, metavar="DIR",
                   help="filetypes: folders to collect from (default: /usr, the Python standard library and site-packages)")  # fmt: skip
    b.add_argument("--json", action="store_true", help="print the summary as one JSON object")


BASELINE_BYTES = 4096
"""Bytes of each file the baselines read: the context of the `small` preset, which
`bgpt train-classifier` trains by default."""


def _set_baselines(out: Path) -> dict:
    """The trivial baselines of a built set, fitted on out/train, scored on out/test."""
    from bgpt.baselines import classification_baselines
    from bgpt.data import label_of, open_files

    def pairs(folder: Path):
        files = open_files([folder])
        return [(files.read(i), label_of(files.names[i])) for i in range(len(files))]

    return classification_baselines(pairs(out / "train"), pairs(out / "test"), BASELINE_BYTES)


def media_run(args: argparse.Namespace) -> int:
    from bgpt.tasks import media

    if args.media_command == "build":
        options: dict = {}
        if args.name == "speech":
            options = {"jobs": args.jobs, "spectrogram": args.spectrogram}
        elif args.jobs != 2 or args.spectrogram:
            raise BGPTError("--jobs and --spectrogram are options of the speech set")
        if args.name == "filetypes":
            options = {"max_bytes": args.max_bytes or media.DEFAULT_MAX_BYTES, "roots": args.roots}
        elif args.max_bytes is not None or args.roots is not None:
            raise BGPTError("--max-bytes and --roots are options of the filetypes set")
        labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
        summary = media.build_set(args.name, args.out, test_fraction=args.test_fraction, per_label=args.per_label,
                                  labels=labels, seed=args.seed, overwrite=args.overwrite, **options)  # fmt: skip
        summary["baselines"] = _set_baselines(Path(args.out))
        if args.json:
            print(json.dumps(summary))
        else:
            from bgpt.baselines import format_baselines

            print(
                f"{args.name} set in {args.out}: train/ and test/ (manifest.json lists every file's source)"
            )
            print(media.format_counts(summary))
            print(
                f"test accuracy of trivial baselines (fitted on train/, first {BASELINE_BYTES} bytes of each file):"
            )
            print("\n".join(format_baselines(None, summary["baselines"])))
        return 0

    options = {
        "audio": lambda: {"offset": args.offset, "normalize": args.normalize},
        "image": lambda: {"fit": args.fit},
        "spectrogram": lambda: {"offset": args.offset, "colormap": args.colormap},
    }[args.media_command]()
    written, errors = media.convert_files(
        args.media_command, args.inputs, args.out, force=args.force, **options
    )
    total = len(written) + len(errors)
    print(f"converted {len(written)} of {total} file{'s' * (total != 1)} into {args.out}")
    return 1 if errors else 0
