"""Notes of a MIDI file and matching them: (pitch, onset, duration) in quarter notes,
one-to-one matches within a tolerance, precision / recall / F1, mir_eval's scores."""

from __future__ import annotations

import bisect
import io
import logging
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from bgpt.errors import BGPTError
from bgpt.tasks.music.abc import MUSIC_EXTRA_HELP

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.01
"""Onset / duration tolerance of note matching, in quarter notes (abc2midi: 480 ticks each)."""

Note = tuple[int, float, float]
"""(MIDI pitch, onset, duration); times in quarter notes."""


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
