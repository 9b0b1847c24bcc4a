"""The door to the fast CPU training paths: every basic operation the model uses, each one
dispatching to a one-pass kernel (`bgpt.kernels`, numba) where it helps and to the plain
PyTorch op everywhere else.

    linear / Linear        bf16 autocast training on CPU: the weight gradient in the layout
                           oneDNN multiplies fastest, the bias gradient summed in fp32
    linear_gelu            c_fc's bias added and GELU applied in one kernel (and back)
    gelu                   tanh GELU in one pass each way
    LayerNorm              bf16 output in one kernel for a following Linear
    dropout / Dropout      mask hashed from a seed, recomputed in backward (never stored)
    residual_dropout       x + dropout(y) in one pass
    explicit_causal_attention
                           scale, causal mask, softmax and dropout in one pass each way

Each kernel path has its plain twin right here (the `else` branch) and a test that they agree
(tests/test_kernels.py: bit for bit, or within the stated roundings). The kernels apply only on
CPU, in training, outside torch.compile, and when numba is installed; the model itself
(`bgpt/model.py`) reads as plain PyTorch.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bgpt import kernels

# ----------------------------------------------------------------------------- dropout


def _draw_seed() -> int:
    """A dropout seed from torch's default generator: reproducible under `torch.manual_seed`,
    and drawn again identically when checkpointing restores the generator."""
    return int(torch.empty((), dtype=torch.int64).random_())


class _CPUDropout(torch.autograd.Function):
    """Dropout whose mask is a pure function of a seed drawn from torch's generator
    (`bgpt.kernels`): the backward pass recomputes it instead of storing it, and activation
    checkpointing, which restores the generator, replays it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        ctx.seed = _draw_seed()
        ctx.p = p
        return _apply_dropout(x, ctx.seed, p)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _apply_dropout(grad, ctx.seed, ctx.p), None


def _apply_dropout(x: torch.Tensor, seed: int, p: float) -> torch.Tensor:
    x = x.contiguous()
    if kernels.supports(x):
        return kernels.dropout(x, seed, p)
    return kernels.dropout_reference(x, seed, p)  # the same mask, from numpy


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout`; on CPU one pass of `bgpt.kernels.dropout` (elsewhere `F.dropout` itself:
    CUDA's fused kernel is fast). The probability is rounded to a multiple of 1/65536
    (0.1 -> 0.100006). Reproducible under `torch.manual_seed`, and recomputed identically by
    activation checkpointing (which restores the generator's state)."""
    if not training or p == 0.0:
        return x
    if (
        x.device.type != "cpu" or p >= 1.0 or torch.compiler.is_compiling()
    ):  # inductor fuses its own
        return F.dropout(x, p, True)
    return _CPUDropout.apply(x, p)


class Dropout(nn.Module):
    """`nn.Dropout` through `dropout`."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _CPUGELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return kernels.gelu(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return kernels.gelu_backward(grad, x)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh-approximated GELU. Large CPU tensors go through `bgpt.kernels` (one pass,
    2-3x ATen's speed in bf16; equal to it but for rare one-ulp roundings), the rest, and
    everything under torch.compile (which fuses its own), through ATen."""
    if (
        x.numel() >= kernels.PARALLEL_MIN
        and kernels.supports(x)
        and not torch.compiler.is_compiling()
    ):
        return _CPUGELU.apply(x)
    return F.gelu(x, approximate="tanh")


class _CPUResidualDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
        ctx.seed = _draw_seed()
        ctx.p, ctx.y_dtype = p, y.dtype
        return kernels.residual_dropout(x, y, ctx.seed, p)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, kernels.dropout(grad.contiguous(), ctx.seed, ctx.p, ctx.y_dtype), None


def residual_dropout(x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """x + dropout(y, p): the residual sum of a block. On CPU in training one pass of
    `bgpt.kernels.residual_dropout` (x fp32, y bf16 or fp32, the same mask `dropout` draws),
    which also writes y's gradient in y's dtype; elsewhere the two operations."""
    if p == 0.0:
        return x + y
    if (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.shape == y.shape
        and kernels.supports(x)
        and kernels.supports(y)
        and not torch.compiler.is_compiling()
    ):
        return _CPUResidualDropout.apply(x, y, p)
    return x + dropout(y, p, True)


# ----------------------------------------------------------------------------- CPU bf16 training: Linear, bias-GELU, LayerNorm

TRANSPOSE_ROWS = 8192
"""A Linear's weight gradient dy^T @ x over at least this many rows, with one operand at least
3x wider than the other, copies the narrower operand transposed first (`weight_gradient`)."""


def weight_gradient(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dy^T @ x for dy (M, N) and x (M, K): a Linear's weight gradient, (N, K).

    oneDNN multiplies a transposed left operand in bf16 at about half the speed of the same
    product with its operands laid out transposed in memory (docs/benchmarks.md, session 6).
    So over many rows, the narrower of a wide/narrow pair is transposed first
    (`kernels.transpose`, cheap beside the product); below that, of the two orders of the plain
    product, the one measured faster."""
    m, n = dy.shape
    k = x.shape[1]
    if (
        m >= TRANSPOSE_ROWS
        and max(n, k) >= 3 * min(n, k)
        and kernels.supports(dy)
        and kernels.supports(x)
    ):
        return (kernels.transpose(x) @ dy).t() if k < n else kernels.transpose(dy) @ x
    return (x.t() @ dy).t() if n < k else dy.t() @ x


class _CPULinear(torch.autograd.Function):
    """`F.linear` under CPU autocast: the same forward (inputs cast to `dtype`, one addmm) and
    input gradient; the weight gradient through `weight_gradient`, the bias gradient summed in
    fp32 by `kernels.column_sums` (ATen sums the bf16 gradient into bf16, 3x slower)."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1]).to(dtype)
        w = weight.to(dtype)
        ctx.save_for_backward(x2, w)
        ctx.has_bias = bias is not None
        with torch.autocast("cpu", enabled=False):
            y = torch.addmm(bias.to(dtype), x2, w.t()) if bias is not None else x2 @ w.t()
        return y.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x2, w = ctx.saved_tensors
        dy = grad.reshape(-1, w.shape[0]).contiguous()
        dx = dy @ w if ctx.needs_input_grad[0] else None
        dw = (
            weight_gradient(dy, x2).to(torch.float32, memory_format=torch.contiguous_format)
            if ctx.needs_input_grad[1]
            else None
        )
        db = kernels.column_sums(dy) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return (None if dx is None else dx.view(*grad.shape[:-1], w.shape[1])), dw, db, None


def _cpu_bf16_training(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether x goes through a weight in CPU bf16 autocast training (gradients on, kernels
    present, not under torch.compile, which fuses its own): where `_CPULinear`, `_CPUBiasGELU`
    and `_CPULayerNorm` replace the ATen operations."""
    return (
        x.device.type == "cpu"
        and torch.is_grad_enabled()
        and weight.requires_grad
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and kernels.available()
        and not torch.compiler.is_compiling()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`; when training under CPU bf16 autocast, `_CPULinear` (the same output and input
    gradient, its weight gradient up to 2x faster); elsewhere `F.linear` itself."""
    if _cpu_bf16_training(x, weight):
        return _CPULinear.apply(x, weight, bias, torch.bfloat16)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` through `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class _CPUBiasGELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, bias)
        return kernels.bias_gelu(x2, bias).view(x.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x2, bias = ctx.saved_tensors
        dx, dbias = kernels.bias_gelu_backward(grad.reshape(x2.shape), x2, bias)
        return dx.view(grad.shape), dbias


def linear_gelu(x: torch.Tensor, fc: nn.Linear) -> torch.Tensor:
    """gelu(fc(x)). In CPU bf16 autocast training, the bias is added in the GELU kernel and its
    gradient summed in the GELU's backward kernel (`kernels.bias_gelu`): the matmul runs
    without the bias (an addmm first copies the bias into its whole output) and no separate
    column sum reads the gradient again (docs/benchmarks.md, session 6).
    The values: the matmul's output rounded to bf16 before the bias (in bf16, as autocast
    casts it) is added in fp32, not after; within bf16 rounding of `gelu(fc(x))`."""
    if isinstance(fc, nn.Linear) and fc.bias is not None and _cpu_bf16_training(x, fc.weight):
        return _CPUBiasGELU.apply(linear(x, fc.weight), fc.bias)
    return gelu(fc(x))


class _CPULayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
    ) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        out, mean, rstd = kernels.layer_norm(x2, weight, bias, eps, torch.bfloat16)
        ctx.save_for_backward(x2, weight, mean, rstd)
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x2, weight, mean, rstd = ctx.saved_tensors
        dx, dweight, dbias = kernels.layer_norm_backward(
            grad.reshape(x2.shape), x2, weight, mean, rstd
        )
        return dx.view(grad.shape), dweight, dbias, None


class LayerNorm(nn.LayerNorm):
    """`nn.LayerNorm` for a block's input to a Linear. In CPU bf16 autocast training its output
    comes in bf16 from one kernel (`kernels.layer_norm`), which the Linear after it casts to
    anyway, and its backward takes that bf16 gradient: no fp32 output written and read back
    by a cast, no cast of the gradient (bf16 -> fp32) before ATen's backward. The output
    equals the cast of ATen's but for rare one-ulp roundings (fp32 sums in another order)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.dtype == torch.float32
            and self.weight is not None
            and _cpu_bf16_training(x, self.weight)
        ):
            return _CPULayerNorm.apply(x.contiguous(), self.weight, self.bias, self.eps)
        return super().forward(x)


