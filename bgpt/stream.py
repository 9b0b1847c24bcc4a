"""Bytes <-> patches: the one definition of bGPT's byte stream layout (SPEC §1).

A file with extension `ext` becomes, with patch size S:

    [ext bytes, padded with PAD to S] [file bytes, last patch padded with PAD] [S x PAD]
     header patch (never predicted)    data patches                           end patch

A conversion pair (X -> Y) is X's stream without its end patch followed by Y's whole
stream. Every array here is numpy; nothing loops over bytes in Python.

Beside the symbols, a stream carries a `roles` array (one entry per symbol) that says
which predictions are scored by bits-per-byte: ROLE_INPUT for the data bytes of a file
(or of X in a pair) and the symbol that ends them, ROLE_TARGET for Y's data bytes and
their end, ROLE_NONE for headers and the deterministic rest of the padding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np
import torch

PAD = 256
"""The special symbol: padding, end of patch and end of file."""
VOCAB_SIZE = 257
"""256 byte values plus PAD."""

ROLE_NONE, ROLE_INPUT, ROLE_TARGET = 0, 1, 2


def extension_of(path: str | PurePath) -> str:
    """Text after the last dot of the file name ('' when there is none), like the reference."""
    name = PurePath(path).name
    return name.rsplit(".", 1)[1] if "." in name else ""


def header_patch(ext: str, patch_size: int) -> np.ndarray:
    """The extension's UTF-8 bytes, cut to S and padded with PAD: shape (S,), int16."""
    raw = np.frombuffer(ext.encode("utf-8")[:patch_size], dtype=np.uint8)
    out = np.full(patch_size, PAD, dtype=np.int16)
    out[: len(raw)] = raw
    return out


@dataclass(frozen=True)
class Stream:
    """One training/evaluation sequence: symbols and their scoring roles, both (P*S,)."""

    symbols: np.ndarray  # int16, values 0..256
    roles: np.ndarray  # uint8, ROLE_*
    patch_size: int

    @property
    def num_patches(self) -> int:
        return len(self.symbols) // self.patch_size

    def window(self, start: int, length: int) -> Stream:
        """Patches [start, start+length) of this stream."""
        s = self.patch_size
        return Stream(
            self.symbols[start * s : (start + length) * s],
            self.roles[start * s : (start + length) * s],
            s,
        )

    def to_bytes(self) -> bytes:
        """The stream's symbols as they would appear in a file (PAD dropped); for debugging."""
        return self.symbols[self.symbols < PAD].astype(np.uint8).tobytes()


