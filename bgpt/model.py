"""The bGPT model, top to bottom (SPEC §2).

    patches (B, P, S) bytes
      -> PatchEmbedding: one-hot(S x 257) -> linear, computed as a lookup-sum   (B, P, H)
      -> PatchDecoder: GPT-2 blocks over patches, learned positions, final LN     (B, P, H)
      -> feature of patch i predicts patch i+1:
    ByteDecoder: GPT-2 LM over [feature_i, emb(b1) .. emb(b_{S-1})], tied head  (N, S, 257)

`BGPT` is the generative model, `BGPTClassifier` the patch-level decoder with a linear
head on the mean of its outputs. Both read nothing global: the config says everything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from bgpt import kernels
from bgpt.config import BGPTConfig
from bgpt.stream import PAD, VOCAB_SIZE

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

    oneDNN multiplies a transposed left operand at ~1.0-1.2 TFLOP/s in bf16 on the benchmark
    CPU, and the same product of operands laid out transposed in memory at 1.6-2.5: for
    65536 rows, 312 ms against 185 for the byte-level MLP's input layer. So over many rows,
    the narrower of a wide/narrow pair is transposed first (`kernels.transpose`, a few ms);
    below that, of the two orders of the plain product, the one measured faster."""
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
    without the bias (an addmm first copies the bias into its whole output, ~10 ms for the
    byte-level MLP at batch 2) and no separate column sum reads the gradient again (~13 ms).
    The values: the matmul's output rounded to bf16 before the bias (in bf16, as autocast
    casts it) is added in fp32, not after; within bf16 rounding of `gelu(fc(x))`."""
    if fc.bias is not None and _cpu_bf16_training(x, fc.weight):
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


# ----------------------------------------------------------------------------- model


class KVPlan:
    """Where one cached forward reads and writes: computed once by `Transformer.forward` and
    shared by its layers. `rows` selects cache rows (None: all); `start` is each selected row's
    fill length before the call, a Python int when they are all equal (the fast path)."""

    def __init__(
        self, rows: torch.Tensor | None, starts: list[int], t: int, positions: torch.Tensor
    ):
        self.rows, self.t = rows, t
        device = positions.device
        first = starts[0]
        self.start = first if all(s == first for s in starts) else None
        self.end = max(starts) + t  # keys [0, end) cover every selected row
        self.mask = None  # (T, end) or (b, 1, T, end) bool, True = may attend
        if self.start is not None:
            self.pos = positions[first : first + t]  # (T,)
            if first and t > 1:  # several new positions after a prefix: causal, offset by it
                self.mask = torch.ones(t, self.end, dtype=torch.bool, device=device).tril(first)
        else:  # ragged rows: per-row positions and masks
            start = torch.tensor(starts, device=device)
            self.pos = start[:, None] + positions[:t]  # (b, T)
            self.mask = (positions[: self.end] <= self.pos[:, :, None]).unsqueeze(1)
        self.causal = self.start == 0 and t > 1


class LayerKV:
    """Key/value cache of one attention layer: preallocated (B, heads, T_max, head_dim).

    Rows fill independently: a forward may touch a subset of rows, and rows may hold
    different numbers of positions (the lengths live in the `KVCache` holding the layers)."""

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, device, dtype):
        # zeros, not empty: masked-out keys must not hold NaN (0 * NaN poisons the sum)
        self.k = torch.zeros(batch, heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.plan: KVPlan | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new (b, heads, T, hd) keys/values at each row's length; return the keys and
        values to attend to, (b, heads, end, hd)."""
        p = self.plan
        if p.rows is None and p.start is not None:  # the common case, as plain views
            self.k.narrow(2, p.start, p.t).copy_(k)
            self.v.narrow(2, p.start, p.t).copy_(v)
            return self.k.narrow(2, 0, p.end), self.v.narrow(2, 0, p.end)
        rows = p.rows if p.rows is not None else slice(None)
        if p.start is not None:
            self.k[rows, :, p.start : p.start + p.t] = k
            self.v[rows, :, p.start : p.start + p.t] = v
        else:  # index (b, 1) rows x (b, T) positions -> (b, T, heads, hd)
            r = (
                p.rows[:, None]
                if p.rows is not None
                else torch.arange(len(p.pos), device=k.device)[:, None]
            )
            self.k[r, :, p.pos] = k.transpose(1, 2)
            self.v[r, :, p.pos] = v.transpose(1, 2)
        return self.k[rows, :, : p.end], self.v[rows, :, : p.end]


