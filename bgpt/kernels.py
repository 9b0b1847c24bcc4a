"""Elementwise CPU kernels for training, compiled with numba: tanh-GELU and dropout.

On the benchmark CPU (2 cores) these were the largest costs of a `paper` training step after
the matmuls: ATen's bf16 tanh-GELU computes its tanh slowly (50 ms for the 53 M elements of
one byte-level MLP, forward; a bf16 multiply of the same tensor takes 12 ms), and dropout
took five passes over memory (draw, compare, scale, select; forward and backward). Here each
is one pass, split over torch's thread count, bf16 or fp32 in and out, fp32 arithmetic.

- `gelu` / `gelu_backward`: GPT-2's tanh approximation, the formula ATen uses; the tanh is a
  rational approximation accurate to a few fp32 ulps (Eigen's), so bf16 results equal
  ATen's except for rare one-ulp roundings (tested).
- `dropout`: keep element i when its 16-bit coin is >= round(p * 65536), scale the kept
  ones by 65536 / (65536 - drop). Coins are a pure function of (seed, i): splitmix64 of the
  counter i // 4, four 16-bit lanes per 64-bit hash. The backward pass recomputes the mask
  from the seed instead of storing it. `dropout_coins` is the same rule in plain numpy, the
  reference the kernel is tested against bit for bit.

`available()` is False without numba (the `fast` extra); bgpt.model then uses ATen's GELU
and `dropout_coins` for the masks.
"""

from __future__ import annotations

import math
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


def available() -> bool:
    return numba is not None


def dropout_scale(p: float) -> tuple[int, float]:
    """(coins dropped: round(p * 65536), scale of the kept elements)."""
    drop = round(p * KEEP_LEVELS)
    return drop, KEEP_LEVELS / (KEEP_LEVELS - drop)


def dropout_coins(seed: int, numel: int) -> np.ndarray:
    """The reference rule: element i's 16-bit coin, lane i % 4 of splitmix64(seed + (i // 4 + 1) * GAMMA)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (np.arange((numel + 3) // 4, dtype=np.uint64) + np.uint64(1)) * np.uint64(GAMMA)
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
                u = _bits(v)
                out[i] = np.uint16((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))

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
                u = _bits(v)
                return _f32(((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)) << np.uint32(16))

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

    @_jit
    def _gelu(x, out, start, stop):
        x, out = x[start:stop], out[start:stop]
        beta, kappa = np.float32(GELU_BETA), np.float32(GELU_KAPPA)
        for i in range(x.size):
            v = _load(x, i)
            _store(out, i, np.float32(0.5) * v * (np.float32(1.0) + _tanh(beta * (v + kappa * v * v * v))))

    @_jit
    def _gelu_backward(grad, x, out, start, stop):
        grad, x, out = grad[start:stop], x[start:stop], out[start:stop]
        beta, kappa = np.float32(GELU_BETA), np.float32(GELU_KAPPA)
        for i in range(x.size):
            v = _load(x, i)
            t = _tanh(beta * (v + kappa * v * v * v))
            d = np.float32(0.5) * (np.float32(1.0) + t) + np.float32(0.5) * v * (np.float32(1.0) - t * t) * beta * (
                np.float32(1.0) + np.float32(3.0) * kappa * v * v
            )
            _store(out, i, _load(grad, i) * d)

    @_inline
    def _coin(seed, j):  # element j's 16-bit coin: lane j % 4 of splitmix64(seed + (j // 4 + 1) * GAMMA)
        z = seed + np.uint64((j >> 2) + 1) * np.uint64(GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z = z ^ (z >> np.uint64(31))
        return (z >> np.uint64(16 * (j & 3))) & np.uint64(0xFFFF)

    @_jit
    def _dropout(x, out, seed, drop, scale, start, stop):  # x and out: bf16 or fp32, either way
        x, out = x[start:stop], out[start:stop]
        for i in range(x.size):
            _store(out, i, _load(x, i) * scale if _coin(seed, start + i) >= drop else np.float32(0.0))

    @numba.njit(cache=True, nogil=True, error_model="numpy")  # no fastmath: x + y * scale must not become one fma
    def _residual_dropout(x, y, out, seed, drop, scale, start, stop):  # out = x + dropout(y), fp32
        x, y, out = x[start:stop], y[start:stop], out[start:stop]
        for i in range(x.size):
            v = _round_as(y, _load(y, i) * scale) if _coin(seed, start + i) >= drop else np.float32(0.0)
            out[i] = _load(x, i) + v


_pool: ThreadPoolExecutor | None = None


def _run(kernel, n: int, *args) -> None:
    """kernel(*args, start, stop) over [0, n), split into contiguous parts (multiples of 4
    elements) over torch's thread count."""
    global _pool
    threads = torch.get_num_threads()
    if n < PARALLEL_MIN or threads == 1:
        kernel(*args, 0, n)
        return
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(threads, thread_name_prefix="bgpt-kernel")
    step = (-(-n // threads) + 3) // 4 * 4
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
    return numba is not None and t.device.type == "cpu" and t.dtype in (torch.bfloat16, torch.float32) and t.is_contiguous()


def gelu(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    _run(_gelu, x.numel(), _flat(x), _flat(out))
    return out


def gelu_backward(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    grad = grad.contiguous().to(x.dtype)
    out = torch.empty_like(x)
    _run(_gelu_backward, x.numel(), _flat(grad), _flat(x), _flat(out))
    return out


def dropout(x: torch.Tensor, seed: int, p: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The kept elements of x scaled, the rest 0; written in `dtype` (default: x's)."""
    drop, scale = dropout_scale(p)
    out = torch.empty_like(x, dtype=dtype or x.dtype)
    _run(_dropout, x.numel(), _flat(x), _flat(out), np.uint64(seed), np.uint64(drop), np.float32(scale))
    return out


def residual_dropout(x: torch.Tensor, y: torch.Tensor, seed: int, p: float) -> torch.Tensor:
    """x + dropout(y) in one pass: x fp32, y bf16 or fp32 (the dropped-out y is rounded to
    y's dtype before the sum, as the two separate operations do)."""
    drop, scale = dropout_scale(p)
    out = torch.empty_like(x)
    _run(_residual_dropout, x.numel(), _flat(x), _flat(y), _flat(out), np.uint64(seed), np.uint64(drop), np.float32(scale))
    return out
