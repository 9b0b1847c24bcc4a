"""`bgpt demo`: build CPU-state data, train a small model, evaluate it, report."""

from __future__ import annotations

import argparse
import dataclasses

from bgpt.commands._args import add_fields, collect
from bgpt.tasks.cpu.demo import DemoConfig

FIELDS = [f.name for f in dataclasses.fields(DemoConfig)]


def demo_add_arguments(p: argparse.ArgumentParser) -> None:
    add_fields(p, DemoConfig, FIELDS)


def demo_run(args: argparse.Namespace) -> int:
    from bgpt.process import tune_process

    tune_process()  # before torch loads: a long CPU job (see bgpt/process.py)
    from bgpt.tasks.cpu.demo import run_demo

    run_demo(DemoConfig(**collect(args, FIELDS)))
    return 0
