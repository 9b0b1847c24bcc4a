#!/usr/bin/env bash
# The paper's recipe (Tables 2-3) at CPU scale on the sets `bgpt media build` makes
# (docs/media.md, "The recipe"):
#
#   bash experiments/media_recipe.sh [OUT]       # OUT defaults to runs/media-recipe
#
# For each task T in TASKS (digits = image, text, speech = audio):
#   gen-T          generative training on T/train from random weights (pre-training on the
#                  task's own modality; pre-training and generative fine-tuning coincide)
#   gen-T-from-X   generative pre-training on another modality X (gen-X), then generative
#                  fine-tuning on T/train: the cross-modal start
#   cls-T-random   classification fine-tuning from random weights (the paper's bGPT_random)
#   cls-T-same     classification fine-tuning from gen-T
#   cls-T-cross    classification fine-tuning from gen-T-from-X
# Every generative run is scored with `bgpt eval` (BPB) on T/test, every classifier with
# `bgpt eval` (accuracy) on T/test. All models share one shape (`small`, max_patches 512 so
# that speech's 8044-byte WAV fits) so any run can start another.
# Environment: TASKS ("digits text speech"), CROSS ("digits:text text:digits speech:digits",
# task:source pairs), GEN_STEPS_<task> / CLS_STEPS_<task> (step counts, defaults below),
# QUICK=1 (3 steps per run: checks the pipeline), BGPT (bgpt).
set -euo pipefail
OUT=${1:-runs/media-recipe}
TASKS=${TASKS:-"digits text speech"}
CROSS=${CROSS:-"digits:text text:digits speech:digits"}
BGPT=${BGPT:-bgpt}
declare -A GEN_STEPS=([digits]=300 [text]=300 [speech]=150)
declare -A CLS_STEPS=([digits]=200 [text]=300 [speech]=150)
for t in digits text speech; do  # per-task overrides: GEN_STEPS_speech=100 ...
  v=GEN_STEPS_$t; [ -n "${!v:-}" ] && GEN_STEPS[$t]=${!v}
  v=CLS_STEPS_$t; [ -n "${!v:-}" ] && CLS_STEPS[$t]=${!v}
done
if [ -n "${QUICK:-}" ]; then  # a smoke run of the whole pipeline: 3 steps everywhere
  for t in digits text speech; do GEN_STEPS[$t]=3; CLS_STEPS[$t]=3; done
fi
COMMON=(--max-patches 512 --dtype bf16 --batch-size 8 --save-every 100000 --eval-max-files 100 --no-progress)
mkdir -p "$OUT"

for t in $TASKS; do
  [ -d "$OUT/$t/test" ] || "$BGPT" media build "$t" --out "$OUT/$t" --json > /dev/null
done

gen() {  # gen NAME TASK [INIT]
  local name=$1 task=$2 init=${3:-}
  if [ ! -e "$OUT/$name/latest" ]; then
    "$BGPT" train "$OUT/$task/train" --eval "$OUT/$task/test" --out "$OUT/$name" \
      --steps "${GEN_STEPS[$task]}" --lr 2e-3 ${init:+--init "$OUT/$init"} "${COMMON[@]}"
  fi
  "$BGPT" eval "$OUT/$name" "$OUT/$task/test" --json > "$OUT/$name.eval.json"
}
cls() {  # cls NAME TASK [INIT]
  local name=$1 task=$2 init=${3:-}
  if [ ! -e "$OUT/$name/latest" ]; then
    "$BGPT" train-classifier "$OUT/$task/train" --eval "$OUT/$task/test" --out "$OUT/$name" \
      --steps "${CLS_STEPS[$task]}" --lr 1e-3 --config small ${init:+--init "$OUT/$init"} "${COMMON[@]}"
  fi
  "$BGPT" eval "$OUT/$name" "$OUT/$task/test" --json > "$OUT/$name.eval.json"
}

for t in $TASKS; do gen "gen-$t" "$t"; done
for pair in $CROSS; do
  t=${pair%%:*} x=${pair##*:}
  case " $TASKS " in *" $t "*) ;; *) continue ;; esac
  [ -e "$OUT/gen-$x/latest" ] || gen "gen-$x" "$x"
  gen "gen-$t-from-$x" "$t" "gen-$x"
done
for t in $TASKS; do
  cls "cls-$t-random" "$t"
  cls "cls-$t-same" "$t" "gen-$t"
  for pair in $CROSS; do
    [ "${pair%%:*}" = "$t" ] && cls "cls-$t-cross" "$t" "gen-$t-from-${pair##*:}"
  done
done

python3 - "$OUT" $TASKS <<'PY'
import json, sys
from pathlib import Path
out, tasks = Path(sys.argv[1]), sys.argv[2:]
def get(name, key):
    p = out / f"{name}.eval.json"
    return json.loads(p.read_text().strip().splitlines()[-1]).get(key) if p.exists() else None
print("| task | start | generative BPB (test) | classification accuracy (test) |")
print("|---|---|---:|---:|")
for t in tasks:
    cross = sorted(p.name for p in out.glob(f"gen-{t}-from-*") if p.is_dir())
    rows = [("random", None, f"cls-{t}-random"), (f"{t} (same modality)", f"gen-{t}", f"cls-{t}-same")]
    rows += [(c.split("-from-")[1] + " then " + t + " (cross-modal)", c, f"cls-{t}-cross") for c in cross]
    for start, g, c in rows:
        bpb, acc = (get(g, "bpb") if g else None), get(c, "accuracy")
        fmt = lambda v, f: "-" if v is None else format(v, f)
        print(f"| {t} | {start} | {fmt(bpb, '.3f')} | {fmt(acc, '.1%')} |")
PY
