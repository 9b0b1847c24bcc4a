"""`bgpt cpu ...`: the CPU-state task (simulator, data, assembler, model runs)."""

from bgpt.tasks.cpu.cli import add_arguments as cpu_add_arguments
from bgpt.tasks.cpu.cli import run as cpu_run

__all__ = ["cpu_add_arguments", "cpu_run"]
