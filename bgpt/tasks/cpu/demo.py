"""`bgpt demo`: the project's main job, end to end on a CPU in about a quarter of an hour.

1. builds a CPU-state data set (random programs and their traces, packed shards),
2. trains a small bGPT on it for a bounded time (bf16 autocast on CPU),
3. evaluates it on held-out programs against trivial baselines on the same files,
4. prints a report with one program's trace beside the model's, and where it all is.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bgpt.errors import BGPTError
from bgpt.validation import check_fields

logger = logging.getLogger(__name__)
MARKER = "bgpt-demo.json"
FAITHFUL_FIGURE = (
    "the paper's model (no byte context) at the same width, recipe and wall time reached 30-33 % "
    "one-step byte accuracy on held-out programs of 1-128 instructions (docs/cpu.md, the study)"
)
"""Printed under the report: the faithful architecture's best figure from the recorded study."""


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    """Folder for the data, the run and the report (replaced if it holds an earlier demo)."""
    minutes: float = 11.0
    """Training time; data building and evaluation add about three minutes."""
    train: int = 60000
    """Training programs."""
    test: int = 200
    """Held-out programs for the report."""
    min_len: int = 1
    """Fewest instructions per program (HLT included)."""
    max_len: int = 255
    """Most instructions per program (HLT included): 255, the reference's distribution."""
    seed: int = 0
    """Seed of the data and the training run."""
    hidden_size: int = 128
    """Width of the model (the small preset otherwise: 4 patch layers, 2 byte layers)."""
    batch_size: int = 8
    """Programs per optimizer step."""
    lr: float = 2e-3
    """Peak learning rate."""
    byte_context: bool = True
    """The byte-level decoder reads the previous state's bytes (beyond the paper; docs/cpu.md,
    "The study"); --no-byte-context trains the paper's model."""
    states_only: bool = True
    """Train the byte-level decoder on the state patches only: the program in memory is input,
    not something to simulate (--no-states-only: every patch, as the paper)."""
    dtype: str = "auto"
    """Autocast dtype (auto: bf16)."""
    free_run_files: int = 40
    """Held-out programs also run free (the whole trace generated from the first state)."""

    def __post_init__(self) -> None:
        check_fields(self)
        if not 0 < self.minutes <= 24 * 60:
            raise BGPTError(f"--minutes must be in (0, 1440], got {self.minutes}")
        if self.train < 16 or self.test < 1:
            raise BGPTError("--train must be >= 16 and --test >= 1")
        if not 0 <= self.free_run_files <= self.test:
            raise BGPTError("--free-run-files must be between 0 and --test")


