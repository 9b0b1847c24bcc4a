"""How well a model simulates the CPU: its predicted traces against the simulator's.

Two protocols, each with the same trivial baselines so the comparison is fair:

- **free-running** (the reference's metric): from memory + the first state, the model
  writes the whole trace greedily; byte accuracy counts every byte after the first
  state, missing bytes wrong. Baselines run the same way from the first state.
- **one step**: every state is predicted (greedily, byte by byte) from the true trace
  before it, so errors do not compound. Baselines: "repeat the previous state" and
  "previous state with PC+1 and the fetched IR" (registers copied).

Also whole-state accuracy, whole-trace exact rate, byte accuracy by the instruction whose
effect a state shows, and by program length.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from bgpt.device import autocast
from bgpt.model import BGPT
from bgpt.stream import PAD, collate, encode
from bgpt.tasks.cpu.isa import (
    FIRST_STATE_PATCH,
    IR_SLICE,
    MAX_PC,
    MEMORY_SIZE,
    OPS,
    PC_INDEX,
    REGISTER_NAMES,
    STATE_SIZE,
    WORD_SIZE,
)
from bgpt.tasks.cpu.simulator import split_instance

BASELINES = ("repeat", "pc_ir")
BASELINE_NAMES = {
    "repeat": "repeat the previous state",
    "pc_ir": "previous state, PC+1, fetched IR",
}
LENGTH_BUCKETS = ((1, 32), (33, 64), (65, 128), (129, 255))
"""Program lengths (instructions, HLT included) that reports group accuracy by."""
STATE_BYTE_NAMES = ("PC", "ACC", "IR.op", "IR.a1", "IR.a2", "IR.a3", *REGISTER_NAMES)
"""The 16 bytes of a state, in order: which skill each byte's accuracy measures."""


def baseline_next(prev: np.ndarray, memory: np.ndarray, kind: str) -> np.ndarray:
    """Baseline prediction of the states after `prev` (k, 16): copy, or copy + PC/IR update."""
    nxt = prev.copy()
    if kind == "pc_ir":
        pc = prev[:, PC_INDEX].astype(np.int64)
        nxt[:, PC_INDEX] = np.minimum(pc + 1, MAX_PC)
        words = memory.reshape(-1, WORD_SIZE)
        nxt[:, IR_SLICE] = words[pc]
    return nxt


def baseline_free_run(first: np.ndarray, memory: np.ndarray, kind: str, n: int) -> np.ndarray:
    """n states after `first`, each the baseline's step from the one before."""
    out = np.zeros((n, STATE_SIZE), dtype=np.uint8)
    cur = first[None]
    for k in range(n):
        cur = baseline_next(cur, memory, kind)
        out[k] = cur[0]
    return out


@dataclass
class Instance:
    memory: np.ndarray  # (1024,) uint8
    states: np.ndarray  # (n+1, 16) uint8, true trace, first state included
    name: str = ""

    @classmethod
    def parse(cls, data: bytes, name: str = "") -> Instance:
        memory, states = split_instance(data, name or "instance")
        return cls(
            np.frombuffer(memory, np.uint8),
            np.frombuffer(b"".join(states), np.uint8).reshape(-1, STATE_SIZE),
            name,
        )

    @property
    def prompt(self) -> bytes:
        return self.memory.tobytes() + self.states[0].tobytes()

    def effects(self) -> list[str]:
        """For states 1..n: the instruction whose effect the state shows ('start' for state 1)."""
        return ["start"] + [
            OPS[op].name if op < len(OPS) else "?" for op in self.states[1:-1, IR_SLICE.start]
        ]


@torch.inference_mode()
def one_step_predictions(
    model: BGPT, instances: list[Instance], batch_size: int = 8, dtype=torch.float32
) -> list[np.ndarray]:
    """For each instance, states 1..n predicted from the true trace before each (greedy
    within the state): (n, 16) uint8, or PAD (256) where the model wrote the end symbol."""
    device = next(model.parameters()).device
    s = model.config.patch_size
    if s != STATE_SIZE:
        raise ValueError(
            f"one-step CPU evaluation needs patch size {STATE_SIZE}, the state size; the model has {s}"
        )
    model.eval()
    out = []
    for k in range(0, len(instances), batch_size):
        chunk = instances[k : k + batch_size]
        batch = collate(
            [encode(inst.memory.tobytes() + inst.states.tobytes(), "bin", s) for inst in chunk]
        ).to(device)
        with autocast(device, dtype):
            feats = model.patch_decoder(batch.patches)  # (B, P, H)
        for b, inst in enumerate(chunk):
            n = len(inst.states) - 1
            rows = torch.arange(
                FIRST_STATE_PATCH, FIRST_STATE_PATCH + n, device=device
            )  # patch of state j-1 predicts state j
            f, context = feats[b, rows], batch.patches[b, rows]
            pred = torch.full((n, s), PAD, dtype=torch.long, device=device)
            for t in range(s):  # greedy, byte by byte, every state at once
                with autocast(device, dtype):
                    logits = model.byte_decoder(f, pred, context)[:, t]
                pred[:, t] = logits.float().argmax(-1)
            out.append(pred.cpu().numpy())
    return out


