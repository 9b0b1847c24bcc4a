"""CPU-state modelling (bGPT paper §3): a toy CPU, its simulators, dataset and assembler.

Modules: ``isa`` (the instruction set), ``simulator`` (clear and vectorised
simulators, instance layout, random programs), ``assembler`` (text <-> memory,
readable traces), ``data`` (the train/test dataset), ``cli`` (``bgpt cpu ...``).
"""

from bgpt.tasks.cpu.assembler import AsmError, assemble, disassemble, translate
from bgpt.tasks.cpu.data import generate_dataset, true_trace
from bgpt.tasks.cpu.isa import OPS, CPUError, InvalidInstructionError
from bgpt.tasks.cpu.simulator import (
    Batch,
    InvalidInstanceError,
    NoHaltError,
    make_instance,
    program_md5,
    program_text,
    run_program,
    simulate_batch,
    split_instance,
)

__all__ = [
    "OPS",
    "AsmError",
    "Batch",
    "CPUError",
    "InvalidInstanceError",
    "InvalidInstructionError",
    "NoHaltError",
    "assemble",
    "disassemble",
    "generate_dataset",
    "make_instance",
    "program_md5",
    "program_text",
    "run_program",
    "simulate_batch",
    "split_instance",
    "translate",
    "true_trace",
]
