#!/usr/bin/env bash
# Issue 21's quality check of --weights: one trained model scored in every form on the same
# held-out files: bits per byte (`bgpt eval`) and greedy CPU-state accuracy one step at a time
# (`bgpt cpu evaluate --no-free-run`).
#
#   bash experiments/weights_quality.sh RUN DATA OUT     # e.g. the demo's run and data/test
# FORMS="fp16 int8" scores only those (the table needs fp32's files in OUT).
set -euo pipefail
RUN=$1; DATA=$2; OUT=${3:-runs/weights-quality}
BGPT=${BGPT:-bgpt}
mkdir -p "$OUT"
for w in ${FORMS:-fp32 bf16 fp16 int8}; do
  start=$(date +%s.%N)
  "$BGPT" eval "$RUN" "$DATA" --weights "$w" --json -q > "$OUT/eval-$w.json"
  mid=$(date +%s.%N)
  "$BGPT" cpu evaluate "$RUN" "$DATA" --weights "$w" --no-free-run --json -q > "$OUT/cpu-$w.json"
  end=$(date +%s.%N)
  echo "$w eval $(echo "$mid - $start" | bc) s, cpu evaluate $(echo "$end - $mid" | bc) s" | tee -a "$OUT/times.txt"
done
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
ref = json.loads((out / "eval-fp32.json").read_text())["bpb"]
print("| weights | BPB | vs fp32 | one-step byte accuracy | state accuracy |")
print("|---|---:|---:|---:|---:|")
for w in ("fp32", "bf16", "fp16", "int8"):
    e = json.loads((out / f"eval-{w}.json").read_text())
    c = json.loads((out / f"cpu-{w}.json").read_text())
    one = c["one_step"]["model"]
    print(f"| {w} | {e['bpb']:.4f} | {100 * (e['bpb'] / ref - 1):+.2f} % | "
          f"{100 * one['byte_accuracy']:.2f} % | {100 * one['state_accuracy']:.2f} % |")
PY
