"""The table of experiments/classify_study.sh: per set and run, the steps it made in its
minutes, its training accuracy over its last 20 logged steps (memorising or not), accuracy on
the held-out part of train (what a run is chosen by), then on the test split beside the
trivial baselines fitted on the same training files.

    python experiments/classify_study_table.py [OUT]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: Path) -> None:
    print(
        "| set | run | steps | train accuracy | held-out (val) accuracy | test accuracy "
        "| majority | byte n-gram LR |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    baselines = {}  # per set: from the run whose evaluation fitted them
    for test in out.glob("*.test.json"):
        b = json.loads(test.read_text()).get("baselines")
        if b:
            baselines[test.name.split("-", 1)[0]] = b
    for test in sorted(out.glob("*.test.json")):
        run = test.with_name(test.name.removesuffix(".test.json"))
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
        val = [r["eval_accuracy"] for r in rows if "eval_accuracy" in r]
        steps = max((r["step"] for r in rows if "loss" in r), default=0)
        train = [r["accuracy"] for r in rows if "accuracy" in r][-20:]
        r = json.loads(test.read_text())
        s, name = run.name.split("-", 1)
        b = baselines.get(s, {})
        print(f"| {s} | {name} | {steps:,} | {100 * sum(train) / len(train):.0f} % "
              f"| {100 * val[-1]:.1f} % | {100 * r['accuracy']:.1f} % "
              f"| {100 * b.get('majority', float('nan')):.1f} % | {100 * b.get('ngram_logreg', float('nan')):.1f} % |")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/classify-study"))
