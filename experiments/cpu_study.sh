#!/usr/bin/env bash
# What makes the CPU-state task learnable per CPU-minute (docs/cpu.md, "The study").
#
#   bash experiments/cpu_study.sh [OUT]          # OUT defaults to runs/cpu-study
#
# One data set (the demo's: 60,000 training and 200 held-out programs of 1-128 instructions),
# then one run per hypothesis, each trained for the same wall time (MINUTES) with the same
# threads (THREADS), PAIRS runs side by side; each run is scored by `bgpt cpu evaluate` on the
# 200 held-out programs (one step) and on the first 40 of them (free-running), beside the
# baselines, with accuracy per state byte. `python experiments/cpu_study_table.py OUT` prints
# the table. Environment: MINUTES (8), THREADS (1), PAIRS (2), RUNS (all), BGPT (bgpt).
set -euo pipefail
OUT=${1:-runs/cpu-study}
MINUTES=${MINUTES:-8}
THREADS=${THREADS:-1}
PAIRS=${PAIRS:-2}
BGPT=${BGPT:-bgpt}
mkdir -p "$OUT"
export OMP_NUM_THREADS=$THREADS NUMBA_NUM_THREADS=$THREADS

[ -d "$OUT/data/test" ] || "$BGPT" cpu generate --out "$OUT/data" --train 60000 --test 200 --max-len 128 --packed --quiet
[ -d "$OUT/short/test" ] || "$BGPT" cpu generate --out "$OUT/short" --train 60000 --test 20 --max-len 16 --packed --quiet --seed 1

# The demo's model and recipe; each run changes one thing.
BASE=(--hidden-size 128 --max-patches 196 --batch-size 8 --lr 2e-3 --warmup 0.05 --dropout 0
      --dtype bf16 --save-every 1000000 --eval-max-files 50 --log-every 20 --no-progress)
declare -A ARGS=(
  [faithful]=""
  [ctx]="--byte-context"
  [ctx-wide]="--byte-context --hidden-size 256 --patch-layers 2 --byte-layers 1"
  [ctx-lr4e-3]="--byte-context --lr 4e-3"
  [ctx-heads8]="--byte-context --heads 8"
  [ctx-deep]="--byte-context --patch-layers 8"
  [ctx-batch32]="--byte-context --batch-size 32 --lr 4e-3"
  [ctx-curriculum]="--byte-context"  # half the time on programs of 1-16 instructions, then 1-128
)
RUNS=${RUNS:-"faithful ctx ctx-wide ctx-lr4e-3 ctx-heads8 ctx-deep ctx-batch32 ctx-curriculum"}

one() {
  local name=$1 run=$OUT/$1
  [ -e "$run/eval.json" ] && return
  rm -rf "$run" "$run-short"
  # shellcheck disable=SC2086
  if [ "$name" = ctx-curriculum ]; then
    "$BGPT" train "$OUT/short/train" --out "$run-short" "${BASE[@]}" ${ARGS[$name]} --minutes "$(python3 -c "print($MINUTES / 2)")"
    "$BGPT" train "$OUT/data/train" --eval "$OUT/data/test" --out "$run" --init "$run-short" "${BASE[@]}" \
      --minutes "$(python3 -c "print($MINUTES / 2)")"
  else
    "$BGPT" train "$OUT/data/train" --eval "$OUT/data/test" --out "$run" "${BASE[@]}" ${ARGS[$name]} --minutes "$MINUTES"
  fi > "$run.log" 2>&1
  "$BGPT" cpu evaluate "$run" "$OUT/data/test" --dtype bf16 --batch-size 16 --no-free-run --json > "$run/one_step.json"
  "$BGPT" cpu evaluate "$run" "$OUT/data/test" --dtype bf16 --batch-size 16 --max-files 40 --json > "$run/free_run.json"
  echo '{}' > "$run/eval.json"
}

running=0
for name in $RUNS; do
  one "$name" &
  running=$((running + 1))
  if [ "$running" -ge "$PAIRS" ]; then wait -n; running=$((running - 1)); fi
done
wait
