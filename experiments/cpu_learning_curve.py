"""The learning curve of docs/cpu.md: one-step byte accuracy on held-out programs against the
programs a run has trained on, for the faithful model (the paper's architecture) and with the
byte-level decoder reading the previous state, beside the two baselines.

    python experiments/cpu_learning_curve.py runs/cpu-study runs/demo docs/cpu_learning_curve.png

Points: the recorded faithful runs of earlier sessions (docs/cpu.md, "How accuracy grows with
training"), the runs of experiments/cpu_study.sh found in the study folder, and the demo's
report when there is one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (steps, batch, one-step byte accuracy, label): faithful runs recorded in docs/cpu.md
FAITHFUL_HISTORY = [
    (400, 8, 0.333, "long run snapshot"),
    (1424, 8, 0.406, "exp 2"),
    (2659, 8, 0.471, "demo, session 3"),
    (2888, 8, 0.470, "demo, session 4"),
    (3221, 8, 0.501, "demo, session 5"),
    (3031, 8, 0.481, "demo, session 6"),
    (4799, 64, 0.845, "H100, width 256, session 5"),
]
BATCH = {"ctx-states-batch32": 32}


def steps_of(run: Path) -> int:
    return max(
        json.loads(line).get("step", 0) for line in (run / "metrics.jsonl").read_text().splitlines()
    )


def main(study: str, demo: str, out: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.8))
    xs, ys = zip(*[(s * b, a) for s, b, a, _ in FAITHFUL_HISTORY], strict=True)
    ax.plot(xs, ys, "o", color="tab:gray", label="faithful (paper's model), earlier sessions")
    base = None
    for run in sorted(Path(study).glob("*/one_step.json")):
        r = json.loads(run.read_text())
        base = r["one_step"]
        name = run.parent.name
        seen = steps_of(run.parent) * BATCH.get(name, 8)
        ctx = name.startswith("ctx")
        ax.plot(
            seen,
            base["model"]["byte_accuracy"],
            "s" if ctx else "o",
            color="tab:blue" if ctx else "tab:gray",
            mfc="none" if not ctx else None,
        )
        if not ctx:  # the byte-context runs sit in one cluster: the table names them
            ax.annotate(
                name,
                (seen, base["model"]["byte_accuracy"]),
                fontsize=7,
                xytext=(4, -3),
                textcoords="offset points",
            )
    report = Path(demo) / "report.json"
    if report.exists():
        r = json.loads(report.read_text())
        seen = r["train"].get("steps", 0) * 8
        ax.plot(
            seen,
            r["one_step"]["model"]["byte_accuracy"],
            "*",
            ms=14,
            color="tab:red",
            label="bgpt demo (byte context)",
        )
    if base:
        for key, label, style in (
            ("repeat", "repeat the previous state", ":"),
            ("pc_ir", "previous state, PC+1, fetched IR", "--"),
        ):
            ax.axhline(
                base[key]["byte_accuracy"], ls=style, color="k", lw=1, label=f"baseline: {label}"
            )
    ax.plot([], [], "s", color="tab:blue", label="byte context (this study)")
    ax.plot([], [], "o", color="tab:gray", mfc="none", label="faithful (this study)")
    ax.set_xscale("log")
    ax.set_xlabel("programs trained on (steps x batch)")
    ax.set_ylabel("one-step byte accuracy, held-out programs")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
