"""The paired ABC <-> MIDI set (`build_set`, `bgpt music build`): see the package docstring."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bgpt.errors import BGPTError
from bgpt.tasks.music.abc import (
    DEFAULT_TIMEOUT,
    MANIFEST_NAME,
    SPLITS,
    Tune,
    _workers,
    abc2midi_version,
    abc_to_midi,
    corpus_tunes,
    find_abc2midi,
    music21_corpus_dir,
    split_of,
    train_subset,
)
from bgpt.tasks.music.notes import _mido, midi_notes

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the set


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
