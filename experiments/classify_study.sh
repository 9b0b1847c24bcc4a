#!/usr/bin/env bash
# Issue 17's study: what makes bgpt's classifiers learn per CPU-minute? Equal-time runs of
# `bgpt train-classifier` on the sets `bgpt media build` makes, one hypothesis per run:
#
#   bash experiments/classify_study.sh [OUT]     # OUT defaults to runs/classify-study
#
# Every run trains on SET/train for $MINUTES minutes and is chosen by its accuracy on the
# held-out part of SET/train that train-classifier keeps aside by itself (--eval-fraction,
# never SET/test); `bgpt eval RUN SET/test` then scores it once, with the trivial baselines
# fitted on the same training files. experiments/classify_study_table.py prints the table.
# Environment: SETS ("digits text"; also speechspec, the speech clips as spectrograms, and
# SETpct, e.g. text25: a quarter of text/train by a hash of the names), MINUTES (4), RUNS (names
# below), BGPT (bgpt). Two sets can run side by side, one thread each (OMP_NUM_THREADS=1): the
# runs of one set stay equal.
set -euo pipefail
OUT=${1:-runs/classify-study}
SETS=${SETS:-"digits text"}
MINUTES=${MINUTES:-4}
BGPT=${BGPT:-bgpt}
RUNS=${RUNS:-"default lr1e-3 narrow aligned last attn"}
mkdir -p "$OUT"

BASE="--config small --lr 3e-4"  # the defaults the study started from; a run's flags come after
flags() {  # flags RUN SET: the one change each run makes to BASE
  case $1 in
    default) ;;                                                   # small preset, lr 3e-4
    recipe) echo "--config classifier --lr 1e-3" ;;               # the defaults the study chose
    lr1e-3) echo "--lr 1e-3" ;;                                   # learning rate x3
    lr3e-3) echo "--lr 3e-3" ;;                                   # learning rate x10
    narrow) echo "--lr 1e-3 --hidden-size 128 --patch-layers 2" ;;  # 4x cheaper steps
    aligned)  # patches on the data's own units: 4 bytes of text; one 8x8 source pixel (4 RGB repeats)
      if [ "$2" = digits ]; then echo "--lr 1e-3 --patch-size 12 --max-patches 264"
      else echo "--lr 1e-3 --patch-size 4 --max-patches 512"; fi ;;
    nodrop) echo "--lr 1e-3 --dropout 0" ;;
    drop0.3) echo "--dropout 0.3" ;;                              # regularisation: dropout x3
    wd0.1) echo "--weight-decay 0.1" ;;                           # regularisation: decay x10
    ls0.1) echo "--label-smoothing 0.1" ;;                        # softer targets
    shift16) echo "--shift-bytes 16" ;;                           # crops at every byte offset
    patch4) echo "--patch-size 4 --max-patches 512" ;;             # 4-byte patches (4x the patches)
    pretrain) ;;                                                  # half the minutes generative, below
    narrow512) echo "--lr 1e-3 --hidden-size 128 --patch-layers 2 --max-patches 512" ;;  # whole 8 KB files
    narrow-shift16) echo "--lr 1e-3 --hidden-size 128 --patch-layers 2 --shift-bytes 16" ;;
    last) echo "--lr 1e-3 --pooling last" ;;                      # the last patch has seen all
    attn) echo "--lr 1e-3 --pooling attention" ;;                 # a learned query
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

subset() {  # subset BASE PCT: BASE's train files whose name hashes below PCT %, all its test files
  [ -d "$OUT/$1/test" ] || "$BGPT" media build "$1" --out "$OUT/$1" --json > /dev/null
  python3 - "$OUT/$1" "$OUT/$1$2" "$2" <<'PY'
import hashlib, shutil, sys
from pathlib import Path
src, dst, pct = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
shutil.copytree(src / "test", dst / "test")
(dst / "train").mkdir()
for f in sorted((src / "train").iterdir()):
    if int(hashlib.sha256(f.name.encode()).hexdigest(), 16) % 100 < pct:
        shutil.copy(f, dst / "train" / f.name)
PY
}

for set in $SETS; do
  if [ ! -d "$OUT/$set/test" ]; then
    if [[ $set =~ ^([a-z]+)([0-9]+)$ ]]; then  # e.g. text25: a quarter of text/train
      subset "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    elif [ "$set" = speechspec ]; then  # the speech clips as spectrograms
      "$BGPT" media build speech --spectrogram --out "$OUT/$set" --json > /dev/null
    else
      "$BGPT" media build "$set" --out "$OUT/$set" --json > /dev/null
    fi
  fi
  for run in $RUNS; do
    dir="$OUT/$set-$run"
    minutes=$MINUTES init=()
    if [ "$run" = pretrain ]; then  # generative training on SET/train, then the classifier
      minutes=$(python3 -c "print($MINUTES / 2)")
      [ -e "$dir-gen/latest" ] || "$BGPT" train "$OUT/$set/train" --out "$dir-gen" \
        --minutes "$minutes" --lr 1e-3 --save-every 100000 --no-progress -q
      init=(--init "$dir-gen")
    fi
    if [ ! -e "$dir/latest" ]; then
      # shellcheck disable=SC2046
      "$BGPT" train-classifier "$OUT/$set/train" --out "$dir" --minutes "$minutes" \
        --save-every 100000 --no-progress -q "${init[@]}" $BASE $(flags "$run" "$set")
    fi
    # the baselines (fitted on the same training files in every run) once per set: with the
    # first run, unless the default run of an earlier round has them
    first=${RUNS%% *}
    base=(--no-baselines)
    [ "$run" = "$first" ] && [ ! -s "$OUT/$set-default.test.json" ] && base=()
    [ -s "$dir.test.json" ] || "$BGPT" eval "$dir" "$OUT/$set/test" --json -q "${base[@]}" > "$dir.test.json"
  done
done
