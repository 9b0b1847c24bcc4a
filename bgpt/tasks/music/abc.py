"""ABC tunes: the music21 corpus (on disk, no network), splitting and normalising tunes,
deterministic train/test sides, and rendering through abc2midi."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bgpt.errors import BGPTError

logger = logging.getLogger(__name__)

ABC2MIDI_HELP = (
    "install it with `apt-get install abcmidi` (Debian/Ubuntu, as root) "
    "or build it from https://github.com/sshlien/abcmidi"
)
MUSIC_EXTRA_HELP = "pip install 'bgpt[music]'"
DEFAULT_TIMEOUT = 10.0
"""Seconds abc2midi may spend on one tune."""
MANIFEST_NAME = "build.json"
SPLITS = ("train", "test")

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


def _workers(workers: int | None) -> int:
    return max(1, workers if workers else min(8, os.cpu_count() or 1))


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
