"""Data sets of files: folders on disk, packed shards, and what training reads from them.

A `FileSet` is an indexable list of (name, bytes): a folder scanned recursively
(`FolderSet`) or a packed set (`PackedSet`: a few shard files plus an index, read by
memory map, so two million instances are a handful of files). `open_files(paths)`
accepts any mix of both. Datasets turn files (or conversion pairs) into byte streams
with the crops of `bgpt.stream`, and `labels_of` gives classification labels.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgpt.errors import BGPTError
from bgpt.files import atomic_write, atomic_write_text
from bgpt.stream import Stream, encode, encode_pair, eval_windows, extension_of, train_window_start

logger = logging.getLogger(__name__)

PACK_FORMAT = "bgpt-pack"
PACK_VERSION = 1
INDEX_NAME = "pack.json"
SHARD_BYTES = 1 << 30  # a new shard after 1 GiB


# --------------------------------------------------------------------------- file sets


class FileSet:
    """Indexable (name, bytes) collection; `name` is a path relative to its root."""

    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def read(self, i: int) -> bytes:
        raise NotImplementedError

    def size(self, i: int) -> int:
        raise NotImplementedError


def scan_folder(root: Path) -> list[str]:
    """Regular files under root, recursively, sorted; hidden files and folders skipped.
    Symlink loops, links to files outside the folder (a data set stays in its folder) and
    unreadable files are logged as warnings and skipped, not fatal."""
    out: list[str] = []
    seen: set[tuple[int, int]] = set()
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            logger.warning(f"skipping {dirpath}: symlink loop")
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError as e:
                logger.warning(f"skipping {path}: {e.strerror or e}")
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            real = os.path.realpath(path)
            if os.path.commonpath([real, real_root]) != real_root:
                logger.warning(f"skipping {path}: a link to a file outside {root}")
                continue
            if not os.access(path, os.R_OK):
                logger.warning(f"skipping {path}: not readable")
                continue
            out.append(os.path.relpath(path, root))
    return out


class FolderSet(FileSet):
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.names = scan_folder(self.root)

    def read(self, i: int) -> bytes:
        path = self.root / self.names[i]
        try:
            return path.read_bytes()
        except OSError as e:
            raise BGPTError(f"cannot read {path}: {e.strerror or e}") from None

    def size(self, i: int) -> int:
        return (self.root / self.names[i]).stat().st_size


class PackedSet(FileSet):
    """Shards `shard-NNNNN.bin` + `index.npy` (shard, offset, length) + `names.txt`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            meta = json.loads((self.root / INDEX_NAME).read_text())
            if meta.get("format") != PACK_FORMAT or meta.get("version") != PACK_VERSION:
                raise ValueError("unknown format or version")
            shard_names = meta["shards"]
            if not isinstance(shard_names, list) or not all(
                isinstance(x, str) for x in shard_names
            ):
                raise ValueError("'shards' is not a list of names")
            paths = [self._shard_path(x) for x in shard_names]
            self.index = np.load(self.root / "index.npy", allow_pickle=False)
            names = (self.root / "names.txt").read_text(encoding="utf-8", errors="surrogateescape")
            self.names = names.split("\n")[: len(self.index)]
            self.shards = [
                np.memmap(p, dtype=np.uint8, mode="r")
                if os.path.getsize(p)
                else np.zeros(0, np.uint8)
                for p in paths
            ]
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            json.JSONDecodeError,
        ) as e:
            raise BGPTError(f"{self.root}: not a readable packed set ({e})") from None
        idx = self.index
        if idx.ndim != 2 or idx.shape[1] != 3 or idx.dtype.kind not in "iu":
            raise BGPTError(f"{self.root}: packed set index is not an (N, 3) integer table")
        if len(self.names) != len(idx) or len(idx) != meta.get("files"):
            raise BGPTError(
                f"{self.root}: packed set index is inconsistent (files {meta.get('files')}, index {len(idx)}, names {len(self.names)})"
            )
        if len(idx) and (idx.min() < 0 or idx[:, 0].max() >= len(self.shards)):
            raise BGPTError(
                f"{self.root}: packed set index holds negative offsets or unknown shards"
            )
        ends = idx[:, 1] + idx[:, 2]
        for k, shard in enumerate(self.shards):
            rows = idx[:, 0] == k
            if rows.any() and ends[rows].max() > len(shard):
                raise BGPTError(f"{self.root}: shard {shard_names[k]} is truncated")

    def _shard_path(self, name: str) -> Path:
        """A shard named in pack.json: a plain file inside the set's folder, nowhere else."""
        path = self.root / name
        if (
            Path(name).name != name
            or name in ("", ".", "..")
            or not path.resolve().is_relative_to(self.root.resolve())
        ):
            raise ValueError(f"shard {name!r} is not a file of this folder")
        return path

    def read(self, i: int) -> bytes:
        shard, offset, length = self.index[i]
        return self.shards[shard][offset : offset + length].tobytes()

    def size(self, i: int) -> int:
        return int(self.index[i, 2])