SHORT_SEQUENCE = 64
"""At or below this many positions in bf16/fp16, attention runs as two explicit matmuls:
on CPU, the fused kernel is ~3x slower than that for the byte-level decoder's many
16-position sequences (measured; in fp32 the fused kernel wins and is kept)."""


class _CPUAttentionProbs(torch.autograd.Function):
    """Scale, causal mask, softmax and dropout of attention scores in one pass each way
    (`bgpt.kernels.attention_probs`), with the roundings and the dropout mask of the
    operations one by one (below in `explicit_causal_attention`)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, scale: float, p: float) -> torch.Tensor:
        ctx.seed = _draw_seed() if p else 0
        ctx.scale, ctx.p = scale, p
        out, probs = kernels.attention_probs(scores, scale, ctx.seed, p)
        ctx.save_for_backward(probs)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (probs,) = ctx.saved_tensors
        return kernels.attention_probs_backward(grad, probs, ctx.scale, ctx.seed, ctx.p), None, None


def explicit_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float, training: bool
) -> torch.Tensor:
    """Causal attention as matmuls: (B, heads, T, hd) x3 -> (B, heads, T, hd); softmax in fp32.
    The fused kernel's math, used where it is faster on CPU: short bf16 sequences, and any
    training with attention dropout (the fused CPU kernel has none and falls back to this)."""
    t, scale = q.shape[-2], 1.0 / math.sqrt(q.shape[-1])
    att = q @ k.transpose(-2, -1)  # (B, heads, T, T)
    if att.device.type == "cpu" and kernels.supports(att) and not torch.compiler.is_compiling():
        return _CPUAttentionProbs.apply(att, scale, p if training else 0.0) @ v
    att = att * scale
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    att = att.masked_fill(~causal, float("-inf")).softmax(-1, dtype=torch.float32).to(q.dtype)
    att = dropout(att, p, training)
    return att @ v
