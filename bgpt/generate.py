"""Generation and conversion (SPEC §2-3): one function, a plain loop and a cached engine.

A prompt is a symbol stream: whole patches (the header patch of the file's extension, data,
for conversion the input file and the target's header) and at most one partial patch of data
bytes. The patch decoder's feature of the last complete patch conditions the byte decoder,
which emits the next patch symbol by symbol; a partial prompt patch is continued from its bytes.

Engines, same output (greedy: byte for byte; distributions: to float rounding):
  - "cached" (default): key/value caches at both levels. The patch decoder runs once per new
    patch over that patch only, the byte decoder once per new byte over that byte only, so a
    byte costs the same at the end of the context as at its start. Batched: the rows of a batch
    may have prompts of any lengths (ragged caches, see "Batching" below).
  - "uncached": the obvious loop: `BGPT.next_byte_logits_naive` for every byte, both decoders
    over the whole prefix. Kept for tests and benchmarks.
  - "reference": the public bGPT script's algorithm: the patch decoder over the whole prefix once
    per patch, the byte decoder over the patch prefix once per byte.

Stopping. A file's data ends at its first PAD (256): once PAD is emitted, the rest of that patch
can only be padding and the next patch is the end patch, so generation stops there ("end")
instead of sampling symbols the stream layout already fixes (the reference keeps sampling them
and drops them). A PAD at the start of a patch is the end patch itself. Otherwise generation
stops when `max_bytes` bytes are out ("max_bytes") or when the last of the model's L patches
is complete ("context": the model has no position for another patch).

Sampling (the reference's order): top-k, then top-p (nucleus) choose the candidates from the
model's distribution, temperature then reshapes the distribution among them, and one uniform
draw per sample from its own `torch.Generator` picks the symbol. Sample i of a batch seeded
`seed` uses seed + i, so it is the same bytes as that sample generated alone, in any batch.
`top_k=1` is greedy (no randomness).

Batching. Every row keeps its own cache length (`bgpt.kvcache.KVCache`). The prompts' complete
patches are right-padded to the longest and run in one causal pass; each row's length is then
set to its own patch count, so padding is never attended to and is overwritten by the row's
next patch. Positions and masks are per row when lengths differ; a step that concerns only
some rows (rows whose prompts end at different offsets in a patch complete patches at
different steps) runs the patch decoder on those rows only. A row whose prompt ends inside a
patch feeds its remaining prompt bytes through the byte decoder one step at a time (forced,
without drawing). Finished rows are dropped from the caches. Each row thus sees the computation
it would see alone, up to float rounding (tested: the same bytes, distributions within 1e-5).

Speed. The one-position steps (every byte, every patch) run the blocks as plain functional ops
on weights cast once to the compute dtype (`_OneStep`), not through the modules: at one row the
module calls cost as much as the arithmetic. Inside a patch the byte decoder's input is the
embedding of the last byte at a known position, so what its first block computes before
attention (the residual stream and q, k, v) is looked up from a table made once per run for
every (position, symbol) pair (`_OneStep.token_table`): at batch 1 a byte step is bound by
reading the weights, and this skips the first block's largest matrix. On CPU with fp32 or int8
weights the steps run in compiled kernels instead when numba is installed (`bgpt.fused`: a
single sample's step as one kernel, without ~45 operator dispatches per byte; a batch's with
one product call per layer for all rows and kernels between them).
The prompt pass and the plain loops run the modules; in bf16/fp16 they run on a copy whose
Linear weights are cast once (autocast would cast them again at every call).
docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import dataclasses
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bgpt import fused as fused_kernels  # `draw`, defined where numba is installed
from bgpt.config import WEIGHTS
from bgpt.device import DTYPES, autocast
from bgpt.errors import BGPTError
from bgpt.fused import FusedStep, RowsStep
from bgpt.fused import available as fused_available
from bgpt.quantize import _PackedLinear, quantize, weights_of
from bgpt.stream import PAD, conversion_prompt, header_patch
from bgpt.validation import check_fields

if TYPE_CHECKING:  # the model imports this module (BGPT.generate); this one needs no model class
    from bgpt.model import BGPT

ENGINES = ("cached", "uncached", "reference")
STOP_END, STOP_CONTEXT, STOP_MAX_BYTES = "end", "context", "max_bytes"


# ----------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Sampling:
    """How the next symbol is chosen from the model's distribution."""

    top_k: int = 0
    """Keep the k most likely symbols (ties at the k-th kept); 0: no limit; 1: greedy."""
    top_p: float = 1.0
    """Keep the most likely symbols until their mass reaches top_p, in (0, 1]."""
    temperature: float = 1.0
    """> 0; applied to the candidates left by top-k and top-p."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.top_k < 0:
            raise BGPTError(
                f"top_k must be an integer >= 0 (0: off, 1: greedy), got {self.top_k!r}"
            )
        if not 0.0 < float(self.top_p) <= 1.0:
            raise BGPTError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not float(self.temperature) > 0.0 or not np.isfinite(self.temperature):
            raise BGPTError(f"temperature must be > 0, got {self.temperature!r}")

    @property
    def greedy(self) -> bool:
        return self.top_k == 1


def sample_symbols(
    logits: torch.Tensor, sampling: Sampling, generators: Sequence[torch.Generator | None]
) -> list[int]:
    """One symbol for each row of logits (b, V), row i drawing from generators[i].

    Row by row the result does not depend on the other rows, so a sample is the same alone
    or in a batch."""
    if sampling.greedy:
        return logits.argmax(-1).tolist()
    x = logits.detach().float().cpu()
    v = x.shape[-1]
    if 0 < sampling.top_k < v:
        kth = x.topk(sampling.top_k, -1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if sampling.top_p < 1.0:
        p, order = x.softmax(-1).sort(dim=-1, descending=True, stable=True)
        # keep the smallest head of the sorted distribution whose mass reaches top_p
        drop = p.cumsum(-1) - p >= sampling.top_p
        x = x.masked_fill(torch.empty_like(drop).scatter_(-1, order, drop), float("-inf"))
    if sampling.temperature != 1.0:
        x = x / sampling.temperature
    cdf = x.softmax(-1).cumsum(-1)  # (b, V); a symbol of probability 0 never comes first
    if len(generators) == 1:  # the same search on the host: four tensor ops fewer per byte
        row, u = cdf[0].tolist(), torch.rand(1, generator=generators[0]).item()
        target = float(np.float32(u) * np.float32(row[-1]))  # as float32 tensors multiply
        return [min(bisect.bisect_right(row, target), v - 1)]  # first cdf > target
    u = torch.cat([torch.rand(1, generator=g) for g in generators])
    picks = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)  # first cdf > u
    return picks.clamp_max_(v - 1).view(-1).tolist()


# ----------------------------------------------------------------------------- prompts


def _clean_ext(ext: str) -> str:
    if not isinstance(ext, str):
        raise BGPTError(f"extension must be a string, got {type(ext).__name__}")
    return ext[1:] if ext.startswith(".") else ext


def _as_bytes(data, what: str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, np.ndarray) and data.dtype == np.uint8:
        return data.tobytes()
    raise BGPTError(f"{what} must be bytes, got {type(data).__name__}")


def generation_prompt(prompt: bytes, ext: str, patch_size: int) -> np.ndarray:
    """What generation feeds the model: the header patch of `ext`, then the prompt's bytes
    (not padded: generation continues them). Shape (S + len(prompt),), int16."""
    data = np.frombuffer(_as_bytes(prompt, "prompt"), dtype=np.uint8).astype(np.int16)
    return np.concatenate([header_patch(_clean_ext(ext), patch_size), data])


# ----------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class Output:
    """One generated file: its bytes and why generation stopped (STOP_*)."""

    data: bytes
    stop: str


def stop_message(stop: str | None, model: BGPT) -> str:
    """A sentence for a stop reason."""
    c = model.config
    return {
        STOP_END: "ended at the end patch",
        STOP_CONTEXT: f"stopped at the context limit ({c.max_patches} patches of {c.patch_size} bytes)",
        STOP_MAX_BYTES: "stopped at max_bytes",
    }.get(stop, "not finished")


def _resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise BGPTError(f"unknown dtype {dtype!r} (use {', '.join(DTYPES)})")
    if dtype == "fp16" and device.type == "cpu":
        raise BGPTError("fp16 autocast is for CUDA; on CPU use bf16 or fp32")
    return DTYPES[dtype]


def is_generative(model) -> bool:
    """A generative bGPT: both decoders (a classifier has no byte-level decoder)."""
    return (
        isinstance(model, torch.nn.Module)
        and hasattr(model, "byte_decoder")
        and hasattr(model, "patch_decoder")
    )


class Generation:
    """One batched run: prompts (symbol streams) in, the bytes of every sample out.

    Iterate it for the bytes of each step, a list of (sample index, byte); after a sample's
    last byte, `stops[i]` says why it stopped and `outputs[i]` holds all its bytes. Settings
    are checked here (BGPTError), before anything runs; `finished` lists the samples in the
    order they stopped.

    `batch_size`: at most this many samples run at once (default: all). The cached engine
    batches continuously: a row freed by a finished sample takes the next one at once, so the
    batch stays full whatever the lengths; the plain loops run the prompts in chunks.

    `logits_hook(samples, logits)` (for tests) sees the raw next-symbol logits of the samples
    that draw at each step. `fused=False` keeps the cached steps on the PyTorch path instead of
    the compiled kernels (`bgpt.fused`, used on CPU for fp32 and int8 weights when numba is
    installed)."""

    def __init__(
        self,
        model: BGPT,
        prompts: Sequence[np.ndarray],
        *,
        engine: str = "cached",
        max_bytes: int | None = None,
        min_bytes: int = 0,
        sampling: Sampling | None = None,
        seeds: Sequence[int] | None = None,
        dtype: str | torch.dtype | None = None,
        logits_hook: Callable[[list[int], torch.Tensor], None] | None = None,
        fused: bool = True,
        batch_size: int | None = None,
    ):
        if not is_generative(model):
            kind = (
                "a classifier"
                if getattr(getattr(model, "config", None), "is_classifier", False)
                else type(model).__name__
            )
            raise BGPTError(f"generation needs a generative bGPT model; this one is {kind}")
        if engine not in ENGINES:
            raise BGPTError(f"unknown engine {engine!r} (use {', '.join(ENGINES)})")
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0
        ):
            raise BGPTError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
        if not prompts:
            raise BGPTError("nothing to generate: no prompts")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise BGPTError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = min(batch_size or len(prompts), len(prompts))
        self.finished: list[int] = []  # samples in the order they stopped (callers may drain it)
        self.model, self.engine = model, engine
        self.sampling = sampling or Sampling()
        c = model.config
        self.patch_size, self.max_patches = c.patch_size, c.max_patches
        self.context = c.patch_size * c.max_patches
        self.prompts = []
        for i, p in enumerate(prompts):
            p = np.asarray(p).astype(np.int64)
            s = self.patch_size
            if p.ndim != 1 or len(p) < s:
                raise BGPTError(
                    f"prompt {i}: a stream of at least one whole (header) patch is needed"
                )
            if len(p) >= self.context:
                raise BGPTError(
                    f"prompt {i} is {len(p)} symbols, header included; the model's context holds "
                    f"{self.context} ({self.max_patches} patches of {s}) with room to generate"
                )
            if p.min() < 0 or p.max() > PAD or (p[len(p) // s * s :] == PAD).any():
                raise BGPTError(
                    f"prompt {i}: symbols must be 0..256, and a partial last patch holds bytes only"
                )
            self.prompts.append(p)
        self.max_bytes, self.min_bytes = max_bytes, min_bytes
        self.device = next(model.parameters()).device
        self.dtype = _resolve_dtype(dtype, self.device)
        self.logits_hook = logits_hook
        self.fused = fused and fused_available()
        n = len(self.prompts)
        if self.sampling.greedy:
            self.seeds = None
            self.generators: list[torch.Generator | None] = [None] * n
        else:
            if seeds is None:
                base = int.from_bytes(os.urandom(4), "little")
                seeds = [base + i for i in range(n)]
            if len(seeds) != n:
                raise BGPTError(f"{len(seeds)} seeds for {n} prompts")
            self.seeds = list(seeds)
            self.generators = [torch.Generator().manual_seed(int(s)) for s in self.seeds]
        self.outputs = [bytearray() for _ in range(n)]
        self.stops: list[str | None] = [None] * n
        self._started = False

    # -- shared by the engines

    def limit(self, i: int) -> int:
        """At most this many bytes can come out for sample i."""
        room = self.context - len(self.prompts[i])
        return room if self.max_bytes is None else min(room, self.max_bytes)

    def at_patch_end(self, i: int) -> bool:
        """Does sample i's stream end on a patch boundary now (or has it stopped)?"""
        return (
            self.stops[i] is not None
            or (len(self.prompts[i]) + len(self.outputs[i])) % self.patch_size == 0
        )

    def _net(self) -> BGPT:
        """The model to run: itself, or for bf16/fp16 a copy with its Linear weights cast once
        (autocast would cast every weight at every step: a decoding step costs several times
        more that way on CPU)."""
        m = self.model
        if self.dtype == torch.float32 or next(m.parameters()).dtype != torch.float32:
            return m
        twin = copy.deepcopy(m).eval()
        for module in twin.modules():
            if isinstance(module, nn.Linear):
                module.to(self.dtype)
        return twin

    @contextlib.contextmanager
    def _compute(self):
        with torch.inference_mode(), autocast(self.device, self.dtype):
            yield

    def _choose(self, samples: list[int], logits: torch.Tensor) -> list[int]:
        logits = logits.float()
        if self.logits_hook is not None:
            self.logits_hook(samples, logits)
        if self.min_bytes:  # no end of file yet for these samples
            ban = [len(self.outputs[s]) < self.min_bytes for s in samples]
            if all(ban):  # in place: the logits are this step's own
                logits.select(-1, PAD).fill_(float("-inf"))
            elif any(ban):
                logits[torch.tensor(ban, device=logits.device), PAD] = float("-inf")
        return sample_symbols(logits, self.sampling, [self.generators[s] for s in samples])

    def _draw(self, samples: list[int], logits: np.ndarray) -> list[int]:
        """`_choose` for the compiled engines' logits (rows, V): greedy and plain temperature
        sampling drawn row by row in compiled code (`bgpt.fused.draw`, each sample's uniform
        from its generator, as sample_symbols draws it), anything else through `_choose`."""
        s = self.sampling
        if self.logits_hook is not None or s.top_k > 1 or s.top_p < 1.0:
            return self._choose(samples, torch.from_numpy(logits))
        picks = []
        for row, i in zip(logits, samples, strict=True):
            banned = PAD if len(self.outputs[i]) < self.min_bytes else -1
            u = 0.0 if s.greedy else torch.rand(1, generator=self.generators[i]).item()
            picks.append(fused_kernels.draw(row, u, float(s.temperature), s.greedy, banned))
        return picks

    def _accept(self, i: int, symbol: int, length: int) -> bool:
        """Record sample i's new symbol, its stream now `length` symbols long; False: it stopped."""
        if symbol == PAD:
            self.stops[i] = STOP_END
            self.finished.append(i)
            return False
        out = self.outputs[i]
        out.append(symbol)
        if self.max_bytes is not None and len(out) >= self.max_bytes:
            self.stops[i] = STOP_MAX_BYTES
        elif length >= self.context:
            self.stops[i] = STOP_CONTEXT
        if self.stops[i] is not None:
            self.finished.append(i)
        return self.stops[i] is None

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self._started:
            raise RuntimeError("a Generation runs once; make a new one")
        self._started = True
        if self.max_bytes == 0:
            self.stops = [STOP_MAX_BYTES] * len(self.prompts)
            self.finished = list(range(len(self.prompts)))
            return
        was_training = self.model.training
        self.model.eval()
        try:
            yield from self._cached() if self.engine == "cached" else self._plain()
        finally:
            self.model.train(was_training)

    def run(self) -> list[Output]:
        """Run to the end; every sample's bytes and stop reason."""
        for _ in self:
            pass
        return [Output(bytes(o), s) for o, s in zip(self.outputs, self.stops, strict=True)]

    # -- the plain loop ("uncached", "reference")

    def _plain(self) -> Iterator[list[tuple[int, int]]]:
        """Rows with prompts of one length step together; nothing is cached (except, for
        "reference", the last patch feature until the next patch is complete)."""
        m, s = self._net(), self.patch_size
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(self.prompts):
            groups.setdefault(len(p), []).append(i)
        size = self.batch_size
        chunks = [g[k : k + size] for g in groups.values() for k in range(0, len(g), size)]
        for samples in chunks:
            seqs = torch.tensor(
                np.stack([self.prompts[i] for i in samples]), device=self.device
            )  # (g, n)
            feats = None
            while samples:
                g, n = seqs.shape
                p, t = divmod(n, s)
                patches, prefix = seqs[:, : p * s].view(g, p, s), seqs[:, p * s :]
                with self._compute():
                    if self.engine == "uncached":
                        logits = m.next_byte_logits_naive(patches, prefix)
                    else:
                        if t == 0 or feats is None:
                            feats = m.patch_decoder(patches)[:, -1]  # (g, H), whole prefix
                        targets = torch.full((g, s), PAD, dtype=torch.long, device=self.device)
                        targets[:, :t] = prefix
                        logits = m.byte_decoder(feats, targets, patches[:, -1])[
                            :, t
                        ]  # whole patch prefix
                    symbols = self._choose(samples, logits)
                keep = [
                    r
                    for r, (i, y) in enumerate(zip(samples, symbols, strict=True))
                    if self._accept(i, y, n + 1)
                ]
                yield [(i, y) for i, y in zip(samples, symbols, strict=True) if y != PAD]
                seqs = torch.cat([seqs, torch.tensor(symbols, device=self.device)[:, None]], 1)[
                    keep
                ]
                feats = feats[keep] if feats is not None else None
                samples = [samples[r] for r in keep]

    # -- the cached engine

    def _cached(self) -> Iterator[list[tuple[int, int]]]:
        with self._compute():
            run = _CachedRun(self, self._net())
        while run.samples or run.pending:
            with self._compute():  # not across the yield: the caller's code runs there
                emitted = run.step()
            if emitted:
                yield emitted


