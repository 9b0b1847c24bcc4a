"""ABC notation <-> MIDI: the paired set of the data-conversion task, and its checker.

The set (`build_set`, `bgpt music build`)
    Tunes come from the `.abc` files that ship inside the music21 package (found on disk
    through the installed package, no network) or from any folder of `.abc` files. Each
    file is split into tunes at its `X:` lines; a tune is normalised (`normalize_tune`)
    and rendered by `abc2midi` (Debian package `abcmidi`). The set holds, for every
    kept tune, `NAME.abc` (exactly the bytes that were rendered) beside `NAME.mid`
    (exactly what abc2midi wrote), in `train/` or `test/`:

        OUT/train/essenFolksong_altdeu10_0001.abc   OUT/train/essenFolksong_altdeu10_0001.mid
        OUT/test/...                                OUT/build.json  (settings, counts, drops)

    NAME is the source file's path in the corpus without `.abc`, `/` replaced by `_`,
    then `_` and the tune's 1-based position in that file (4 digits). A tune is dropped
    when abc2midi fails on it (non-zero exit, time-out, no MIDI, MIDI without notes; with
    `strict`, also any "Error" line abc2midi prints), when it repeats an earlier tune
    byte for byte (so no pair sits in both train and test), or when its conversion pair
    (`bgpt.stream.encode_pair`, either direction) is longer than `max_patches`. The
    split is a pure function of NAME (`split_of`), so a tune keeps its side when the
    corpus or the limit changes. Same corpus + same abc2midi -> the same bytes.

The checker (`check_folder`, `bgpt music check`)
    Generated `.mid` (or `.abc`) files are matched to truth files by relative path
    stem. A prediction "parses" when mido reads it (for ABC: when abc2midi renders it
    to a MIDI file mido reads); it is "exact" when its bytes equal the truth file's.
    Notes (`midi_notes`) are (pitch, onset, duration) with times in quarter notes;
    predicted and true notes are matched one to one (`count_matches`, equal pitch,
    onset and duration within a tolerance), and precision / recall / F1 are computed
    over all notes of the folder (micro average); missing or unreadable predictions
    contribute no notes, so they lower recall. ABC predictions and their truth ABC are
    both rendered by abc2midi in temporary folders, never in the working directory.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgpt.errors import BGPTError

logger = logging.getLogger(__name__)

ABC2MIDI_HELP = (
    "install it with `apt-get install abcmidi` (Debian/Ubuntu, as root) "
    "or build it from https://github.com/sshlien/abcmidi"
)
MUSIC_EXTRA_HELP = "pip install 'bgpt[music]'"
DEFAULT_TIMEOUT = 10.0
"""Seconds abc2midi may spend on one tune."""
DEFAULT_TOLERANCE = 0.01
"""Onset / duration tolerance of note matching, in quarter notes (abc2midi: 480 ticks each)."""
MANIFEST_NAME = "build.json"
SPLITS = ("train", "test")

Note = tuple[int, float, float]
"""(MIDI pitch, onset, duration); times in quarter notes."""

_X_LINE = re.compile(rb"^X:", re.MULTILINE)


# --------------------------------------------------------------------------- corpus and tunes


def music21_corpus_dir() -> Path:
    """The `corpus` folder of the installed music21 package, found without importing it."""
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise BGPTError(
            f"music21 is not installed ({MUSIC_EXTRA_HELP}); its package ships the ABC corpus"
        )
    for location in spec.submodule_search_locations:
        corpus = Path(location) / "corpus"
        if corpus.is_dir():
            return corpus
    raise BGPTError(f"the installed music21 package has no corpus folder ({spec.origin})")


def abc_files(root: str | Path) -> list[str]:
    """Relative POSIX paths of the `.abc` files under root, recursively, sorted; hidden skipped."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.endswith(".abc") and not name.startswith("."):
                out.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(out)


