"""Writing files safely: atomic replacement, outputs that never follow a symlink, never
replace an input, and never replace an existing file unless asked (`--force`), and a lock
that keeps two writers out of one run folder. Every command writes through these.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from bgpt.errors import BGPTError


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path), then rename over `path`: readers never see a half-written file,
    and a symlink at `path` is replaced, not followed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def check_output_file(
    path: str | Path, inputs: Iterable[str | Path] = (), force: bool = False
) -> Path:
    """An output file may be written at `path`: not a symlink, not one of the inputs, not an
    existing file unless `force`, and its folder not a file. Raises BGPTError otherwise."""
    path = Path(path)
    if path.is_symlink():
        raise BGPTError(f"{path}: is a symbolic link; bgpt does not write through links")
    for i in inputs:
        if _same(path, Path(i)):
            raise BGPTError(f"{path}: is an input of this command; give another output")
    if path.exists():
        if path.is_dir():
            raise BGPTError(f"{path}: is a folder")
        if not force:
            raise BGPTError(f"{path}: exists; pass --force to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise BGPTError(f"{path.parent}: is a file, not a folder")
    return path


def check_output_folder(path: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """An output folder may be made or written at `path`: not a file or a symlink, and neither
    an input folder nor inside one (a run, a packed set or converted files must never mix with
    the data they come from)."""
    path = Path(path)
    if path.is_symlink():
        raise BGPTError(f"{path}: is a symbolic link; bgpt does not write through links")
    if path.exists() and not path.is_dir():
        raise BGPTError(f"{path}: is a file, not a folder")
    for i in inputs:
        i = Path(i)
        if i.is_dir() and _inside(path, i):
            raise BGPTError(
                f"{path}: is inside the input folder {i}; give an output folder outside the data"
            )
        if i.is_file() and _same(path, i):
            raise BGPTError(f"{path}: is an input of this command")
    return path


def create_output(path: str | Path, force: bool = False):
    """Open a new output file for writing in binary mode, never through a symlink: with `force`
    an existing file is truncated, without it an existing file is an error."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o666)
    except FileExistsError:
        raise BGPTError(f"{path}: exists; pass --force to replace it") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BGPTError(
                f"{path}: is a symbolic link; bgpt does not write through links"
            ) from None
        raise
    return os.fdopen(fd, "wb")


class FolderLock:
    """An exclusive lock on a folder (`.lock` inside it, holding the writer's PID), held while a
    process writes there. A second writer is refused with the holder's PID. The kernel drops
    the lock when its process dies (flock), so a lock left by a killed run is simply taken."""

    NAME = ".lock"

    def __init__(self, folder: str | Path, what: str = "folder"):
        self.path = Path(folder) / self.NAME
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BGPTError(
                f"{self.path.parent}: this {self.what} is being written by another process (PID {holder}); "
                "wait for it or use another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (harmless, reused)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