def _prepare(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise BGPTError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise BGPTError(f"{out} holds other files; give the demo an empty or new --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)


def run_demo(cfg: DemoConfig) -> dict:
    from bgpt.checkpoint import load
    from bgpt.data import StreamDataset, open_files
    from bgpt.evaluate import evaluate_generative
    from bgpt.files import atomic_write_text
    from bgpt.tasks.cpu.data import generate_dataset
    from bgpt.tasks.cpu.evaluate import (
        BASELINE_NAMES,
        Instance,
        bytes_to_states,
        evaluate_cpu,
        format_trace,
        plot_by_length,
    )
    from bgpt.tasks.cpu.isa import FIRST_STATE_PATCH
    from bgpt.train import TrainConfig, train

    t0 = time.time()
    out = Path(cfg.out)
    _prepare(out)
    atomic_write_text(out / MARKER, json.dumps(asdict(cfg), indent=2))
    logger.info(
        f"[1/3] building {cfg.train} training and {cfg.test} held-out programs ({cfg.min_len}-{cfg.max_len} instructions)"
    )
    generate_dataset(
        out / "data", cfg.train, cfg.test, cfg.min_len, cfg.max_len, cfg.seed, packed=True
    )
    context = 1 + 64 + cfg.max_len + 1 + 1  # header, memory, states, end patch
    logger.info(f"[2/3] training for {cfg.minutes:g} minutes")
    report = train(
        TrainConfig(
            data=[str(out / "data" / "train")],
            eval=[str(out / "data" / "test")],
            out=str(out / "run"),
            config="small",
            model_overrides={
                "hidden_size": cfg.hidden_size,
                "max_patches": max(context, 8),
                "dropout": 0.0,
                "byte_context": cfg.byte_context,
            },
            minutes=cfg.minutes,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            warmup=0.05,
            seed=cfg.seed,
            dtype=cfg.dtype,
            loss_from_patch=FIRST_STATE_PATCH if cfg.states_only else 0,
            save_every=10**9,
            eval_max_files=50,
            log_every=20,
        )
    )
    logger.info("[3/3] evaluating on held-out programs")
    model = load(out / "run")
    files = open_files([out / "data" / "test"])
    instances = [Instance.parse(files.read(i), files.names[i]) for i in range(len(files))]
    step = evaluate_cpu(model, instances, batch_size=16, dtype="bf16", free_run=False)
    free = (
        evaluate_cpu(
            model, instances[: cfg.free_run_files], batch_size=16, dtype="bf16", free_run=True
        )
        if cfg.free_run_files
        else None
    )
    bpb = evaluate_generative(
        model, StreamDataset(files, model.config.patch_size, model.config.max_patches), 16
    )["bpb"]
    results = {
        "bpb": bpb,
        "one_step": step["one_step"],
        "train": report,
        "minutes_total": (time.time() - t0) / 60,
    }
    if free:
        results["free_run"] = free["free_run"]
        plot_by_length(
            {**free, "one_step_by_length": step["one_step_by_length"]},
            out / "accuracy_by_length.png",
        )

    arch = (
        "byte-level decoder reads the previous state (byte_context, beyond the paper)"
        if cfg.byte_context
        else "the paper's model (no byte context)"
    )
    lines = [
        "",
        "=" * 78,
        "bgpt demo: a byte model learns to simulate a CPU",
        "=" * 78,
        f"model: {model.num_parameters() / 1e6:.2f} M parameters, {arch}; "
        f"{'state patches' if cfg.states_only else 'every patch'} trained on",
        f"held-out programs: {len(instances)} ({cfg.min_len}-{cfg.max_len} instructions), bits per byte {bpb:.4f}",
    ]
    for _proto, title, r in (
        ("one_step", "each state predicted from the true trace before it", step["one_step"]),
        (
            "free_run",
            f"whole trace generated from the first state ({cfg.free_run_files} programs)",
            free and free["free_run"],
        ),
    ):
        if not r:
            continue
        lines.append(f"\n{title}:")
        lines.append(f"  {'':36}{'byte acc':>9}{'state acc':>11}")
        for key, label in (("model", "bGPT (this run)"), *BASELINE_NAMES.items()):
            lines.append(
                f"  {label:<36}{r[key]['byte_accuracy']:9.4f}{r[key]['state_accuracy']:11.4f}"
            )
        best = max(r[k]["byte_accuracy"] for k in BASELINE_NAMES)
        lines.append(
            f"  model vs best baseline: {100 * (r['model']['byte_accuracy'] - best):+.2f} points of byte accuracy"
        )
        lines.append("  byte accuracy by program length (model / " + BASELINE_NAMES["pc_ir"] + "):")
        lines.append(
            "    "
            + "   ".join(
                f"{k}: {v:.3f} / {r['pc_ir']['by_length'][k]:.3f}"
                for k, v in r["model"]["by_length"].items()
            )
        )
        lines.append("  byte accuracy by state byte (model):")
        lines.append("    " + "  ".join(f"{k} {v:.3f}" for k, v in r["model"]["by_byte"].items()))
    lines.append(f"\nfor comparison, {FAITHFUL_FIGURE}")
    eff = step["one_step"]["by_effect"]
    lines.append("\none-step byte accuracy by the instruction whose effect the state shows:")
    names = list(eff)
    for k in range(0, len(names), 7):
        lines.append("  " + "  ".join(f"{n:>5} {eff[n]:.3f}" for n in names[k : k + 7]))
    if free:
        pick = min(range(cfg.free_run_files), key=lambda i: abs(len(instances[i].states) - 10))
        lines.append(
            f"\none program, run by the model from its first state ({instances[pick].name}); * = wrong byte:"
        )
        lines.append(format_trace(instances[pick], bytes_to_states(free["predictions"][pick])))
    lines.append(
        f"\ndone in {results['minutes_total']:.1f} minutes. Run folder (a MODEL for every command): {out / 'run'}"
    )
    lines.append(f"  bgpt cpu evaluate {out / 'run'} {out / 'data' / 'test'}")
    lines.append(f"  bgpt cpu run {out / 'run'} PROGRAM.asm --state 'ACC=1,A=2'")
    text = "\n".join(lines)
    logger.info(text)
    atomic_write_text(out / "report.txt", text + "\n")
    atomic_write_text(
        out / "report.html", _report_page(model, text, instances[pick] if free else instances[0])
    )
    logger.info(
        f"the same report as a page, with one program's bytes as the model sees them: {out / 'report.html'}"
    )
    atomic_write_text(
        out / "report.json", json.dumps({k: v for k, v in results.items()}, indent=2, default=str)
    )
    return results


def _report_page(model, text: str, inst) -> str:
    """report.txt as a page, then one held-out program as `bgpt inspect` shows it."""
    import html

    from bgpt.inspect import analyse, render
    from bgpt.tasks.cpu.evaluate import one_step_predictions, states_html

    data = inst.memory.tobytes() + inst.states.tobytes()
    part = analyse(model, data, "bin", title=f"held-out program {inst.name}")
    part.sections.append(states_html(inst, one_step_predictions(model, [inst])[0], part.bits))
    return render("bgpt demo", [part], intro=f"<pre>{html.escape(text)}</pre>")
