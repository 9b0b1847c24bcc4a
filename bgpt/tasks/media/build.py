"""`build_set(name, out, ...)`: one of the labelled sets into out/train, out/test and
out/manifest.json, deterministic for a given seed and machine."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from bgpt.errors import BGPTError
from bgpt.tasks.media.digits import build_digits
from bgpt.tasks.media.filetypes import build_filetypes
from bgpt.tasks.media.sets import Item, _prepare_out, write_set
from bgpt.tasks.media.speech import build_speech
from bgpt.tasks.media.text import build_text

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- build


DEFAULT_PER_LABEL: dict[str, int | None] = {
    "speech": 100,
    "digits": None,
    "text": None,
    "filetypes": 100,
}
BUILDERS: dict[str, Callable[..., list[Item]]] = {
    "speech": build_speech,
    "digits": build_digits,
    "text": build_text,
    "filetypes": build_filetypes,
}
SETS = tuple(BUILDERS)


def build_set(name: str, out: str | Path, *, test_fraction: float = 0.2, per_label: int | None = None,
              labels: list[str] | None = None, seed: int = 0, overwrite: bool = False,
              **options) -> dict:  # fmt: skip
    """Build the labelled set `name` into out/train and out/test (+ out/manifest.json);
    return the manifest summary (options, labels, counts per split and label)."""
    if name not in BUILDERS:
        raise BGPTError(f"unknown set {name!r} (choose from {', '.join(SETS)})")
    if not 0.0 < test_fraction < 1.0:
        raise BGPTError("--test-fraction must be between 0 and 1")
    if per_label is not None and per_label < 1:
        raise BGPTError("--per-label must be >= 1")
    if per_label is None:
        per_label = DEFAULT_PER_LABEL[name]
    out = Path(out)
    _prepare_out(out, overwrite)
    items = BUILDERS[name](
        out,
        test_fraction=test_fraction,
        per_label=per_label,
        labels=labels,
        seed=seed,
        **options,
    )
    if not items:
        raise BGPTError(f"the {name} set came out empty")
    record = {"test_fraction": test_fraction, "per_label": per_label, "labels": labels, "seed": seed,
              **{k: v for k, v in options.items() if k != "jobs"},
              "python": sys.version.split()[0]}  # fmt: skip
    if "roots" in record and record["roots"] is not None:
        record["roots"] = [str(r) for r in record["roots"]]
    return write_set(name, out, items, record)


def format_counts(manifest: dict) -> str:
    """A table of files per label and split."""
    c = manifest["counts"]
    width = max(8, *(len(lab) for lab in manifest["labels"]))
    lines = [f"{'label':<{width}} {'train':>7} {'test':>7}"]
    for lab in manifest["labels"]:
        lines.append(f"{lab:<{width}} {c['train'][lab]:>7} {c['test'][lab]:>7}")
    tr, te = sum(c["train"].values()), sum(c["test"].values())
    lines.append(f"{'total':<{width}} {tr:>7} {te:>7}")
    return "\n".join(lines)
