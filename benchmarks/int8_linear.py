"""Which kernel should run a linear layer with int8 (or 16-bit) weights on this CPU?

    python benchmarks/int8_linear.py [--threads 2] [--rows 1 8]

The paper model's matrices (768 x 2304, 768 x 3072, 3072 x 768) at 1 and 8 rows, each way
PyTorch offers, microseconds per call (median of 200) and the weight bytes read per second.
Each call takes the next of --copies independent weight sets (default: 24, about 170 MB of
fp32 per shape), so the weights come from memory as in generation, not from the cache:
  dense fp32 / bf16        F.linear on fp32 or bf16 weights (the exact path and --weights bf16)
  int8pack fp32 / bf16     aten._weight_int8pack_mm: weight-only int8, activations fp32 / bf16
  int8 -> fp32 twin        the int8 weight cast to fp32 at each call, then F.linear
  fbgemm dynamic int8      quantized.linear_dynamic: int8 weights, activations quantized per
                           call (per tensor: a row's result depends on the other rows)
  fbgemm fp16 weights      quantized.linear_dynamic_fp16: fp16 weights, fp32 activations
  int_mm per-row int8      activations quantized per row (symmetric), torch._int_mm
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")
SHAPES = [(768, 2304), (768, 3072), (3072, 768)]


def timed(fns: list, repeats: int = 200) -> float:
    with torch.inference_mode():
        for fn in fns:
            fn()
        times = []
        for i in range(repeats):
            fn = fns[i % len(fns)]
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def cases(k: int, n: int, rows: int) -> dict:
    w = torch.randn(n, k) * 0.02
    b = torch.zeros(n)
    scale = w.abs().amax(1) / 127
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    x = torch.randn(rows, k)
    xb, wb, sb = x.bfloat16(), w.bfloat16(), scale.bfloat16()
    qt = torch._make_per_channel_quantized_tensor(
        q, scale.double(), torch.zeros(n, dtype=torch.long), 0
    )
    packed = torch.ops.quantized.linear_prepack(qt, b)
    packed16 = torch.ops.quantized.linear_prepack_fp16(w, b)
    qT = q.t().contiguous()

    def int_mm():
        sx = x.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
        xq = torch.round(x / sx).to(torch.int8)
        if rows < 17:  # _int_mm wants M > 16 on some builds: pad
            xq = torch.cat([xq, xq.new_zeros(17 - rows, k)])
        return torch._int_mm(xq, qT)[:rows] * sx * scale

    out = {
        "dense fp32": (lambda: F.linear(x, w, b), 4),
        "dense bf16": (lambda: F.linear(xb, wb), 2),
        "int8pack fp32": (lambda: torch.ops.aten._weight_int8pack_mm(x, q, scale), 1),
        "int8pack bf16": (lambda: torch.ops.aten._weight_int8pack_mm(xb, q, sb), 1),
        "int8 -> fp32 twin": (lambda: F.linear(x, q.float()) * scale, 1),
        "fbgemm dynamic int8": (lambda: torch.ops.quantized.linear_dynamic(x, packed, True), 1),
        "fbgemm fp16 weights": (lambda: torch.ops.quantized.linear_dynamic_fp16(x, packed16), 2),
        "int_mm per-row int8": (int_mm, 1),
    }
    return {name: (fn, size * k * n) for name, (fn, size) in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    p.add_argument("--copies", type=int, default=24, help="weight sets cycled through")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| kernel | rows | " + " | ".join(f"{k}x{n} us (GB/s)" for k, n in SHAPES) + " |")
    print("|---|---|" + "---|" * len(SHAPES))
    for rows in args.rows:
        table: dict[str, list[str]] = {}
        for k, n in SHAPES:
            sets = [cases(k, n, rows) for _ in range(args.copies)]
            for name, (_, nbytes) in sets[0].items():
                try:
                    s = timed([c[name][0] for c in sets])
                    cell = f"{s * 1e6:.0f} ({nbytes / s / 1e9:.1f})"
                except RuntimeError as e:
                    cell = f"n/a ({str(e).splitlines()[0][:40]})"
                table.setdefault(name, []).append(cell)
        for name, cells in table.items():
            print(f"| {name} | {rows} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