def _linear(linear: nn.Linear | _PackedLinear, dtype: torch.dtype, transpose: bool):
    """x -> linear(x) on weights cast once to `dtype`; with `transpose`, stored (in, out).
    An fp16 or int8 layer runs its own kernel (`bgpt.quantize`)."""
    if isinstance(linear, _PackedLinear):
        return linear.bound(dtype)
    bias = linear.bias.detach().to(dtype)
    if transpose:
        weight = linear.weight.detach().t().to(dtype).contiguous()
        return lambda x: torch.addmm(bias, x, weight)
    weight = linear.weight.detach().to(dtype)
    return lambda x: F.linear(x, weight, bias)


class _OneStep:
    """`Transformer.forward` with a cache, for one new position per row, in plain functional
    ops on tensors taken out of the modules once: the step that runs once per generated byte,
    where module calls and attribute lookups cost as much as the arithmetic. Weights are cast
    once to the compute dtype and, with `transpose` (small models on CPU), stored (in, out):
    for one row `torch.addmm` reads that layout about 1.5x faster than `F.linear` reads
    (out, in) while the matrix fits in cache (measured on the benchmark CPU; no gain for the
    paper model's larger matrices). Same math as the module path, which stays the reference:
    the tests hold the engines equal."""

    def __init__(self, tr, dtype: torch.dtype, transpose: bool, head: torch.Tensor | None = None):
        self.heads = tr.blocks[0].attn.heads
        self.wpe = tr.wpe.weight.detach()

        def ln(m: nn.LayerNorm):
            return (m.weight.detach(), m.bias.detach(), m.eps)

        self.layers = [
            (
                ln(blk.ln_1),
                _linear(blk.attn.c_attn, dtype, transpose),
                _linear(blk.attn.c_proj, dtype, transpose),
                ln(blk.ln_2),
                _linear(blk.mlp.c_fc, dtype, transpose),
                _linear(blk.mlp.c_proj, dtype, transpose),
            )
            for blk in tr.blocks
        ]
        self.ln_f = ln(tr.ln_f)
        self.head = None  # an output head tied to an embedding (V, H)
        if head is not None:
            w = head.detach().to(dtype)
            if transpose:
                w = w.t().contiguous()
                self.head = lambda x: torch.mm(x, w)
            else:
                self.head = lambda x: F.linear(x, w)

    def token_table(self, wte: torch.Tensor, first: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For every position p >= `first` and symbol y, what the first block starts from when
        position p's input is the embedding wte[y]: the residual stream wte[y] + wpe[p]
        (P, V, H) and its q, k, v (P, V, 3H). A byte's step then looks both up, skipping the
        first block's LayerNorm and largest matmul (the byte decoder's input is always an
        embedding, except the patch feature at position 0)."""
        positions, (vocab, hidden) = self.wpe.shape[0] - first, wte.shape
        h = wte[None] + self.wpe[first:, None]  # (P, V, H)
        (w1, b1, e1), qkv = self.layers[0][:2]
        q = qkv(torch.layer_norm(h.view(-1, hidden), (hidden,), w1, b1, e1))
        return h, q.view(positions, vocab, -1)

    def __call__(
        self,
        x: torch.Tensor,
        cache,
        rows: torch.Tensor | None = None,
        looked_up: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x (b, H): one new position for each of the cache's rows (or of `rows`) -> (b, H),
        or the logits (b, V) when there is a head. `looked_up`: instead of x, the residual
        stream (b, H) and the first block's q, k, v (b, 3H) from `token_table`."""
        shape, heads = (self.wpe.shape[1],), self.heads
        plan = cache.plan(1, rows)
        if looked_up is None:
            h, first_qkv = (
                x + (self.wpe[plan.start] if plan.start is not None else self.wpe[plan.pos[:, 0]]),
                None,
            )
        else:
            h, first_qkv = looked_up
        b, hidden = h.shape
        split = (b, 3, heads, 1, hidden // heads)
        mask = plan.mask
        for kv, ((w1, b1, e1), qkv, proj, (w2, b2, e2), fc, fc_out) in zip(
            cache, self.layers, strict=True
        ):
            if first_qkv is None:
                first_qkv = qkv(torch.layer_norm(h, shape, w1, b1, e1))
            q, k, v = first_qkv.view(split).unbind(1)
            first_qkv = None
            kv.plan = plan
            k, v = kv.append(k, v)  # 3 x (b, heads, 1 or end, hd)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (b, heads, 1, hd)
            h = h + proj(y.view(b, hidden))
            h = h + fc_out(F.gelu(fc(torch.layer_norm(h, shape, w2, b2, e2)), approximate="tanh"))
        cache.advance(plan)
        h = torch.layer_norm(h, shape, *self.ln_f)
        return h if self.head is None else self.head(h)


def _int8_on_fbgemm(m: nn.Module) -> bool:
    """Do the model's int8 layers run on fbgemm here (not on their plain twins)?"""
    return all(x.runs_kernel() for x in m.modules() if isinstance(x, _PackedLinear))


class _CachedRun:
    """State of the cached engine: both caches and, per cache row, where it stands.

    Cache row r holds sample `samples[r]`; rows of finished samples are dropped."""

    def __init__(self, gen: Generation, m: BGPT):
        s, dev = gen.patch_size, gen.device
        self.gen, self.m, self.s, self.dev = gen, m, s, dev
        pdec, bdec = m.patch_decoder, m.byte_decoder
        param_dtype = next(m.parameters()).dtype
        self.cache_dtype = gen.dtype if gen.dtype != torch.float32 else param_dtype
        self.wte = bdec.wte.weight.detach()
        self.emb_dtype = self.wte.dtype
        transpose = dev.type == "cpu" and m.config.hidden_size <= 512
        self.byte_step = _OneStep(
            bdec.transformer, self.cache_dtype, transpose, head=bdec.wte.weight
        )
        # the patch's byte positions (after the context and the feature): residual stream and
        # first q, k, v per (position, symbol)
        self.table_h, self.table_qkv = self.byte_step.token_table(self.wte, bdec.context + 1)
        weights = weights_of(m)
        fp32 = self.cache_dtype == torch.float32 == self.emb_dtype
        compiled = gen.fused and dev.type == "cpu" and fp32 and weights in ("int8", "fp32")
        if compiled and gen.batch_size == 1:
            # one sequence at a time on CPU, fp32 activations: each step in one compiled kernel
            # (bgpt.fused), for fp32 and int8 models
            self.byte_step = FusedStep(bdec.transformer, head=bdec.wte.weight)
            self.patch_step = FusedStep(pdec.transformer)
            self.table_h_np, self.table_qkv_np = self.table_h.numpy(), self.table_qkv.numpy()
        elif compiled and (weights == "fp32" or _int8_on_fbgemm(m)):
            # batches: one product call for all rows (int8: fbgemm's), compiled kernels between
            self.byte_step = RowsStep(bdec.transformer, head=bdec.wte.weight)
            self.patch_step = RowsStep(pdec.transformer)
        else:
            self.patch_step = _OneStep(pdec.transformer, self.cache_dtype, transpose)
        self.fused = isinstance(self.byte_step, FusedStep)  # one row at a time (batch_size 1)

        # per row: the caches' rows, and
        self.samples: list[int] = []  # the sample it holds
        self.pos: list[int] = []  # index in the current patch of the symbol predicted next
        self.length: list[int] = []  # stream symbols so far
        self.forced: list[deque] = []  # bytes of a partial prompt patch, fed one step at a time
        self.patch: list[list[int]] = []  # the current patch's symbols
        self.prev: list[int] = []  # its last symbol
        self.pcache = self.bcache = None
        self.feats = self.last_patch = None  # (b, H) features; (b, S) last complete patches
        self.pending = deque(range(len(gen.prompts)))  # samples not started yet, in order
        self._admit()

    def _admit(self) -> None:
        """Start pending samples in free rows (continuous batching: a finished row is taken by
        the next sample at once). Prefill: their complete prompt patches, right-padded with PAD
        patches to the longest, in one pass; the rows join the caches after the running ones."""
        gen, s, dev = self.gen, self.s, self.dev
        free = gen.batch_size - len(self.samples)
        new = [self.pending.popleft() for _ in range(min(free, len(self.pending)))]
        if not new:
            return
        pdec, bdec = self.m.patch_decoder, self.m.byte_decoder
        prompts = [gen.prompts[i] for i in new]
        b = len(new)
        whole = [len(p) // s for p in prompts]  # complete prompt patches per row
        patches = torch.full((b, max(whole), s), PAD, dtype=torch.long, device=dev)
        for r, p in enumerate(prompts):
            patches[r, : whole[r]] = torch.from_numpy(p[: whole[r] * s]).view(-1, s)
        pcache = pdec.transformer.new_cache(b, gen.max_patches, dev, self.cache_dtype)
        h = pdec.transformer(pdec.embed(patches), pcache)  # (b, P_max, H)
        pcache.lens = list(whole)  # forget the padding: a row's next patch overwrites it
        # (b, H): feature of each row's last complete patch, which predicts the next one
        last = torch.tensor(whole, device=dev) - 1
        feats = h[torch.arange(b, device=dev), last].to(self.emb_dtype)
        bcache = bdec.transformer.new_cache(b, bdec.context + s, dev, self.cache_dtype)
        last_patch = patches[torch.arange(b, device=dev), last]  # (b, S)
        if self.pcache is None or not self.samples:
            self.pcache, self.bcache, self.feats, self.last_patch = (
                pcache,
                bcache,
                feats,
                last_patch,
            )
        else:
            self.pcache.extend(pcache)
            self.bcache.extend(bcache)
            self.feats = torch.cat([self.feats, feats])
            self.last_patch = torch.cat([self.last_patch, last_patch])
        self.samples += new
        self.pos += [0] * b
        self.length += [w * s for w in whole]
        self.forced += [deque(p[w * s :].tolist()) for p, w in zip(prompts, whole, strict=True)]
        self.patch += [[] for _ in range(b)]
        self.prev += [0] * b

    def step(self) -> list[tuple[int, int]]:
        """One symbol for every row; returns the (sample, byte) pairs that came out."""
        if self.pending and len(self.samples) < self.gen.batch_size:
            self._admit()
        symbols, drew = self._symbol_fused() if self.fused else self._symbols()
        return self._advance(symbols, drew)

    def _symbol_fused(self) -> tuple[list[int], list[bool]]:
        """`_symbols` for the one row of the fused kernels (bgpt.fused): the step and the
        draw compiled, nothing in between made a tensor."""
        pos, prev, forced = self.pos[0], self.prev[0], self.forced[0]
        if pos == 0:  # the patch's feature
            self.m.byte_decoder.prime(self.bcache, self.last_patch)
            logits = self.byte_step.run(self.bcache, self.feats[0].numpy())
        else:  # inside the patch: the first block from the tables
            looked_up = (self.table_h_np[pos - 1, prev], self.table_qkv_np[pos - 1, prev])
            logits = self.byte_step.run(self.bcache, looked_up=looked_up)
        if forced:  # the rest of a partial prompt patch
            return [forced.popleft()], [False]
        return self.gen._draw(self.samples, logits[None]), [True]

    def _symbols(self) -> tuple[list[int], list[bool]]:
        """Each row's next symbol, and whether it was drawn (else forced: a prompt's)."""
        gen, pos, dev = self.gen, self.pos, self.dev
        b = len(self.samples)
        # Byte decoder, one position per row: at a patch start the feature, else the
        # embedding of the row's last symbol.
        starting = [q == 0 for q in pos]
        looked_up = None
        bdec = self.m.byte_decoder
        if all(starting):
            bdec.prime(self.bcache, self.last_patch)
            x = self.feats
        elif not any(starting):  # every row inside its patch: the first block from the tables
            x = None
            if b == 1:  # views of the rows: no index tensor to build
                p, y = pos[0] - 1, self.prev[0]
                looked_up = (self.table_h[p].narrow(0, y, 1), self.table_qkv[p].narrow(0, y, 1))
            else:  # index_select: cheaper than advanced indexing
                vocab = self.wte.shape[0]
                at = torch.tensor(
                    [(q - 1) * vocab + y for q, y in zip(pos, self.prev, strict=True)], device=dev
                )
                looked_up = (
                    torch.index_select(self.table_h.flatten(0, 1), 0, at),
                    torch.index_select(self.table_qkv.flatten(0, 1), 0, at),
                )
        else:  # some rows start a patch (prompts of different lengths): features there
            x = torch.index_select(self.wte, 0, torch.tensor(self.prev, device=dev))
            rows = torch.tensor([r for r in range(b) if starting[r]], device=dev)
            bdec.prime(self.bcache, self.last_patch[rows], rows)
            x = torch.where(torch.tensor(starting, device=dev)[:, None], self.feats, x)
        logits = self.byte_step(x, self.bcache, looked_up=looked_up)  # (b, 257)

        drew = [not f for f in self.forced]  # forced: the rest of a partial prompt patch
        symbols = [-1 if d else f.popleft() for d, f in zip(drew, self.forced, strict=True)]
        drawing = [r for r in range(b) if drew[r]]
        if drawing:
            some = logits if len(drawing) == b else logits[drawing]
            samples = [self.samples[r] for r in drawing]
            if isinstance(self.byte_step, RowsStep):  # compiled draws for compiled logits
                picked = gen._draw(samples, some.numpy())
            else:
                picked = gen._choose(samples, some)
            for r, y in zip(drawing, picked, strict=True):
                symbols[r] = y
        return symbols, drew

    def _advance(self, symbols: list[int], drew: list[bool]) -> list[tuple[int, int]]:
        """Each row takes its symbol: samples stop, patches complete; the bytes that came out."""
        gen, pos, b = self.gen, self.pos, len(self.samples)
        emitted, alive = [], []
        for r in range(b):
            y = symbols[r]
            self.length[r] += 1
            pos[r] += 1
            self.patch[r].append(y)
            if drew[r]:  # forced symbols are the prompt's and never complete a patch
                ok = gen._accept(self.samples[r], y, self.length[r])
                if y != PAD:
                    emitted.append((self.samples[r], y))
                if not ok:
                    continue
            alive.append(r)

        self.prev = symbols
        if len(alive) < b:
            self._keep(alive)
        completed = [r for r in range(len(self.samples)) if self.pos[r] == self.s]
        if completed:
            self._next_patch(completed)
        return emitted

    def _keep(self, alive: list[int]) -> None:
        """Drop finished rows from the caches and every per-row state."""
        self.samples, self.pos, self.length, self.forced, self.patch, self.prev = (
            [xs[r] for r in alive]
            for xs in (self.samples, self.pos, self.length, self.forced, self.patch, self.prev)
        )
        if alive:
            keep = torch.tensor(alive, dtype=torch.long, device=self.dev)
            self.pcache.keep(keep)
            self.bcache.keep(keep)
            self.feats, self.last_patch = self.feats[keep], self.last_patch[keep]

    def _next_patch(self, completed: list[int]) -> None:
        """Patch decoder over the rows that completed a patch, that patch only: new features."""
        pdec = self.m.patch_decoder
        new = torch.tensor([self.patch[r] for r in completed], device=self.dev).view(-1, 1, self.s)
        every = len(completed) == len(self.samples)
        rows = None if every else torch.tensor(completed, device=self.dev)
        out = self.patch_step(pdec.embed(new)[:, 0], self.pcache, rows).to(self.emb_dtype)
        if every:
            self.feats, self.last_patch = out, new[:, 0]
        else:
            self.feats[rows], self.last_patch[rows] = out, new[:, 0]
        for r in completed:
            self.pos[r] = 0
            self.patch[r] = []


# ----------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class GenerateOptions:
    """How `generate`, `stream` and `convert` run: each field is also a keyword of those
    functions (and of `BGPT.generate` / `stream` / `convert`), and a flag of `bgpt generate`
    and `bgpt convert`."""

    max_bytes: int | None = None
    """Stop a sample after this many bytes (None: at its end patch or the context's end)."""
    min_bytes: int = 0
    """Forbid the end of the file before this many bytes (benchmarks)."""
    top_k: int = 0
    """Keep the k most likely symbols; 0: no limit; 1: greedy (the default of `convert`)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the most likely symbols until their mass reaches top_p."""
    temperature: float = 1.0
    """> 0; applied to the candidates left by top-k and top-p."""
    seed: int | None = None
    """Sample i of a batch is seeded seed + i (None: fresh randomness)."""
    dtype: str | torch.dtype | None = None
    """Compute dtype: "fp32", "bf16", "fp16" (None: the model's)."""
    engine: str = "cached"
    """"cached", "uncached" (the plain loop) or "reference" (the public script's algorithm)."""
    batch_size: int | None = None
    """Samples run at once (None: all); with more prompts, each row that finishes takes the
    next prompt at once (continuous batching). A sample's bytes do not depend on it."""
    weights: str | None = None
    """"fp32", "bf16" or "int8": run a copy of the model with its weights in that form
    (`bgpt.quantize`; made at every call: for many calls, `bgpt.load(path, weights=...)`).
    None: the model as it is."""

    def __post_init__(self) -> None:
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise BGPTError(f"seed must be an integer, got {self.seed!r}")
        _ = self.sampling  # checks top_k, top_p and temperature
        if self.weights is not None and self.weights not in WEIGHTS:
            raise BGPTError(f"unknown weights {self.weights!r} (use {', '.join(WEIGHTS)})")

    @property
    def sampling(self) -> Sampling:
        return Sampling(top_k=self.top_k, top_p=self.top_p, temperature=self.temperature)

    def run(self, model: BGPT, streams: Sequence[np.ndarray]) -> Generation:
        """The batched run of these options over prompt streams."""
        seeds = None if self.seed is None else [self.seed + i for i in range(len(streams))]
        current = weights_of(model) if self.weights is not None else None
        if current is not None and current != self.weights:
            if current != "fp32":
                raise BGPTError(f"this model's weights are {current} already")
            model = quantize(copy.deepcopy(model), self.weights)
        return Generation(
            model,
            streams,
            engine=self.engine,
            max_bytes=self.max_bytes,
            min_bytes=self.min_bytes,
            sampling=self.sampling,
            seeds=seeds,
            dtype=self.dtype,
            batch_size=self.batch_size,
        )


GREEDY = GenerateOptions(top_k=1)
"""`convert`'s default: a conversion has one right answer."""


def _options(
    options: GenerateOptions | None, fields: dict, default: GenerateOptions
) -> GenerateOptions:
    """`options` (or the function's default) with the keyword fields given beside it."""
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(GenerateOptions)})
    if unknown:
        raise TypeError(f"unknown generation option(s) {', '.join(unknown)}")
    return dataclasses.replace(options or default, **fields)


