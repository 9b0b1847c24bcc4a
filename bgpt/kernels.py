"""Elementwise and row-wise CPU kernels for training, compiled with numba: tanh-GELU (with a
bias), dropout, the residual sum with dropout, the attention probabilities, LayerNorm, column
sums and a transpose.

These were the largest costs of a `paper` training step on a CPU after the matmuls: ATen's
bf16 tanh-GELU computes its tanh slowly (several times a bf16 multiply of the same tensor), and
dropout took five passes over memory (draw, compare, scale, select; forward and backward).
Here each is one pass, split over torch's thread count, bf16 or fp32 in and out, fp32
arithmetic. The measurements behind each kernel are in docs/benchmarks.md (sessions 5 and 6).

- `gelu` / `gelu_backward`: GPT-2's tanh approximation, the formula ATen uses; the tanh is a
  rational approximation accurate to a few fp32 ulps (Eigen's), so bf16 results equal
  ATen's except for rare one-ulp roundings (tested).
- `dropout`: keep element i when its 16-bit coin is >= round(p * 65536), scale the kept
  ones by 65536 / (65536 - drop). Coins are a pure function of (seed, i): splitmix64 of the
  counter i // 4, four 16-bit lanes per 64-bit hash. The backward pass recomputes the mask
  from the seed instead of storing it. `dropout_coins` is the same rule in plain numpy, the
  reference the kernel is tested against bit for bit.
- `residual_dropout`: a block's `x + dropout(y)` in one pass, whose backward writes y's
  gradient in y's dtype.
- `attention_probs`: the explicit attention's scale, causal mask, fp32 softmax (Cephes' exp)
  and dropout in one pass, and its backward in one more, with the roundings and the mask of
  those operations one by one (tested against them).
- `bias_gelu` / `bias_gelu_backward`: gelu(x + bias) for an MLP whose matmul runs without
  its bias; the backward also sums the bias's gradient.
- `layer_norm` / `layer_norm_backward`: LayerNorm of fp32 rows written in bf16 (what the
  Linear after it casts to), its backward taking the bf16 gradient.
- `column_sums`: a Linear's bias gradient, summed in fp32.
- `transpose`: a tiled copy of a matrix's transpose, for the weight gradients of
  `bgpt.model.weight_gradient` (oneDNN multiplies operands laid out transposed in memory
  about twice as fast as a transposed view).

Row-wise kernels that sum over rows (bias and LayerNorm gradients) sum blocks of BIAS_BLOCK
rows, then the blocks: the same result whichever thread took which rows.

`available()` is False without numba (the `fast` extra); bgpt.model then uses ATen and
`dropout_coins` for the masks. Under torch.compile it uses ATen too (inductor fuses its own).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

try:
    import numba
    from numba.core import types
    from numba.extending import intrinsic, overload
except ImportError:  # optional: bgpt.model falls back to ATen and numpy
    numba = None

KEEP_LEVELS = 1 << 16
"""The dropout probability is a multiple of 1 / KEEP_LEVELS (0.1 -> 6554/65536): each
element's coin is 16 random bits."""
GELU_BETA = math.sqrt(2.0 / math.pi)
GELU_KAPPA = 0.044715
GAMMA = 0x9E3779B97F4A7C15  # splitmix64: counter increment and the two multipliers
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
PARALLEL_MIN = 1 << 16
"""Tensors with fewer elements run on the calling thread."""
COIN_BLOCK = 2048
"""Dropout draws the coins of this many elements at a time (a multiple of 4): one hash per four
elements, in a loop LLVM vectorises, then the elements."""
BIAS_BLOCK = 256
"""`bias_gelu_backward` sums the bias gradient over blocks of this many rows, then the blocks:
the same sum whichever thread took which rows."""


def available() -> bool:
    return numba is not None


def dropout_scale(p: float) -> tuple[int, float]:
    """(coins dropped: round(p * 65536), scale of the kept elements)."""
    drop = round(p * KEEP_LEVELS)
    return drop, KEEP_LEVELS / (KEEP_LEVELS - drop)