def free_run_predictions(
    model: BGPT, instances: list[Instance], batch_size: int = 8, dtype="fp32"
) -> list[bytes]:
    """The bytes each model writes after memory + first state (greedy), until its end patch
    or the context limit."""
    from bgpt.generate import generate

    out: list[bytes] = []
    for k in range(0, len(instances), batch_size):
        chunk = instances[k : k + batch_size]
        out += [
            o.data
            for o in generate(model, [inst.prompt for inst in chunk], "bin", top_k=1, dtype=dtype)
        ]
    return out


class Tally:
    """Byte, state and exact counts, by effect and by program length."""

    def __init__(self):
        self.bytes = self.correct = self.states = self.states_ok = self.traces = self.exact = 0
        self.by_effect: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.by_length: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        self.by_byte = np.zeros(STATE_SIZE, dtype=np.int64)  # correct bytes per state position

    def add(self, inst: Instance, pred: np.ndarray) -> None:
        """pred: (m, 16) predicted states 1.. (m may be shorter or longer than the truth)."""
        truth = inst.states[1:].astype(np.int64)
        n = len(truth)
        p = np.full((n, STATE_SIZE), -1, dtype=np.int64)
        m = min(n, len(pred))
        p[:m] = pred[:m]
        ok = p == truth  # missing bytes are wrong
        self.bytes += ok.size
        self.correct += int(ok.sum())
        self.states += n
        self.states_ok += int(ok.all(1).sum())
        self.traces += 1
        self.exact += int(ok.all() and len(pred) == n)
        self.by_byte += ok.sum(0)
        for effect, row in zip(inst.effects(), ok, strict=False):
            e = self.by_effect[effect]
            e[0] += int(row.sum())
            e[1] += row.size
        length = self.by_length[n]
        length[0] += int(ok.sum())
        length[1] += ok.size

    def summary(self) -> dict:
        return {
            "byte_accuracy": self.correct / max(1, self.bytes),
            "state_accuracy": self.states_ok / max(1, self.states),
            "exact_rate": self.exact / max(1, self.traces),
            "bytes": self.bytes,
            "states": self.states,
            "files": self.traces,
            "by_byte": {
                k: int(c) / max(1, self.states)
                for k, c in zip(STATE_BYTE_NAMES, self.by_byte, strict=True)
            },
            "by_length": self.length_buckets(),
        }

    def length_buckets(self) -> dict[str, float]:
        """Byte accuracy per range of program lengths (LENGTH_BUCKETS), where there are programs."""
        out = {}
        for lo, hi in LENGTH_BUCKETS:
            counts = [c for n, c in self.by_length.items() if lo <= n <= hi]
            if counts:
                out[f"{lo}-{hi}"] = sum(c for c, _ in counts) / sum(t for _, t in counts)
        return out


