"""Assembler, disassembler and translator of the CPU task."""

import numpy as np
import pytest

from bgpt.errors import BGPTError
from bgpt.tasks.cpu import isa
from bgpt.tasks.cpu import simulator as sim
from bgpt.tasks.cpu.assembler import AsmError, assemble, disassemble, translate


def test_assemble_bytes():
    text = """
    # a comment line
    LOADI 7          ; ACC = 7
    add a, b, c      # lower case and commas
    SWAP A
    INC

    """
    memory = assemble(text)
    assert len(memory) == 1024
    assert memory[:20] == bytes([11, 7, 0, 0, 13, 1, 2, 3, 12, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])
    assert not any(memory[20:])


def test_hlt_appended_once():
    assert assemble("INC") == assemble("INC\nHLT") == bytes([2, 0, 0, 0]).ljust(1024, b"\0")
    assert assemble("") == assemble("; nothing\n") == bytes(1024)  # the empty program is HLT alone
    assert assemble("LOADI 0x10")[:2] == bytes([11, 16])


@pytest.mark.parametrize(
    "text, message",
    [
        ("INC\nJMP A", "line 2: unknown instruction 'JMP'"),
        ("INC\n\nADD A B C D", "line 3: ADD takes 1, 2 or 3 operands, got 4"),
        ("ADD", "line 1: ADD takes 1, 2 or 3 operands, got 0"),
        ("HLT A", "line 1: HLT takes no operands, got 1"),
        ("PUSH", "line 1: PUSH takes 1 operand, got 0"),
        ("MOV A", "line 1: MOV takes 2 operands, got 1"),
        ("INC K", "line 1: bad register 'K'"),
        ("INC 1", "line 1: bad register '1'"),
        ("LOADI 256", "line 1: LOADI immediate must be 0..255, got 256"),
        ("LOADI -1", "line 1: LOADI immediate must be 0..255, got -1"),
        ("LOADI A", "line 1: LOADI needs an immediate value 0..255, got 'A'"),
        ("INC\nHLT\nDEC", "line 3: instruction after HLT"),
    ],
)
def test_errors_name_the_line(text, message):
    with pytest.raises(AsmError) as e:
        assemble(text)
    assert message in str(e.value)
    assert isinstance(e.value, BGPTError) and isinstance(e.value, ValueError)


def test_program_length_limit():
    assert len(assemble("INC\n" * 254)) == 1024  # 254 + the appended HLT = 255
    assert assemble("INC\n" * 254 + "HLT")[4 * 254 : 4 * 255] == bytes(4)
    with pytest.raises(AsmError, match="line 255: program too long"):
        assemble("INC\n" * 255)
    with pytest.raises(AsmError, match="line 255: program too long"):  # no room left for the HLT
        assemble("INC\n" * 255 + "HLT")


def test_disassemble_is_canonical():
    assert (
        disassemble(assemble("  inc a ; x\nloadi 0x0a\nswap b,c\n"))
        == "INC A\nLOADI 10\nSWAP B C\nHLT\n"
    )
    assert disassemble(bytes(1024)) == "HLT\n"


def test_round_trips_on_random_programs():
    memory, _ = sim.random_programs(np.random.default_rng(0), 200, 1, 255)
    for m in memory:
        m = m.tobytes()
        text = disassemble(m)
        assert assemble(text) == m
        assert disassemble(assemble(text)) == text
        assert text == sim.program_text(m)


def test_every_instruction_word_assembles():
    for word in isa.all_words():
        text = isa.format_instruction(word)
        assert assemble(text)[:4] == word
        assert assemble(text.lower())[:4] == word


@pytest.mark.parametrize(
    "memory, error",
    [
        (bytes(1000), "1024 bytes"),
        (bytes([2, 0, 0, 0]) * 256, "no HLT"),
        (bytes([99, 0, 0, 0]).ljust(1024, b"\0"), "unknown opcode 99"),
        (bytes([2, 0, 0, 0, 0, 0, 0, 0, 5]).ljust(1024, b"\0"), "non-zero bytes after the HLT"),
        (bytes([2, 0, 0, 0]) * 255 + bytes(4), "more than 255"),
    ],
)
def test_disassemble_rejects_what_assemble_cannot_make(memory, error):
    with pytest.raises(isa.CPUError, match=error):
        disassemble(memory)


def test_translate_trace():
    memory = assemble("LOADI 7\nADD A B C\nSWAP A\nINC")
    data = sim.make_instance(memory, sim.run_program(memory, 5, [1, 2] + [0] * 8))
    text = translate(data)
    lines = text.splitlines()
    assert lines[0] == "program: 5 instructions"
    assert [ln.split(None, 1)[1] for ln in lines[1:6]] == [
        "LOADI 7",
        "ADD A B C",
        "SWAP A",
        "INC",
        "HLT",
    ]
    assert lines[6] == "states: 6"
    rows = [ln.split() for ln in lines[8:14]]
    assert rows[0][:4] == ["0", "0", "5", "-"]  # step, PC, ACC, no IR yet
    assert rows[2][:6] == ["2", "2", "7", "ADD", "A", "B"]
    assert rows[4][:6] == ["4", "4", "1", "INC", "7", "2"]  # after SWAP A: ACC 1, A 7
    assert rows[5] == ["5", "5", "2", "HLT", "7", "2", "3", "0", "0", "0", "0", "0", "0", "0"]
    assert lines[-1] == "all states match the simulator"


def test_translate_marks_wrong_states():
    memory = assemble("INC\nINC")
    data = bytearray(sim.make_instance(memory, sim.run_program(memory, 0, [0] * 10)))
    data[1024 + 16 * 2 + 1] = 9  # state 2's ACC
    lines = translate(bytes(data)).splitlines()
    assert lines[-1] == "1 of 4 states differ from the simulator (marked !)"
    assert lines[-3].endswith("!") and not lines[-2].endswith("!")
    assert "not checked" not in translate(bytes(data), check=False)
    short = translate(bytes(data[: 1024 + 32]))  # a prediction that stopped early
    assert (
        short.splitlines()[-1]
        == "0 of 2 states differ from the simulator (marked !); the simulator records 4 states"
    )


def test_translate_bad_instances():
    with pytest.raises(sim.InvalidInstanceError, match="x.bin is not a CPU instance: 1030 bytes"):
        translate(bytes(1030), what="x.bin")
    weird = bytes([99, 1, 2, 3]).ljust(1024, b"\0") + bytes(32)
    text = translate(weird)
    assert "?? 63 01 02 03" in text and "not checked against the simulator" in text
