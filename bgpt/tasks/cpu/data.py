"""The CPU-states dataset: random programs, their traces, one ``<md5>.bin`` file each.

Layout (as the reference): ``OUT/train/<md5>.bin`` and ``OUT/test/<md5>.bin``, each an
instance file (see bgpt.tasks.cpu.simulator), named by the MD5 of its program text.

What a seed means: the test set is drawn from one random stream and the train set
from another (both spawned from ``seed``), the test set first, each in chunks of
``CHUNK`` programs. A program already in either set is skipped (the name depends on the
program only, not on its random start state), so the sets hold distinct programs and
never share one; drawing goes on until the counts are met. The same arguments give the
same files, byte for byte, and a larger ``n_train`` extends a smaller one's train set.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgpt.errors import BGPTError
from bgpt.tasks.cpu.isa import (
    ACC_INDEX,
    MAX_PROGRAM_LEN,
    MEMORY_SIZE,
    MIN_INSTANCE_SIZE,
    REGS_SLICE,
    STATE_SIZE,
    count_words,
)
from bgpt.tasks.cpu.simulator import (
    InvalidInstanceError,
    program_names,
    random_programs,
    random_start,
    run_program,
    simulate_batch,
)

CHUNK = 4096  # programs drawn at a time; part of what a seed means
STALL_CHUNKS = 256  # give up after this many chunks in a row bring no new program
WRITERS = 2  # processes that simulate and write a large one-file-per-instance set
PROCESS_MIN = 4 * CHUNK  # smaller sets are written here: starting processes costs more

Chunk = tuple[np.ndarray, np.ndarray, list[str]]  # memories (k, 1024), starts (k, 11), names


@dataclass(frozen=True)
class GenerateReport:
    """What ``generate_dataset`` wrote."""

    out_dir: Path
    n_train: int
    n_test: int
    seconds: float
    packed: bool


def count_programs(min_len: int, max_len: int) -> int:
    """Number of distinct programs with lengths in [min_len, max_len] (final HLT included)."""
    v = count_words()
    return sum(v ** (n - 1) for n in range(min_len, max_len + 1))


def check_settings(n_train: int, n_test: int, min_len: int, max_len: int, seed: int) -> None:
    """Raise BGPTError for settings that cannot make a dataset."""
    for name, value in (
        ("n_train", n_train),
        ("n_test", n_test),
        ("min_len", min_len),
        ("max_len", max_len),
        ("seed", seed),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise BGPTError(f"{name} must be an integer, got {value!r}")
    if n_train < 0 or n_test < 0:
        raise BGPTError(f"instance counts must be >= 0, got train={n_train} test={n_test}")
    if not 1 <= min_len <= max_len <= MAX_PROGRAM_LEN:
        raise BGPTError(
            f"program lengths must satisfy 1 <= min-len <= max-len <= {MAX_PROGRAM_LEN}, got min-len={min_len} max-len={max_len}"
        )
    if seed < 0:
        raise BGPTError(f"seed must be >= 0, got {seed}")
    available = count_programs(min_len, max_len)
    if n_train + n_test > available:
        raise BGPTError(
            f"only {available} distinct programs have {min_len}..{max_len} instructions, "
            f"fewer than the {n_train + n_test} train + test instances asked for"
        )


def _unique_programs(
    rng: np.random.Generator, min_len: int, max_len: int, taken: set[str]
) -> Iterator[Chunk]:
    """Chunks of programs with distinct names that are not in ``taken``, with their random
    start values (drawn for the whole chunk, so a seed means the same whatever is skipped).

    The caller adds the names it uses to ``taken`` before asking for the next chunk.
    """
    stalled = 0
    while True:
        memory, lengths = random_programs(rng, CHUNK, min_len, max_len)
        start = random_start(rng, CHUNK)
        keep, names, seen = [], [], set()
        for i, name in enumerate(program_names(memory, lengths)):
            if name not in taken and name not in seen:
                seen.add(name)
                keep.append(i)
                names.append(name)
        stalled = 0 if keep else stalled + 1
        if stalled >= STALL_CHUNKS:
            raise BGPTError(
                f"no new distinct program in {STALL_CHUNKS * CHUNK} draws after {len(taken)}: "
                "ask for fewer instances or longer programs"
            )
        yield memory[keep], start[keep], names


def _write_files(folder: Path, memory: np.ndarray, start: np.ndarray, names: list[str]) -> None:
    """Simulate a chunk of programs and write one ``NAME.bin`` instance file each."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    parts = simulate_batch(memory, start).parts()
    for name, views in zip(names, parts, strict=True):
        fd = os.open(folder / f"{name}.bin", flags, 0o644)
        try:
            if hasattr(os, "writev"):
                os.writev(fd, views)
            else:
                os.write(fd, b"".join(views))
        finally:
            os.close(fd)