class PackWriter:
    """Write a packed set: `with PackWriter(dir) as w: w.add(name, data)`.

    Shards are written under temporary names and the index last, so a packed set is
    readable only once complete."""

    def __init__(self, root: str | Path, shard_bytes: int = SHARD_BYTES):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise BGPTError(f"{self.root} exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / INDEX_NAME).unlink(missing_ok=True)
        self.shard_bytes = shard_bytes
        self.rows: list[tuple[int, int, int]] = []
        self.names: list[str] = []
        self.shard_names: list[str] = []
        self._file = None
        self._offset = 0

    def _new_shard(self) -> None:
        if self._file:
            self._file.close()
        self.shard_names.append(f"shard-{len(self.shard_names):05d}.bin")
        self._file = open(self.root / self.shard_names[-1], "wb")  # noqa: SIM115
        self._offset = 0

    def add(self, name: str, data: bytes) -> None:
        if "\n" in name:
            raise BGPTError(f"cannot pack a file whose name has a newline: {name!r}")
        if self._file is None or (self._offset and self._offset + len(data) > self.shard_bytes):
            self._new_shard()
        self._file.write(data)
        self.rows.append((len(self.shard_names) - 1, self._offset, len(data)))
        self.names.append(name)
        self._offset += len(data)

    def close(self) -> None:
        if self._file is None:
            self._new_shard()
        self._file.close()
        index = np.array(self.rows, dtype=np.int64).reshape(-1, 3)
        atomic_write(self.root / "index.npy", lambda tmp: np.save(open(tmp, "wb"), index))  # noqa: SIM115
        atomic_write(
            self.root / "names.txt",
            lambda tmp: Path(tmp).write_text(
                "\n".join(self.names), encoding="utf-8", errors="surrogateescape"
            ),
        )
        meta = {
            "format": PACK_FORMAT,
            "version": PACK_VERSION,
            "files": len(self.names),
            "shards": self.shard_names,
        }
        atomic_write_text(self.root / INDEX_NAME, json.dumps(meta, indent=1))

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        elif self._file:
            self._file.close()


class ConcatSet(FileSet):
    def __init__(self, parts: list[FileSet]):
        self.parts = parts
        self.names = [n for p in parts for n in p.names]
        self._starts = np.cumsum([0] + [len(p) for p in parts])

    def _locate(self, i: int) -> tuple[FileSet, int]:
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self.parts[k], i - int(self._starts[k])

    def read(self, i: int) -> bytes:
        part, j = self._locate(i)
        return part.read(j)

    def size(self, i: int) -> int:
        part, j = self._locate(i)
        return part.size(j)


class SubSet(FileSet):
    def __init__(self, base: FileSet, indices: Iterable[int]):
        self.base = base
        self.indices = list(indices)
        self.names = [base.names[i] for i in self.indices]

    def read(self, i: int) -> bytes:
        return self.base.read(self.indices[i])

    def size(self, i: int) -> int:
        return self.base.size(self.indices[i])


def is_packed(path: Path) -> bool:
    return (path / INDEX_NAME).is_file()


class SingleFile(FileSet):
    """One file given by itself (`bgpt eval MODEL tune.abc`); its name is its file name."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.names = [self.path.name]

    def read(self, i: int) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as e:
            raise BGPTError(f"cannot read {self.path}: {e.strerror or e}") from None

    def size(self, i: int) -> int:
        return self.path.stat().st_size


def open_files(paths: Iterable[str | Path]) -> FileSet:
    """Files, folders and packed sets, concatenated. An empty result is an error."""
    parts: list[FileSet] = []
    for p in map(Path, paths):
        if not p.exists():
            raise BGPTError(f"{p}: no such file or folder")
        if p.is_file():
            if not os.access(p, os.R_OK):
                raise BGPTError(f"{p}: not readable")
            parts.append(SingleFile(p))
            continue
        if not p.is_dir():
            raise BGPTError(f"{p}: neither a file nor a folder")
        parts.append(PackedSet(p) if is_packed(p) else FolderSet(p))
        if len(parts[-1]) == 0:
            raise BGPTError(f"{p}: no files in this folder")
    if not parts:
        raise BGPTError("no data folders given")
    return parts[0] if len(parts) == 1 else ConcatSet(parts)


def split_holdout(files: FileSet, fraction: float, seed: int = 0) -> tuple[FileSet, FileSet]:
    """Deterministic train/eval split by a hash of each file's path without its extension
    (stable when files are added; the two files of a conversion pair, `x.abc` and `x.mid`,
    always fall on the same side)."""
    import zlib

    if not 0 < fraction < 1:
        raise BGPTError(f"eval fraction must be in (0, 1), got {fraction}")
    stems = [os.path.splitext(n)[0] for n in files.names]
    keys = np.array(
        [zlib.crc32(f"{seed}:{n}".encode(errors="surrogateescape")) for n in stems], dtype=np.uint64
    )
    held = keys % 10_000 < int(fraction * 10_000)
    if held.all() or not held.any():  # tiny sets: take every k-th stem instead
        unique = sorted(set(stems))
        chosen = set(unique[:: max(2, round(1 / fraction))])
        held = np.array([n in chosen for n in stems], dtype=bool)
    if held.all() or len(files) < 2:
        raise BGPTError(
            f"too few files ({len(files)}) to hold some out for evaluation; give --eval DIR"
        )
    return SubSet(files, np.flatnonzero(~held)), SubSet(files, np.flatnonzero(held))


def train_eval_files(
    data: Iterable[str | Path], eval: Iterable[str | Path], fraction: float, seed: int
) -> tuple[FileSet, FileSet]:
    """A run's training and evaluation files: `eval` when given, else a held-out part of `data`
    (`split_holdout`). Training and anything that must see the same files (a classifier's
    baselines) call this."""
    files = open_files(data)
    eval = list(eval)
    return (files, open_files(eval)) if eval else split_holdout(files, fraction, seed=seed)


# --------------------------------------------------------------------------- pairs and labels


def parse_conversion(spec: str) -> list[tuple[str, str]]:
    """'abc->mid' -> [('abc', 'mid')]; 'abc&mid' -> both directions."""
    for sep, both in (("->", False), ("&", True)):
        if sep in spec:
            a, b = (s.strip().lstrip(".") for s in spec.split(sep, 1))
            if a and b and a != b and "/" not in a + b:
                return [(a, b), (b, a)] if both else [(a, b)]
    raise BGPTError(
        f"conversion {spec!r}: expected 'X->Y' (one way) or 'X&Y' (both ways), e.g. 'abc->mid'"
    )


def pair_by_stem(files: FileSet, src: str, dst: str) -> list[tuple[int, int]]:
    """(index of X, index of Y) for every path stem that has both extensions."""
    by_ext: dict[str, dict[str, int]] = {src: {}, dst: {}}
    for i, name in enumerate(files.names):
        ext = extension_of(name)
        if ext in by_ext:
            by_ext[ext][name[: -len(ext) - 1]] = i
    pairs = [
        (i, by_ext[dst][stem]) for stem, i in sorted(by_ext[src].items()) if stem in by_ext[dst]
    ]
    lonely = len(by_ext[src]) + len(by_ext[dst]) - 2 * len(pairs)
    if lonely:
        logger.warning(f"{lonely} .{src}/.{dst} file(s) without a partner skipped")
    if not pairs:
        raise BGPTError(f"no .{src}/.{dst} pairs with the same path stem found")
    return pairs


def label_of(name: str) -> str:
    """Classification label: the file name up to the first '_' (e.g. Business_12.txt)."""
    base = Path(name).name
    if "_" not in base:
        raise BGPTError(f"{name}: no label (file names must look like LABEL_anything.ext)")
    return base.split("_", 1)[0]


# --------------------------------------------------------------------------- streams


@dataclass(frozen=True)
class Example:
    """One item of a dataset: a stream window, where scoring starts, which file it is."""

    stream: Stream
    first_scored: int
    item: int
    label: int = -1


class StreamDataset:
    """Files or conversion pairs -> streams, cropped to the model's context.

    `train=True`: one example per item, cropped at random (head / middle / tail) with a
    generator derived from (seed, epoch, item), so a resumed run sees the same crops.
    `train=False`: every evaluation window of every item (see `stream.eval_windows`)."""

    def __init__(
        self,
        files: FileSet,
        patch_size: int,
        max_patches: int,
        conversion: str | None = None,
        labels: list[str] | None = None,
        shift_bytes: int = 0,
    ):
        self.files = files
        self.shift_bytes = shift_bytes
        self.patch_size = patch_size
        self.max_patches = max_patches
        self.items: list[tuple[int, ...]]
        if conversion:
            per_direction = [
                [pair + (a, b) for pair in pair_by_stem(files, a, b)]
                for a, b in parse_conversion(conversion)
            ]
            self.items = [
                it for group in zip(*per_direction, strict=False) for it in group
            ]  # directions interleaved
        else:
            self.items = [(i,) for i in range(len(files))]
        self.labels = labels
        self.label_ids: list[int] = []
        if labels is not None:
            index = {name: k for k, name in enumerate(labels)}
            for i in range(len(files)):
                lab = label_of(files.names[i])
                if lab not in index:
                    raise BGPTError(
                        f"{files.names[i]}: label {lab!r} is not one of the model's labels {labels}"
                    )
                self.label_ids.append(index[lab])

    def __len__(self) -> int:
        return len(self.items)

    def name(self, item: int) -> str:
        return (
            " -> ".join(self.files.names[i] for i in self.items[item][:2] if isinstance(i, int))
            if len(self.items[item]) > 1
            else self.files.names[self.items[item][0]]
        )

    def stream(self, item: int, skip: int = 0) -> Stream:
        """Item `item` as a stream; a single file less its first `skip` bytes (at least one
        byte is kept)."""
        it = self.items[item]
        s = self.patch_size
        if len(it) == 1:
            name = self.files.names[it[0]]
            data = self.files.read(it[0])
            return encode(data[min(skip, len(data) - 1) :] if skip else data, extension_of(name), s)
        x, y, xe, ye = it
        return encode_pair(self.files.read(x), xe, self.files.read(y), ye, s)

    def train_example(self, item: int, seed: int, epoch: int) -> Example:
        rng = np.random.default_rng((seed, epoch, item))
        skip = 0
        if self.shift_bytes > 1 and len(self.items[item]) == 1:
            skip = int(np.random.default_rng((seed, epoch, item, 1)).integers(self.shift_bytes))
        st = self.stream(item, skip)
        start = train_window_start(st.num_patches, self.max_patches, rng)
        label = self.label_ids[item] if self.label_ids else -1
        return Example(st.window(start, self.max_patches), 1, item, label)

    def eval_examples(self, item: int) -> list[Example]:
        st = self.stream(item)
        label = self.label_ids[item] if self.label_ids else -1
        return [
            Example(st.window(start, self.max_patches), first - start, item, label)
            for start, first in eval_windows(st.num_patches, self.max_patches)
        ]
