#!/usr/bin/env bash
# File types: a bgpt classifier beside Magika and libmagic on the same held-out files
# (docs/media.md, "File types against the tools people use").
#
#   bash experiments/filetypes.sh [OUT]          # OUT defaults to runs/filetypes
#
# Builds the filetypes set, pre-trains the `small` model generatively on its training files,
# fine-tunes a classifier from it (and, for comparison, one from random weights), and runs
# benchmarks/filetypes_tools.py with the random-start one (the better of the two here).
# Environment: GEN_STEPS (200), CLS_STEPS (300), QUICK=1 (3 steps each), BGPT (bgpt),
# PYTHON (python).
set -euo pipefail
OUT=${1:-runs/filetypes}
GEN_STEPS=${GEN_STEPS:-200}
CLS_STEPS=${CLS_STEPS:-300}
[ -n "${QUICK:-}" ] && GEN_STEPS=3 CLS_STEPS=3
BGPT=${BGPT:-bgpt}
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
COMMON=(--max-patches 512 --dtype bf16 --batch-size 8 --save-every 100000 --eval-max-files 100 --no-progress)
mkdir -p "$OUT"
[ -d "$OUT/set/test" ] || "$BGPT" media build filetypes --out "$OUT/set" --json > /dev/null
[ -e "$OUT/gen/latest" ] || "$BGPT" train "$OUT/set/train" --eval "$OUT/set/test" --out "$OUT/gen" \
  --steps "$GEN_STEPS" --lr 2e-3 "${COMMON[@]}"
[ -e "$OUT/cls/latest" ] || "$BGPT" train-classifier "$OUT/set/train" --eval "$OUT/set/test" \
  --out "$OUT/cls" --init "$OUT/gen" --steps "$CLS_STEPS" --lr 1e-3 "${COMMON[@]}"
"$BGPT" eval "$OUT/gen" "$OUT/set/test" --json > "$OUT/gen.eval.json"
"$BGPT" eval "$OUT/cls" "$OUT/set/test" --json > "$OUT/cls.eval.json"
[ -e "$OUT/cls-random/latest" ] || "$BGPT" train-classifier "$OUT/set/train" --eval "$OUT/set/test" \
  --out "$OUT/cls-random" --steps "$CLS_STEPS" --lr 1e-3 --config small "${COMMON[@]}"
"$BGPT" eval "$OUT/cls-random" "$OUT/set/test" --json > "$OUT/cls-random.eval.json"
"$PYTHON" "$HERE/benchmarks/filetypes_tools.py" "$OUT/set/test" --run "$OUT/cls-random" \
  --json "$OUT/tools.json" --markdown
