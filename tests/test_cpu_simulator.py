"""The CPU simulators: hand-computed cases per opcode, and the fast one against an
independent straightforward simulator on thousands of random programs."""

import hashlib

import numpy as np
import pytest

from bgpt.tasks.cpu import simulator as sim
from bgpt.tasks.cpu.isa import InvalidInstructionError

REGS = "ABCDEFGHIJ"


# ----------------------------------------------------------------------------- reference


def ref_run(memory: bytes, acc: int, regs: list[int]) -> list[bytes]:
    """SPEC §3 written out the obvious way, independently of the opcode table."""
    r = [acc, *regs]  # r[0] = ACC, r[1..10] = A..J, so operand bytes index r directly
    pc = 0
    states = [bytes([0, acc, 0, 0, 0, 0, *regs])]
    while True:
        ir = memory[4 * pc : 4 * pc + 4]
        pc = min(pc + 1, 255)
        states.append(bytes([pc, r[0], *ir, *r[1:]]))
        op, a1, a2, a3 = ir
        nargs = 0 if a1 == 0 else 1 if a2 == 0 else 2 if a3 == 0 else 3
        if op == 0:
            return states
        elif op == 1:
            r[a1] = 0
        elif op == 2:
            r[a1] = min(r[a1] + 1, 255)
        elif op == 3:
            r[a1] = max(r[a1] - 1, 0)
        elif op == 4:
            r[a1] = (r[a1] * 2) % 256
        elif op == 5:
            r[a1] = r[a1] // 2
        elif op == 6:
            r[a1] = (r[a1] * 2) % 256 + r[a1] // 128
        elif op == 7:
            r[a1] = r[a1] // 2 + (r[a1] % 2) * 128
        elif op == 8:
            r[a1] = 255 - r[a1]
        elif op == 9:
            r[0] = r[a1]
        elif op == 10:
            r[a1] = r[0]
        elif op == 11:
            r[0] = a1
        elif op == 12:
            if nargs == 1:
                r[0], r[a1] = r[a1], r[0]
            else:
                r[a1], r[a2] = r[a2], r[a1]
        elif 13 <= op <= 19:
            if nargs == 1:
                x, y, dst = r[0], r[a1], 0
            elif nargs == 2:
                x, y, dst = r[a1], r[a2], a1
            else:
                x, y, dst = r[a1], r[a2], a3
            if op == 13:
                v = min(x + y, 255)
            elif op == 14:
                v = max(x - y, 0)
            elif op == 15:
                v = min(x * y, 255)
            elif op == 16:
                v = 255 if y == 0 else x // y
            elif op == 17:
                v = x & y
            elif op == 18:
                v = x | y
            else:
                v = x ^ y
            r[dst] = v
        elif op == 20:
            r[a1] = r[a2]
        else:
            raise ValueError(op)


def word(text: str) -> bytes:
    name, *args = text.split()
    codes = {
        "HLT": 0,
        "CLR": 1,
        "INC": 2,
        "DEC": 3,
        "SHL": 4,
        "SHR": 5,
        "ROL": 6,
        "ROR": 7,
        "NOT": 8,
        "PUSH": 9,
        "POP": 10,
    }
    codes |= {
        "LOADI": 11,
        "SWAP": 12,
        "ADD": 13,
        "SUB": 14,
        "MUL": 15,
        "DIV": 16,
        "AND": 17,
        "OR": 18,
        "XOR": 19,
        "MOV": 20,
    }
    ops = [int(a) if name == "LOADI" else REGS.index(a) + 1 for a in args]
    return bytes([codes[name], *ops, 0, 0, 0][:4])


def memory_of(*lines: str) -> bytes:
    return b"".join(word(t) for t in lines).ljust(1024, b"\0")


def run_all(memory: bytes, acc: int, regs: list[int]) -> list[bytes]:
    """run_program, checked to agree with simulate_batch and the reference."""
    states = sim.run_program(memory, acc, regs)
    assert states == ref_run(memory, acc, regs)
    batch = sim.simulate_batch(
        np.frombuffer(memory, np.uint8)[None], np.array([[acc, *regs]], np.uint8)
    )
    assert batch.instance(0) == sim.make_instance(memory, states)
    return states


# ----------------------------------------------------------------------------- one instruction each