def _bytes_of(gen: Generation) -> Iterator[bytes]:
    for step in gen:
        for _, y in step:
            yield bytes((y,))


def generate(
    model: BGPT,
    prompt: bytes | Sequence[bytes] = b"",
    ext: str = "bin",
    options: GenerateOptions | None = None,
    **fields,
) -> bytes | list[Output]:
    """The bytes of a new file with extension `ext` that starts with `prompt` (the prompt itself
    not included). Stops at the end patch, after `max_bytes` bytes, or at the context limit.
    The same seed gives the same bytes; `top_k=1` is greedy.

    Several prompts (a list of bytes) run in one batch and give a list of `Output` (bytes and
    why each stopped); sample i is seeded seed + i, so it equals that prompt generated alone.
    Settings: `options` and/or its fields as keywords (`GenerateOptions`)."""
    opts = _options(options, fields, GenerateOptions())
    one = isinstance(prompt, (bytes, bytearray, memoryview))
    prompts = [prompt] if one else list(prompt)
    streams = [generation_prompt(p, ext, model.config.patch_size) for p in prompts]
    outputs = opts.run(model, streams).run()
    return outputs[0].data if one else outputs


def conversion_streams(
    model: BGPT, inputs: Sequence[tuple[bytes, str]], to: str
) -> list[np.ndarray]:
    """Conversion prompts (SPEC §3): each input's stream without end patch + `to`'s header patch."""
    s = model.config.patch_size
    return [
        conversion_prompt(
            np.frombuffer(_as_bytes(x, "input"), dtype=np.uint8), _clean_ext(e), _clean_ext(to), s
        )
        for x, e in inputs
    ]


