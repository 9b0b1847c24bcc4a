"""CPU-states dataset generation speed: straightforward Python vs the vectorised path.

    python benchmarks/cpu_sim.py --n 20000

Rows (instances per second, programs of 1..255 instructions as in the paper):
  python, files      a per-instruction Python simulator, one file written per instance
                     (a small copy below: benchmarks do not import the tests); the baseline
  python, append     the same, appending every state to its file as it is recorded, as the
                     reference script does (for context; --n-python / 5 instances)
  fast, files        bgpt.tasks.cpu.data.generate_dataset: numpy programs, lock-step
                     simulation, MD5 names, dedupe, one file per instance
  fast, no files     the same without writing
  fast, packed       generate_dataset(packed=True), shards through bgpt.data.PackWriter
  file writes only   creating the same number of ~3 KB files with nothing else: the
                     ceiling of any one-file-per-instance generator on this disk

Give --dir on the disk the dataset will live on: file creation speed differs a lot
between folders and over time (page-cache writeback of ~3 KB per instance).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bgpt.tasks.cpu import data

# ----------------------------------------------------------------------------- straightforward baseline

REGS = "ABCDEFGHIJ"
NAMES = (
    "HLT CLR INC DEC SHL SHR ROL ROR NOT PUSH POP LOADI SWAP ADD SUB MUL DIV AND OR XOR MOV".split()
)
VARIANTS = {n: (0, 1) for n in NAMES[1:9]} | {
    "PUSH": (1,),
    "POP": (1,),
    "LOADI": (1,),
    "SWAP": (1, 2),
    "MOV": (2,),
}
VARIANTS |= {n: (1, 2, 3) for n in ("ADD", "SUB", "MUL", "DIV", "AND", "OR", "XOR")}


def _random_program(rnd: random.Random, n: int) -> list[str]:
    program = []
    for _ in range(n - 1):
        name = rnd.choice(list(VARIANTS))
        if name == "LOADI":
            program.append(f"LOADI {rnd.randint(0, 255)}")
        else:
            program.append(
                " ".join([name] + [rnd.choice(REGS) for _ in range(rnd.choice(VARIANTS[name]))])
            )
    return program + ["HLT"]


def _assemble(program: list[str]) -> bytes:
    memory = bytearray(1024)
    for i, line in enumerate(program):
        name, *args = line.split()
        operands = [int(a) if name == "LOADI" else REGS.index(a) + 1 for a in args]
        memory[4 * i : 4 * i + 4] = bytes([NAMES.index(name), *operands, 0, 0, 0][:4])
    return bytes(memory)


def _simulate(memory: bytes, acc: int, regs: list[int]) -> list[bytes]:
    r = [acc, *regs]
    pc = 0
    states = [bytes([0, acc, 0, 0, 0, 0, *regs])]
    while True:
        ir = memory[4 * pc : 4 * pc + 4]
        pc = min(pc + 1, 255)
        states.append(bytes([pc, r[0], *ir, *r[1:]]))
        op, a1, a2, a3 = ir
        if op == 0:
            return states
        if op == 1:
            r[a1] = 0
        elif op == 2:
            r[a1] = min(r[a1] + 1, 255)
        elif op == 3:
            r[a1] = max(r[a1] - 1, 0)
        elif op == 4:
            r[a1] = (r[a1] << 1) & 255
        elif op == 5:
            r[a1] >>= 1
        elif op == 6:
            r[a1] = ((r[a1] << 1) | (r[a1] >> 7)) & 255
        elif op == 7:
            r[a1] = ((r[a1] >> 1) | (r[a1] << 7)) & 255
        elif op == 8:
            r[a1] = ~r[a1] & 255
        elif op == 9:
            r[0] = r[a1]
        elif op == 10:
            r[a1] = r[0]
        elif op == 11:
            r[0] = a1
        elif op == 12:
            x, y = (0, a1) if a2 == 0 else (a1, a2)
            r[x], r[y] = r[y], r[x]
        elif op == 20:
            r[a1] = r[a2]
        else:
            x, y, d = (0, a1, 0) if a2 == 0 else (a1, a2, a1) if a3 == 0 else (a1, a2, a3)
            a, b = r[x], r[y]
            if op == 13:
                r[d] = min(a + b, 255)
            elif op == 14:
                r[d] = max(a - b, 0)
            elif op == 15:
                r[d] = min(a * b, 255)
            elif op == 16:
                r[d] = 255 if b == 0 else a // b
            elif op == 17:
                r[d] = a & b
            elif op == 18:
                r[d] = a | b
            else:
                r[d] = a ^ b


def python_generate(out: Path, n: int, seed: int = 0, append_states: bool = False) -> None:
    """The straightforward generator; ``append_states`` appends each state to the file
    as it is recorded (one open per state), the I/O pattern of the reference script."""
    out.mkdir(parents=True)
    rnd = random.Random(seed)
    for _ in range(n):
        acc, regs = rnd.randint(0, 255), [rnd.randint(0, 255) for _ in range(10)]
        program = _random_program(rnd, rnd.randint(1, 255))
        memory = _assemble(program)
        states = _simulate(memory, acc, regs)
        path = out / (hashlib.md5("".join(program).encode()).hexdigest() + ".bin")
        if append_states:
            path.write_bytes(memory)
            for state in states:
                with open(path, "ab") as f:
                    f.write(state)
        else:
            with open(path, "wb") as f:
                f.write(memory + b"".join(states))


# ----------------------------------------------------------------------------- fast paths


def fast_no_files(n: int, seed: int = 0) -> None:
    """Draw, name, dedupe and simulate as generate_dataset does, in this one process."""
    taken: set[str] = set()
    chunks = data._unique_programs(np.random.default_rng(seed), 1, 255, taken)
    left = n
    while left > 0:
        memory, start, names = next(chunks)
        names = names[:left]
        taken.update(names)
        data.simulate_batch(memory[: len(names)], start[: len(names)]).parts()
        left -= len(names)


def files_only(out: Path, n: int) -> None:
    out.mkdir(parents=True)
    blob = bytes(1024 + 16 * 129)  # an average instance
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for i in range(n):
        fd = os.open(out / f"{i:032x}.bin", flags, 0o644)
        os.write(fd, blob)
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=20000, help="instances per row (default %(default)s)")
    ap.add_argument(
        "--n-python",
        type=int,
        default=None,
        help="instances for the slow Python row (default: --n)",
    )
    ap.add_argument("--dir", default=None, help="scratch folder (default: the system temp folder)")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bgpt-cpu-bench-", dir=args.dir))
    n_py = args.n_python or args.n
    rows = []

    def timed(label: str, n: int, fn) -> None:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        rows.append((label, n, dt))
        print(f"  {label:18s} {n:8d} inst  {dt:8.2f} s  {n / dt:10.0f} inst/s", flush=True)

    try:
        data.generate_dataset(scratch / "warm", 10, 0, progress=False)  # build the tables once
        timed("python, files", n_py, lambda: python_generate(scratch / "py", n_py))
        n_ref = max(1, n_py // 5)
        timed(
            "python, append",
            n_ref,
            lambda: python_generate(scratch / "ref", n_ref, append_states=True),
        )
        timed(
            "fast, files",
            args.n,
            lambda: data.generate_dataset(scratch / "fast", args.n, 0, progress=False),
        )
        timed("fast, no files", args.n, lambda: fast_no_files(args.n))
        try:
            import bgpt.data  # noqa: F401  (the packed format of the core)

            timed(
                "fast, packed",
                args.n,
                lambda: data.generate_dataset(
                    scratch / "packed", args.n, 0, packed=True, progress=False
                ),
            )
        except ImportError:
            pass
        timed("file writes only", args.n, lambda: files_only(scratch / "files", args.n))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    base = rows[0][1] / rows[0][2]
    print(
        "\n| method | instances | seconds | instances/s | vs python, files |\n|---|---:|---:|---:|---:|"
    )
    for label, n, dt in rows:
        print(f"| {label} | {n} | {dt:.2f} | {n / dt:,.0f} | {n / dt / base:.1f}x |")


if __name__ == "__main__":
    main()