class KVCache(list):
    """One `LayerKV` per block plus each row's fill length (host side, so that planning a
    step never waits on the device)."""

    def __init__(self, layers: list[LayerKV], batch: int):
        super().__init__(layers)
        self.lens = [0] * batch
        self.max_len = layers[0].k.shape[2]
        self.positions = torch.arange(self.max_len, device=layers[0].k.device)

    @property
    def len(self) -> int:
        """The common fill length (rows all equal)."""
        if any(n != self.lens[0] for n in self.lens):
            raise RuntimeError("rows of this cache have different lengths")
        return self.lens[0]

    def plan(self, t: int, rows: torch.Tensor | None) -> KVPlan:
        starts = self.lens if rows is None else [self.lens[i] for i in rows.tolist()]
        if max(starts) + t > self.max_len:
            raise RuntimeError(f"key/value cache full ({self.max_len} positions)")
        return KVPlan(rows, starts, t, self.positions)

    def advance(self, plan: KVPlan) -> None:
        for i in range(len(self.lens)) if plan.rows is None else plan.rows.tolist():
            self.lens[i] += plan.t

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows (in this order), e.g. to drop finished samples of a batch."""
        for layer in self:
            layer.k, layer.v = layer.k[rows], layer.v[rows]
        self.lens = [self.lens[i] for i in rows.tolist()]


ROW_BUCKET = 128
"""In training, the byte-level decoder's rows (predicted patches) are padded up to a
multiple of this: with bf16 on CPU every new matmul shape is cached by oneDNN, and
batches of varying sizes made the resident memory grow without bound (measured: ~5 GB
after 300 steps of the demo); the padded rows are dropped from the loss."""

BYTE_CHUNK = 512
"""With gradient checkpointing, the byte-level decoder and its loss run over this many
predicted patches at a time, each chunk checkpointed whole: backward keeps only a chunk's
input features and recomputes the chunk, so the byte level's activations at the peak are
one chunk's, not the batch's (per-layer checkpoints still held every layer's input for all
rows and a whole layer's intermediates: the larger half of the `paper` model's peak)."""

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


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.c_attn = Linear(hidden, 3 * hidden)
        self.c_proj = Linear(hidden, hidden)
        self.dropout = dropout  # on the attention probabilities; the Block drops out the output

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None) -> torch.Tensor:
        b, t, h = x.shape
        # (B, T, 3H) -> 3 x (B, heads, T, H/heads)
        q, k, v = self.c_attn(x).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        if kv is None and (
            (t <= SHORT_SEQUENCE and q.dtype != torch.float32) or (drop and q.device.type == "cpu")
        ):  # the fused CPU kernel has no dropout: it would fall back to this math, slower
            y = explicit_causal_attention(q, k, v, drop, self.training)
        elif kv is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        else:  # cached: attend to the row's past and the new positions (mask from the plan)
            k, v = kv.append(k, v)
            mask = kv.plan.mask
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=drop, is_causal=kv.plan.causal
            )
        y = y.transpose(1, 2).reshape(b, t, h)  # (B, heads, T, hd) -> (B, T, H)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.c_fc = Linear(hidden, 4 * hidden)
        self.c_proj = Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(linear_gelu(x, self.c_fc))


class Block(nn.Module):
    """Pre-LayerNorm GPT-2 block."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.ln_1 = LayerNorm(hidden, eps=1e-5)
        self.attn = CausalSelfAttention(hidden, heads, dropout)
        self.ln_2 = LayerNorm(hidden, eps=1e-5)
        self.mlp = MLP(hidden)
        self.dropout = (
            dropout  # of each sublayer's output before the residual sum (GPT-2's resid_pdrop)
        )

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        x = residual_dropout(x, self.attn(self.ln_1(x), kv), p)
        return residual_dropout(x, self.mlp(self.ln_2(x)), p)


