"""The checker (`check_folder`, `bgpt music check`): see the package docstring."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgpt.errors import BGPTError
from bgpt.tasks.music.abc import DEFAULT_TIMEOUT, _workers, abc_to_midi, find_abc2midi
from bgpt.tasks.music.notes import (
    DEFAULT_TOLERANCE,
    Note,
    _mido,
    count_matches,
    midi_note_times,
    midi_notes,
    mir_eval_scores,
    prf,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the checker


def _stems(root: Path, ext: str) -> dict[str, Path]:
    from bgpt.data import scan_folder

    return {
        name[: -len(ext) - 1]: root / name for name in scan_folder(root) if name.endswith("." + ext)
    }


def _midi_of(data: bytes, fmt: str, exe: str | None, timeout: float) -> bytes:
    """A MIDI file itself, or an ABC tune rendered by abc2midi; ValueError if that fails."""
    if fmt == "abc":
        r = abc_to_midi(data, exe, timeout)
        if r.midi is None:
            raise ValueError(r.error)
        return r.midi
    return data


def _notes_of(data: bytes, fmt: str, exe: str | None, timeout: float) -> list[Note]:
    """Notes of a MIDI file, or of an ABC tune rendered by abc2midi; ValueError if neither works."""
    return midi_notes(_midi_of(data, fmt, exe, timeout))


@dataclass
class FileCheck:
    name: str
    parsed: bool
    exact: bool
    notes_predicted: int
    notes_truth: int
    notes_matched: int
    error: str | None = None
    prefix: float = 0.0
    """Share of the truth's bytes that the prediction reproduces before its first wrong byte."""
    mir_eval: dict | None = None
    """mir_eval's transcription scores of this file (None without mir_eval)."""


def common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix of two byte strings."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid)
    return lo


def check_folder(
    pred_dir: str | Path,
    truth_dir: str | Path,
    fmt: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    timeout: float = DEFAULT_TIMEOUT,
    workers: int | None = None,
) -> dict:
    """Score a folder of generated `.mid` (or `.abc`) files against the truth files of the
    same relative path stem. Every truth file of the format counts; a missing prediction
    is a failure. Returns the report `bgpt music check --json` prints."""
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    for d, what in ((pred_dir, "prediction"), (truth_dir, "truth")):
        if not d.is_dir():
            raise BGPTError(f"{d}: no such {what} folder")
    if tolerance < 0:
        raise BGPTError(f"--tolerance must be >= 0, got {tolerance}")
    if fmt is None:
        present = [e for e in ("mid", "abc") if _stems(pred_dir, e)]
        if not present:
            raise BGPTError(f"{pred_dir}: no .mid or .abc files to check")
        if len(present) == 2:
            raise BGPTError(f"{pred_dir} holds both .mid and .abc files; choose one with --format")
        fmt = present[0]
    if fmt not in ("mid", "abc"):
        raise BGPTError(f"--format must be mid or abc, got {fmt!r}")
    exe = find_abc2midi() if fmt == "abc" else None
    _mido()
    truth = _stems(truth_dir, fmt)
    if not truth:
        raise BGPTError(f"{truth_dir}: no .{fmt} files to compare with")
    pred = _stems(pred_dir, fmt)
    if not pred.keys() & truth.keys():
        example = next(iter(sorted(truth)))
        raise BGPTError(
            f"no .{fmt} file in {pred_dir} matches a truth file in {truth_dir} by path stem (e.g. {example}.{fmt})"
        )
    extra = len(pred.keys() - truth.keys())
    if extra:
        logger.warning(f"{extra} prediction(s) without a truth file ignored")

    try:
        import mir_eval  # noqa: F401 - the `music` extra; the checks run without it

        has_mir_eval = True
    except ImportError:
        has_mir_eval = False
    empty = np.zeros((0, 3))
    failed = mir_eval_scores(empty, np.ones((1, 3))) if has_mir_eval else None  # all zeros

    def one(stem: str) -> FileCheck:
        truth_bytes = truth[stem].read_bytes()
        try:
            truth_midi = _midi_of(truth_bytes, fmt, exe, timeout)
            truth_notes, truth_times = midi_notes(truth_midi), midi_note_times(truth_midi)
        except ValueError as e:
            logger.warning(f"truth file {truth[stem]} unreadable ({e}); it has no notes")
            truth_notes, truth_times = [], empty
        if stem not in pred:
            return FileCheck(stem, False, False, 0, len(truth_notes), 0, "missing", mir_eval=failed)
        data = pred[stem].read_bytes()
        exact = data == truth_bytes
        prefix = (
            common_prefix(data, truth_bytes) / len(truth_bytes) if truth_bytes else float(exact)
        )
        try:
            midi = _midi_of(data, fmt, exe, timeout)
            notes, times = midi_notes(midi), midi_note_times(midi)
        except ValueError as e:
            return FileCheck(
                stem, False, exact, 0, len(truth_notes), 0, str(e), prefix, mir_eval=failed
            )
        return FileCheck(
            stem,
            True,
            exact,
            len(notes),
            len(truth_notes),
            count_matches(notes, truth_notes, tolerance),
            prefix=prefix,
            mir_eval=mir_eval_scores(times, truth_times) if has_mir_eval else None,
        )

    with ThreadPoolExecutor(_workers(workers) if fmt == "abc" else 1) as pool:
        checks = list(pool.map(one, sorted(truth)))

    n = len(checks)
    predicted = sum(c.notes_predicted for c in checks)
    true_notes = sum(c.notes_truth for c in checks)
    matched = sum(c.notes_matched for c in checks)
    precision, recall, f1 = prf(matched, predicted, true_notes)
    file_f1 = [prf(c.notes_matched, c.notes_predicted, c.notes_truth)[2] for c in checks]
    return {
        "format": fmt,
        "files": n,
        "missing": sum(c.error == "missing" for c in checks),
        "parsed": sum(c.parsed for c in checks),
        "parse_rate": sum(c.parsed for c in checks) / n,
        "exact": sum(c.exact for c in checks),
        "exact_rate": sum(c.exact for c in checks) / n,
        "notes_predicted": predicted,
        "notes_truth": true_notes,
        "notes_matched": matched,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_file_f1": sum(file_f1) / n,
        "mean_prefix": sum(c.prefix for c in checks) / n,
        "tolerance": tolerance,
        "ignored_predictions": extra,
        "failures": {c.name: c.error for c in checks if c.error},
        # mean over files, as the transcription literature reports (a missing or unreadable
        # prediction scores 0); None where mir_eval is not installed
        "mir_eval": {k: sum(c.mir_eval[k] for c in checks) / n for k in checks[0].mir_eval}
        if has_mir_eval
        else None,
    }
