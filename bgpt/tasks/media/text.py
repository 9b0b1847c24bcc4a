"""The `text` set: docstrings of the Python standard library labelled by their package."""

from __future__ import annotations

import ast
import functools
import logging
import os
import sysconfig
from collections import defaultdict
from pathlib import Path

from bgpt.tasks.media.sets import Item, _select_labels, _stratified

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- text

TEXT_MIN_CHARS = 60  # shorter docstrings ("Return self.") carry no topic
TEXT_MIN_PER_LABEL = 60  # a package becomes a class with at least this many docstrings
TEXT_SKIP_PACKAGES = {"test", "encodings", "turtledemo", "site-packages", "dist-packages",
                      "lib-dynload", "__pycache__", "pydoc_data"}  # fmt: skip
TEXT_SKIP_DIRS = {"test", "tests", "idle_test", "__pycache__"}


def stdlib_docstrings(stdlib: str | Path | None = None) -> dict[str, list[tuple[str, str]]]:
    """Docstrings (module, class, function) of the standard library's packages, test
    suites left out, exact duplicates and ones under TEXT_MIN_CHARS dropped:
    package -> [(where, text)] in file order. Parsed once per process."""
    return _stdlib_docstrings(str(stdlib or sysconfig.get_paths()["stdlib"]))


@functools.cache
def _stdlib_docstrings(stdlib: str) -> dict[str, list[tuple[str, str]]]:
    root = Path(stdlib)
    seen: set[str] = set()
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for top in sorted(os.listdir(root)):
        pkg = root / top
        if (
            top in TEXT_SKIP_PACKAGES
            or top.startswith("config-")
            or not (pkg / "__init__.py").is_file()
        ):
            continue
        for dirpath, dirnames, filenames in os.walk(pkg):
            dirnames[:] = sorted(d for d in dirnames if d not in TEXT_SKIP_DIRS)
            for name in sorted(filenames):
                if not name.endswith(".py"):
                    continue
                path = Path(dirpath) / name
                try:
                    tree = ast.parse(path.read_bytes())
                except (SyntaxError, ValueError, OSError):
                    continue
                rel = path.relative_to(root).as_posix()
                for node in ast.walk(tree):
                    if isinstance(
                        node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
                    ):
                        doc = ast.get_docstring(node)
                        if doc and len(doc) >= TEXT_MIN_CHARS and doc not in seen:
                            seen.add(doc)
                            out[top].append((f"{rel}:{getattr(node, 'lineno', 0)}", doc))
    return dict(out)


def build_text(out, test_fraction=0.2, per_label=None, labels=None, seed=0, **_) -> list[Item]:
    """Docstrings of the running Python's standard library labelled by package (asyncio,
    email, tkinter, ...): English prose with a natural topic label, like AG News.
    Packages with fewer than TEXT_MIN_PER_LABEL docstrings are left out."""
    docs = stdlib_docstrings()
    available = sorted(p for p, v in docs.items() if len(v) >= TEXT_MIN_PER_LABEL and "_" not in p)
    chosen = _select_labels(available, labels, "packages")
    split = _stratified(
        {p: [w for w, _ in docs[p]] for p in chosen}, test_fraction, seed, "text", per_label
    )
    text = {(p, w): t for p in chosen for w, t in docs[p]}
    items = []
    for p in chosen:
        for part, keys in zip(("train", "test"), split[p], strict=True):
            for w in sorted(keys):
                items.append(
                    Item(part, p, ".txt", (text[p, w] + "\n").encode("utf-8"), {"source": w})
                )
    return items