def normalize_tune(chunk: bytes) -> bytes:
    """One tune, normalised: line ends `\\n`, trailing whitespace stripped from every line,
    the `X:` line rewritten to `X:1`, cut at the first empty line (where an ABC tune ends,
    ABC 2.1 §2.2), exactly one final newline.

    `X:1` because the reference number is not in abc2midi's MIDI: a model converting MIDI
    back to ABC could not know it."""
    lines = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    lines = [line.rstrip() for line in lines]
    lines[0] = b"X:1"
    end = lines.index(b"", 1) if b"" in lines[1:] else len(lines)
    return b"\n".join(lines[:end]) + b"\n"


def split_tunes(text: bytes) -> list[bytes]:
    """The normalised tunes of an ABC file: one per line that starts with `X:`, running to
    the next such line. Text before the first `X:` (the file header) is dropped."""
    text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    starts = [m.start() for m in _X_LINE.finditer(text)] + [len(text)]
    return [normalize_tune(text[a:b]) for a, b in zip(starts, starts[1:], strict=False)]


@dataclass(frozen=True)
class Tune:
    name: str
    """File name stem in the set: `<source without .abc, '/' -> '_'>_<index:04d>`."""
    source: str
    """Relative path of the `.abc` file it came from."""
    index: int
    """1-based position of the tune in its file."""
    abc: bytes
    """The normalised tune (`normalize_tune`): the bytes rendered and written."""


def tune_name(source: str, index: int) -> str:
    return f"{source.removesuffix('.abc').replace('/', '_')}_{index:04d}"


def corpus_tunes(root: str | Path, limit: int | None = None) -> list[Tune]:
    """Tunes of every `.abc` file under root, in file-path then position order; the first
    `limit` only when given."""
    root = Path(root)
    out: list[Tune] = []
    for rel in abc_files(root):
        try:
            text = (root / rel).read_bytes()
        except OSError as e:
            raise BGPTError(f"cannot read {root / rel}: {e.strerror or e}") from None
        for k, abc in enumerate(split_tunes(text), start=1):
            if limit is not None and len(out) >= limit:
                return out
            out.append(Tune(tune_name(rel, k), rel, k, abc))
    return out


