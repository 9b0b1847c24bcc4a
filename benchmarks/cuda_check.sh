#!/usr/bin/env bash
# One pass on a CUDA machine: the tests with the GPU visible, the CPU-state demo trained on the
# GPU, then `bgpt bench` on CUDA (small and paper, fp32 and bf16, compile, checkpointing,
# generation at batch 1 and 8). Everything lands in OUT (default: cuda-check/).
#   bash benchmarks/cuda_check.sh [OUT] [DEMO_MINUTES]
# Uses the python3 on PATH (it must hold a CUDA build of torch); bgpt runs from this checkout.
set -u
OUT=${1:-cuda-check}
MINUTES=${2:-3.5}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
{ nvidia-smi -L; $PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'; nproc; } >"$OUT/machine.txt" 2>&1

# 1. tests, with the GPU visible (device auto picks it), beside 2. the demo
OMP_NUM_THREADS=2 timeout 240 $PY -m pytest -q -p no:cacheprovider -n 6 -rfE tests/test_cuda.py tests/test_model.py tests/test_train.py \
    tests/test_generate.py tests/test_checkpoint.py tests/test_cpu_evaluate.py tests/test_bench.py >"$OUT/tests.log" 2>&1 &
TESTS=$!
timeout $($PY -c "print(int($MINUTES * 60 + 200))") $PY -m bgpt demo --out /tmp/bgpt-demo --minutes "$MINUTES" \
    --train 200000 --hidden-size 256 --batch-size 64 --lr 1.5e-3 >"$OUT/demo.log" 2>&1
echo "demo exit $?" >>"$OUT/demo.log"
cp /tmp/bgpt-demo/report.json /tmp/bgpt-demo/accuracy_by_length.png "$OUT/" 2>/dev/null
cp /tmp/bgpt-demo/run/metrics.jsonl "$OUT/demo-metrics.jsonl" 2>/dev/null
wait $TESTS
echo "tests exit $?" >>"$OUT/tests.log"

# 3. bench on CUDA, one JSON object per line
bench() { timeout 120 $PY -m bgpt bench "$@" --json >>"$OUT/bench.jsonl" 2>>"$OUT/bench.err" || echo "{\"failed\": \"$*\"}" >>"$OUT/bench.jsonl"; }
for dtype in fp32 bf16; do
    bench train --config small --dtype $dtype --batch-size 8
    bench train --config paper --dtype $dtype --batch-size 8
done
bench train --config paper --dtype bf16 --batch-size 32
bench train --config paper --dtype bf16 --batch-size 8 --gradient-checkpointing
bench train --config paper --dtype bf16 --batch-size 8 --dropout 0
bench train --config paper --dtype bf16 --batch-size 8 --compile --warmup 3
bench train --config small --dtype bf16 --batch-size 8 --compile --warmup 3
bench eval --config paper --dtype bf16 --batch-size 8
for b in 1 8; do
    bench generate --config small --dtype bf16 --batch-size $b --nbytes 1024 --steps 2
    bench generate --config paper --dtype bf16 --batch-size $b --nbytes 1024 --steps 2
done
bench generate --config small --dtype bf16 --batch-size 1 --nbytes 1024 --steps 2 --engine uncached
echo done >>"$OUT/bench.err"
