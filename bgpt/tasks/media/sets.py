"""Set plumbing shared by the builders: deterministic splits, items, writing a set."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bgpt.errors import BGPTError

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- set plumbing


def _unit(*parts) -> float:
    """A deterministic number in [0, 1) from its arguments (SHA-256, independent of
    PYTHONHASHSEED and platform)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _test_count(n: int, fraction: float) -> int:
    """How many of n items go to test: round(n * fraction), but both splits non-empty when n >= 2."""
    k = round(n * fraction)
    return min(max(k, 1), n - 1) if n >= 2 else 0


def _stratified(
    keys: dict[str, list], fraction: float, seed: int, name: str, per_label: int | None
) -> dict[str, tuple[list, list]]:
    """Per label, order items by hash, keep the first `per_label`, send the first
    `_test_count` of those to test: (train, test) per label."""
    out = {}
    for label, items in keys.items():
        ordered = sorted(items, key=lambda k: (_unit(name, seed, label, k), str(k)))
        if per_label is not None:
            ordered = ordered[:per_label]
        k = _test_count(len(ordered), fraction)
        out[label] = (ordered[k:], ordered[:k])
    return out


@dataclass
class Item:
    """One file of a set before it is written: split, label, extension, bytes, provenance."""

    split: str
    label: str
    ext: str
    data: bytes
    meta: dict = field(default_factory=dict)


def _prepare_out(out: Path, overwrite: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    held = [d for d in (out / "train", out / "test") if d.exists() and any(d.iterdir())]
    if held and not overwrite:
        raise BGPTError(
            f"{out} already holds a set ({held[0].name}/ is not empty); pass --overwrite to replace it"
        )
    for d in held:
        shutil.rmtree(d)


def write_set(name: str, out: str | Path, items: list[Item], options: dict) -> dict:
    """Write items as out/{train,test}/LABEL_N.ext (N counts per label over train then
    test, so names are unique across the whole set) and out/manifest.json; return the
    manifest (without its per-file list)."""
    out = Path(out)
    counters: dict[str, int] = defaultdict(int)
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    files = {}
    order = sorted(range(len(items)), key=lambda i: (items[i].label, items[i].split != "train", i))
    for split in ("train", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
    for i in order:
        it = items[i]
        if "_" in it.label or "/" in it.label or not it.label:
            raise BGPTError(f"bad label {it.label!r}: labels cannot be empty or contain '_' or '/'")
        rel = f"{it.split}/{it.label}_{counters[it.label]}{it.ext}"
        counters[it.label] += 1
        (out / rel).write_bytes(it.data)
        counts[it.split][it.label] = counts[it.split].get(it.label, 0) + 1
        files[rel] = {"bytes": len(it.data), **it.meta}
    labels = sorted(set(counts["train"]) | set(counts["test"]))
    manifest = {
        "set": name,
        "options": options,
        "labels": labels,
        "counts": {s: {lab: counts[s].get(lab, 0) for lab in labels} for s in ("train", "test")},
        "files": files,
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, indent=1, sort_keys=False) + "\n", encoding="utf-8"
    )
    return {k: v for k, v in manifest.items() if k != "files"}


def _select_labels(available: list[str], wanted: list[str] | None, what: str) -> list[str]:
    if not wanted:
        return available
    missing = [w for w in wanted if w not in available]
    if missing:
        raise BGPTError(f"unknown {what} {', '.join(missing)} (available: {', '.join(available)})")
    return [w for w in available if w in wanted]