@contextlib.contextmanager
def _folder_writer(folder: Path, count: int) -> Iterator[Callable[[Chunk], None]]:
    """One file per instance. A large set is simulated and written by `WRITERS` worker
    processes while this one draws the next programs (file creation costs the kernel as much
    as the simulation costs numpy: docs/benchmarks.md); a small one here, at once."""
    folder.mkdir(parents=True, exist_ok=True)
    if count < PROCESS_MIN:
        yield lambda chunk: _write_files(folder, *chunk)
        return
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    pending: list[Future] = []

    def add(chunk: Chunk) -> None:
        while len(pending) >= 2 * WRITERS:  # bound the memory held by queued chunks
            pending.pop(0).result()
        pending.append(pool.submit(_write_files, folder, *chunk))

    with ProcessPoolExecutor(max_workers=WRITERS, mp_context=context) as pool:
        yield add
        for f in pending:
            f.result()


@contextlib.contextmanager
def _packed_writer(folder: Path, count: int) -> Iterator[Callable[[Chunk], None]]:
    from bgpt.data import PackWriter  # the packed-dataset format lives in the core

    def add(chunk: Chunk) -> None:
        memory, start, names = chunk
        batch = simulate_batch(memory, start)
        for i, name in enumerate(names):
            w.add(f"{name}.bin", batch.instance(i))

    with PackWriter(folder) as w:
        yield add


def _check_empty(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise BGPTError(f"{folder} already exists and is not an empty folder: choose another --out")


def generate_dataset(
    out_dir: str | os.PathLike,
    n_train: int,
    n_test: int,
    min_len: int = 1,
    max_len: int = MAX_PROGRAM_LEN,
    seed: int = 0,
    packed: bool = False,
    progress: bool = True,
) -> GenerateReport:
    """Write ``n_train`` + ``n_test`` random instances to ``out_dir/train`` and ``out_dir/test``.

    With ``packed``, each split is written through ``bgpt.data.PackWriter`` instead of
    one file per instance. Deterministic for the arguments (see the module docstring).
    """
    check_settings(n_train, n_test, min_len, max_len, seed)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BGPTError(f"{out} exists and is not a folder")
    for split in ("train", "test"):
        _check_empty(out / split)
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    streams = np.random.SeedSequence(seed).spawn(2)
    taken: set[str] = set()
    try:
        with tqdm(
            total=n_train + n_test, unit="inst", desc="cpu instances", disable=not progress
        ) as bar:
            for split, count, stream in (
                ("test", n_test, streams[0]),
                ("train", n_train, streams[1]),
            ):
                chunks = _unique_programs(np.random.default_rng(stream), min_len, max_len, taken)
                writer = _packed_writer if packed else _folder_writer
                with writer(out / split, count) as add:
                    left = count
                    while left > 0:
                        memory, start, names = next(chunks)
                        names = names[:left]
                        taken.update(names)
                        add((memory[: len(names)], start[: len(names)], names))
                        left -= len(names)
                        bar.update(len(names))
    except OSError as e:
        raise BGPTError(f"cannot write the dataset: {e}") from e
    return GenerateReport(out, n_train, n_test, time.perf_counter() - t0, packed)


def true_trace(data: bytes, start_state: bytes | None = None) -> list[bytes]:
    """The states the simulator records for a program, for checking predicted ones.

    ``true_trace(instance)`` re-runs the program in the instance's first 1024 bytes from
    its first state (only that state's ACC and registers are used; later bytes may be
    missing or wrong); ``true_trace(memory, start_state)`` does the same from parts.
    """
    data = bytes(data)
    if start_state is None:
        if len(data) < MIN_INSTANCE_SIZE:
            raise InvalidInstanceError(
                f"an instance needs at least {MIN_INSTANCE_SIZE} bytes (memory and the start state), got {len(data)}"
            )
        memory, start_state = data[:MEMORY_SIZE], data[MEMORY_SIZE:MIN_INSTANCE_SIZE]
    else:
        memory, start_state = data, bytes(start_state)
        if len(start_state) != STATE_SIZE:
            raise InvalidInstanceError(f"a state is {STATE_SIZE} bytes, got {len(start_state)}")
    return run_program(memory, start_state[ACC_INDEX], list(start_state[REGS_SLICE]))


def bench_data(n: int, max_len: int = 255) -> dict:
    """CPU-state generator instances/s and packed-set read + stream + collate bytes/s."""
    import tempfile

    import numpy as np

    from bgpt.bench import peak_rss_mb
    from bgpt.data import PackedSet, PackWriter, StreamDataset
    from bgpt.stream import collate
    from bgpt.tasks.cpu.simulator import random_programs, random_start, simulate_batch

    t = time.perf_counter()
    rng = np.random.default_rng(0)
    memory, _ = random_programs(rng, n, 1, max_len)
    batch = simulate_batch(memory, random_start(rng, n))
    gen_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        with PackWriter(tmp) as w:
            for i in range(n):
                w.add(f"{i}.bin", batch.instance(i))
        ds = StreamDataset(PackedSet(tmp), 16, 512)
        t = time.perf_counter()
        total = 0
        for k in range(0, n, 8):
            b = collate([ds.train_example(i, 0, 0).stream for i in range(k, min(n, k + 8))])
            total += b.num_bytes
        read_s = time.perf_counter() - t
    return {
        "instances_per_s": n / gen_s,
        "bytes_per_s": total / read_s,
        "peak_rss_mb": peak_rss_mb(),
        "mfu": None,
    }
