"""Assembly text <-> CPU memory, and instance files -> readable traces.

The assembly has one instruction per line, as the generator writes them::

    LOADI 7        ; ACC = 7
    ADD A B C      # C = A + B
    swap a         ; mnemonics and registers in any case; commas between operands allowed
    HLT

``#`` and ``;`` start comments; blank lines are ignored. A program is straight-line code
that ends at its first HLT: a HLT is appended when the last instruction is not one,
and an instruction after a HLT is an error (it could never run). A program holds at
most 255 instructions, its final HLT included. Errors name the line
(``line 3: ADD takes 1, 2 or 3 operands, got 4``).
"""

from __future__ import annotations

import re

from bgpt.tasks.cpu.isa import (
    ACC_INDEX,
    BY_NAME,
    HLT,
    LOADI,
    MAX_PROGRAM_LEN,
    MEMORY_SIZE,
    NUM_WORDS,
    REGISTER_CODES,
    REGISTER_NAMES,
    REGS_SLICE,
    WORD_SIZE,
    CPUError,
    format_instruction,
)
from bgpt.tasks.cpu.simulator import program_lines, run_program, split_instance


class AsmError(CPUError):
    """An assembly source or memory image that is not a valid program."""


_COMMENT = re.compile(r"[#;].*")


def _parse_line(tokens: list[str], lineno: int) -> bytes:
    name, args = tokens[0].upper(), tokens[1:]
    op = BY_NAME.get(name)
    if op is None:
        raise AsmError(
            f"line {lineno}: unknown instruction {tokens[0]!r} (known: {' '.join(BY_NAME)})"
        )
    if len(args) not in op.counts:
        raise AsmError(f"line {lineno}: {op.name} {op.takes()}, got {len(args)}")
    if op.code == LOADI:
        try:
            value = int(args[0], 0)
        except ValueError:
            raise AsmError(
                f"line {lineno}: LOADI needs an immediate value 0..255, got {args[0]!r}"
            ) from None
        if not 0 <= value <= 255:
            raise AsmError(f"line {lineno}: LOADI immediate must be 0..255, got {value}")
        operands = [value]
    else:
        operands = []
        for a in args:
            if a.upper() not in REGISTER_CODES:
                raise AsmError(f"line {lineno}: bad register {a!r} (registers are A..J)")
            operands.append(REGISTER_CODES[a.upper()])
    return bytes([op.code, *operands, 0, 0, 0][:WORD_SIZE])


def assemble(text: str) -> bytes:
    """Assemble program text into 1024 bytes of memory."""
    words: list[bytes] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        tokens = _COMMENT.sub("", raw).replace(",", " ").split()
        if not tokens:
            continue
        if words and words[-1][0] == HLT:
            raise AsmError(
                f"line {lineno}: instruction after HLT can never run (a program ends at its first HLT)"
            )
        words.append(_parse_line(tokens, lineno))
        if len(words) > MAX_PROGRAM_LEN or (len(words) == MAX_PROGRAM_LEN and words[-1][0] != HLT):
            raise AsmError(
                f"line {lineno}: program too long: at most {MAX_PROGRAM_LEN} instructions, the final HLT included"
            )
    if not words or words[-1][0] != HLT:
        words.append(bytes(WORD_SIZE))  # HLT
    return b"".join(words).ljust(MEMORY_SIZE, b"\0")


def disassemble(memory: bytes) -> str:
    """Canonical text of the program in ``memory``: ``assemble(disassemble(m)) == m``.

    Raises a CPUError for memory the assembler cannot produce: an invalid word, no
    HLT, a program longer than 255 instructions, or non-zero bytes after the HLT.
    """
    memory = bytes(memory)
    if len(memory) != MEMORY_SIZE:
        raise AsmError(f"memory must be {MEMORY_SIZE} bytes, got {len(memory)}")
    lines = program_lines(memory)
    if len(lines) > MAX_PROGRAM_LEN:
        raise AsmError(f"program has {len(lines)} instructions, more than {MAX_PROGRAM_LEN}")
    end = WORD_SIZE * len(lines)
    if any(memory[end:]):
        raise AsmError(f"memory has non-zero bytes after the HLT at instruction {len(lines) - 1}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- translate


def _word_text(word: bytes) -> str:
    try:
        return format_instruction(word)
    except CPUError:
        return "?? " + word.hex(" ")


def translate(data: bytes, check: bool = True, what: str = "data") -> str:
    """Readable form of an instance file: the program, then one line per state.

    With ``check``, re-runs the program from the first state and marks with ``!`` every
    state that differs from the simulator's (useful for a model's predictions).
    ``what`` names the data in errors (a file name).
    """
    memory, states = split_instance(data, what)
    listing = []
    for pc in range(NUM_WORDS):
        word = memory[WORD_SIZE * pc : WORD_SIZE * (pc + 1)]
        listing.append(f"  {pc:3d}  {_word_text(word)}")
        if word[0] == HLT:
            break
    trailing = sum(1 for b in memory[WORD_SIZE * len(listing) :] if b)
    out = [f"program: {len(listing)} instructions"]
    out += listing
    if trailing:
        out.append(f"  ({trailing} non-zero memory bytes after the HLT, never executed)")

    expected, note = None, ""
    if check:
        start = states[0]
        try:
            expected = run_program(memory, start[ACC_INDEX], list(start[REGS_SLICE]))
        except CPUError as e:
            note = f"not checked against the simulator: {e}"

    regs = "".join(f"{r:>4}" for r in REGISTER_NAMES)
    out.append(f"states: {len(states)}")
    out.append(f"  step   PC  ACC  IR         {regs}")
    wrong = 0
    for k, s in enumerate(states):
        ir = "-" if k == 0 and not any(s[2:6]) else _word_text(s[2:6])
        line = f"  {k:4d}  {s[0]:3d}  {s[ACC_INDEX]:3d}  {ir:<9s}  " + "".join(
            f"{v:4d}" for v in s[REGS_SLICE]
        )
        if expected is not None and (k >= len(expected) or expected[k] != s):
            line += "  !"
            wrong += 1
        out.append(line)
    if expected is not None:
        if wrong or len(expected) != len(states):
            note = f"{wrong} of {len(states)} states differ from the simulator (marked !)"
            if len(expected) != len(states):
                note += f"; the simulator records {len(expected)} states"
        else:
            note = "all states match the simulator"
    if note:
        out.append(note)
    return "\n".join(out) + "\n"
