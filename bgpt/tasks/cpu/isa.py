"""The toy CPU of the bGPT paper's CPU-state task: the one definition of its instruction set.

Every other module of this task (simulators, assembler, data generator) reads the
constants and the opcode table below; nothing else spells out an opcode.

Memory: 1024 bytes = 256 words of 4 bytes. Instruction i is the word at bytes
4i .. 4i+3 = [op, a1, a2, a3]; unused operand bytes and the rest of memory are 0.

Operand bytes: 0 = none, i.e. the accumulator where an operand would be; 1..10 =
registers A..J. LOADI is the exception: a1 is an immediate value 0..255.

A word is a *valid instruction* when it is the encoding of one of the variants in
``OPS`` (the generator's variants of SPEC §3): its operands are a prefix of non-zero
register bytes (no non-zero byte after a zero one) whose count is one of
``Op.counts``. Everything else (opcode > 20, register byte > 10, ``INC A B``,
``ADD 0 B``, ``HLT 1``) is rejected by the simulators and the assembler alike.

State (16 bytes): PC | ACC | IR[4] | registers A..J, see the ``*_INDEX`` constants.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from bgpt.errors import BGPTError

# ----------------------------------------------------------------------------- layout

MEMORY_SIZE = 1024  # bytes of memory at the start of every instance file
WORD_SIZE = 4  # bytes per instruction: [op, a1, a2, a3]
NUM_WORDS = MEMORY_SIZE // WORD_SIZE  # 256 instruction slots
MAX_PC = NUM_WORDS - 1  # PC = min(PC + 1, 255) after every fetch
MAX_PROGRAM_LEN = 255  # longest program (final HLT included) the generator and assembler make
NUM_REGISTERS = 10
REGISTER_NAMES = tuple("ABCDEFGHIJ")
REGISTER_CODES = {name: i + 1 for i, name in enumerate(REGISTER_NAMES)}  # 'A' -> 1 .. 'J' -> 10
ACC_OPERAND = 0  # operand byte meaning "no operand / the accumulator"

STATE_SIZE = 16
PC_INDEX = 0
ACC_INDEX = 1
IR_SLICE = slice(2, 6)
REGS_SLICE = slice(6, 16)
START_IR = bytes(WORD_SIZE)  # IR of the start state: 0 0 0 0
MIN_INSTANCE_SIZE = MEMORY_SIZE + STATE_SIZE  # memory and the start state
FIRST_STATE_PATCH = (
    1 + MEMORY_SIZE // STATE_SIZE
)  # in a model's stream (patch size = state size): header, memory

assert REGS_SLICE.stop == STATE_SIZE and REGS_SLICE.stop - REGS_SLICE.start == NUM_REGISTERS


class CPUError(BGPTError, ValueError):
    """A bad CPU program, instruction or instance file (a user error, printed as one line)."""


class InvalidInstructionError(CPUError):
    """A memory word that is not the encoding of any instruction variant."""


# ----------------------------------------------------------------------------- values


def _sat(v: int) -> int:
    """Saturate to a byte: the arithmetic instructions clamp instead of wrapping."""
    return 0 if v < 0 else 255 if v > 255 else v


def _div(x: int, y: int) -> int:
    return 255 if y == 0 else x // y  # division by a zero register gives 255


# ----------------------------------------------------------------------------- the table

# Kinds say how operands are used (see bgpt.tasks.cpu.simulator for the execution):
#   halt   : stop after the state is recorded
#   unary  : 0 operands -> ACC = f(ACC); 1 operand A -> A = f(A)
#   push   : ACC = A            pop : A = ACC            loadi : ACC = imm (a1)
#   swap   : 1 operand ACC <-> A; 2 operands A <-> B
#   binary : 1 operand ACC = f(ACC, A); 2 operands A = f(A, B); 3 operands C = f(A, B)
#   mov    : A = B
KINDS = ("halt", "unary", "push", "pop", "loadi", "swap", "binary", "mov")


@dataclass(frozen=True)
class Op:
    """One instruction type: opcode, mnemonic, allowed operand counts and meaning."""

    code: int
    name: str
    counts: tuple[int, ...]  # allowed operand counts = the generator's variants
    kind: str  # one of KINDS
    fn: Callable[..., int] | None = None  # byte function: f(v) for unary, f(x, y) for binary
    doc: str = ""

    def takes(self) -> str:
        """'takes 1, 2 or 3 operands' and the like, for error messages."""
        if self.counts == (0,):
            return "takes no operands"
        names = [str(k) for k in self.counts]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        return f"takes {listed} operand{'' if self.counts == (1,) else 's'}"


OPS: tuple[Op, ...] = (
    Op(0, "HLT", (0,), "halt", None, "halt"),
    Op(1, "CLR", (0, 1), "unary", lambda v: 0, "clear"),
    Op(2, "INC", (0, 1), "unary", lambda v: _sat(v + 1), "add one (saturating)"),
    Op(3, "DEC", (0, 1), "unary", lambda v: _sat(v - 1), "subtract one (saturating)"),
    Op(4, "SHL", (0, 1), "unary", lambda v: (v << 1) & 0xFF, "shift left one bit"),
    Op(5, "SHR", (0, 1), "unary", lambda v: v >> 1, "shift right one bit"),
    Op(6, "ROL", (0, 1), "unary", lambda v: ((v << 1) | (v >> 7)) & 0xFF, "rotate left one bit"),
    Op(7, "ROR", (0, 1), "unary", lambda v: ((v >> 1) | (v << 7)) & 0xFF, "rotate right one bit"),
    Op(8, "NOT", (0, 1), "unary", lambda v: ~v & 0xFF, "bitwise not"),
    Op(9, "PUSH", (1,), "push", None, "ACC = A"),
    Op(10, "POP", (1,), "pop", None, "A = ACC"),
    Op(11, "LOADI", (1,), "loadi", None, "ACC = immediate"),
    Op(12, "SWAP", (1, 2), "swap", None, "exchange ACC and A, or A and B"),
    Op(13, "ADD", (1, 2, 3), "binary", lambda x, y: _sat(x + y), "add (saturating)"),
    Op(14, "SUB", (1, 2, 3), "binary", lambda x, y: _sat(x - y), "subtract (saturating at 0)"),
    Op(15, "MUL", (1, 2, 3), "binary", lambda x, y: _sat(x * y), "multiply (saturating)"),
    Op(16, "DIV", (1, 2, 3), "binary", _div, "integer division; by zero gives 255"),
    Op(17, "AND", (1, 2, 3), "binary", lambda x, y: x & y, "bitwise and"),
    Op(18, "OR", (1, 2, 3), "binary", lambda x, y: x | y, "bitwise or"),
    Op(19, "XOR", (1, 2, 3), "binary", lambda x, y: x ^ y, "bitwise xor"),
    Op(20, "MOV", (2,), "mov", None, "A = B"),
)
NUM_OPS = len(OPS)
BY_NAME: dict[str, Op] = {op.name: op for op in OPS}
HLT = BY_NAME["HLT"].code
LOADI = BY_NAME["LOADI"].code

assert all(op.code == i and op.kind in KINDS for i, op in enumerate(OPS))
assert all((op.fn is not None) == (op.kind in ("unary", "binary")) for op in OPS)


def all_words() -> Iterator[bytes]:
    """Every valid instruction word, in opcode order (8345 of them, HLT included)."""
    for op in OPS:
        for k in op.counts:
            combos = (
                [(imm,) for imm in range(256)]
                if op.code == LOADI
                else itertools.product(range(1, NUM_REGISTERS + 1), repeat=k)
            )
            for operands in combos:
                yield bytes([op.code, *operands, 0, 0, 0][:WORD_SIZE])


def count_words() -> int:
    """Number of distinct valid instruction words other than HLT (8344)."""
    return sum(256 if op.code == LOADI else NUM_REGISTERS**k for op in OPS[1:] for k in op.counts)


# ----------------------------------------------------------------------------- encode / decode


def encode(name: str, operands: Sequence[int] = ()) -> bytes:
    """The 4-byte word of instruction ``name`` with operand bytes ``operands``."""
    op = BY_NAME.get(name.upper())
    if op is None:
        raise InvalidInstructionError(f"unknown instruction {name!r}")
    if len(operands) > WORD_SIZE - 1 or not all(0 <= a <= 255 for a in operands):
        raise InvalidInstructionError(
            f"{op.name}: operands must be at most 3 bytes, got {list(operands)}"
        )
    word = bytes([op.code, *operands, 0, 0, 0][:WORD_SIZE])
    decode(word)  # validates the operand count and register bytes
    return word


def decode(word: Sequence[int]) -> tuple[Op, tuple[int, ...]]:
    """(op, operands) of a 4-byte word; operands are register bytes 1..10 (or LOADI's immediate).

    Raises InvalidInstructionError for a word that encodes no variant of ``OPS``.
    """
    code, a1, a2, a3 = word
    if code >= NUM_OPS:
        raise InvalidInstructionError(f"unknown opcode {code} in word {_hex(word)}")
    op = OPS[code]
    if code == LOADI:
        if a2 or a3:
            raise InvalidInstructionError(f"LOADI uses one operand byte, got word {_hex(word)}")
        return op, (a1,)
    operands = (a1, a2, a3)
    k = sum(1 for a in operands if a)
    if any(a > NUM_REGISTERS for a in operands):
        raise InvalidInstructionError(f"register byte above {NUM_REGISTERS} in word {_hex(word)}")
    if not all(operands[:k]):
        raise InvalidInstructionError(f"operand gap (0 before a register) in word {_hex(word)}")
    if k not in op.counts:
        raise InvalidInstructionError(f"{op.name} {op.takes()}, got {k} in word {_hex(word)}")
    return op, operands[:k]


def format_instruction(word: Sequence[int]) -> str:
    """Assembly text of a valid word: 'ADD A B C', 'LOADI 7', 'INC', 'HLT'."""
    op, operands = decode(word)
    if op.code == LOADI:
        return f"LOADI {operands[0]}"
    return " ".join([op.name, *(REGISTER_NAMES[a - 1] for a in operands)])


def _hex(word: Sequence[int]) -> str:
    return " ".join(f"{b:02x}" for b in word)