def _name_hash(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def split_of(name: str, test_fraction: float) -> str:
    """'test' for about `test_fraction` of names, else 'train': a pure function of the name."""
    return "test" if _name_hash(name) % 1_000_000 < round(test_fraction * 1_000_000) else "train"


def train_subset(names: list[str], n: int) -> set[str]:
    """The `n` training names kept by `--train-limit`: the smallest by name hash, so a
    subset is spread over every source and a smaller limit's subset is inside a larger's."""
    return set(sorted(names, key=lambda s: (_name_hash(s), s))[:n])


# --------------------------------------------------------------------------- abc2midi


def find_abc2midi() -> str:
    """Path of the abc2midi program, or a BGPTError that says how to install it."""
    path = shutil.which("abc2midi")
    if path is None:
        raise BGPTError(f"abc2midi not found on PATH; {ABC2MIDI_HELP}")
    return path


def abc2midi_version(exe: str) -> str:
    try:
        r = subprocess.run(
            [exe, "-ver"], capture_output=True, timeout=DEFAULT_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = r.stdout.decode("utf-8", "replace").strip().split("\n")[0]
    return text.removesuffix("abc2midi").strip() or "unknown"


@dataclass(frozen=True)
class Rendered:
    """What abc2midi made of one tune: the MIDI bytes, or why there are none."""

    midi: bytes | None
    error: str | None
    """Why `midi` is None (exit status, time-out, no file written)."""
    messages: str
    """abc2midi's own output: warnings and "Error in line-char" reports."""

    @property
    def reported_errors(self) -> list[str]:
        return [line.strip() for line in self.messages.splitlines() if line.startswith("Error")]


def abc_to_midi(abc: bytes, exe: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Rendered:
    """Render one ABC tune with abc2midi in a fresh temporary folder (its first tune if it
    holds several). The output does not depend on the folder or file names."""
    exe = exe or find_abc2midi()
    with tempfile.TemporaryDirectory(prefix="bgpt-abc2midi-") as tmp:
        Path(tmp, "tune.abc").write_bytes(abc)
        try:
            r = subprocess.run(
                [exe, "tune.abc", "-o", "tune.mid"],
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return Rendered(None, f"abc2midi timed out after {timeout:g} s", "")
        messages = (r.stdout + r.stderr).decode("utf-8", "replace")
        if r.returncode != 0:
            return Rendered(None, f"abc2midi exit status {r.returncode}", messages)
        out = Path(tmp, "tune.mid")
        midi = out.read_bytes() if out.is_file() else b""
    if not midi:
        errors = [line.strip() for line in messages.splitlines() if line.startswith("Error")]
        return Rendered(
            None, "abc2midi wrote no MIDI" + (f" ({errors[-1]})" if errors else ""), messages
        )
    return Rendered(midi, None, messages)


# --------------------------------------------------------------------------- notes


def _mido():
    try:
        import mido
    except ImportError:
        raise BGPTError(f"mido is not installed ({MUSIC_EXTRA_HELP})") from None
    return mido


def midi_notes(data: bytes) -> list[Note]:
    """Sorted (pitch, onset, duration) of every note of a MIDI file, all tracks and
    channels together, times in quarter notes (ticks / ticks per beat). Note-on with
    velocity 0 ends a note; overlapping notes of one pitch end first-in first-out; a
    note never ended lasts to the end of its track. ValueError if mido cannot read it."""
    mido = _mido()
    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
        tpb = mid.ticks_per_beat
        if not isinstance(tpb, int) or tpb <= 0:
            raise ValueError(f"ticks per beat {tpb!r}")
        notes: list[Note] = []
        for track in mid.tracks:
            now = 0
            sounding: dict[tuple[int, int], list[int]] = defaultdict(list)
            for msg in track:
                now += msg.time
                if msg.type == "note_on" and msg.velocity > 0:
                    sounding[msg.channel, msg.note].append(now)
                elif msg.type in ("note_on", "note_off") and sounding.get((msg.channel, msg.note)):
                    start = sounding[msg.channel, msg.note].pop(0)
                    notes.append((msg.note, start / tpb, (now - start) / tpb))
            for (_, pitch), starts in sounding.items():
                notes.extend((pitch, s / tpb, (now - s) / tpb) for s in starts)
    except ValueError:
        raise
    except Exception as e:  # mido raises many kinds (EOFError, KeyError, OSError...) on bad bytes
        raise ValueError(f"{type(e).__name__}: {e}") from None
    return sorted(notes)


def midi_note_times(data: bytes) -> np.ndarray:
    """(N, 3) MIDI pitch, onset and offset in seconds (the file's own tempo map, as mido plays
    it) of every note with a positive duration; ValueError if mido cannot read the file."""
    mido = _mido()
    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
        now, out = 0.0, []
        sounding: dict[tuple[int, int], list[float]] = defaultdict(list)
        for msg in mid:  # all tracks merged, times in seconds
            now += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                sounding[msg.channel, msg.note].append(now)
            elif msg.type in ("note_on", "note_off") and sounding.get((msg.channel, msg.note)):
                out.append((msg.note, sounding[msg.channel, msg.note].pop(0), now))
        out += [(pitch, start, now) for (_, pitch), starts in sounding.items() for start in starts]
    except Exception as e:  # mido raises many kinds on bad bytes
        raise ValueError(f"{type(e).__name__}: {e}") from None
    notes = np.array(sorted(n for n in out if n[2] > n[1]), dtype=float).reshape(-1, 3)
    return notes


def mir_eval_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """mir_eval's note-level transcription F-measures with its standard tolerances (onset
    50 ms, pitch 50 cents, offset within max(20 % of the note, 50 ms)): onset only, and onset
    with offset. Empty on both sides scores 1, empty on one side 0."""
    from mir_eval.transcription import precision_recall_f1_overlap
    from mir_eval.util import midi_to_hz

    out = {}
    for key, offset_ratio in (("onset", None), ("onset_offset", 0.2)):
        if len(pred) == 0 or len(truth) == 0:
            p = r = f = float(len(pred) == len(truth))
        else:
            p, r, f, _ = precision_recall_f1_overlap(
                truth[:, 1:],
                midi_to_hz(truth[:, 0]),
                pred[:, 1:],
                midi_to_hz(pred[:, 0]),
                offset_ratio=offset_ratio,
            )
        out.update({f"{key}_precision": float(p), f"{key}_recall": float(r), f"{key}_f1": float(f)})
    return out


def count_matches(
    pred: Iterable[Note], truth: Iterable[Note], tolerance: float = DEFAULT_TOLERANCE
) -> int:
    """How many notes match one to one: same pitch, onset and duration within `tolerance`.

    Notes are multisets (a repeated note matches as often as it occurs in both). Each
    true note, in (pitch, onset) order, takes the earliest unused predicted note of its
    pitch that fits; with tolerance below half the grid of both files this is exact."""
    by_pitch: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for pitch, onset, duration in pred:
        by_pitch[pitch].append((onset, duration))
    for candidates in by_pitch.values():
        candidates.sort()
    matched = 0
    for pitch, onset, duration in sorted(truth):
        candidates = by_pitch.get(pitch)
        if not candidates:
            continue
        j = bisect.bisect_left(candidates, (onset - tolerance, float("-inf")))
        while j < len(candidates) and candidates[j][0] <= onset + tolerance:
            if abs(candidates[j][1] - duration) <= tolerance:
                del candidates[j]
                matched += 1
                break
            j += 1
    return matched


def prf(matched: int, predicted: int, truth: int) -> tuple[float, float, float]:
    """Precision, recall, F1 (0 where undefined)."""
    p = matched / predicted if predicted else 0.0
    r = matched / truth if truth else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


# --------------------------------------------------------------------------- the set


def _workers(workers: int | None) -> int:
    return max(1, workers if workers else min(8, os.cpu_count() or 1))


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="tune", file=sys.stderr, disable=None)


def pair_patches(abc: bytes, midi: bytes, patch_size: int) -> int:
    """Patches of the longer conversion pair stream of a tune (abc->mid or mid->abc)."""
    from bgpt.stream import encode_pair

    return max(
        encode_pair(abc, "abc", midi, "mid", patch_size).num_patches,
        encode_pair(midi, "mid", abc, "abc", patch_size).num_patches,
    )


def build_set(
    out: str | Path,
    corpus: str | Path | None = None,
    limit: int | None = None,
    test_fraction: float = 0.1,
    train_limit: int | None = None,
    patch_size: int = 16,
    max_patches: int = 512,
    strict: bool = False,
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Write the ABC/MIDI paired set into `out` (see the module docstring); returns the
    manifest also written to `out/build.json` (settings, counts, dropped tunes)."""
    if limit is not None and limit < 1:
        raise BGPTError(f"--limit must be >= 1, got {limit}")
    if train_limit is not None and train_limit < 1:
        raise BGPTError(f"--train-limit must be >= 1, got {train_limit}")
    if not 0 <= test_fraction < 1:
        raise BGPTError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    if patch_size < 1 or max_patches < 2:
        raise BGPTError("--patch-size must be >= 1 and --max-patches >= 2")
    if timeout <= 0:
        raise BGPTError(f"--timeout must be > 0, got {timeout}")
    exe = find_abc2midi()
    _mido()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BGPTError(f"{out} exists and is not a folder")
    existing = [p.name for p in (out / "train", out / "test", out / MANIFEST_NAME) if p.exists()]
    if existing and not force:
        raise BGPTError(
            f"{out} already holds {', '.join(existing)}; pass --force to replace the set"
        )
    root = Path(corpus) if corpus is not None else music21_corpus_dir()
    if not root.is_dir():
        raise BGPTError(f"{root}: no such folder")
    started = time.perf_counter()
    tunes = corpus_tunes(root, limit)
    if not tunes:
        raise BGPTError(f"no ABC tunes (.abc files with X: lines) under {root}")

    with ThreadPoolExecutor(_workers(workers)) as pool:  # abc2midi runs outside the GIL
        rendered = pool.map(lambda t: abc_to_midi(t.abc, exe, timeout), tunes)
        results = list(_progress(rendered, len(tunes), "abc2midi", progress))

    failed: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    too_long: dict[str, int] = {}
    kept: list[tuple[Tune, bytes, str]] = []
    first_of: dict[bytes, str] = {}
    with_errors: set[str] = set()
    for tune, r in zip(tunes, results, strict=True):
        reason = r.error
        if r.midi is not None:
            try:
                if not midi_notes(r.midi):
                    reason = "MIDI without notes"
            except ValueError as e:
                reason = f"unreadable MIDI ({e})"
        if reason is None and strict and r.reported_errors:
            reason = r.reported_errors[0]
        if reason is not None:
            failed[tune.name] = reason
            continue
        if tune.abc in first_of:
            duplicates[tune.name] = first_of[tune.abc]
            continue
        first_of[tune.abc] = tune.name
        n = pair_patches(tune.abc, r.midi, patch_size)
        if n > max_patches:
            too_long[tune.name] = n
            continue
        if r.reported_errors:
            with_errors.add(tune.name)
        kept.append((tune, r.midi, split_of(tune.name, test_fraction)))
    left_out = 0
    if train_limit is not None:
        train_names = [t.name for t, _, s in kept if s == "train"]
        chosen = train_subset(train_names, train_limit)
        left_out = len(train_names) - len(chosen)
        kept = [k for k in kept if k[2] == "test" or k[0].name in chosen]

    # Write into a hidden staging folder, then move into place: an interrupted build
    # leaves no half set behind (the data scanners skip hidden folders).
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".music-build-", dir=out))
    try:
        for split in SPLITS:
            (staging / split).mkdir()
        for tune, midi, split in kept:
            (staging / split / f"{tune.name}.abc").write_bytes(tune.abc)
            (staging / split / f"{tune.name}.mid").write_bytes(midi)
        for split in SPLITS:
            if (out / split).is_dir() and not (out / split).is_symlink():
                shutil.rmtree(out / split)
            elif (out / split).exists() or (out / split).is_symlink():
                (out / split).unlink()
            os.replace(staging / split, out / split)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    counts = {
        "found": len(tunes),
        "failed": len(failed),
        "duplicates": len(duplicates),
        "too_long": len(too_long),
        "kept": len(kept),
        "train_left_out": left_out,
        "train": sum(s == "train" for *_, s in kept),
        "test": sum(s == "test" for *_, s in kept),
        "kept_with_abc2midi_errors": sum(t.name in with_errors for t, *_ in kept),
    }
    from importlib.metadata import PackageNotFoundError, version

    try:
        music21_version = version("music21") if corpus is None else None
    except PackageNotFoundError:
        music21_version = None
    manifest = {
        "format": "bgpt-music-set",
        "version": 1,
        "corpus": "music21" if corpus is None else str(corpus),
        "music21_version": music21_version,
        "abc2midi_version": abc2midi_version(exe),
        "settings": {
            "limit": limit,
            "test_fraction": test_fraction,
            "train_limit": train_limit,
            "patch_size": patch_size,
            "max_patches": max_patches,
            "strict": strict,
            "timeout": timeout,
        },
        "counts": counts,
        "failed": failed,
        "duplicates": duplicates,
        "too_long": too_long,
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    manifest["seconds"] = time.perf_counter() - started  # not in the file: it stays byte-identical
    return manifest


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
