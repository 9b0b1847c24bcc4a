#!/usr/bin/env bash
# ABC -> MIDI at three training-set sizes (docs/music.md, "Experiment: data size").
#
#   bash experiments/music_sizes.sh [OUT]        # OUT defaults to runs/music-sizes
#
# Builds the full set and two nested subsets (--train-limit: the same 1,327 test tunes in
# each), trains the `small` model in bf16 for the same number of steps on each, and for each
# run: `bgpt eval` on the whole test split (BPB of the ABC and MIDI parts), greedy conversion
# of a fixed probe of 222 test tunes (every 6th, sorted), and `bgpt music check` on it.
# Environment: STEPS (1000), SIZES ("1000 3000 all"), LR (2e-3), BGPT (bgpt).
set -euo pipefail
OUT=${1:-runs/music-sizes}
STEPS=${STEPS:-1000}
SIZES=${SIZES:-"1000 3000 all"}
LR=${LR:-2e-3}
BGPT=${BGPT:-bgpt}
mkdir -p "$OUT"

for n in $SIZES; do
  set_dir=$OUT/data-$n
  [ -d "$set_dir/test" ] && continue
  if [ "$n" = all ]; then "$BGPT" music build --out "$set_dir" --json
  else "$BGPT" music build --out "$set_dir" --train-limit "$n" --json; fi
done

first=$(set -- $SIZES; echo "$1")
probe=$OUT/test-probe
if [ ! -d "$probe" ]; then
  mkdir -p "$probe.tmp"
  ls "$OUT/data-$first/test/"*.abc | sort | awk 'NR % 6 == 1' | while read -r f; do
    cp "$f" "${f%.abc}.mid" "$probe.tmp/"
  done
  mv "$probe.tmp" "$probe"
fi

for n in $SIZES; do
  run=$OUT/abc2mid-$n
  if [ ! -e "$run/latest" ]; then
    "$BGPT" train "$OUT/data-$n/train" --eval "$OUT/data-$n/test" --conversion 'abc->mid' \
      --out "$run" --steps "$STEPS" --dtype bf16 --lr "$LR" --save-every 250 \
      --eval-max-files 200 --no-progress
  fi
  "$BGPT" eval "$run" "$OUT/data-$n/test" --conversion 'abc->mid' --json > "$run.eval.json"
  SECONDS=0
  "$BGPT" convert "$run" "$probe"/*.abc --to mid --out "$run.pred" --batch-size 8 -q
  echo "{\"convert_seconds\": $SECONDS}" > "$run.convert.json"
  "$BGPT" music check "$run.pred" "$probe" --json > "$run.check.json" || true
  echo "== $n training tunes"; cat "$run.eval.json" "$run.check.json" "$run.convert.json"
done