# (instruction, start {ACC, A..J}, expected changes after it) — computed by hand.
CASES = [
    ("CLR", {"ACC": 9}, {"ACC": 0}),
    ("CLR B", {"B": 7}, {"B": 0}),
    ("INC", {"ACC": 254}, {"ACC": 255}),
    ("INC", {"ACC": 255}, {"ACC": 255}),
    ("INC C", {"C": 3}, {"C": 4}),
    ("INC C", {"C": 255}, {"C": 255}),
    ("DEC", {"ACC": 0}, {"ACC": 0}),
    ("DEC", {"ACC": 1}, {"ACC": 0}),
    ("DEC D", {"D": 200}, {"D": 199}),
    ("DEC D", {"D": 0}, {"D": 0}),
    ("SHL", {"ACC": 0x81}, {"ACC": 0x02}),
    ("SHL E", {"E": 0x40}, {"E": 0x80}),
    ("SHR", {"ACC": 0x81}, {"ACC": 0x40}),
    ("SHR F", {"F": 1}, {"F": 0}),
    ("ROL", {"ACC": 0x81}, {"ACC": 0x03}),
    ("ROL G", {"G": 0x80}, {"G": 0x01}),
    ("ROR", {"ACC": 0x81}, {"ACC": 0xC0}),
    ("ROR H", {"H": 0x01}, {"H": 0x80}),
    ("NOT", {"ACC": 0x0F}, {"ACC": 0xF0}),
    ("NOT I", {"I": 0}, {"I": 255}),
    ("PUSH J", {"ACC": 1, "J": 42}, {"ACC": 42}),
    ("POP A", {"ACC": 17, "A": 3}, {"A": 17}),
    ("LOADI 200", {"ACC": 1}, {"ACC": 200}),
    ("LOADI 0", {"ACC": 1}, {"ACC": 0}),
    ("SWAP B", {"ACC": 1, "B": 2}, {"ACC": 2, "B": 1}),
    ("SWAP C D", {"C": 3, "D": 4}, {"C": 4, "D": 3}),
    ("SWAP A A", {"A": 5}, {}),
    ("ADD B", {"ACC": 1, "B": 2}, {"ACC": 3}),
    ("ADD B", {"ACC": 200, "B": 100}, {"ACC": 255}),
    ("ADD A B", {"A": 5, "B": 6}, {"A": 11}),
    ("ADD A A", {"A": 100}, {"A": 200}),
    ("ADD A B C", {"A": 250, "B": 10, "C": 1}, {"C": 255}),
    ("ADD A B A", {"A": 5, "B": 6}, {"A": 11}),
    ("SUB A", {"ACC": 5, "A": 10}, {"ACC": 0}),
    ("SUB A", {"ACC": 10, "A": 3}, {"ACC": 7}),
    ("SUB A B", {"A": 10, "B": 3}, {"A": 7}),
    ("SUB A B C", {"A": 3, "B": 10, "C": 9}, {"C": 0}),
    ("MUL A", {"ACC": 16, "A": 16}, {"ACC": 255}),
    ("MUL A B", {"A": 3, "B": 4}, {"A": 12}),
    ("MUL A B C", {"A": 0, "B": 99, "C": 9}, {"C": 0}),
    ("DIV A", {"ACC": 100, "A": 7}, {"ACC": 14}),
    ("DIV A", {"ACC": 100, "A": 0}, {"ACC": 255}),
    ("DIV A B", {"A": 9, "B": 0}, {"A": 255}),
    ("DIV A B", {"A": 9, "B": 2}, {"A": 4}),
    ("DIV A B C", {"A": 9, "B": 2}, {"C": 4}),
    ("DIV A B C", {"A": 0, "B": 0}, {"C": 255}),
    ("DIV A A", {"A": 0}, {"A": 255}),
    ("AND A", {"ACC": 0b1100, "A": 0b1010}, {"ACC": 0b1000}),
    ("AND A B", {"A": 0b1100, "B": 0b1010}, {"A": 0b1000}),
    ("AND A B C", {"A": 0b1100, "B": 0b1010}, {"C": 0b1000}),
    ("OR A", {"ACC": 0b1100, "A": 0b1010}, {"ACC": 0b1110}),
    ("OR A B", {"A": 0b1100, "B": 0b1010}, {"A": 0b1110}),
    ("OR A B C", {"A": 0b1100, "B": 0b1010}, {"C": 0b1110}),
    ("XOR A", {"ACC": 0b1100, "A": 0b1010}, {"ACC": 0b0110}),
    ("XOR A B", {"A": 0b1100, "B": 0b1010}, {"A": 0b0110}),
    ("XOR A B C", {"A": 0b1100, "B": 0b1010}, {"C": 0b0110}),
    ("XOR J J", {"J": 77}, {"J": 0}),
    ("MOV A B", {"A": 1, "B": 9}, {"A": 9}),
    ("MOV J A", {"A": 1, "J": 9}, {"J": 1}),
]


