#!/usr/bin/env bash
# Does byte_context (the byte-level decoder reads the previous patch) help beyond the CPU
# task? (docs/cpu.md, "byte_context on other data"). For text (standard-library docstrings),
# MIDI (the music21 corpus rendered by abc2midi) and BMP (scikit-learn's digits): the `small`
# model with and without --byte-context, each trained for the same wall time (MINUTES), then
# `bgpt eval` BPB on the held-out files.
#
#   bash experiments/byte_context_tasks.sh [OUT]   # OUT defaults to runs/byte-context
#
# Environment: MINUTES (3), SETS ("text midi bmp"), BGPT (bgpt).
set -euo pipefail
OUT=${1:-runs/byte-context}
MINUTES=${MINUTES:-3}
SETS=${SETS:-"text midi bmp"}
BGPT=${BGPT:-bgpt}
mkdir -p "$OUT"

[ -d "$OUT/text/test" ] || "$BGPT" media build text --out "$OUT/text" > /dev/null
[ -d "$OUT/bmp/test" ] || "$BGPT" media build digits --out "$OUT/bmp" > /dev/null
if [ ! -d "$OUT/midi/test" ]; then  # the .mid halves of the ABC/MIDI pairs
  [ -d "$OUT/music/test" ] || "$BGPT" music build --out "$OUT/music" --limit 3000 > /dev/null
  for split in train test; do
    mkdir -p "$OUT/midi.tmp/$split" && cp "$OUT/music/$split/"*.mid "$OUT/midi.tmp/$split/"
  done
  mv "$OUT/midi.tmp" "$OUT/midi"
fi

for set in $SETS; do
  for arm in paper ctx; do
    run=$OUT/$set-$arm
    [ -e "$run/eval.json" ] && continue
    flag=$([ "$arm" = ctx ] && echo --byte-context || echo --no-byte-context)
    "$BGPT" train "$OUT/$set/train" --eval "$OUT/$set/test" --out "$run" --config small --max-patches 256 \
      --dropout 0 --lr 1e-3 --warmup 0.05 --dtype bf16 --minutes "$MINUTES" --save-every 1000000 \
      --eval-max-files 100 --no-progress "$flag" > "$run.log" 2>&1
    "$BGPT" eval "$run" "$OUT/$set/test" --dtype bf16 --json > "$run/eval.json"
  done
done
python3 - "$OUT" $SETS <<'EOF'
import json, sys
out, sets = sys.argv[1], sys.argv[2:]
print("| data | paper model: steps, BPB | byte_context: steps, BPB |")
print("|---|---:|---:|")
for s in sets:
    cells = []
    for arm in ("paper", "ctx"):
        steps = max(json.loads(l).get("step", 0) for l in open(f"{out}/{s}-{arm}/metrics.jsonl"))
        cells.append(f"{steps:,}, {json.load(open(f'{out}/{s}-{arm}/eval.json'))['bpb']:.4f}")
    print(f"| {s} | {cells[0]} | {cells[1]} |")
EOF