class Transformer(nn.Module):
    """Learned positions + blocks + final LayerNorm: GPT-2 without a token embedding."""

    def __init__(self, hidden: int, heads: int, layers: int, positions: int, dropout: float):
        super().__init__()
        self.wpe = nn.Embedding(positions, hidden)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden, eps=1e-5)
        self.gradient_checkpointing = False

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(b, T, H) -> (b, T, H). With a cache, the T positions follow what each row already
        holds, and `rows` (b,) says which cache rows x is (None: all of them, in order)."""
        if cache is None:
            x = self.drop(x + self.wpe(torch.arange(x.shape[1], device=x.device)))
            for block in self.blocks:
                if self.gradient_checkpointing and self.training:
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            return self.ln_f(x)
        plan = cache.plan(x.shape[1], rows)
        x = self.drop(x + self.wpe(plan.pos))  # pos (T,) or (b, T) for ragged rows
        for block, kv in zip(self.blocks, cache, strict=True):
            kv.plan = plan
            x = block(x, kv)
        cache.advance(plan)
        return self.ln_f(x)

    def new_cache(self, batch: int, max_len: int, device, dtype) -> KVCache:
        heads = self.blocks[0].attn.heads
        hidden = self.wpe.embedding_dim
        return KVCache(
            [LayerKV(batch, heads, max_len, hidden // heads, device, dtype) for _ in self.blocks],
            batch,
        )


class PatchEmbedding(nn.Module):
    """Linear layer on the flattened one-hot patch (S*257 -> H), stored as its transposed
    weight `table` (S*257, H) so that it runs as a sum of S table rows per patch."""

    def __init__(self, patch_size: int, hidden: int):
        super().__init__()
        self.patch_size = patch_size
        self.table = nn.Parameter(torch.empty(patch_size * VOCAB_SIZE, hidden))
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.register_buffer("offsets", torch.arange(patch_size) * VOCAB_SIZE, persistent=False)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        lead = patches.shape[:-1]
        # (..., S) symbols -> (N, S) rows of the table: row j*257 + symbol
        rows = (patches + self.offsets).reshape(-1, self.patch_size)
        out = F.embedding_bag(rows, self.table, mode="sum") + self.bias  # (N, H)
        return out.view(*lead, -1)

    def forward_onehot(self, patches: torch.Tensor) -> torch.Tensor:
        """The reference's definition, for tests: one-hot, flatten position-major, linear."""
        onehot = F.one_hot(patches, VOCAB_SIZE).to(self.table.dtype)  # (..., S, 257)
        return onehot.flatten(-2) @ self.table + self.bias  # (..., S*257) @ (S*257, H)


class PatchDecoder(nn.Module):
    def __init__(self, config: BGPTConfig):
        super().__init__()
        c = config
        self.embed = PatchEmbedding(c.patch_size, c.hidden_size)
        self.transformer = Transformer(
            c.hidden_size, c.heads, c.patch_layers, c.max_patches, c.dropout
        )

    def forward(self, patches: torch.Tensor, cache: list[LayerKV] | None = None) -> torch.Tensor:
        """(B, P, S) symbols -> (B, P, H) features; feature i predicts patch i+1."""
        return self.transformer(self.embed(patches), cache)


