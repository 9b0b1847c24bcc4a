#!/usr/bin/env bash
# Re-measure every benchmark and write the figures, with the machine and each command,
# to docs/benchmarks-latest.md. Run on an idle machine: `bash benchmarks/run_all.sh`
# (QUICK=1 skips the slow paper-config and uncached-generation cases).
set -euo pipefail
cd "$(dirname "$0")/.."
BGPT=${BGPT:-.venv/bin/bgpt}
PY=${PY:-.venv/bin/python}
out=docs/benchmarks-latest.md
tmp=$(mktemp)
run() {  # run a command, record it and its output
  echo "### \`$*\`" >>"$tmp"; echo '```' >>"$tmp"
  "$@" 2>&1 | grep -v '^\[transformers\]' >>"$tmp" || echo "(failed: exit $?)" >>"$tmp"
  echo '```' >>"$tmp"; echo >>"$tmp"
}
{
  echo "# Benchmarks, latest run ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs,"
  echo "$(free -g | awk '/Mem:/ {print $2}') GB, load $(cut -d' ' -f1-3 /proc/loadavg),"
  echo "torch $($PY -c 'import torch; print(torch.__version__, torch.get_num_threads(), "threads")')."
  echo
} >"$tmp"
for dtype in fp32 bf16; do
  run "$BGPT" bench train --config small --dtype "$dtype" --batch-size 8
  run "$BGPT" bench eval --config small --dtype "$dtype" --batch-size 8
done
run "$PY" benchmarks/train.py --config small --batch-size 8 --steps 2 --rounds 2
run "$BGPT" bench data --nbytes 20000
run "$PY" benchmarks/generate.py --configs small --dtypes fp32 --batches 1 --threads 1 --sizes "256 B" "4 KB" --engines cached uncached --budget 300
if [ -z "${QUICK:-}" ]; then
  # three warm-up steps: the first two fault the activations' pages in (keep_freed_memory)
  run "$BGPT" bench train --config paper --dtype bf16 --batch-size 8 --steps 5 --warmup 3
  run "$BGPT" bench train --config paper --dtype bf16 --batch-size 8 --steps 1 --warmup 2 --gradient-checkpointing
  run "$BGPT" bench train --config paper --dtype bf16 --batch-size 2 --steps 5 --warmup 3
  run "$PY" benchmarks/generate.py --configs small paper --threads 1 --budget 300
  # inference weights (issue 21): the kernels, then generation in each form against the bandwidth
  run "$PY" benchmarks/int8_linear.py --threads 2 --rows 1 8
  run "$PY" benchmarks/generate.py --configs small paper --weights fp32 fp16 int8 bf16 --dtypes fp32 \
    --batches 1 8 --sizes "4 KB" --engines cached
  run "$PY" benchmarks/cpu_sim.py --n 40000 --n-python 4000
fi
chmod 644 "$tmp"
mv "$tmp" "$out"
echo "wrote $out"