def _body(data: bytes | np.ndarray, patch_size: int) -> np.ndarray:
    """File bytes padded with PAD to a multiple of S: shape (ceil(n/S)*S,), int16."""
    raw = (
        np.frombuffer(data, dtype=np.uint8)
        if isinstance(data, (bytes, bytearray, memoryview))
        else np.asarray(data, dtype=np.uint8)
    )
    n = len(raw)
    out = np.full(-(-n // patch_size) * patch_size, PAD, dtype=np.int16)
    out[:n] = raw
    return out


def _segment(
    data: bytes | np.ndarray, ext: str, patch_size: int, role: int, end_patch: bool
) -> tuple[np.ndarray, np.ndarray]:
    head = header_patch(ext, patch_size)
    body = _body(data, patch_size)
    tail = np.full(patch_size if end_patch else 0, PAD, dtype=np.int16)
    symbols = np.concatenate([head, body, tail])
    roles = np.zeros(len(symbols), dtype=np.uint8)
    n = len(body) - int((body == PAD).sum())  # data length
    # Data bytes, plus the symbol that ends them (first PAD), when the stream has one.
    last = (
        patch_size
        + n
        + (1 if patch_size + n < len(symbols) and symbols[patch_size + n] == PAD else 0)
    )
    roles[patch_size:last] = role
    return symbols, roles


def encode(data: bytes | np.ndarray, ext: str, patch_size: int) -> Stream:
    """A file's stream: header patch, data patches, end patch (SPEC §1)."""
    symbols, roles = _segment(data, ext, patch_size, ROLE_INPUT, end_patch=True)
    return Stream(symbols, roles, patch_size)


def encode_pair(
    x: bytes | np.ndarray, x_ext: str, y: bytes | np.ndarray, y_ext: str, patch_size: int
) -> Stream:
    """A conversion pair X -> Y: X's stream without its end patch, then Y's whole stream."""
    xs, xr = _segment(x, x_ext, patch_size, ROLE_INPUT, end_patch=False)
    ys, yr = _segment(y, y_ext, patch_size, ROLE_TARGET, end_patch=True)
    return Stream(np.concatenate([xs, ys]), np.concatenate([xr, yr]), patch_size)


def conversion_prompt(x: bytes | np.ndarray, x_ext: str, y_ext: str, patch_size: int) -> np.ndarray:
    """What conversion inference feeds the model: X without end patch, then Y's header patch."""
    xs, _ = _segment(x, x_ext, patch_size, ROLE_INPUT, end_patch=False)
    return np.concatenate([xs, header_patch(y_ext, patch_size)])


def train_window_start(num_patches: int, max_patches: int, rng: np.random.Generator) -> int:
    """Start patch of a training crop: head, a random aligned middle window or tail, 1/3 each."""
    if num_patches <= max_patches:
        return 0
    choice = rng.integers(3)
    if choice == 0:
        return 0
    if choice == 2:
        return num_patches - max_patches
    return int(rng.integers(0, num_patches - max_patches + 1))


def eval_windows(num_patches: int, max_patches: int) -> list[tuple[int, int]]:
    """Deterministic windows (start, first_scored) covering a stream so every patch after the
    first is predicted exactly once.

    Windows overlap by one patch: the first patch of each window is context only (the
    header patch for the first window), and patches first_scored .. start+L-1 are scored.
    """
    return list(iter_eval_windows(num_patches, max_patches))


def iter_eval_windows(num_patches: int, max_patches: int) -> Iterator[tuple[int, int]]:
    """`eval_windows` one at a time (a decoder walking a long stream holds none in advance)."""
    yield (0, 1)
    end = max_patches  # patches before `end` have been scored (or are the first)
    while end < num_patches:
        start = min(end - 1, num_patches - max_patches)
        yield (start, end)
        end = start + max_patches


@dataclass
class Batch:
    """Padded batch: patches (B, P, S) long, mask (B, P) bool (True = real patch), roles
    (B, P, S) uint8, and scored (B, P) bool: which patches' predictions count for BPB
    (all real patches after the first unless a window says otherwise)."""

    patches: torch.Tensor
    mask: torch.Tensor
    roles: torch.Tensor
    scored: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            *(
                t.to(device, non_blocking=True)
                for t in (self.patches, self.mask, self.roles, self.scored)
            )
        )

    @property
    def num_bytes(self) -> int:
        """Input bytes in this batch (real symbols other than PAD), for throughput figures."""
        return int(((self.patches != PAD) & self.mask.unsqueeze(-1)).sum())


def collate(
    streams: list[Stream],
    first_scored: list[int] | None = None,
    bucket: int = 1,
    max_patches: int | None = None,
) -> Batch:
    """Pad streams with whole PAD patches to the longest (rounded up to a multiple of
    `bucket`, at most `max_patches`: fewer distinct shapes); build masks."""
    if not streams:
        raise ValueError("collate: empty batch")
    s = streams[0].patch_size
    p = max(st.num_patches for st in streams)
    p = max(p, min(-(-p // bucket) * bucket, max_patches or p))
    b = len(streams)
    symbols = np.full((b, p * s), PAD, dtype=np.int64)
    roles = np.zeros((b, p * s), dtype=np.uint8)
    mask = np.zeros((b, p), dtype=bool)
    scored = np.zeros((b, p), dtype=bool)
    for i, st in enumerate(streams):
        n = st.num_patches
        symbols[i, : n * s] = st.symbols
        roles[i, : n * s] = st.roles
        mask[i, :n] = True
        scored[i, (first_scored[i] if first_scored else 1) : n] = True
    return Batch(
        torch.from_numpy(symbols).view(b, p, s),
        torch.from_numpy(mask),
        torch.from_numpy(roles).view(b, p, s),
        torch.from_numpy(scored),
    )
