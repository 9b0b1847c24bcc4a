"""Simulators of the toy CPU: a clear one per program and a vectorised one per batch.

Instance file layout (the one definition; every ``.bin`` of the CPU task has it)::

    bytes 0 .. 1023    memory: the program, instruction i at 4i .. 4i+3, the rest 0
    then k >= 1 states of 16 bytes: PC | ACC | IR[4] | registers A..J
    (a complete run of an n-instruction program has k = n + 1)

Cycle (SPEC §3): the first state is the start state (PC 0, IR 0 0 0 0, given ACC and
registers). Then repeat: IR = memory[4 PC .. 4 PC + 3]; PC = min(PC + 1, 255); record
the state; execute IR; stop after recording a HLT. So state k >= 1 holds instruction
k-1 in its IR and the registers after instructions 0 .. k-2, and a program of n
instructions (the last one HLT) yields n + 1 states.

Programs are straight-line code, so a program that has no HLT in its 256 memory words
would fetch word 255 forever: both simulators refuse it (``NoHaltError``), as they
refuse words that are not valid instructions (``InvalidInstructionError``).

``run_program`` is the readable definition; ``simulate_batch`` steps many programs in
lock-step with numpy and produces the same bytes (tests/test_cpu_simulator.py checks
both against an independent if/elif simulator).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bgpt.tasks.cpu.isa import (
    ACC_INDEX,
    HLT,
    IR_SLICE,
    LOADI,
    MAX_PC,
    MAX_PROGRAM_LEN,
    MEMORY_SIZE,
    MIN_INSTANCE_SIZE,
    NUM_REGISTERS,
    NUM_WORDS,
    OPS,
    PC_INDEX,
    REGS_SLICE,
    START_IR,
    STATE_SIZE,
    WORD_SIZE,
    CPUError,
    InvalidInstructionError,
    Op,
    all_words,
    decode,
    format_instruction,
)

NUM_SLOTS = 1 + NUM_REGISTERS  # ACC and A..J; slot index == operand byte (0 = ACC)


class NoHaltError(CPUError):
    """A program with no HLT: it would re-execute memory word 255 forever."""


class InvalidInstanceError(CPUError):
    """Bytes that do not have the instance layout (1024 bytes of memory + 16-byte states)."""


# ----------------------------------------------------------------------------- instance files


def check_instance(data: bytes, what: str = "data") -> None:
    """Raise InvalidInstanceError unless ``data`` is memory followed by whole 16-byte states."""
    n = len(data)
    if n < MIN_INSTANCE_SIZE or (n - MEMORY_SIZE) % STATE_SIZE:
        raise InvalidInstanceError(
            f"{what} is not a CPU instance: {n} bytes; expected {MEMORY_SIZE} bytes of memory "
            f"followed by whole {STATE_SIZE}-byte states ({MEMORY_SIZE} + {STATE_SIZE}k bytes, k >= 1)"
        )


def split_instance(data: bytes, what: str = "data") -> tuple[bytes, list[bytes]]:
    """(memory, states) of an instance; InvalidInstanceError if the layout is wrong."""
    check_instance(data, what)
    data = bytes(data)
    states = [data[i : i + STATE_SIZE] for i in range(MEMORY_SIZE, len(data), STATE_SIZE)]
    return data[:MEMORY_SIZE], states


def make_instance(memory: bytes, states: Iterable[bytes]) -> bytes:
    """The bytes of an instance file: memory then the states."""
    return bytes(memory) + b"".join(states)


def make_state(pc: int, acc: int, ir: bytes, regs: Sequence[int]) -> bytes:
    """One 16-byte state: PC | ACC | IR[4] | A..J."""
    state = bytearray(STATE_SIZE)
    state[PC_INDEX], state[ACC_INDEX], state[IR_SLICE], state[REGS_SLICE] = pc, acc, ir, bytes(regs)
    return bytes(state)


# ----------------------------------------------------------------------------- program text


def program_lines(memory: bytes) -> list[str]:
    """Assembly lines of the program in ``memory``, up to and including its first HLT."""
    lines = []
    for pc in range(NUM_WORDS):
        word = memory[WORD_SIZE * pc : WORD_SIZE * (pc + 1)]
        try:
            lines.append(format_instruction(word))
        except InvalidInstructionError as e:
            raise InvalidInstructionError(f"instruction {pc}: {e}") from None
        if word[0] == HLT:
            return lines
    raise NoHaltError("program has no HLT in its 256 memory words")


def program_text(memory: bytes) -> str:
    """Readable program: one instruction per line ('ADD A B C', 'LOADI 7', ..., 'HLT')."""
    return "\n".join(program_lines(memory)) + "\n"


def program_md5(memory: bytes) -> str:
    """Hex MD5 naming an instance file (``<md5>.bin``).

    As in the reference generator, the hash is of the instruction texts joined with no
    separator ('INC ALOADI 7HLT'), so names match the reference's for the same program.
    """
    return hashlib.md5("".join(program_lines(memory)).encode()).hexdigest()


# ----------------------------------------------------------------------------- clear simulator

# Registers live in a list of 11 "slots": slot 0 is ACC, slots 1..10 are A..J, so an
# operand byte is directly the slot it names (0 = none = the accumulator).


def _exec_unary(op: Op, s: list[int], a: tuple[int, ...]) -> None:
    t = a[0] if a else 0  # no operand: the accumulator
    s[t] = op.fn(s[t])


def _exec_push(op: Op, s: list[int], a: tuple[int, ...]) -> None:
    s[0] = s[a[0]]


def _exec_pop(op: Op, s: list[int], a: tuple[int, ...]) -> None:
    s[a[0]] = s[0]


def _exec_loadi(op: Op, s: list[int], a: tuple[int, ...]) -> None:
    s[0] = a[0]


def _exec_swap(op: Op, s: list[int], a: tuple[int, ...]) -> None:
    x, y = (0, a[0]) if len(a) == 1 else a  # SWAP A: ACC <-> A; SWAP A B: A <-> B
    s[x], s[y] = s[y], s[x]


def _exec_binary(op: Op, s: list[int], a: tuple[int, ...]) -> None:
    # 1 operand: ACC = ACC op A; 2: A = A op B; 3: C = A op B
    x, y, dst = (0, a[0], 0) if len(a) == 1 else (a[0], a[1], a[0]) if len(a) == 2 else a
    s[dst] = op.fn(s[x], s[y])


def _exec_mov(op: Op, s: list[int], a: tuple[int, ...]) -> None:
    s[a[0]] = s[a[1]]


_EXECUTE: dict[str, Callable[[Op, list[int], tuple[int, ...]], None]] = {
    "unary": _exec_unary,
    "push": _exec_push,
    "pop": _exec_pop,
    "loadi": _exec_loadi,
    "swap": _exec_swap,
    "binary": _exec_binary,
    "mov": _exec_mov,
}


def _check_start(acc: int, regs: Sequence[int]) -> None:
    if len(regs) != NUM_REGISTERS:
        raise CPUError(f"expected {NUM_REGISTERS} registers, got {len(regs)}")
    if not all(0 <= v <= 255 for v in (acc, *regs)):
        raise CPUError(
            f"register values must be bytes 0..255, got ACC={acc} registers={list(regs)}"
        )


def _check_memory(memory: bytes) -> None:
    if len(memory) != MEMORY_SIZE:
        raise CPUError(f"memory must be {MEMORY_SIZE} bytes, got {len(memory)}")


def run_program(memory: bytes, acc: int, regs: Sequence[int]) -> list[bytes]:
    """Run the program in ``memory`` from ACC ``acc`` and registers ``regs`` (A..J).

    Returns the recorded 16-byte states, start state first, HLT state last.
    """
    _check_memory(memory)
    _check_start(acc, regs)
    memory = bytes(memory)
    s = [acc, *regs]
    pc = 0
    states = [make_state(pc, s[0], START_IR, s[1:])]
    while True:
        fetched = pc
        ir = memory[WORD_SIZE * pc : WORD_SIZE * (pc + 1)]
        pc = min(pc + 1, MAX_PC)
        states.append(make_state(pc, s[0], ir, s[1:]))
        try:
            op, operands = decode(ir)
        except InvalidInstructionError as e:
            raise InvalidInstructionError(f"instruction {fetched}: {e}") from None
        if op.code == HLT:
            return states
        if fetched == MAX_PC:
            raise NoHaltError("program has no HLT: it would execute memory word 255 forever")
        _EXECUTE[op.kind](op, s, operands)


# ----------------------------------------------------------------------------- fast simulator

# Each program's registers live in a 16-byte row laid out like a state (PC | ACC | IR |
# A..J), so recording a state is one row copy, and the IR columns hold the instruction
# being executed (LOADI reads its immediate from the IR's a1 column). Every instruction
# becomes the same micro-step on a row:
#     x = row[sx]; y = row[sy]; row[e] = x; row[d] = LUT[op][x][y]
# ``e`` is sx (writing x back changes nothing) except for SWAP, where it is sy, which
# makes the exchange. HLT and invalid words are (COPY_X, 0, 0, 0, 0): no change.
# Programs run longest first, so those still running at step t are a prefix [:m].
_ACC, _A1, _A2, _A3, _IMM = range(5)  # where a role's slot comes from
_COPY_X, _COPY_Y = 0, 1  # LUT rows returning x, and y
_ROW = {op.code: 2 + i for i, op in enumerate(o for o in OPS if o.fn is not None)}
_IMM_COL = IR_SLICE.start + 1  # a1 of the IR
_SLOT_COL = (ACC_INDEX, *range(REGS_SLICE.start, REGS_SLICE.stop))  # operand byte -> column
_VALID = 1 << 24  # packed decode entry: valid << 24 | row << 16 | sx << 12 | sy << 8 | d << 4 | e
_ROW_BITS = 0x1F0000
# Table key of a word: block(op, a1) * 144 + min(a2, 11) * 12 + min(a3, 11), where block 0
# holds every (op, a1) that no valid word has (11 marks an out-of-range register byte).
_HI = (NUM_REGISTERS + 2) ** 2


def _role(op: Op, k: int) -> tuple[int, int, int, int, int]:
    """(LUT row, sx, sy, d, e) of op with k operands, slots named by _ACC .. _IMM."""
    row = _ROW.get(op.code, _COPY_Y)
    if op.kind == "unary":
        t = _A1 if k else _ACC
        return row, t, _ACC, t, t
    if op.kind == "push":
        return _COPY_Y, _ACC, _A1, _ACC, _ACC
    if op.kind == "pop":
        return _COPY_X, _ACC, _ACC, _A1, _ACC
    if op.kind == "loadi":
        return _COPY_Y, _ACC, _IMM, _ACC, _ACC
    if op.kind == "swap":
        x, y = (_ACC, _A1) if k == 1 else (_A1, _A2)
        return _COPY_Y, x, y, x, y
    if op.kind == "binary":
        x, y, d = ((_ACC, _A1, _ACC), (_A1, _A2, _A1), (_A1, _A2, _A3))[k - 1]
        return row, x, y, d, x
    if op.kind == "mov":
        return _COPY_Y, _A1, _A2, _A1, _A1
    return _COPY_X, _ACC, _ACC, _ACC, _ACC  # halt


@dataclass(frozen=True)
class _Tables:
    key_lo: np.ndarray  # (65536,) int32: key part of a word's low half (op, a1)
    key_hi: np.ndarray  # (65536,) int32: key part of its high half (a2, a3)
    decode: np.ndarray  # (keys,) int32 packed micro-step, 0 for an invalid word
    text_id: np.ndarray  # (keys,) int16 row of ``texts``, 0 (empty) for an invalid word
    texts: np.ndarray  # (1 + 8345, 9) uint8 assembly text of every valid word, 0-padded
    text_len: np.ndarray  # (1 + 8345,) length of each text
    lut: np.ndarray  # (rows * 65536,) uint8 value of every unary and binary op at (x, y)


@functools.cache
def _tables() -> _Tables:
    words = list(all_words())
    blocks = sorted({w[:2] for w in words})  # the (op, a1) pairs of valid words
    key_lo = np.zeros(65536, dtype=np.int32)
    for b, (op, a1) in enumerate(blocks, start=1):
        key_lo[op | a1 << 8] = b * _HI
    half = np.arange(65536)
    clamp = np.minimum(half & 0xFF, NUM_REGISTERS + 1), np.minimum(half >> 8, NUM_REGISTERS + 1)
    key_hi = (clamp[0] * (NUM_REGISTERS + 2) + clamp[1]).astype(np.int32)

    n_keys = (1 + len(blocks)) * _HI
    decode_ = np.zeros(n_keys, dtype=np.int32)
    text_id = np.zeros(n_keys, dtype=np.int16)
    texts = [bytes(9)]
    for word in words:
        op, operands = decode(word)
        row, *roles = _role(op, len(operands))
        col = {_ACC: ACC_INDEX, _IMM: _IMM_COL}
        if op.code != LOADI:
            col.update({_A1 + j: _SLOT_COL[a] for j, a in enumerate(operands)})
        sx, sy, d, e = (col[r] for r in roles)
        key = key_lo[word[0] | word[1] << 8] + key_hi[word[2] | word[3] << 8]
        decode_[key] = _VALID | row << 16 | sx << 12 | sy << 8 | d << 4 | e
        text_id[key] = len(texts)
        texts.append(format_instruction(word).encode().ljust(9, b"\0"))

    lut = np.empty((2 + len(_ROW), 256, 256), dtype=np.uint8)
    v = np.arange(256, dtype=np.uint8)
    lut[_COPY_X] = v[:, None]
    lut[_COPY_Y] = v[None, :]
    for op in OPS:
        if op.kind == "unary":
            lut[_ROW[op.code]] = np.array([op.fn(x) for x in range(256)], dtype=np.uint8)[:, None]
        elif op.kind == "binary":
            lut[_ROW[op.code]] = np.array(
                [[op.fn(x, y) for y in range(256)] for x in range(256)], dtype=np.uint8
            )
    texts_ = np.frombuffer(b"".join(texts), dtype=np.uint8).reshape(len(texts), 9)
    return _Tables(
        key_lo, key_hi, decode_, text_id, texts_, (texts_ != 0).sum(axis=1), lut.reshape(-1)
    )


def _keys(words: np.ndarray) -> np.ndarray:
    """Table keys of little-endian uint32 words (any shape, last axis contiguous)."""
    t = _tables()
    halves = words.view("<u2")  # (..., 2 * words): (op | a1 << 8), (a2 | a3 << 8), ...
    return t.key_lo[halves[..., 0::2]] + t.key_hi[halves[..., 1::2]]


def _as_memory(memory: np.ndarray) -> np.ndarray:
    memory = np.ascontiguousarray(memory, dtype=np.uint8)
    if memory.ndim != 2 or memory.shape[1] != MEMORY_SIZE:
        raise CPUError(f"memory must have shape (n, {MEMORY_SIZE}), got {memory.shape}")
    return memory


@dataclass(frozen=True)
class Batch:
    """Instances of a batch of programs: instance i is ``memory[i]`` followed by
    ``states[rows[i], : lengths[i] + 1]``.

    ``states`` holds the programs longest first; states past a program's HLT state are
    not part of its instance and are left unspecified.
    """

    memory: np.ndarray  # (n, 1024) uint8
    states: np.ndarray  # (n, longest length + 1, 16) uint8
    rows: np.ndarray  # (n,) row of ``states`` holding program i
    lengths: np.ndarray  # (n,) program lengths, final HLT included

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def sizes(self) -> np.ndarray:
        """(n,) bytes of each instance."""
        return MEMORY_SIZE + STATE_SIZE * (self.lengths + 1)

    def instance(self, i: int) -> bytes:
        """The instance file bytes of program i."""
        return self.memory[i].tobytes() + self.states[self.rows[i], : self.lengths[i] + 1].tobytes()

    def parts(self) -> list[tuple[memoryview, memoryview]]:
        """Zero-copy (memory, states) byte views of every instance, in order (for ``os.writev``)."""
        mem = memoryview(self.memory.reshape(-1))
        states = memoryview(self.states.reshape(-1))
        row_bytes = self.states.shape[1] * STATE_SIZE
        starts = (self.rows * row_bytes).tolist()
        ends = (self.rows * row_bytes + STATE_SIZE * (self.lengths + 1)).tolist()
        return [
            (mem[i * MEMORY_SIZE : (i + 1) * MEMORY_SIZE], states[a:b])
            for i, (a, b) in enumerate(zip(starts, ends, strict=True))
        ]


def program_lengths(memory: np.ndarray) -> np.ndarray:
    """(n, 1024) memories -> (n,) index of the first HLT + 1; NoHaltError if a program has none."""
    is_hlt = memory.reshape(len(memory), NUM_WORDS, WORD_SIZE)[:, :, 0] == HLT
    found = is_hlt.any(axis=1)
    if not found.all():
        i = int(np.argmin(found))
        raise NoHaltError(f"program {i} has no HLT: it would execute memory word 255 forever")
    return is_hlt.argmax(axis=1) + 1


def simulate_batch(memory: np.ndarray, start: np.ndarray) -> Batch:
    """Run n programs in lock-step; instance i has the bytes ``run_program`` gives for it.

    memory: (n, 1024) uint8. start: (n, 11) uint8 start values of [ACC, A, ..., J].
    """
    memory = _as_memory(memory)
    n = len(memory)
    start = np.asarray(start, dtype=np.uint8)
    if start.shape != (n, NUM_SLOTS):
        raise CPUError(
            f"start must have shape ({n}, {NUM_SLOTS}) for [ACC, A..J], got {start.shape}"
        )
    lengths = program_lengths(memory)
    if n == 0:
        return Batch(memory, np.zeros((0, 1, STATE_SIZE), np.uint8), np.zeros(0, np.intp), lengths)
    tables = _tables()
    order = np.argsort(-lengths, kind="stable")  # longest first
    sl = lengths[order]
    w = int(sl[0])  # words of the longest program; it records w + 1 states

    # (w, n) word t of sorted program i, and its packed micro-step
    words = np.ascontiguousarray(memory.view("<u4")[order, :w].T)
    packed = tables.decode[_keys(words)]
    bad = (np.arange(w)[:, None] < sl[None, :]) & ((packed & _VALID) == 0)  # executed and invalid
    if bad.any():
        t, i = np.argwhere(bad)[0]
        try:
            decode(words[t : t + 1, i].view(np.uint8).tolist())
        except InvalidInstructionError as err:
            raise InvalidInstructionError(f"program {order[i]}: instruction {t}: {err}") from None
    # m_t = number of programs that execute instruction t = #(length >= t + 2)
    running = np.searchsorted(-sl, -np.arange(2, w + 1), side="right").tolist()
    rows = np.zeros(
        (n, STATE_SIZE), dtype=np.uint8
    )  # the registers of sorted program i, as a state
    rows[:, ACC_INDEX] = start[order, 0]
    rows[:, REGS_SLICE] = start[order, 1:]
    states = np.empty((n, w + 1, STATE_SIZE), dtype=np.uint8)  # states of sorted program i
    # Whole rows and IRs as single elements ('V16', 'V4'): strided copies of them are fast.
    row_v = rows.view("V16").reshape(n)
    ir_v = np.ndarray((n,), dtype="V4", buffer=rows, offset=IR_SLICE.start, strides=(STATE_SIZE,))
    states_v = states.reshape(n, -1).view("V16")  # (n, w + 1)
    words_v = words.view("V4")  # (w, n)
    states_v[:, 0] = row_v  # start state: PC 0, IR 0 0 0 0
    rows[:, PC_INDEX] = 1
    ir_v[:] = words_v[0]
    states_v[:, 1] = row_v
    flat = rows.reshape(-1)
    base = np.arange(n, dtype=np.int32) * STATE_SIZE
    lut = tables.lut
    for t, m in enumerate(running):  # execute instruction t, record state t + 2
        if m == 0:
            break
        p, b = packed[t, :m], base[:m]
        x = np.take(flat, b + ((p >> 12) & 15))
        y = np.take(flat, b + ((p >> 8) & 15))
        r = np.left_shift(x, 8, dtype=np.int32)
        r |= y
        r |= p & _ROW_BITS
        flat[b + (p & 15)] = x
        flat[b + ((p >> 4) & 15)] = np.take(lut, r)
        rows[:m, PC_INDEX] = min(t + 2, MAX_PC)
        ir_v[:m] = words_v[t + 1, :m]
        states_v[:m, t + 2] = row_v[:m]
    where = np.empty(n, dtype=np.intp)
    where[order] = np.arange(n)
    return Batch(memory, states, where, lengths)


def program_names(memory: np.ndarray, lengths: np.ndarray | None = None) -> list[str]:
    """``program_md5`` of many valid programs at once: (n, 1024) uint8 memories."""
    memory = _as_memory(memory)
    lengths = program_lengths(memory) if lengths is None else np.asarray(lengths)
    if len(memory) == 0:
        return []
    t = _tables()
    w = int(lengths.max())
    ids = t.text_id[_keys(memory.view("<u4")[:, :w])]  # (n, w) text of each word
    ids = ids[np.arange(w)[None, :] < lengths[:, None]]  # the words up to each HLT, in order
    padded = t.texts[ids]  # (words, 9) each text, then zeros
    text = padded[padded != 0]  # the texts of all programs, concatenated
    ends = np.cumsum(t.text_len[ids])[
        np.cumsum(lengths) - 1
    ].tolist()  # where each program's text ends
    mv, md5 = memoryview(text), hashlib.md5
    return [md5(mv[a:b]).hexdigest() for a, b in zip([0, *ends[:-1]], ends, strict=True)]


# ----------------------------------------------------------------------------- random programs

# One draw u in [0, 20 * 6) picks the name (u // 6, HLT excluded) and its variant
# ((u % 6) % variants: exact, as 6 is a multiple of 1, 2 and 3); one draw r in [0, 1000)
# gives three registers as decimal digits; LOADI draws its immediate.
_GEN_OPS = [op for op in OPS if op.code != HLT]
_GEN_CHOICES = 6 * len(_GEN_OPS)
_GEN_OP = np.array([op.code for op in _GEN_OPS for u in range(6)], dtype="<u4")
_GEN_COUNT = np.array(
    [0 if op.code == LOADI else op.counts[u % len(op.counts)] for op in _GEN_OPS for u in range(6)],
    dtype=np.int64,
)
_REG_BYTES = np.array(
    [
        sum((r // 10 ** (2 - j) % 10 + 1) << (8 * (j + 1)) for j in range(k))
        for k in range(4)
        for r in range(1000)
    ],
    dtype="<u4",
)  # [k * 1000 + r]: the operand bytes of k registers with digits r


def random_programs(
    rng: np.random.Generator, n: int, min_len: int = 1, max_len: int = MAX_PROGRAM_LEN
) -> tuple[np.ndarray, np.ndarray]:
    """n random programs as in the reference generator: (n, 1024) uint8 memories, (n,) lengths.

    Length uniform in [min_len, max_len]; length - 1 instructions, each a uniformly
    chosen name (HLT excluded), then a uniformly chosen operand count among its
    variants, registers uniform over A..J and LOADI immediates uniform over 0..255;
    then HLT. Deterministic for a generator state.
    """
    if not 1 <= min_len <= max_len <= MAX_PROGRAM_LEN:
        raise CPUError(
            f"program lengths must satisfy 1 <= min_len <= max_len <= {MAX_PROGRAM_LEN}, got {min_len}..{max_len}"
        )
    lengths = rng.integers(min_len, max_len + 1, size=n)
    total = int((lengths - 1).sum())
    u = rng.integers(0, _GEN_CHOICES, size=total, dtype=np.uint8)
    r = rng.integers(0, 1000, size=total, dtype=np.uint16)
    words = _GEN_OP[u] | _REG_BYTES[_GEN_COUNT[u] * 1000 + r]
    is_loadi = _GEN_OP[u] == LOADI
    words[is_loadi] |= rng.integers(0, 256, size=int(is_loadi.sum()), dtype=np.uint32) << 8
    memory = np.zeros((n, NUM_WORDS), dtype="<u4")
    memory[np.arange(NUM_WORDS)[None, :] < (lengths - 1)[:, None]] = words  # then HLT = 0 0 0 0
    return memory.view(np.uint8), lengths


def random_start(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 11) uint8 random start values of [ACC, A..J], uniform over 0..255."""
    return rng.integers(0, 256, size=(n, NUM_SLOTS), dtype=np.uint8)
