"""The CPU instruction set table against SPEC §3."""

import pytest

from bgpt.errors import BGPTError
from bgpt.tasks.cpu import isa
from bgpt.tasks.cpu.isa import (
    BY_NAME,
    OPS,
    InvalidInstructionError,
    decode,
    encode,
    format_instruction,
)

# SPEC §3: opcode order and the generator's variants (operand counts).
SPEC_VARIANTS = {
    "HLT": (0,),
    **{name: (0, 1) for name in ("CLR", "INC", "DEC", "SHL", "SHR", "ROL", "ROR", "NOT")},
    "PUSH": (1,),
    "POP": (1,),
    "LOADI": (1,),
    "SWAP": (1, 2),
    **{name: (1, 2, 3) for name in ("ADD", "SUB", "MUL", "DIV", "AND", "OR", "XOR")},
    "MOV": (2,),
}
SPEC_ORDER = (
    "HLT CLR INC DEC SHL SHR ROL ROR NOT PUSH POP LOADI SWAP ADD SUB MUL DIV AND OR XOR MOV".split()
)


def test_opcode_table_matches_spec():
    assert [op.name for op in OPS] == SPEC_ORDER
    assert [op.code for op in OPS] == list(range(21))
    assert {op.name: op.counts for op in OPS} == SPEC_VARIANTS
    # "21 instruction types with 43 variants" (paper), plus HLT's one
    assert sum(len(op.counts) for op in OPS) == 44
    assert sum(len(op.counts) for op in OPS if op.name != "HLT") == 43


def test_layout_constants():
    assert (isa.MEMORY_SIZE, isa.WORD_SIZE, isa.NUM_WORDS, isa.MAX_PC) == (1024, 4, 256, 255)
    assert isa.STATE_SIZE == 16 and isa.MIN_INSTANCE_SIZE == 1040
    assert (isa.PC_INDEX, isa.ACC_INDEX) == (0, 1)
    assert range(16)[isa.IR_SLICE] == range(2, 6)
    assert range(16)[isa.REGS_SLICE] == range(6, 16)
    assert isa.REGISTER_CODES == {r: i for i, r in enumerate("ABCDEFGHIJ", start=1)}
    assert isa.ACC_OPERAND == 0 and isa.HLT == 0 and isa.LOADI == 11


def test_all_words_decode_and_count():
    words = list(isa.all_words())
    assert len(words) == len(set(words)) == 8345
    assert isa.count_words() == 8344
    for w in words:
        op, operands = decode(w)
        assert w[0] == op.code and len(operands) in op.counts
        assert encode(op.name, operands) == w


@pytest.mark.parametrize(
    "name, operands, word, text",
    [
        ("HLT", (), b"\x00\x00\x00\x00", "HLT"),
        ("INC", (), b"\x02\x00\x00\x00", "INC"),
        ("inc", (3,), b"\x02\x03\x00\x00", "INC C"),
        ("LOADI", (0,), b"\x0b\x00\x00\x00", "LOADI 0"),
        ("LOADI", (255,), b"\x0b\xff\x00\x00", "LOADI 255"),
        ("SWAP", (1, 10), b"\x0c\x01\x0a\x00", "SWAP A J"),
        ("ADD", (1, 2, 3), b"\x0d\x01\x02\x03", "ADD A B C"),
        ("MOV", (5, 4), b"\x14\x05\x04\x00", "MOV E D"),
    ],
)
def test_encode_decode_format(name, operands, word, text):
    assert encode(name, operands) == word
    assert decode(word) == (BY_NAME[name.upper()], operands)
    assert format_instruction(word) == text


@pytest.mark.parametrize(
    "word, message",
    [
        ((21, 0, 0, 0), "unknown opcode 21"),
        ((2, 1, 2, 0), "INC takes 0 or 1 operands, got 2"),
        ((0, 1, 0, 0), "HLT takes no operands, got 1"),
        ((9, 0, 0, 0), "PUSH takes 1 operand, got 0"),
        ((20, 1, 0, 0), "MOV takes 2 operands, got 1"),
        ((13, 0, 2, 0), "operand gap"),
        ((13, 11, 0, 0), "register byte above 10"),
        ((11, 5, 1, 0), "LOADI uses one operand byte"),
    ],
)
def test_invalid_words(word, message):
    with pytest.raises(InvalidInstructionError, match=message):
        decode(word)


def test_encode_rejects_bad_input():
    with pytest.raises(InvalidInstructionError, match="unknown instruction"):
        encode("JMP", (1,))
    with pytest.raises(InvalidInstructionError):
        encode("ADD", (1, 2, 3, 4))
    with pytest.raises(InvalidInstructionError):
        encode("LOADI", (256,))


def test_errors_are_user_errors():
    assert issubclass(InvalidInstructionError, BGPTError) and issubclass(
        InvalidInstructionError, ValueError
    )


@pytest.mark.parametrize(
    "name, args, value",
    [
        ("INC", (255,), 255),
        ("DEC", (0,), 0),
        ("SHL", (0x81,), 0x02),
        ("SHR", (0x81,), 0x40),
        ("ROL", (0x81,), 0x03),
        ("ROR", (0x81,), 0xC0),
        ("NOT", (0x0F,), 0xF0),
        ("ADD", (200, 100), 255),
        ("SUB", (5, 10), 0),
        ("MUL", (16, 16), 255),
        ("DIV", (7, 0), 255),
        ("DIV", (100, 7), 14),
    ],
)
def test_value_functions(name, args, value):
    assert BY_NAME[name].fn(*args) == value
