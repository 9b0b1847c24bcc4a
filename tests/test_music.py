"""ABC <-> MIDI set and checker (bgpt.tasks.music, `bgpt music`), on a handful of tunes."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bgpt.cli import main
from bgpt.data import StreamDataset, open_files, pair_by_stem
from bgpt.errors import BGPTError
from bgpt.stream import PAD
from bgpt.tasks.music import (
    abc_to_midi,
    build_set,
    check_folder,
    corpus_tunes,
    count_matches,
    midi_notes,
    split_of,
    split_tunes,
)

needs_abc2midi = pytest.mark.skipif(
    shutil.which("abc2midi") is None, reason="abc2midi (Debian abcmidi) not installed"
)


def tune(title: str, body: str, x: int = 1) -> str:
    return f"X:{x}\nT:{title}\nM:4/4\nL:1/4\nK:C\n{body}\n"


GOOD = {
    "one": "CDEF|G2c2|",
    "two": "EDC2|DEF2|",
    "three": "c2BA|G4|",
    "four": "CEGc|cGEC|",
}


def make_corpus(root: Path) -> Path:
    """Seven tunes in three files: four good, one duplicate, one without K: (abc2midi
    writes nothing), one long (its pair needs > 64 patches of 16)."""
    (root / "folk").mkdir(parents=True)
    (root / "folk" / "set1.abc").write_text(
        "% file header, dropped\n\n"
        + tune("one", GOOD["one"], 3)
        + "\n"
        + tune("two", GOOD["two"], 4)
        + "\n"
        + tune("one", GOOD["one"], 9)  # a duplicate once X: is renumbered
    )
    (root / "folk" / "set2.abc").write_text(
        tune("three", GOOD["three"]) + "\nX:2\nT:broken\nM:4/4\nCDEF|\n"
    )
    (root / "top.abc").write_text(
        tune("four", GOOD["four"])
        + "\n"
        + tune("long", "|".join(["CDEF", "GABc", "BAGF"] * 60) + "|", 2)
    )
    return root


# --------------------------------------------------------------------------- tunes


def test_split_tunes_normalises_each_tune():
    text = b"% header\r\nT:not a tune\r\n\r\nX: 7  \r\nT:A \r\nK:C\r\nCDE  \r\n\r\n% after the tune\r\nX:8\nK:G\nG4\n\n\n"
    assert split_tunes(text) == [b"X:1\nT:A\nK:C\nCDE\n", b"X:1\nK:G\nG4\n"]
    assert split_tunes(b"no tunes here\n") == []


def test_corpus_tunes_names_order_and_limit(tmp_path):
    root = make_corpus(tmp_path / "corpus")
    tunes = corpus_tunes(root)
    assert [t.name for t in tunes] == [
        "folk_set1_0001",
        "folk_set1_0002",
        "folk_set1_0003",
        "folk_set2_0001",
        "folk_set2_0002",
        "top_0001",
        "top_0002",
    ]
    assert tunes[0].source == "folk/set1.abc" and tunes[0].index == 1
    assert tunes[0].abc == tune("one", GOOD["one"]).encode()  # X:3 -> X:1
    assert tunes[2].abc == tunes[0].abc
    assert [t.name for t in corpus_tunes(root, limit=3)] == [t.name for t in tunes[:3]]


def test_split_of_is_a_deterministic_hash():
    names = [f"folk_set{i // 50}_{i % 50:04d}" for i in range(4000)]
    first = [split_of(n, 0.1) for n in names]
    assert first == [split_of(n, 0.1) for n in names]
    assert 0.08 < first.count("test") / len(names) < 0.12
    assert {split_of(n, 0.0) for n in names} == {"train"}
    # a larger fraction only moves names from train to test
    assert all(split_of(n, 0.5) == "test" for n, s in zip(names, first, strict=True) if s == "test")


# --------------------------------------------------------------------------- abc2midi


@needs_abc2midi
def test_abc_to_midi_renders_deterministically_outside_the_working_directory(tmp_path, monkeypatch):
    pytest.importorskip("mido")
    monkeypatch.chdir(tmp_path)
    abc = tune("one", GOOD["one"]).encode()
    r = abc_to_midi(abc)
    assert r.error is None and r.midi[:4] == b"MThd"
    assert abc_to_midi(abc).midi == r.midi
    notes = midi_notes(r.midi)
    assert [n[0] for n in notes] == [60, 62, 64, 65, 67, 72]
    # abc2midi starts every note one tick (of 480) late and ends it on the beat
    assert [n[1] for n in notes] == pytest.approx([0, 1, 2, 3, 4, 6], abs=0.01)
    assert [n[2] for n in notes] == pytest.approx([1, 1, 1, 1, 2, 2], abs=0.01)
    bad = abc_to_midi(b"X:1\nT:no key\nCDEF|\n")
    assert bad.midi is None and "No valid K:" in bad.error
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- the set


@needs_abc2midi
def test_build_set_counts_pairs_layout_and_determinism(tmp_path):
    pytest.importorskip("mido")
    corpus = make_corpus(tmp_path / "corpus")
    out = tmp_path / "set"
    m = build_set(out, corpus=corpus, test_fraction=0.5, max_patches=64, progress=False)
    c = m["counts"]
    assert (c["found"], c["failed"], c["duplicates"], c["too_long"], c["kept"]) == (7, 1, 1, 1, 4)
    assert c["train"] + c["test"] == 4 and c["train"] and c["test"]
    assert list(m["failed"]) == ["folk_set2_0002"] and m["duplicates"] == {
        "folk_set1_0003": "folk_set1_0001"
    }
    assert list(m["too_long"]) == ["top_0002"] and m["too_long"]["top_0002"] > 64
    assert json.loads((out / "build.json").read_text())["counts"] == c
    # no staging folder left behind
    assert sorted(p.name for p in out.iterdir()) == ["build.json", "test", "train"]

    written = {}
    for split in ("train", "test"):
        names = sorted(p.name for p in (out / split).iterdir())
        stems = sorted({n.rsplit(".", 1)[0] for n in names})
        assert names == sorted([f"{s}.abc" for s in stems] + [f"{s}.mid" for s in stems])
        assert all(split_of(s, 0.5) == split for s in stems)
        for s in stems:
            abc = (out / split / f"{s}.abc").read_bytes()
            # the .abc file is exactly what was rendered
            assert abc_to_midi(abc).midi == (out / split / f"{s}.mid").read_bytes()
            written[s] = abc
    assert written["folk_set1_0001"] == tune("one", GOOD["one"]).encode()

    # pairing by stem and the concatenated layout, as training reads them
    files = open_files([out / "train"])
    pairs = pair_by_stem(files, "abc", "mid")
    assert len(pairs) == c["train"]
    assert all(files.names[i][:-4] == files.names[j][:-4] for i, j in pairs)
    ds = StreamDataset(files, 16, 512, "abc->mid")
    x, y = files.read(pairs[0][0]), files.read(pairs[0][1])

    def padded(data: bytes) -> list[int]:
        return list(data) + [PAD] * (-len(data) % 16)

    expected = (
        [97, 98, 99]
        + [PAD] * 13
        + padded(x)
        + [109, 105, 100]
        + [PAD] * 13
        + padded(y)
        + [PAD] * 16
    )
    assert ds.stream(0).symbols.tolist() == expected
    both = StreamDataset(files, 16, 512, "abc&mid")
    assert len(both) == 2 * len(pairs)
    back = both.stream(1).symbols  # mid -> abc of the same tune (directions interleave)
    assert (
        back.tolist()
        == [109, 105, 100]
        + [PAD] * 13
        + padded(y)
        + [97, 98, 99]
        + [PAD] * 13
        + padded(x)
        + [PAD] * 16
    )
    assert ds.stream(0).num_patches <= 64

    with pytest.raises(BGPTError, match="--force"):
        build_set(out, corpus=corpus, progress=False)
    again = tmp_path / "again"
    build_set(again, corpus=corpus, test_fraction=0.5, max_patches=64, progress=False, workers=1)
    for p in sorted(out.rglob("*")):
        if p.is_file():
            assert (again / p.relative_to(out)).read_bytes() == p.read_bytes(), p
    build_set(out, corpus=corpus, limit=2, test_fraction=0.5, progress=False, force=True)
    assert len(list(out.rglob("*.abc"))) == 2  # replaced, nothing stale left


@needs_abc2midi
def test_build_from_the_music21_corpus(tmp_path):
    pytest.importorskip("mido")
    pytest.importorskip("music21")
    m = build_set(tmp_path / "set", limit=6, test_fraction=0.3, progress=False)
    assert m["corpus"] == "music21" and m["counts"]["found"] == 6
    names = sorted(p.stem for p in (tmp_path / "set").rglob("*.abc"))
    assert names[0] == "airdsAirs_book1_0001" and len(names) == m["counts"]["kept"]
    assert all(p.read_bytes().startswith(b"X:1\n") for p in (tmp_path / "set").rglob("*.abc"))


def test_build_without_abc2midi_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["music", "build", "--out", str(tmp_path / "set"), "--limit", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "abc2midi not found" in err and "apt-get install abcmidi" in err


# --------------------------------------------------------------------------- notes and the checker


def write_midi(
    path: Path, notes: list[tuple[int, int, int]], tpb: int = 480, channel: int = 0
) -> bytes:
    """A type-1 MIDI file with one note track; notes are (pitch, onset, duration) in ticks."""
    mido = pytest.importorskip("mido")
    # (tick, 0 = off / 1 = on, pitch): at equal ticks, offs come first
    events = sorted([(on, 1, p) for p, on, d in notes] + [(on + d, 0, p) for p, on, d in notes])
    track, now = mido.MidiTrack(), 0
    for t, is_on, p in events:
        kind = "note_on" if is_on else "note_off"
        track.append(
            mido.Message(kind, note=p, velocity=90 if is_on else 0, channel=channel, time=t - now)
        )
        now = t
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000)]))
    mid.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(path)
    return path.read_bytes()


def test_midi_notes_and_matching(tmp_path):
    mido = pytest.importorskip("mido")
    data = write_midi(tmp_path / "a.mid", [(60, 0, 480), (64, 480, 240), (67, 960, 960)], tpb=480)
    assert midi_notes(data) == [(60, 0.0, 1.0), (64, 1.0, 0.5), (67, 2.0, 2.0)]
    # same music at another resolution: same notes
    assert midi_notes(
        write_midi(tmp_path / "b.mid", [(60, 0, 96), (64, 96, 48), (67, 192, 192)], tpb=96)
    ) == midi_notes(data)

    # note_on velocity 0 ends a note, same-pitch overlaps end first-in first-out, a note
    # never ended lasts to the end of its track
    track = mido.MidiTrack(
        [
            mido.Message("note_on", note=60, velocity=80, time=0),
            mido.Message("note_on", note=60, velocity=80, time=100),
            mido.Message("note_on", note=60, velocity=0, time=100),
            mido.Message("note_off", note=60, time=100),
            mido.Message("note_on", note=62, velocity=80, time=0),
            mido.MetaMessage("end_of_track", time=100),
        ]
    )
    mid = mido.MidiFile(ticks_per_beat=100)
    mid.tracks.append(track)
    mid.save(tmp_path / "c.mid")
    assert midi_notes((tmp_path / "c.mid").read_bytes()) == [
        (60, 0.0, 2.0),
        (60, 1.0, 2.0),
        (62, 3.0, 1.0),
    ]
    with pytest.raises(ValueError):
        midi_notes(b"MThd garbage")

    truth = [(60, 0.0, 1.0), (60, 0.0, 1.0), (62, 1.0, 1.0), (64, 2.0, 0.5)]
    assert count_matches(truth, truth) == 4
    assert count_matches([(60, 0.0, 1.0)], truth) == 1  # multisets: one copy matches once
    assert count_matches([(60, 0.005, 0.995), (62, 1.0, 1.5), (64, 2.0, 0.5)], truth) == 2
    assert count_matches([(60, 0.005, 0.995)], truth, tolerance=0.001) == 0


def test_common_prefix():
    from bgpt.tasks.music import common_prefix

    assert common_prefix(b"", b"abc") == 0 and common_prefix(b"abc", b"abc") == 3
    assert common_prefix(b"abcdef", b"abcxef") == 3 and common_prefix(b"abc", b"abcd") == 3
    assert common_prefix(b"xbc", b"abc") == 0


def test_check_midi_folder_figures(tmp_path, caplog):
    pytest.importorskip("mido")
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    a = [(60, 0, 480), (62, 480, 480), (64, 960, 480), (65, 1440, 480)]
    b = [(67, 0, 960), (69, 960, 480), (71, 1440, 480)]
    a_bytes = write_midi(truth / "a.mid", a)
    b_bytes = write_midi(truth / "sub" / "b.mid", b)
    c_bytes = write_midi(truth / "c.mid", [(72, 0, 480), (74, 480, 480)])
    (truth / "a.abc").write_text("X:1\n")  # other formats beside the truth are ignored
    (pred / "a.mid").parent.mkdir(parents=True)
    (pred / "a.mid").write_bytes(a_bytes)  # exact
    # same music at another resolution, one wrong pitch: 2 of 3 notes
    write_midi(pred / "sub" / "b.mid", [(67, 0, 1920), (69, 1920, 960), (70, 2880, 960)], tpb=960)
    (pred / "c.mid").write_bytes(b"MThd\x00\x00\x00\x06broken")  # unreadable
    write_midi(pred / "extra.mid", a)  # no truth: ignored
    with caplog.at_level(logging.WARNING, logger="bgpt"):
        r = check_folder(pred, truth)
    assert r["format"] == "mid" and r["files"] == 3 and r["ignored_predictions"] == 1
    assert any("without a truth file" in rec.getMessage() for rec in caplog.records)
    assert (r["parsed"], r["exact"], r["missing"]) == (2, 1, 0)
    assert r["parse_rate"] == pytest.approx(2 / 3) and r["exact_rate"] == pytest.approx(1 / 3)
    assert (r["notes_predicted"], r["notes_truth"], r["notes_matched"]) == (7, 9, 6)
    assert r["precision"] == pytest.approx(6 / 7) and r["recall"] == pytest.approx(6 / 9)
    assert r["f1"] == pytest.approx(2 * (6 / 7) * (6 / 9) / (6 / 7 + 6 / 9))
    assert r["mean_file_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    # a: whole file; b: the header up to its ticks per beat (byte 12); c: "MThd" + length
    assert r["mean_prefix"] == pytest.approx((1 + 12 / len(b_bytes) + 8 / len(c_bytes)) / 3)
    assert set(r["failures"]) == {"c"}
    if importlib.util.find_spec(
        "mir_eval"
    ):  # the literature's note-level F-measures, mean per file
        m = r[
            "mir_eval"
        ]  # a: all 4 notes; b: 2 of 3 (a semitone is 100 cents > 50); c: unreadable, 0
        assert m["onset_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
        assert m["onset_offset_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
        assert m["onset_precision"] == pytest.approx((1 + 2 / 3) / 3)

    (pred / "c.mid").unlink()  # a missing prediction is a failure too
    r = check_folder(pred, truth)
    assert (r["parsed"], r["missing"], r["failures"]["c"]) == (2, 1, "missing")
    assert r["recall"] == pytest.approx(6 / 9)

    with pytest.raises(BGPTError, match="no such prediction folder"):
        check_folder(tmp_path / "nope", truth)
    (tmp_path / "other").mkdir()
    write_midi(tmp_path / "other" / "zzz.mid", a)
    with pytest.raises(BGPTError, match="matches a truth file"):
        check_folder(tmp_path / "other", truth)


@needs_abc2midi
def test_check_abc_folder_renders_both_sides(tmp_path, monkeypatch):
    pytest.importorskip("mido")
    monkeypatch.chdir(tmp_path)
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir()
    pred.mkdir()
    for name in ("one", "two", "three"):
        (truth / f"{name}.abc").write_text(tune(name, GOOD[name]))
        (truth / f"{name}.mid").write_bytes(b"ignored for ABC")
    (pred / "one.abc").write_text(tune("one", GOOD["one"]))  # exact
    (pred / "two.abc").write_text(tune("two, retitled", "EDC2|DEG2|"))  # same notes but one
    (pred / "three.abc").write_text("X:1\nT:no key\nc2BA|\n")  # abc2midi writes nothing
    r = check_folder(pred, truth)
    assert r["format"] == "abc" and r["files"] == 3
    assert (r["parsed"], r["exact"]) == (2, 1)
    assert (r["notes_predicted"], r["notes_truth"], r["notes_matched"]) == (12, 16, 11)
    assert r["precision"] == pytest.approx(11 / 12) and r["recall"] == pytest.approx(11 / 16)
    assert "No valid K:" in r["failures"]["three"]
    assert sorted(os.listdir(tmp_path)) == ["pred", "truth"]  # nothing rendered here


def test_music_check_cli(tmp_path, capsys):
    pytest.importorskip("mido")
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    write_midi(truth / "a.mid", [(60, 0, 480)])
    write_midi(pred / "a.mid", [(60, 0, 480)])
    assert main(["music", "check", str(pred), str(truth), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"files", "parse_rate", "exact_rate", "precision", "recall", "f1"} <= r.keys()
    assert (r["files"], r["parse_rate"], r["exact_rate"], r["f1"]) == (1, 1.0, 1.0, 1.0)
    assert main(["music", "check", str(pred), str(truth)]) == 0
    out = capsys.readouterr().out
    assert "byte-exact" in out and "F1 1.0000" in out
    assert main(["music", "check", str(tmp_path / "missing"), str(truth)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such prediction folder" in err


@needs_abc2midi
def test_music_build_cli(tmp_path, capsys):
    pytest.importorskip("mido")
    corpus = make_corpus(tmp_path / "corpus")
    args = [
        "music",
        "build",
        "--out",
        str(tmp_path / "set"),
        "--corpus",
        str(corpus),
        "--max-patches",
        "64",
        "--test-fraction",
        "0.5",
    ]
    assert main(args + ["--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["found"], counts["failed"], counts["too_long"], counts["kept"]) == (7, 1, 1, 4)
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    out = capsys.readouterr().out
    assert "too long" in out and "kept" in out
    assert np.isfinite(counts["seconds"])


def test_train_subset_is_nested_and_deterministic():
    from bgpt.tasks.music import train_subset

    names = [f"src{k % 3}_{k:04d}" for k in range(60)]
    small, large = train_subset(names, 10), train_subset(names, 30)
    assert len(small) == 10 and len(large) == 30 and small <= large
    assert train_subset(list(reversed(names)), 10) == small  # order of input irrelevant
    assert {n.split("_")[0] for n in small} == {"src0", "src1", "src2"}  # spread over sources
    assert train_subset(names, 100) == set(names)


@needs_abc2midi
def test_build_train_limit_keeps_test_whole(tmp_path):
    pytest.importorskip("mido")
    pytest.importorskip("music21")
    full = build_set(tmp_path / "full", limit=12, test_fraction=0.3, progress=False)
    part = build_set(tmp_path / "part", limit=12, test_fraction=0.3, train_limit=2, progress=False)
    assert part["counts"]["test"] == full["counts"]["test"]
    assert part["counts"]["train"] == 2
    assert part["counts"]["train_left_out"] == full["counts"]["train"] - 2
    tests = lambda d: sorted(p.name for p in (tmp_path / d / "test").iterdir())  # noqa: E731
    assert tests("part") == tests("full")
    with pytest.raises(BGPTError, match="--train-limit"):
        build_set(tmp_path / "bad", limit=3, train_limit=0, progress=False)
