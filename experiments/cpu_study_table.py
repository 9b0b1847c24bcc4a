"""The table of experiments/cpu_study.sh: one row per run, accuracy per state byte.

python experiments/cpu_study_table.py runs/cpu-study
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GROUPS = {
    "PC": ["PC"],
    "ACC": ["ACC"],
    "IR op": ["IR.op"],
    "IR a1-a3": ["IR.a1", "IR.a2", "IR.a3"],
    "A-J": list("ABCDEFGHIJ"),
}


def steps(run: Path) -> int:
    last = 0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        last = max(last, json.loads(line).get("step", 0))
    return last


def main(out: str) -> None:
    out = Path(out)
    rows = []
    for run in sorted(p.parent for p in out.glob("*/eval.json")):
        one = json.loads((run / "one_step.json").read_text())
        free = json.loads((run / "free_run.json").read_text())
        m = one["one_step"]["model"]
        by = m["by_byte"]
        groups = [sum(by[k] for k in ks) / len(ks) for ks in GROUPS.values()]
        rows.append(
            (
                run.name,
                steps(run),
                one["bpb"],
                m["byte_accuracy"],
                free["free_run"]["model"]["byte_accuracy"],
                *groups,
            )
        )
        base_one, base_free = one["one_step"], free["free_run"]
    print("| run | steps | BPB | one step | free-running | " + " | ".join(GROUPS) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(GROUPS))
    for name, n, bpb, acc, fr, *g in rows:
        print(
            f"| {name} | {n:,} | {bpb:.3f} | {100 * acc:.1f} % | {100 * fr:.1f} % | "
            + " | ".join(f"{100 * x:.1f}" for x in g)
            + " |"
        )
    if rows:
        for key in ("repeat", "pc_ir"):
            by = base_one[key]["by_byte"]
            g = [sum(by[k] for k in ks) / len(ks) for ks in GROUPS.values()]
            print(
                f"| baseline: {key} | | | {100 * base_one[key]['byte_accuracy']:.1f} % | {100 * base_free[key]['byte_accuracy']:.1f} % | "
                + " | ".join(f"{100 * x:.1f}" for x in g)
                + " |"
            )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/cpu-study")
