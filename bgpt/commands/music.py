"""`bgpt music build` and `bgpt music check`: the ABC <-> MIDI set and its checker."""

from __future__ import annotations

import argparse
import json

from bgpt.errors import BGPTError
from bgpt.validation import finite_float, int_at_least

# ----------------------------------------------------------------------------- music


def music_add_arguments(p: argparse.ArgumentParser) -> None:
    from bgpt.tasks.music import DEFAULT_TIMEOUT, DEFAULT_TOLERANCE

    sub = p.add_subparsers(dest="music_command", metavar="SUBCOMMAND", required=True)

    b = sub.add_parser(
        "build",
        help="make the ABC/MIDI paired set from music21's ABC corpus (needs abc2midi)",
        description="Split music21's ABC files into tunes, render each with abc2midi and write "
        "NAME.abc beside NAME.mid into OUT/train and OUT/test (plus OUT/build.json).",
    )
    b.add_argument("--out", required=True, help="folder to write the set into")
    b.add_argument("--corpus", help="folder of .abc files to use instead of music21's corpus")
    b.add_argument(
        "--limit", type=int, help="only the first N tunes (file path, then position order)"
    )
    b.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="share of tunes in test/, chosen by a hash of the name (default: 0.1)",
    )
    b.add_argument(
        "--train-limit",
        type=int,
        help="keep only N training tunes, chosen by name hash (spread over every source; a "
        "smaller N's tunes are inside a larger N's); test/ is unchanged: for data-size runs",
    )
    b.add_argument(
        "--patch-size",
        type=int,
        default=16,
        help="patch size S of the model the set is for (default: 16)",
    )
    b.add_argument(
        "--max-patches",
        type=int,
        default=512,
        help="drop tunes whose conversion pair needs more patches (default: 512)",
    )
    b.add_argument(
        "--strict",
        action="store_true",
        help="also drop tunes on which abc2midi reports an error but still writes MIDI",
    )
    b.add_argument(
        "--workers", type=int, help="abc2midi processes at once (default: CPU count, at most 8)"
    )
    b.add_argument(
        "--timeout",
        type=finite_float(0.0, 3600.0, low_open=True),
        default=DEFAULT_TIMEOUT,
        help=f"seconds abc2midi may spend on one tune (default: {DEFAULT_TIMEOUT:g})",
    )
    b.add_argument(
        "--force",
        action="store_true",
        help="replace OUT/train, OUT/test and OUT/build.json if they exist",
    )
    b.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    b.set_defaults(_music_run=build_run)

    c = sub.add_parser(
        "check",
        help="score generated .mid or .abc files against the truth: parse rate, exact rate, note F1",
        description="Match PRED_DIR's files to TRUTH_DIR's by relative path stem and report the parse "
        "rate, the byte-exact rate and note-level precision / recall / F1 on (pitch, onset, duration). "
        "ABC files are rendered with abc2midi first. Missing predictions count as failures.",
    )
    c.add_argument("pred_dir", metavar="PRED_DIR", help="folder of generated files")
    c.add_argument(
        "truth_dir", metavar="TRUTH_DIR", help="folder of truth files (e.g. a set's test/)"
    )
    c.add_argument(
        "--format",
        choices=["mid", "abc"],
        help="which files to check (default: the one kind found in PRED_DIR)",
    )
    c.add_argument(
        "--tolerance",
        type=finite_float(0.0),
        default=DEFAULT_TOLERANCE,
        help=f"onset/duration tolerance in quarter notes (default: {DEFAULT_TOLERANCE:g})",
    )
    c.add_argument(
        "--timeout",
        type=finite_float(0.0, 3600.0, low_open=True),
        default=DEFAULT_TIMEOUT,
        help=f"seconds abc2midi may spend on one ABC file (default: {DEFAULT_TIMEOUT:g})",
    )
    c.add_argument(
        "--workers",
        type=int_at_least(1, 256),
        help="abc2midi processes at once for ABC (default: CPU count, at most 8)",
    )
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(_music_run=check_run)


