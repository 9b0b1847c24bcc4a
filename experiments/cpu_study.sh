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
# the table. Environment: MINUTES (5), THREADS (2), PAIRS (1), RUNS (all), BGPT (bgpt).
set -euo pipefail
OUT=${1:-runs/cpu-study}
MINUTES=${MINUTES:-5}
THREADS=${THREADS:-2}
PAIRS=${PAIRS:-1}
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
  [faithful-states]="--loss-from-patch 65"
  [ctx]="--byte-context"
  [ctx-states]="--byte-context --loss-from-patch 65"
  [ctx-states-heads8]="--byte-context --loss-from-patch 65 --heads 8"
  [ctx-states-wide]="--byte-context --loss-from-patch 65 --hidden-size 256 --patch-layers 2 --byte-layers 1"
  [ctx-states-deep]="--byte-context --loss-from-patch 65 --patch-layers 8"
  [ctx-states-lr4e-3]="--byte-context --loss-from-patch 65 --lr 4e-3"
  [ctx-states-batch32]="--byte-context --loss-from-patch 65 --batch-size 32 --lr 4e-3"
  [ctx-states-curriculum]="--byte-context --loss-from-patch 65"  # half the time on programs of 1-16 instructions
  [ctx-states-sinpos]="--byte-context --loss-from-patch 65 --patch-positions sinusoidal"
)
RUNS=${RUNS:-"faithful faithful-states ctx ctx-states ctx-states-heads8 ctx-states-wide ctx-states-deep ctx-states-lr4e-3 ctx-states-batch32 ctx-states-curriculum ctx-states-sinpos"}

one() {
  local name=$1 run=$OUT/$1
  [ -e "$run/eval.json" ] && return
  rm -rf "$run" "$run-short"
  # shellcheck disable=SC2086
  if [ "${name%-curriculum}" != "$name" ]; then
    "$BGPT" train "$OUT/short/train" --out "$run-short" "${BASE[@]}" ${ARGS[$name]} --minutes "$(python3 -c "print($MINUTES / 2)")"
    "$BGPT" train "$OUT/data/train" --eval "$OUT/data/test" --out "$run" --init "$run-short" "${BASE[@]}" ${ARGS[$name]} \
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