def convert(
    model: BGPT,
    data: bytes | Sequence[tuple[bytes, str]],
    ext: str | None = None,
    to: str = "bin",
    options: GenerateOptions | None = None,
    **fields,
) -> bytes | list[Output]:
    """Conversion inference (SPEC §3): the file with extension `to` that the model writes for
    input `data` (extension `ext`). Greedy unless options say otherwise.

    Several inputs, a list of (data, extension) pairs with `ext=None`, run in one batch and give
    a list of `Output`."""
    opts = _options(options, fields, GREEDY)
    one = isinstance(data, (bytes, bytearray, memoryview))
    if one and ext is None:
        raise BGPTError("convert needs the input's extension (ext)")
    if not one and ext is not None:
        raise BGPTError(
            "several inputs carry their own extensions: pass (data, ext) pairs and no ext"
        )
    inputs = [(data, ext)] if one else list(data)
    outputs = opts.run(model, conversion_streams(model, inputs, to)).run()
    return outputs[0].data if one else outputs


def stream(
    model: BGPT,
    prompt: bytes = b"",
    ext: str = "bin",
    options: GenerateOptions | None = None,
    *,
    to: str | None = None,
    **fields,
) -> Iterator[bytes]:
    """`generate` as an iterator of one-byte `bytes` yielded as they are produced; with `to`,
    `convert`'s output instead (`prompt` is then the input file, `ext` its extension, and the
    default is greedy)."""
    if to is None:
        opts = _options(options, fields, GenerateOptions())
        streams = [generation_prompt(prompt, ext, model.config.patch_size)]
    else:
        opts = _options(options, fields, GREEDY)
        streams = conversion_streams(model, [(prompt, ext)], to)
    return _bytes_of(opts.run(model, streams))


__all__ = [
    "ENGINES",
    "GREEDY",
    "GenerateOptions",
    "Generation",
    "Output",
    "STOP_CONTEXT",
    "STOP_END",
    "STOP_MAX_BYTES",
    "Sampling",
    "conversion_streams",
    "convert",
    "generate",
    "generation_prompt",
    "sample_symbols",
    "stop_message",
    "stream",
]
