"""The `filetypes` set: real files from this machine cut to the model's context, label =
type, one source package never split across train and test."""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import sysconfig
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from bgpt.errors import BGPTError
from bgpt.tasks.media.sets import Item, _select_labels, _test_count, _unit

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- file types

# Filetypes are cut to 510 patches of 16 bytes: with the header patch and the end patch
# a file is exactly the paper's 512-patch (8 KiB) context, so nothing is cropped.
DEFAULT_MAX_BYTES = 8192 - 2 * 16
FT_MIN_BYTES = 64


def _text_ok(head: bytes) -> bool:
    """UTF-8 without NUL bytes (a multi-byte character cut at the end is allowed)."""
    if b"\x00" in head:
        return False
    for cut in range(4):
        try:
            head[: len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def _py_ok(head: bytes, path: Path) -> bool:
    if not _text_ok(head) or path.stat().st_size > 1 << 20:
        return False
    try:
        ast.parse(path.read_bytes())
        return True
    except (SyntaxError, ValueError, OSError, RecursionError, MemoryError):
        return False


def _json_ok(head: bytes, path: Path) -> bool:
    if not _text_ok(head) or path.stat().st_size > 4 << 20:
        return False
    try:
        json.loads(path.read_bytes())
        return True
    except (ValueError, OSError, RecursionError):
        return False


def _starts(*magics: bytes) -> Callable[[bytes, Path], bool]:
    return lambda head, path: head.startswith(magics)


def _text_with(pattern: str) -> Callable[[bytes, Path], bool]:
    rx = re.compile(pattern.encode(), re.I | re.M)
    return lambda head, path: _text_ok(head) and rx.search(head) is not None


def _text(head: bytes, path: Path) -> bool:
    return _text_ok(head)


def _shell_ok(head: bytes, path: Path) -> bool:
    if not _text_ok(head):
        return False
    return (
        not head.startswith(b"#!")
        or re.match(rb"#![ \t]*\S*/(?:env[ \t]+)?(?:ba|da|z)?sh\b", head) is not None
    )


# label -> (extensions, ground-truth check on the file's first bytes (the path for a full
# parse)). A file is taken only when its extension says the type AND its content agrees.
FILETYPES: dict[str, tuple[tuple[str, ...], Callable[[bytes, Path], bool]]] = {
    "elf": ((".so", ".o"), _starts(b"\x7fELF")),  # + shared objects .so.N and programs in bin/
    "python": ((".py",), _py_ok),
    "pyc": ((".pyc",), lambda h, p: len(h) >= 16 and h[2:4] == b"\r\n"),
    "c": (
        (".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh"),
        _text,
    ),  # C and C++, sources and headers
    "html": ((".html", ".htm"), _text_with(r"<(?:!doctype\s+html|html|head|body)\b")),
    "json": ((".json",), _json_ok),
    "xml": ((".xml",), _text_with(r"\A(?:\xef\xbb\xbf)?\s*<[?!a-z]")),
    "svg": ((".svg",), _text_with(r"<svg\b")),
    "png": ((".png",), _starts(b"\x89PNG\r\n\x1a\n")),
    "gif": ((".gif",), _starts(b"GIF87a", b"GIF89a")),
    "jpeg": ((".jpg", ".jpeg"), _starts(b"\xff\xd8\xff")),
    "gzip": ((".gz", ".tgz"), _starts(b"\x1f\x8b\x08")),
    "zip": ((".zip", ".whl", ".jar"), _starts(b"PK\x03\x04")),
    "pdf": ((".pdf",), _starts(b"%PDF-")),
    "postscript": ((".ps", ".eps"), _starts(b"%!PS")),
    "ttf": ((".ttf",), _starts(b"\x00\x01\x00\x00", b"true")),
    "mo": ((".mo",), _starts(b"\xde\x12\x04\x95", b"\x95\x04\x12\xde")),  # gettext catalogues
    "shell": ((".sh", ".bash"), _shell_ok),  # + '#!/bin/sh' programs in bin/
    "markdown": ((".md",), _text),
    "rst": ((".rst",), _text),
    "javascript": ((".js", ".mjs"), _text),
    "css": ((".css",), _text),
    "perl": ((".pl", ".pm"), _text),
    "yaml": ((".yaml", ".yml"), _text_with(r"^[\w\"'-][^\n:]*:(?:\s|$)|^---")),
    "cmake": ((".cmake",), _text),
}
FT_BY_EXT = {ext: label for label, (exts, _) in FILETYPES.items() for ext in exts}
_SO = re.compile(r"\.so(?:\.\d+)+$")
_BIN_DIRS = {"bin", "sbin", "libexec"}


def default_roots() -> list[Path]:
    """/usr, the running Python's standard library and headers, and its site-packages.
    /etc and home folders are left out on purpose (configuration can hold secrets)."""
    import site

    paths = sysconfig.get_paths()
    cands = [
        "/usr",
        paths["stdlib"],
        paths["platstdlib"],
        paths["include"],
        paths["purelib"],
        paths["platlib"],
    ]
    try:
        cands += site.getsitepackages()
    except AttributeError:  # old virtualenv's site module
        pass
    roots: list[Path] = []
    for c in sorted({os.path.realpath(c) for c in cands if c and os.path.isdir(c)}):
        if not any(c == str(r) or c.startswith(str(r) + os.sep) for r in roots):
            roots.append(Path(c))
    return roots


class SourceGroups:
    """The source package a file comes from, so that no package is split across train
    and test:
    - Python trees: 'py:<distribution>' for site-/dist-packages (the distribution from
      RECORD or top_level.txt, else the top-level name), 'py-stdlib:<top-level module>'
      for the standard library (any copy of it: Debian's and the running Python's),
      'py-stdlib:include' for its C headers;
    - the Debian source package that owns the file ('deb:<source>', from /var/lib/dpkg),
      or, for a file dpkg does not list (generated .pyc, caches), the owner of its nearest
      folder that only one source package lists (at least three levels deep, e.g.
      /usr/lib/google-cloud-sdk);
    - 'npm:<package>' under node_modules;
    - otherwise 'dir:' + the first three folders of its path.
    """

    _PY = re.compile(
        r"/lib/python\d(?:\.\d+)?/(?:(site-packages|dist-packages)/)?([^/]+)(?:/([^/]+))?"
    )
    _PY_INCLUDE = re.compile(r"/include/python\d\.\d+")
    _NPM = re.compile(r"/node_modules/((?:@[^/]+/)?[^/]+)")

    def __init__(self, dpkg_root: str = "/var/lib/dpkg"):
        self.owner = self._dpkg_owners(Path(dpkg_root))
        self._dists: dict[str, dict[str, str]] = {}

    @staticmethod
    def _dpkg_owners(root: Path) -> dict[str, str]:
        """Listed path -> Debian source package ('' when several source packages list it)."""
        source: dict[str, str] = {}
        try:
            status = (root / "status").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return {}
        for block in status.split("\n\n"):
            fields = dict(re.findall(r"^(Package|Source): *(\S+)", block, re.M))
            if "Package" in fields:
                source[fields["Package"]] = fields.get("Source", fields["Package"])
        owner: dict[str, str] = {}
        info = root / "info"
        for lst in sorted(info.glob("*.list")) if info.is_dir() else []:
            pkg = lst.stem.split(":")[0]
            src = source.get(pkg, pkg)
            try:
                for line in lst.read_text(encoding="utf-8", errors="replace").splitlines():
                    owner[line] = src if owner.get(line, src) == src else ""
            except OSError:
                continue
        return owner

    def _owned(self, path: str) -> str | None:
        for p in (path, path[4:]) if path.startswith("/usr/") else (path,):
            if p in self.owner:
                return self.owner[p]
        return None

    def _dist_map(self, site_dir: str) -> dict[str, str]:
        """top-level name -> distribution name, from *.dist-info/RECORD and *.egg-info/top_level.txt."""
        if site_dir in self._dists:
            return self._dists[site_dir]
        m: dict[str, str] = {}
        try:
            entries = sorted(os.listdir(site_dir))
        except OSError:
            entries = []
        for e in entries:
            if not e.endswith((".dist-info", ".egg-info")):
                continue
            dist = _norm(e.rsplit(".", 1)[0].split("-")[0])
            base = Path(site_dir) / e
            try:
                if (base / "RECORD").is_file():
                    for line in (
                        (base / "RECORD").read_text(encoding="utf-8", errors="replace").splitlines()
                    ):
                        top = line.split(",", 1)[0].split("/", 1)[0]
                        if (
                            top
                            and not top.endswith((".dist-info", ".egg-info", ".data"))
                            and top != ".."
                        ):
                            m.setdefault(_norm(_module_name(top)), dist)
                elif (base / "top_level.txt").is_file():
                    for top in (
                        (base / "top_level.txt")
                        .read_text(encoding="utf-8", errors="replace")
                        .split()
                    ):
                        m.setdefault(_norm(top), dist)
            except OSError:
                continue
        self._dists[site_dir] = m
        return m

    def of(self, path: str) -> str:
        m = self._PY.search(path)
        if m:
            kind, top, sub = m.groups()
            if kind:  # site-packages / dist-packages
                site_dir = path[: m.end(1)]
                if top.endswith((".dist-info", ".egg-info")):
                    return "py:" + _norm(top.rsplit(".", 1)[0].split("-")[0])
                name = _norm(_module_name(top))
                return "py:" + self._dist_map(site_dir).get(name, name)
            if top == "__pycache__" and sub:
                top = sub
            return "py-stdlib:" + _module_name(top)
        if self._PY_INCLUDE.search(path):
            return "py-stdlib:include"
        src = self._owned(path)
        if src:
            return "deb:" + src
        if src is None:  # not listed: the nearest folder one source package owns
            parent = os.path.dirname(path)
            while len(Path(parent).parts) >= 4:  # '/', 'usr', 'lib', 'x'
                src = self._owned(parent)
                if src is not None:
                    if src:
                        return "deb:" + src
                    break
                parent = os.path.dirname(parent)
        m = self._NPM.search(path)
        if m:
            return "npm:" + m.group(1)
        return "dir:" + "/".join(Path(path).parts[1:4])


def _module_name(name: str) -> str:
    """'six.py' -> 'six', '_ssl.cpython-311-x86_64-linux-gnu.so' -> '_ssl', 'email' -> 'email'."""
    return name.split(".", 1)[0] if "." in name else name


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _candidate_label(path: str, name: str, parent: str) -> str | None:
    """The type a file claims by its name (None: not a candidate). Programs without an
    extension in a bin/ folder are looked at by their first bytes (ELF or shell script)."""
    dot = name.rfind(".")
    if dot > 0:
        label = FT_BY_EXT.get(name[dot:].lower())
        if label:
            return label
        return "elf" if _SO.search(name) else None
    if dot < 0 and parent in _BIN_DIRS:
        try:
            with open(path, "rb") as f:
                head = f.read(64)
        except OSError:
            return None
        if head.startswith(b"\x7fELF"):
            return "elf"
        if head.startswith(b"#!") and _shell_ok(head, Path(path)):
            return "shell"
    return None


def scan_filetypes(
    roots: Iterable[str | Path], exclude: Iterable[str | Path] = ()
) -> dict[str, dict[str, list[str]]]:
    """Candidate files under roots by name: label -> group -> sorted paths. Symbolic links
    are skipped; nothing is opened or stat'ed except extension-less programs in bin/
    (sizes and contents are checked when files are taken)."""
    groups = SourceGroups()
    skip = {os.path.realpath(e) for e in exclude}
    found: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    stack = [str(r) for r in reversed(list(roots))]
    while stack:
        folder = stack.pop()
        if folder in skip:
            continue
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        parent = os.path.basename(folder)
        subdirs = []
        for e in entries:
            try:
                if e.is_symlink():
                    continue
                if e.is_dir(follow_symlinks=False):
                    subdirs.append(e.path)
                    continue
                if not e.is_file(follow_symlinks=False):
                    continue
            except OSError:
                continue
            label = _candidate_label(e.path, e.name, parent)
            if label:
                found[label][groups.of(e.path)].append(e.path)
        stack.extend(reversed(subdirs))
    return {lab: {g: sorted(p) for g, p in gs.items()} for lab, gs in found.items()}


FT_MARGIN = 1.5  # candidates wanted per file to take: some fail the content check


def _assign_groups(
    found: dict[str, dict[str, list[str]]],
    quotas: tuple[int, int],
    fraction: float,
    seed: int,
) -> tuple[set[str], list[str]]:
    """Which source packages go to test. All start in train; in hash order (seeded, so the
    choice is random but repeatable) a package moves to test when one of its types still
    lacks test candidates (FT_MARGIN x its test quota) and moving it leaves every one of
    its types enough train candidates (FT_MARGIN x the train quota, or half of a rare
    type's candidates, so a rare type's test side can reach half its files). Types found
    in one package only, or
    that end with an empty side, are left out. Returns (test packages, kept types)."""
    q_train, q_test = quotas
    total = {lab: sum(map(len, gs.values())) for lab, gs in found.items()}
    labels = []
    for lab in sorted(found):
        if len(found[lab]) >= 2:
            labels.append(lab)
        else:
            logger.warning(
                f"type {lab} left out: found in one source package only ({next(iter(found[lab]))})"
            )
    in_group: dict[str, dict[str, int]] = defaultdict(dict)
    for lab in labels:
        for g, paths in found[lab].items():
            in_group[g][lab] = len(paths)
    train = dict(total)
    test = dict.fromkeys(total, 0)
    keep = {lab: min(FT_MARGIN * q_train, 0.5 * total[lab]) for lab in labels}
    test_groups: set[str] = set()
    for g in sorted(in_group, key=lambda g: (_unit("filetypes-group", seed, g), g)):
        counts = in_group[g]
        wanted = any(test[lab] < FT_MARGIN * q_test for lab in counts)
        if wanted and all(train[lab] - c >= keep[lab] for lab, c in counts.items()):
            test_groups.add(g)
            for lab, c in counts.items():
                train[lab] -= c
                test[lab] += c
    kept = []
    for lab in labels:
        if train[lab] and test[lab]:
            kept.append(lab)
        else:
            logger.warning(f"type {lab} left out: its source packages cannot be put on both sides")
    return test_groups, kept


def build_filetypes(
    out,
    test_fraction=0.2,
    per_label=100,
    labels=None,
    seed=0,
    max_bytes=DEFAULT_MAX_BYTES,
    roots=None,
    **_,
) -> list[Item]:
    """Real files of this machine, cut to `max_bytes`, labelled by type.

    Ground truth: the extension AND a content check (magic bytes; UTF-8 text; a full
    parse for Python and JSON). Source packages (SourceGroups) are split by
    `_assign_groups`, so no package has files on both sides; within a side files are taken
    round-robin over packages (hash order), so no package dominates a type. A test file is
    skipped when its cut bytes or its (type, file name) equal a train file's (vendored
    copies such as doctools.js or six.py across packages), and any file whose cut bytes
    repeat an earlier one is skipped. Files get the neutral extension .bin: the header
    patch must not give the type away."""
    if max_bytes < FT_MIN_BYTES:
        raise BGPTError(f"--max-bytes must be at least {FT_MIN_BYTES}")
    n = per_label or 100
    if n < 2:
        raise BGPTError("--per-label must be at least 2 (one train and one test file)")
    found = scan_filetypes([Path(r) for r in roots] if roots else default_roots(), exclude=[out])
    if labels:
        _select_labels(sorted(FILETYPES), labels, "file types")
        found = {lab: gs for lab, gs in found.items() if lab in labels}
    n_test = _test_count(n, test_fraction)
    test_groups, kept = _assign_groups(found, (n - n_test, n_test), test_fraction, seed)
    seen: set[bytes] = set()
    train_names: set[tuple[str, str]] = set()
    items: list[Item] = []
    for split, quota in (
        ("train", n - n_test),
        ("test", n_test),
    ):  # train first: test never repeats it
        for lab in kept:
            check = FILETYPES[lab][1]
            groups = sorted((g for g in found[lab] if (g in test_groups) == (split == "test")),
                            key=lambda g: (_unit("filetypes-group", seed, g), g))  # fmt: skip
            queues = [
                sorted(found[lab][g], key=lambda p: (_unit("filetypes-file", seed, p), p))
                for g in groups
            ]
            taken, pos = 0, [0] * len(queues)
            while taken < quota and any(pos[i] < len(q) for i, q in enumerate(queues)):
                for i, q in enumerate(queues):  # one file per package per round
                    while taken < quota and pos[i] < len(q):
                        path = q[pos[i]]
                        pos[i] += 1
                        if split == "test" and (lab, os.path.basename(path)) in train_names:
                            continue
                        try:
                            with open(path, "rb") as f:
                                head = f.read(max_bytes)
                            ok = len(head) >= FT_MIN_BYTES and check(head, Path(path))
                        except OSError:
                            ok = False
                        digest = hashlib.sha256(head).digest() if ok else b""
                        if ok and digest not in seen:
                            seen.add(digest)
                            if split == "train":
                                train_names.add((lab, os.path.basename(path)))
                            meta = {
                                "source": path,
                                "group": groups[i],
                                "size": os.path.getsize(path),
                            }
                            items.append(Item(split, lab, ".bin", head, meta))
                            taken += 1
                            break
            if taken < quota:
                logger.warning(f"type {lab}: {taken} of {quota} {split} files found")
    return items