class ByteDecoder(nn.Module):
    """GPT-2 over one patch: [feature, emb(b1) .. emb(b_{S-1})] -> logits of b1 .. b_S.

    With `config.byte_context`, the S symbols of the previous patch (the one whose feature
    starts the sequence) come first, at positions of their own:
    [emb(c1) .. emb(c_S), feature, emb(b1) .. emb(b_{S-1})], and only the last S positions
    are read out."""

    def __init__(self, config: BGPTConfig):
        super().__init__()
        c = config
        self.patch_size = c.patch_size
        self.context = c.patch_size if c.byte_context else 0  # input positions before the feature
        self.wte = nn.Embedding(VOCAB_SIZE, c.hidden_size)
        # The reference allots S+1 positions; S are used (plus the context's S).
        positions = self.context + c.patch_size + 1
        self.transformer = Transformer(c.hidden_size, c.heads, c.byte_layers, positions, c.dropout)

    def forward(
        self, features: torch.Tensor, targets: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """features (N, H), target patches (N, S) and, with byte context, the previous patches
        (N, S) -> logits (N, S, 257), teacher forced: position t predicts byte t+1."""
        x = torch.cat(
            [features.unsqueeze(1).to(self.wte.weight.dtype), self.wte(targets[:, :-1])], dim=1
        )
        if self.context:
            x = torch.cat([self.wte(self._check(context)), x], dim=1)  # (N, 2S, H)
        return self.logits(self.transformer(x)[:, self.context :])

    def prime(
        self, cache: KVCache, context: torch.Tensor | None, rows: torch.Tensor | None = None
    ) -> None:
        """Start a patch in a byte-level cache: its rows (all, or `rows`) emptied and, with byte
        context, the previous patches (b, S) written in; the feature is the next position."""
        for r in range(len(cache.lens)) if rows is None else rows.tolist():
            cache.lens[r] = 0
        if self.context:
            self.transformer(self.wte(self._check(context)), cache, rows)

    def _check(self, context: torch.Tensor | None) -> torch.Tensor:
        if context is None:
            raise ValueError(
                "this byte-level decoder reads the previous patch (byte_context): pass it"
            )
        return context

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return linear(h, self.wte.weight)  # head tied to the token embedding


def _init_weights(model: nn.Module, num_layers: dict[nn.Module, int]) -> None:
    """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, PatchEmbedding):
            nn.init.normal_(module.table, std=0.02)
            nn.init.zeros_(module.bias)
    for transformer, layers in num_layers.items():
        for block in transformer.blocks:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * layers))


@torch.no_grad()
def sinusoidal_positions_(wpe: torch.Tensor, amplitude: float = 0.1, octaves: int = 20) -> None:
    """Position p -> [sin(w_k p), cos(w_k p)] for w_k = pi * 2^(-(k mod octaves) / 2), in place:
    the frequencies are closed under x4 (k -> k - 4), so "position 4p" is a rotation of
    "position p" in these coordinates, which a linear query/key map can express."""
    positions, width = wpe.shape
    k = torch.arange(width // 2, dtype=torch.float64) % octaves
    angles = (
        torch.arange(positions, dtype=torch.float64)[:, None] * (math.pi * 2.0 ** (-k / 2))[None]
    )
    wpe.zero_()
    wpe[:, 0 : 2 * (width // 2) : 2] = (amplitude * torch.sin(angles)).to(wpe.dtype)
    wpe[:, 1 : 2 * (width // 2) : 2] = (amplitude * torch.cos(angles)).to(wpe.dtype)


def predicted_pairs(
    features: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Select (feature of patch i, patch i+1, patch i) for every real patch i+1 >= 1.

    features (B, P, H), patches (B, P, S), mask (B, P) -> features (N, H), targets (N, S),
    the patches before them (N, S), and `where` (B, P-1) bool, the positions selected
    (row-major order).
    """
    where = mask[:, 1:]
    return features[:, :-1][where], patches[:, 1:][where], patches[:, :-1][where], where


@dataclass
class ModelOutput:
    loss: torch.Tensor
    """The reference loss: mean cross-entropy (nats) over every predicted symbol."""
    nll: torch.Tensor
    """(N, S) float32 cross-entropy of each predicted symbol of each predicted patch."""
    rows: torch.Tensor
    """(N,) which predictions these are: flat indices into (B, P-1), patch i+1 of row b."""


class BGPT(nn.Module):
    """Generative bGPT: next-byte prediction over patches."""

    def __init__(self, config: BGPTConfig):
        super().__init__()
        if config.is_classifier:
            raise ValueError("BGPT is generative; use BGPTClassifier for num_classes > 0")
        self.config = config
        self.patch_decoder = PatchDecoder(config)
        self.byte_decoder = ByteDecoder(config)
        _init_weights(
            self,
            {
                self.patch_decoder.transformer: config.patch_layers,
                self.byte_decoder.transformer: config.byte_layers,
            },
        )
        if config.patch_positions == "sinusoidal":
            sinusoidal_positions_(self.patch_decoder.transformer.wpe.weight)
        self.gradient_checkpointing = False  # patch level: per block; byte level: per BYTE_CHUNK

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_gradient_checkpointing(self, on: bool = True) -> None:
        self.patch_decoder.transformer.gradient_checkpointing = on
        self.gradient_checkpointing = on

    def _byte_nll(
        self, feats: torch.Tensor, targets: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """features (N, H), target patches (N, S), previous patches (N, S) -> cross-entropy
        (N, S), float32."""
        logits = self.byte_decoder(feats, targets, context)  # (N, S, 257)
        nll = F.cross_entropy(
            logits.reshape(-1, VOCAB_SIZE).float(), targets.reshape(-1), reduction="none"
        )
        return nll.view(targets.shape)

    def forward(
        self,
        patches: torch.Tensor,
        mask: torch.Tensor,
        sample_patches: int = 0,
        generator: torch.Generator | None = None,
    ) -> ModelOutput:
        """Reference loss of a batch: patches (B, P, S), mask (B, P).

        `sample_patches` > 0 trains the byte-level decoder on that many randomly chosen
        predicted patches of the batch (the reference's patch sampling)."""
        features = self.patch_decoder(patches)
        feats, targets, context, where = predicted_pairs(features, patches, mask)
        rows = where.flatten().nonzero().squeeze(1)
        if 0 < sample_patches < len(targets):
            pick = torch.randperm(len(targets), device=targets.device, generator=generator)[
                :sample_patches
            ]
            feats, targets, context, rows = feats[pick], targets[pick], context[pick], rows[pick]
        n = len(targets)
        pad = (-n) % ROW_BUCKET if self.training else 0
        if pad:  # round the rows up: few distinct shapes keep CPU kernel caches (and RSS) bounded
            feats = torch.cat([feats, feats.new_zeros(pad, feats.shape[1])])
            targets = torch.cat([targets, targets.new_full((pad, targets.shape[1]), PAD)])
            context = torch.cat([context, context.new_full((pad, context.shape[1]), PAD)])
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            nll = torch.cat(
                [
                    checkpoint(
                        self._byte_nll,
                        feats[i : i + BYTE_CHUNK],
                        targets[i : i + BYTE_CHUNK],
                        context[i : i + BYTE_CHUNK],
                        use_reentrant=False,
                    )
                    for i in range(0, len(targets), BYTE_CHUNK)
                ]
            )
        else:
            nll = self._byte_nll(feats, targets, context)
        nll = nll[:n]
        return ModelOutput(nll.mean(), nll, rows)

    def symbol_logprobs(
        self, patches: torch.Tensor, mask: torch.Tensor, chunk: int = 4096
    ) -> torch.Tensor:
        """log p(symbol) of every predicted symbol: (B, P-1, S) float32, zero where the
        target patch is padding (mask 0). Entry [b, i, j] is byte j of patch i+1."""
        features = self.patch_decoder(patches)
        feats, targets, context, where = predicted_pairs(features, patches, mask)
        out = torch.zeros(
            where.shape + (self.config.patch_size,), dtype=torch.float32, device=patches.device
        )
        picked = []
        for i in range(0, len(targets), chunk):  # bound the (N, S, 257) logits in memory
            logits = self.byte_decoder(
                feats[i : i + chunk], targets[i : i + chunk], context[i : i + chunk]
            ).float()
            picked.append(
                logits.log_softmax(-1).gather(-1, targets[i : i + chunk, :, None]).squeeze(-1)
            )
        if picked:
            out[where] = torch.cat(picked)
        return out

    def generate(self, prompt: bytes = b"", ext: str = "bin", **kwargs) -> bytes:
        """Sample a file's bytes after `prompt` (see `bgpt.generate.generate`)."""
        from bgpt.generate import generate

        return generate(self, prompt=prompt, ext=ext, **kwargs)

    def stream(self, prompt: bytes = b"", ext: str = "bin", **kwargs):
        """Like `generate`, yielding bytes as they are produced."""
        from bgpt.generate import stream

        return stream(self, prompt=prompt, ext=ext, **kwargs)

    def convert(self, data: bytes, ext: str, to: str, **kwargs) -> bytes:
        """Conversion inference: the target file for input `data` (SPEC §3); greedy by default."""
        from bgpt.generate import convert

        return convert(self, data, ext, to, **kwargs)

    @torch.no_grad()
    def next_byte_logits_naive(self, patches: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Logits of the next symbol after complete patches (B, P, S) and a partial patch
        prefix (B, t) with t < S, recomputing everything: the obvious reference path."""
        features = self.patch_decoder(patches)[:, -1]  # (B, H)
        b, t = prefix.shape
        dummy = torch.full(
            (b, self.config.patch_size), PAD, dtype=torch.long, device=patches.device
        )
        dummy[:, :t] = prefix
        return self.byte_decoder(features, dummy, patches[:, -1])[:, t]  # (B, 257)


class BGPTClassifier(nn.Module):
    """Patch-level decoder, mean of its outputs over real patches, linear head to K classes."""

    def __init__(self, config: BGPTConfig):
        super().__init__()
        if not config.is_classifier:
            raise ValueError("BGPTClassifier needs num_classes > 0")
        self.config = config
        self.patch_decoder = PatchDecoder(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_classes)
        _init_weights(self, {self.patch_decoder.transformer: config.patch_layers})
        if config.patch_positions == "sinusoidal":
            sinusoidal_positions_(self.patch_decoder.transformer.wpe.weight)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_gradient_checkpointing(self, on: bool = True) -> None:
        self.patch_decoder.transformer.gradient_checkpointing = on

    def forward(self, patches: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """patches (B, P, S), mask (B, P) -> class logits (B, K)."""
        features = self.patch_decoder(patches)  # (B, P, H)
        m = mask.unsqueeze(-1).to(features.dtype)
        pooled = (features * m).sum(1) / m.sum(1).clamp_min(1)  # (B, H)
        return self.classifier(pooled)


def build_model(config: BGPTConfig) -> BGPT | BGPTClassifier:
    return BGPTClassifier(config) if config.is_classifier else BGPT(config)