def music_run(args: argparse.Namespace) -> int:
    return args._music_run(args)


# ----------------------------------------------------------------------------- build


def build_run(args: argparse.Namespace) -> int:
    from bgpt.tasks.music import build_set

    if args.workers is not None and args.workers < 1:
        raise BGPTError("--workers must be >= 1")
    m = build_set(
        args.out,
        corpus=args.corpus,
        limit=args.limit,
        test_fraction=args.test_fraction,
        train_limit=args.train_limit,
        patch_size=args.patch_size,
        max_patches=args.max_patches,
        strict=args.strict,
        workers=args.workers,
        timeout=args.timeout,
        force=args.force,
        progress=not args.json,
    )
    c = m["counts"]
    if args.json:
        print(json.dumps({**c, "seconds": round(m["seconds"], 2), "out": str(args.out)}))
        return 0
    rows = [
        ("tunes found", c["found"], f"{m['corpus']} corpus, abc2midi {m['abc2midi_version']}"),
        ("failed conversion", c["failed"], ""),
        ("duplicates", c["duplicates"], "same ABC as an earlier tune"),
        (
            "too long",
            c["too_long"],
            f"pair > {m['settings']['max_patches']} patches of {m['settings']['patch_size']}",
        ),
        ("kept", c["kept"], f"{c['kept_with_abc2midi_errors']} with abc2midi error reports"),
        ("  train", c["train"], ""),
        ("  test", c["test"], ""),
    ]
    if c["train_left_out"]:
        rows.insert(4, ("left out", c["train_left_out"], "training tunes beyond --train-limit"))
    for label, value, note in rows:
        print(f"{label:<20}{value:>8}" + (f"  ({note})" if note else ""))
    print(
        f"wrote {args.out}/train, {args.out}/test and {args.out}/build.json in {m['seconds']:.1f} s"
    )
    return 0


# ----------------------------------------------------------------------------- check


def check_run(args: argparse.Namespace) -> int:
    from bgpt.tasks.music import check_folder

    if args.workers is not None and args.workers < 1:
        raise BGPTError("--workers must be >= 1")
    r = check_folder(
        args.pred_dir,
        args.truth_dir,
        fmt=args.format,
        tolerance=args.tolerance,
        timeout=args.timeout,
        workers=args.workers,
    )
    if args.json:
        print(json.dumps(r))
        return 0
    n = r["files"]
    print(f"{n} truth .{r['format']} files in {args.truth_dir}; predictions from {args.pred_dir}")
    print(f"{'':<14}{'files':>8}{'rate':>10}")
    print(f"{'parsed':<14}{r['parsed']:>8}{r['parse_rate']:>10.2%}")
    print(f"{'byte-exact':<14}{r['exact']:>8}{r['exact_rate']:>10.2%}")
    print(f"{'missing':<14}{r['missing']:>8}{r['missing'] / n:>10.2%}")
    print(
        f"mean share of each truth file reproduced before the first wrong byte: {r['mean_prefix']:.2%}"
    )
    print(
        f"notes: {r['notes_predicted']} predicted, {r['notes_truth']} true, {r['notes_matched']} matched "
        f"(pitch, onset, duration within {r['tolerance']:g} quarter notes)"
    )
    print(
        f"precision {r['precision']:.4f}  recall {r['recall']:.4f}  F1 {r['f1']:.4f}  (mean F1 per file {r['mean_file_f1']:.4f})"
    )
    m = r.get("mir_eval")
    if m:
        print(
            "mir_eval.transcription, mean per file (onset 50 ms, pitch 50 cents; offset within max(20 %, 50 ms)):"
        )
        for key, name in (("onset", "onset only"), ("onset_offset", "onset and offset")):
            print(
                f"  {name:<18} precision {m[key + '_precision']:.4f}  recall {m[key + '_recall']:.4f}  F1 {m[key + '_f1']:.4f}"
            )
    return 0