def dropout_coins(seed: int, numel: int) -> np.ndarray:
    """The reference rule: element i's 16-bit coin, lane i % 4 of splitmix64(seed + (i // 4 + 1) * GAMMA)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (
            np.arange((numel + 3) // 4, dtype=np.uint64) + np.uint64(1)
        ) * np.uint64(GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z = z ^ (z >> np.uint64(31))
    return z.astype("<u8").view("<u2")[:numel]


def dropout_reference(x: torch.Tensor, seed: int, p: float) -> torch.Tensor:
    """`dropout` without numba: the mask from `dropout_coins`, ATen for the rest."""
    drop, scale = dropout_scale(p)
    keep = torch.from_numpy(dropout_coins(seed, x.numel()).astype(np.int32) >= drop).view(x.shape)
    return torch.where(keep, x * scale, 0)


# ----------------------------------------------------------------------------- kernels

if numba is not None:

    @intrinsic
    def _f32(typingctx, bits):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.float32))

        return types.float32(types.uint32), codegen

    @intrinsic
    def _bits(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.uint32))

        return types.uint32(types.float32), codegen

    _jit = numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
    _inline = numba.njit(cache=True, inline="always", fastmath=True, error_model="numpy")

    @_inline
    def _bf16(v):  # the bf16 bits of fp32 v, rounded to nearest even
        u = _bits(v)
        return np.uint16(
            (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        )

    def _load(x, i):  # bf16 (as uint16) or fp32 element as fp32
        raise NotImplementedError  # compiled only, see the overload

    def _store(out, i, v):  # fp32 -> bf16 rounding to nearest even, or fp32
        raise NotImplementedError

    @overload(_load, inline="always")
    def _load_typed(x, i):
        if x.dtype == types.uint16:
            return lambda x, i: _f32(np.uint32(x[i]) << np.uint32(16))
        return lambda x, i: np.float32(x[i])

    @overload(_store, inline="always")
    def _store_typed(out, i, v):
        if out.dtype == types.uint16:

            def store_bf16(out, i, v):
                out[i] = _bf16(v)

            return store_bf16

        def store_f32(out, i, v):
            out[i] = v

        return store_f32

    def _round_as(like, v):  # v rounded to the dtype of the array `like` (bf16 or fp32), as fp32
        raise NotImplementedError

    @overload(_round_as, inline="always")
    def _round_as_typed(like, v):
        if like.dtype == types.uint16:

            def round_bf16(like, v):
                return _f32(np.uint32(_bf16(v)) << np.uint32(16))

            return round_bf16
        return lambda like, v: v

    @_inline
    def _tanh(x):  # Eigen's ptanh_float: a 13/6 rational approximation; +-1 beyond +-7.9,
        # where fp32 tanh rounds to +-1 (the approximation would give 1 - 6e-8 there)
        big = np.float32(7.90531110763549805)
        if x >= big:
            return np.float32(1.0)
        if x <= -big:
            return np.float32(-1.0)
        x2 = x * x
        p = np.float32(-2.76076847742355e-16)
        p = p * x2 + np.float32(2.00018790482477e-13)
        p = p * x2 + np.float32(-8.60467152213735e-11)
        p = p * x2 + np.float32(5.12229709037114e-08)
        p = p * x2 + np.float32(1.48572235717979e-05)
        p = p * x2 + np.float32(6.37261928875436e-04)
        p = p * x2 + np.float32(4.89352455891786e-03)
        q = np.float32(1.19825839466702e-06)
        q = q * x2 + np.float32(1.18534705686654e-04)
        q = q * x2 + np.float32(2.26843463243900e-03)
        q = q * x2 + np.float32(4.89352518554385e-03)
        return p * x / q

    # Each kernel works on [start, stop) through slices: a loop over range(start, stop) on the
    # whole arrays was not vectorised (3x slower).

    @_inline
    def _gelu1(v):
        beta, kappa = np.float32(GELU_BETA), np.float32(GELU_KAPPA)
        return np.float32(0.5) * v * (np.float32(1.0) + _tanh(beta * (v + kappa * v * v * v)))

    @_inline
    def _gelu_slope(v):  # d gelu(v) / dv
        beta, kappa = np.float32(GELU_BETA), np.float32(GELU_KAPPA)
        t = _tanh(beta * (v + kappa * v * v * v))
        return np.float32(0.5) * (np.float32(1.0) + t) + np.float32(0.5) * v * (
            np.float32(1.0) - t * t
        ) * beta * (np.float32(1.0) + np.float32(3.0) * kappa * v * v)

    @_jit
    def _gelu(x, out, start, stop):
        x, out = x[start:stop], out[start:stop]
        for i in range(x.size):
            _store(out, i, _gelu1(_load(x, i)))

    @_jit
    def _gelu_backward(grad, x, out, start, stop):
        grad, x, out = grad[start:stop], x[start:stop], out[start:stop]
        for i in range(x.size):
            _store(out, i, _load(grad, i) * _gelu_slope(_load(x, i)))

    # The bias comes in x's dtype: with a fp32 bias beside bf16 x, LLVM vectorised these loops
    # 8 wide instead of 16 (1.7x slower).

    @_jit
    def _bias_gelu(x, bias, out, start, stop):  # rows [start, stop) of x (R, C): gelu(x + bias)
        for r in range(start, stop):
            xr, o = x[r], out[r]
            for j in range(xr.size):
                _store(o, j, _gelu1(_load(xr, j) + _load(bias, j)))

    @_jit
    def _bias_gelu_backward(grad, x, bias, out, partial, start, stop):
        """out = grad * gelu'(x + bias) in out's dtype; row block r // BIAS_BLOCK's column sums of
        out (as rounded) added to partial[r // BIAS_BLOCK] (start: a multiple of BIAS_BLOCK)."""
        for r in range(start, stop):
            g, xr, o, acc = grad[r], x[r], out[r], partial[r // BIAS_BLOCK]
            for j in range(xr.size):
                _store(o, j, _load(g, j) * _gelu_slope(_load(xr, j) + _load(bias, j)))
            for j in range(xr.size):  # a second loop: one loop doing both ran 8 wide
                acc[j] += _load(o, j)

    @_jit
    def _layer_norm(x, weight, bias, eps, out, mean, rstd, start, stop):
        """Rows [start, stop) of fp32 x (R, H): (x - mean) * rstd * weight + bias in out's dtype."""
        h = x.shape[1]
        for r in range(start, stop):
            xr, o = x[r], out[r]
            m = np.float32(0.0)
            for j in range(h):
                m += xr[j]
            m /= h
            v = np.float32(0.0)
            for j in range(h):
                d = xr[j] - m
                v += d * d
            s = np.float32(1.0) / np.sqrt(v / h + eps)
            mean[r], rstd[r] = m, s
            for j in range(h):
                _store(o, j, (xr[j] - m) * s * weight[j] + bias[j])

    @_jit
    def _layer_norm_backward(grad, x, weight, mean, rstd, dx, partial, start, stop):
        """x's gradient (fp32) of rows [start, stop); the weight's and bias's column sums of row
        block r // BIAS_BLOCK added to partial[0, block] and partial[1, block]."""
        h = x.shape[1]
        for r in range(start, stop):
            g, xr, d, m, s = grad[r], x[r], dx[r], mean[r], rstd[r]
            dw, db = partial[0, r // BIAS_BLOCK], partial[1, r // BIAS_BLOCK]
            a = np.float32(0.0)  # mean of g * weight
            b = np.float32(0.0)  # mean of g * weight * xhat
            for j in range(h):
                gj = _load(g, j)
                xhat = (xr[j] - m) * s
                gw = gj * weight[j]
                a += gw
                b += gw * xhat
                dw[j] += gj * xhat
                db[j] += gj
            a /= h
            b /= h
            for j in range(h):
                d[j] = s * (_load(g, j) * weight[j] - a - (xr[j] - m) * s * b)

    @_jit
    def _column_sums(
        x, partial, start, stop
    ):  # rows [start, stop) of x (R, C) into partial[r // BIAS_BLOCK]
        for r in range(start, stop):
            xr, acc = x[r], partial[r // BIAS_BLOCK]
            for j in range(xr.size):
                acc[j] += _load(xr, j)

    @_inline
    def _hash(
        seed, counter
    ):  # splitmix64(seed + (counter + 1) * GAMMA): the coins of elements 4 * counter + 0..3
        z = seed + np.uint64(counter + 1) * np.uint64(GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        return z ^ (z >> np.uint64(31))

    @_inline
    def _coins(
        seed, first, hashes
    ):  # the coins of elements first.. (first: a multiple of 4), as uint16
        for g in range(hashes.size):  # one hash per four elements (vectorised), not one per element
            hashes[g] = _hash(seed, (first >> 2) + g)
        return hashes.view(np.uint16)  # little-endian: lane k of a hash is its bits 16k..16k+15

    @_jit
    def _dropout(
        x, out, seed, drop, scale, start, stop
    ):  # x and out: bf16 or fp32, either way; start % 4 == 0
        hashes = np.empty(COIN_BLOCK // 4, np.uint64)
        for b in range(start, stop, COIN_BLOCK):
            coins = _coins(seed, b, hashes)
            xb, ob = x[b : min(b + COIN_BLOCK, stop)], out[b : min(b + COIN_BLOCK, stop)]
            for i in range(xb.size):
                _store(ob, i, _load(xb, i) * scale if coins[i] >= drop else np.float32(0.0))

    @numba.njit(
        cache=True, nogil=True, error_model="numpy"
    )  # no fastmath: x + y * scale must not become one fma
    def _residual_dropout(
        x, y, out, seed, drop, scale, start, stop
    ):  # out = x + dropout(y), fp32; start % 4 == 0
        hashes = np.empty(COIN_BLOCK // 4, np.uint64)
        for b in range(start, stop, COIN_BLOCK):
            coins = _coins(seed, b, hashes)
            xb, yb, ob = (
                x[b : min(b + COIN_BLOCK, stop)],
                y[b : min(b + COIN_BLOCK, stop)],
                out[b : min(b + COIN_BLOCK, stop)],
            )
            for i in range(xb.size):
                v = _round_as(yb, _load(yb, i) * scale) if coins[i] >= drop else np.float32(0.0)
                ob[i] = _load(xb, i) + v

    @_inline
    def _exp(x):  # Cephes' expf: 2^n * e^r, |r| <= ln2 / 2, a degree-6 polynomial; fp32 accuracy
        x = min(max(x, np.float32(-87.3)), np.float32(88.7))
        n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
        r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3333452e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        p = p * r * r + r + np.float32(1.0)
        return p * _f32(np.uint32(np.int32(n) + np.int32(127)) << np.uint32(23))

    @_inline
    def _row_coins(
        seed, first, hashes
    ):  # the coins of elements first.. as (coins, skip): element first + j's is coins[skip + j]
        aligned = first - first % 4
        return _coins(seed, aligned, hashes), first - aligned

    @_jit
    def _attention_probs(scores, scale, seed, drop, keep_scale, out, probs, start, stop):
        """Rows [start, stop) of (R, T) scores of query r % T: causal softmax of scores * scale
        (fp32 in `probs`), then dropout, in scores' dtype in `out`: the roundings of
        `(q @ k^T) * scale`, `masked_fill`, `softmax(dtype=float32).to(dtype)` and `dropout`."""
        t = scores.shape[1]
        hashes = np.empty((t + 3) // 4 + 1, np.uint64)
        for r in range(start, stop):
            n = r % t + 1
            s, o, pr = scores[r], out[r], probs[r]
            coins, skip = _row_coins(seed, r * t, hashes)
            m = np.float32(-np.inf)
            for j in range(n):
                m = max(m, _round_as(s, _load(s, j) * scale))
            z = np.float32(0.0)
            for j in range(n):
                e = _exp(_round_as(s, _load(s, j) * scale) - m)
                pr[j] = e
                z += e
            inv = np.float32(1.0) / z
            for j in range(n):
                v = pr[j] * inv
                pr[j] = v
                _store(
                    o,
                    j,
                    _round_as(s, v) * keep_scale if coins[skip + j] >= drop else np.float32(0.0),
                )
            for j in range(n, t):
                pr[j] = np.float32(0.0)
                _store(o, j, np.float32(0.0))

    @_jit
    def _attention_probs_backward(grad, probs, scale, seed, drop, keep_scale, out, start, stop):
        t = grad.shape[1]
        hashes = np.empty((t + 3) // 4 + 1, np.uint64)
        for r in range(start, stop):
            n = r % t + 1
            g, pr, o = grad[r], probs[r], out[r]
            coins, skip = _row_coins(seed, r * t, hashes)
            dot = np.float32(0.0)
            for j in range(n):
                keep = coins[skip + j] >= drop
                dot += (_round_as(g, _load(g, j) * keep_scale) if keep else np.float32(0.0)) * pr[j]
            for j in range(n):
                keep = coins[skip + j] >= drop
                dp = _round_as(g, _load(g, j) * keep_scale) if keep else np.float32(0.0)
                _store(o, j, _round_as(g, pr[j] * (dp - dot)) * scale)
            for j in range(n, t):
                _store(o, j, np.float32(0.0))

    @numba.njit(cache=True, nogil=True)
    def _transpose(
        x, out, start, stop
    ):  # rows [start, stop) of x (R, C) -> the same columns of out (C, R)
        cols, block = (
            x.shape[1],
            64,
        )  # 64 x 64 tiles: each tile's rows and columns stay in cache (tile sizes: docs/benchmarks.md)
        for r0 in range(start, stop, block):
            r1 = min(r0 + block, stop)
            for c0 in range(0, cols, block):
                for c in range(c0, min(c0 + block, cols)):
                    for r in range(r0, r1):
                        out[c, r] = x[r, c]


_pool: ThreadPoolExecutor | None = None
_pool_pid = 0


def _run(kernel, n: int, *args, align: int = 4, cost: int = 1) -> None:
    """kernel(*args, start, stop) over [0, n), split into contiguous parts (multiples of
    `align`) over torch's thread count; `cost` elements per index count towards PARALLEL_MIN."""
    global _pool, _pool_pid
    threads = torch.get_num_threads()
    if n * cost < PARALLEL_MIN or threads == 1:
        kernel(*args, 0, n)
        return
    if (
        _pool is None or _pool._max_workers < threads or _pool_pid != os.getpid()
    ):  # a forked child has no workers
        _pool, _pool_pid = (
            ThreadPoolExecutor(threads, thread_name_prefix="bgpt-kernel"),
            os.getpid(),
        )
    step = (-(-n // threads) + align - 1) // align * align
    parts = [(s, min(n, s + step)) for s in range(0, n, step)]
    for f in [_pool.submit(kernel, *args, s, e) for s, e in parts]:
        f.result()


def _flat(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a contiguous CPU bf16 (as uint16) or fp32 tensor, flattened."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16).reshape(-1)
    return t.numpy().reshape(-1)


def supports(t: torch.Tensor) -> bool:
    """Whether the kernels take this tensor: CPU, bf16 or fp32, contiguous, numba present."""
    return (
        numba is not None
        and t.device.type == "cpu"
        and t.dtype in (torch.bfloat16, torch.float32)
        and t.is_contiguous()
    )


def gelu(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    _run(_gelu, x.numel(), _flat(x), _flat(out))
    return out


def gelu_backward(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    grad = grad.contiguous().to(x.dtype)
    out = torch.empty_like(x)
    _run(_gelu_backward, x.numel(), _flat(grad), _flat(x), _flat(out))
    return out


def _block_sums(kernel, x: torch.Tensor, *args, sums: int = 1) -> torch.Tensor:
    """Run a kernel that adds the column sums of each block of BIAS_BLOCK rows of x to its last
    argument, `sums` of them (sums, blocks, columns); return the blocks' total, (sums, columns)
    (or (columns,) for one)."""
    blocks = -(-x.shape[0] // BIAS_BLOCK)
    partial = torch.zeros(sums, blocks, x.shape[1]) if sums > 1 else torch.zeros(blocks, x.shape[1])
    _run(kernel, x.shape[0], *args, partial.numpy(), align=BIAS_BLOCK, cost=x.shape[1])
    return partial.sum(-2)


def _bias_like(bias: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """The bias in x's dtype (as autocast casts a Linear's bias), flat."""
    return _flat(bias.detach().to(x.dtype).contiguous())


def bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """gelu(x + bias) of a 2-D x (bf16 or fp32; out in its dtype), computed in fp32, with the bias
    rounded to x's dtype."""
    out = torch.empty_like(x)
    _run(
        _bias_gelu,
        x.shape[0],
        _flat(x).reshape(x.shape),
        _bias_like(bias, x),
        _flat(out).reshape(x.shape),
        cost=x.shape[1],
    )
    return out


def bias_gelu_backward(
    grad: torch.Tensor, x: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of `bias_gelu`: x's (in x's dtype) and the bias's (fp32: the column sums
    of x's gradient as rounded, summed in fp32)."""
    grad = grad.contiguous().to(x.dtype)
    out = torch.empty_like(x)
    dbias = _block_sums(
        _bias_gelu_backward,
        x,
        _flat(grad).reshape(x.shape),
        _flat(x).reshape(x.shape),
        _bias_like(bias, x),
        _flat(out).reshape(x.shape),
    )
    return out, dbias


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """LayerNorm over the last dimension of a 2-D fp32 x, written in `dtype` (bf16 or fp32):
    `F.layer_norm` and the cast after it in one pass. Returns it, and the rows' mean and
    1 / std (fp32) for the backward pass."""
    rows = x.shape[0]
    out = torch.empty(x.shape, dtype=dtype)
    mean, rstd = torch.empty(rows), torch.empty(rows)
    _run(
        _layer_norm,
        rows,
        x.numpy(),
        weight.detach().contiguous().numpy(),
        bias.detach().contiguous().numpy(),
        np.float32(eps),
        _flat(out).reshape(x.shape),
        mean.numpy(),
        rstd.numpy(),
        align=1,
        cost=x.shape[1],
    )
    return out, mean, rstd


def layer_norm_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """The gradients of `layer_norm` from its output's (bf16 or fp32): x's (fp32), weight's
    and bias's (fp32, summed over blocks of rows, then the blocks)."""
    grad = grad.contiguous()
    dx = torch.empty_like(x)
    dweight, dbias = _block_sums(
        _layer_norm_backward,
        x,
        _flat(grad).reshape(x.shape),
        x.numpy(),
        weight.detach().contiguous().numpy(),
        mean.numpy(),
        rstd.numpy(),
        dx.numpy(),
        sums=2,
    )
    return dx, dweight, dbias


def column_sums(x: torch.Tensor) -> torch.Tensor:
    """x.sum(0) of a 2-D bf16 or fp32 x, summed in fp32 over blocks of rows, then the blocks: a
    Linear's bias gradient. ATen's bf16 column sum of a wide matrix ran at a third of this speed
    (docs/benchmarks.md)."""
    return _block_sums(_column_sums, x, _flat(x).reshape(x.shape))


def dropout(x: torch.Tensor, seed: int, p: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The kept elements of x scaled, the rest 0; written in `dtype` (default: x's)."""
    drop, scale = dropout_scale(p)
    out = torch.empty_like(x, dtype=dtype or x.dtype)
    _run(
        _dropout,
        x.numel(),
        _flat(x),
        _flat(out),
        np.uint64(seed),
        np.uint64(drop),
        np.float32(scale),
    )
    return out


def residual_dropout(x: torch.Tensor, y: torch.Tensor, seed: int, p: float) -> torch.Tensor:
    """x + dropout(y) in one pass: x fp32, y bf16 or fp32 (the dropped-out y is rounded to
    y's dtype before the sum, as the two separate operations do)."""
    drop, scale = dropout_scale(p)
    out = torch.empty_like(x)
    _run(
        _residual_dropout,
        x.numel(),
        _flat(x),
        _flat(y),
        _flat(out),
        np.uint64(seed),
        np.uint64(drop),
        np.float32(scale),
    )
    return out


def attention_probs(
    scores: torch.Tensor, scale: float, seed: int, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention probabilities of (..., T, T) scores (bf16 or fp32) in one pass: scaled,
    masked, softmax in fp32, dropout (`dropout`'s rule on the flattened index); returns them in
    scores' dtype, and the fp32 softmax the backward pass needs."""
    t = scores.shape[-1]
    rows = scores.numel() // t
    drop, keep_scale = dropout_scale(p)
    out = torch.empty_like(scores)
    probs = torch.empty(scores.shape, dtype=torch.float32)
    _run(
        _attention_probs,
        rows,
        _flat(scores).reshape(rows, t),
        np.float32(scale),
        np.uint64(seed),
        np.uint64(drop),
        np.float32(keep_scale),
        _flat(out).reshape(rows, t),
        probs.view(rows, t).numpy(),
        align=1,
        cost=t,
    )
    return out, probs


def attention_probs_backward(
    grad: torch.Tensor, probs: torch.Tensor, scale: float, seed: int, p: float
) -> torch.Tensor:
    """The scores' gradient (in grad's dtype) from the probabilities' gradient."""
    t = probs.shape[-1]
    rows = probs.numel() // t
    drop, keep_scale = dropout_scale(p)
    grad = grad.contiguous()
    out = torch.empty_like(grad)
    _run(
        _attention_probs_backward,
        rows,
        _flat(grad).reshape(rows, t),
        probs.view(rows, t).numpy(),
        np.float32(scale),
        np.uint64(seed),
        np.uint64(drop),
        np.float32(keep_scale),
        _flat(out).reshape(rows, t),
        align=1,
        cost=t,
    )
    return out


def transpose(x: torch.Tensor) -> torch.Tensor:
    """x.t().contiguous() of a 2-D bf16 or fp32 tensor in tiles (ATen's copy took several times
    longer; docs/benchmarks.md)."""
    rows, cols = x.shape
    out = x.new_empty(cols, rows)
    _run(
        _transpose,
        rows,
        _flat(x).reshape(rows, cols),
        _flat(out).reshape(cols, rows),
        align=64,
        cost=cols,
    )
    return out