def bytes_to_states(data: bytes) -> np.ndarray:
    """Generated bytes -> (m, 16) states; a partial last state is padded with -1 (wrong)."""
    a = np.frombuffer(data, np.uint8).astype(np.int64)
    m = -(-len(a) // STATE_SIZE)
    out = np.full((m, STATE_SIZE), -1, dtype=np.int64)
    out.reshape(-1)[: len(a)] = a
    return out


def evaluate_cpu(
    model: BGPT,
    instances: list[Instance],
    batch_size: int = 8,
    dtype="fp32",
    free_run: bool = True,
    progress=None,
) -> dict:
    """Every metric of both protocols, with the baselines; see the module doc."""
    torch_dtype = (
        {"fp32": torch.float32, "bf16": torch.bfloat16}.get(dtype, dtype)
        if isinstance(dtype, str)
        else dtype
    )
    report: dict = {}
    step = Tally()
    base_step = {k: Tally() for k in BASELINES}
    for inst, pred in zip(
        instances, one_step_predictions(model, instances, batch_size, torch_dtype), strict=False
    ):
        step.add(inst, pred)
        for k in BASELINES:
            base_step[k].add(inst, baseline_next(inst.states[:-1], inst.memory, k))
    report["one_step"] = {"model": step.summary(), **{k: t.summary() for k, t in base_step.items()}}
    report["one_step"]["by_effect"] = {e: c / t for e, (c, t) in sorted(step.by_effect.items())}
    if free_run:
        free = Tally()
        base_free = {k: Tally() for k in BASELINES}
        preds = free_run_predictions(
            model, instances, batch_size, "bf16" if torch_dtype == torch.bfloat16 else "fp32"
        )
        report["predictions"] = preds
        for inst, data in zip(instances, preds, strict=False):
            free.add(inst, bytes_to_states(data))
            for k in BASELINES:
                base_free[k].add(
                    inst, baseline_free_run(inst.states[0], inst.memory, k, len(inst.states) - 1)
                )
        report.update(free.summary())  # the reference metric at the top level
        report["free_run"] = {
            "model": free.summary(),
            **{k: t.summary() for k, t in base_free.items()},
        }
        report["by_effect"] = {e: c / t for e, (c, t) in sorted(free.by_effect.items())}
        report["by_length"] = {n: c / t for n, (c, t) in sorted(free.by_length.items())}
    report["one_step_by_length"] = {n: c / t for n, (c, t) in sorted(step.by_length.items())}
    return report


def format_trace(inst: Instance, predicted: np.ndarray | None) -> str:
    """The true trace beside the predicted one, mismatching bytes marked with '*'."""
    from bgpt.tasks.cpu.isa import format_instruction

    lines = [f"{'':4}{'true (PC ACC IR | A..J)':<52}  predicted"]
    for k, true in enumerate(inst.states):
        ir = format_instruction(true[IR_SLICE]) if k else "-"
        t = (
            " ".join(f"{v:3d}" for v in true[:2])
            + f" {ir:<12}| "
            + " ".join(f"{v:3d}" for v in true[6:])
        )
        if k == 0:
            lines.append(f"{k:>3} {t}  (given)")
            continue
        if predicted is None or k - 1 >= len(predicted):
            lines.append(f"{k:>3} {t}  (missing)")
            continue
        p = predicted[k - 1]
        cells = [
            ("  ?" if v < 0 or v > 255 else f"{v:3d}") + ("*" if v != true[j] else " ")
            for j, v in enumerate(p)
        ]
        lines.append(
            f"{k:>3} {t}  "
            + "".join(cells[:2])
            + " "
            + "".join(cells[2:6])
            + " | "
            + "".join(cells[6:])
        )
    return "\n".join(lines)


def plot_by_length(report: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (
        ("by_length", "model, free-running"),
        ("one_step_by_length", "model, one step"),
    ):
        if key in report:
            xs = sorted(report[key])
            ax.plot(xs, [report[key][x] for x in xs], ".", label=label, alpha=0.7)
    ax.set_xlabel("program length (instructions, HLT included)")
    ax.set_ylabel("byte accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def states_html(inst: Instance, predicted: np.ndarray, bits: np.ndarray) -> str:
    """A `bgpt inspect` section: the trace as `bgpt cpu run` prints it, one row per state, each
    byte coloured by the bits the model spent on it (`bits`: per byte of the instance file) and
    outlined where the model's one-step greedy prediction (`predicted`, states 1..n) is wrong."""
    import html

    from bgpt.inspect import colour

    head = "".join(f"<th>{html.escape(k)}</th>" for k in STATE_BYTE_NAMES)
    rows = []
    wrong_total = 0
    for k, state in enumerate(inst.states):
        cells = []
        for j, v in enumerate(state):
            b = bits[MEMORY_SIZE + k * STATE_SIZE + j]
            guess = None if k == 0 else int(predicted[k - 1][j])
            wrong = guess is not None and guess != v
            wrong_total += wrong
            tip = f"{STATE_BYTE_NAMES[j]} = {v}, {b:.2f} bits" + (
                f"; model wrote {guess}" if guess is not None else "; given"
            )
            cells.append(
                f'<td class="{"wrong" if wrong else ""}" style="background:{colour(b)}" title="{html.escape(tip)}">'
                f"{v}{f' ({guess})' if wrong else ''}</td>"
            )
        ir = "-" if k == 0 else html.escape(_instruction_text(state[IR_SLICE]))
        rows.append(f"<tr><td>{k}</td><td>{ir}</td>{''.join(cells)}</tr>")
    n = len(inst.states) - 1
    return (
        f"<h3>CPU states (one step: each predicted from the true trace before it; outlined = wrong, "
        f"the model's byte in brackets)</h3><p>{wrong_total} wrong of {n * STATE_SIZE} state bytes</p>"
        f"<table><tr><th>state</th><th>IR</th>{head}</tr>{''.join(rows)}</table>"
    )


def _instruction_text(word) -> str:
    from bgpt.tasks.cpu.isa import CPUError, format_instruction

    try:
        return format_instruction(word)
    except CPUError:  # a word the model wrote need not be an instruction
        return " ".join(str(int(b)) for b in word)