@pytest.mark.parametrize(
    "instruction, start, changes", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_one_instruction(instruction, start, changes):
    values = {"ACC": 0, **dict.fromkeys(REGS, 0), **start}
    regs = [values[r] for r in REGS]
    memory = memory_of(instruction, "HLT")
    states = run_all(memory, values["ACC"], regs)
    after = {**values, **changes}
    assert len(states) == 3
    assert states[0] == bytes([0, values["ACC"], 0, 0, 0, 0, *regs])  # start state
    assert states[1] == bytes([1, values["ACC"], *word(instruction), *regs])  # fetched, not yet run
    assert states[2] == bytes(
        [2, after["ACC"], 0, 0, 0, 0, *(after[r] for r in REGS)]
    )  # HLT shows its effect


def test_every_variant_is_covered():
    covered = {(c[0].split()[0], len(c[0].split()) - 1) for c in CASES}
    variants = {(op.name, k) for op in sim.OPS if op.name != "HLT" for k in op.counts}
    assert variants <= covered


# ----------------------------------------------------------------------------- whole programs


def test_hlt_alone():
    states = run_all(bytes(1024), 7, list(range(10)))
    assert states == [bytes([0, 7, 0, 0, 0, 0, *range(10)]), bytes([1, 7, 0, 0, 0, 0, *range(10)])]


def test_stops_at_first_hlt_and_ignores_what_follows():
    memory = memory_of("INC", "HLT") + b""
    memory = memory[:8] + bytes([99, 99, 99, 99]) + memory[12:]  # an invalid word after the HLT
    states = run_all(memory, 0, [0] * 10)
    assert len(states) == 3 and states[-1][1] == 1


def test_program_of_n_instructions_gives_n_plus_1_states():
    for n in (1, 2, 5, 255):
        memory = memory_of(*["INC A"] * (n - 1), "HLT")
        states = run_all(memory, 0, [0] * 10)
        assert len(states) == n + 1
        assert [s[0] for s in states] == list(range(n + 1))
        assert states[-1][6] == min(n - 1, 255)  # A counted up, saturating


def test_pc_clamps_at_255():
    memory = bytes([2, 0, 0, 0]) * 255 + bytes(4)  # 255 INCs, then HLT in the last word
    states = run_all(memory, 250, [0] * 10)
    assert len(states) == 257
    assert [s[0] for s in states[-3:]] == [254, 255, 255]  # word 254 and word 255 both leave PC 255
    assert states[-1][1] == 255  # ACC saturated
    assert states[-1][2:6] == bytes(4)


def test_no_hlt_is_an_error():
    memory = bytes([2, 0, 0, 0]) * 256
    with pytest.raises(sim.NoHaltError):
        sim.run_program(memory, 0, [0] * 10)
    with pytest.raises(sim.NoHaltError, match="program 1"):
        sim.simulate_batch(
            np.stack([np.zeros(1024, np.uint8), np.frombuffer(memory, np.uint8)]),
            np.zeros((2, 11), np.uint8),
        )


@pytest.mark.parametrize(
    "bad", [bytes([21, 0, 0, 0]), bytes([2, 1, 2, 0]), bytes([13, 11, 0, 0]), bytes([9, 0, 0, 0])]
)
def test_invalid_instruction_is_an_error(bad):
    memory = (memory_of("INC")[:4] + bad).ljust(1024, b"\0")
    with pytest.raises(InvalidInstructionError, match="instruction 1"):
        sim.run_program(memory, 0, [0] * 10)
    with pytest.raises(InvalidInstructionError, match="program 0: instruction 1"):
        sim.simulate_batch(np.frombuffer(memory, np.uint8)[None], np.zeros((1, 11), np.uint8))


def test_start_values_are_checked():
    with pytest.raises(sim.CPUError):
        sim.run_program(bytes(1024), 256, [0] * 10)
    with pytest.raises(sim.CPUError):
        sim.run_program(bytes(1024), 0, [0] * 9)
    with pytest.raises(sim.CPUError):
        sim.run_program(bytes(1000), 0, [0] * 10)
    with pytest.raises(sim.CPUError):
        sim.simulate_batch(np.zeros((2, 1024), np.uint8), np.zeros((2, 10), np.uint8))


# ----------------------------------------------------------------------------- random programs


@pytest.mark.parametrize(
    "seed, n, min_len, max_len",
    [(0, 1500, 1, 255), (1, 1000, 1, 12), (2, 300, 250, 255), (3, 200, 1, 1)],
)
def test_fast_simulator_matches_reference(seed, n, min_len, max_len):
    rng = np.random.default_rng(seed)
    memory, lengths = sim.random_programs(rng, n, min_len, max_len)
    start = sim.random_start(rng, n)
    batch = sim.simulate_batch(memory, start)
    names = sim.program_names(memory, lengths)
    assert (batch.lengths == lengths).all()
    for i, (m, s) in enumerate(zip(memory, start, strict=True)):
        mem = m.tobytes()
        states = ref_run(mem, int(s[0]), s[1:].tolist())
        assert len(states) == lengths[i] + 1
        expected = mem + b"".join(states)
        assert batch.instance(i) == expected
        assert b"".join(map(bytes, batch.parts()[i])) == expected if i < 50 else True
        assert names[i] == sim.program_md5(mem)
    if n <= 300:  # the clear simulator too (slower)
        for m, s in zip(memory, start, strict=True):
            assert sim.run_program(m.tobytes(), int(s[0]), s[1:].tolist()) == ref_run(
                m.tobytes(), int(s[0]), s[1:].tolist()
            )


def test_clear_simulator_matches_reference():
    rng = np.random.default_rng(5)
    memory, _ = sim.random_programs(rng, 300, 1, 255)
    start = sim.random_start(rng, 300)
    for m, s in zip(memory, start, strict=True):
        assert sim.run_program(m.tobytes(), int(s[0]), s[1:].tolist()) == ref_run(
            m.tobytes(), int(s[0]), s[1:].tolist()
        )


def test_random_programs_follow_spec():
    rng = np.random.default_rng(0)
    memory, lengths = sim.random_programs(rng, 2000, 3, 40)
    assert lengths.min() == 3 and lengths.max() == 40
    words = memory.reshape(2000, 256, 4)
    ops, counts, loadi = [], {k: 0 for k in (1, 2, 3)}, []
    for i, n in enumerate(lengths):
        assert not words[i, n - 1 :].any()  # HLT at n-1, zeros after
        lines = sim.program_lines(memory[i].tobytes())  # every word valid
        assert len(lines) == n and lines[-1] == "HLT"
        for line in lines[:-1]:
            name, *args = line.split()
            ops.append(name)
            if name == "ADD":
                counts[len(args)] += 1
            if name == "LOADI":
                loadi.append(int(args[0]))
    total = len(ops)
    assert "HLT" not in ops
    freq = {name: ops.count(name) / total for name in set(ops)}
    assert len(freq) == 20 and all(0.04 < f < 0.06 for f in freq.values())  # uniform over 20 names
    assert all(
        0.27 < c / sum(counts.values()) < 0.40 for c in counts.values()
    )  # uniform over ADD's variants
    assert min(loadi) < 10 and max(loadi) > 245
    regs = memory.reshape(2000, 256, 4)[..., 1:][
        (words[..., 0] != 11)[..., None] & (words[..., 1:] > 0)
    ]
    assert (
        regs.min() == 1
        and regs.max() == 10
        and all(0.08 < (regs == r).mean() < 0.12 for r in range(1, 11))
    )


def test_random_programs_are_deterministic():
    a = sim.random_programs(np.random.default_rng(7), 100, 1, 255)
    b = sim.random_programs(np.random.default_rng(7), 100, 1, 255)
    c = sim.random_programs(np.random.default_rng(8), 100, 1, 255)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert not (a[0] == c[0]).all()


def test_random_programs_check_lengths():
    rng = np.random.default_rng(0)
    for lo, hi in ((0, 5), (5, 4), (1, 256)):
        with pytest.raises(sim.CPUError):
            sim.random_programs(rng, 1, lo, hi)


# ----------------------------------------------------------------------------- names and layout


def test_program_text_and_md5_match_reference_naming():
    memory = memory_of("INC A", "LOADI 7", "HLT")
    assert sim.program_lines(memory) == ["INC A", "LOADI 7", "HLT"]
    assert sim.program_text(memory) == "INC A\nLOADI 7\nHLT\n"
    assert sim.program_md5(memory) == hashlib.md5(b"INC ALOADI 7HLT").hexdigest()
    assert sim.program_names(np.frombuffer(memory, np.uint8)[None]) == [sim.program_md5(memory)]


def test_instance_layout():
    memory = memory_of("INC", "HLT")
    states = sim.run_program(memory, 1, [2] * 10)
    data = sim.make_instance(memory, states)
    assert len(data) == 1024 + 16 * 3
    assert sim.split_instance(data) == (memory, states)
    for size in (0, 1023, 1024, 1039, 1041, 1024 + 16 * 3 - 1):
        with pytest.raises(sim.InvalidInstanceError, match="not a CPU instance"):
            sim.split_instance(bytes(size))
