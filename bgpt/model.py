"""The bGPT model, top to bottom (SPEC §2).

    patches (B, P, S) bytes
      -> PatchEmbedding: one-hot(S x 257) -> linear, computed as a lookup-sum   (B, P, H)
      -> PatchDecoder: GPT-2 blocks over patches, learned positions, final LN     (B, P, H)
      -> feature of patch i predicts patch i+1:
    ByteDecoder: GPT-2 LM over [feature_i, emb(b1) .. emb(b_{S-1})], tied head  (N, S, 257)

`BGPT` is the generative model, `BGPTClassifier` the patch-level decoder with a linear
head on the mean of its outputs. Both read nothing global: the config says everything.
With `byte_context` (beyond the paper) the byte decoder's sequence starts with the S bytes of
patch i itself: [emb(c_1) .. emb(c_S), feature_i, emb(b1) .. emb(b_{S-1})].

The basic operations (Linear, LayerNorm, dropout, GELU, explicit attention) come from
`bgpt.ops`, the one door to the CPU training kernels; the key/value cache of cached
generation from `bgpt.kvcache`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from bgpt import ops
from bgpt.config import BGPTConfig
from bgpt.kvcache import KVCache, LayerKV
from bgpt.ops import Dropout, LayerNorm, Linear, linear, linear_gelu, residual_dropout
from bgpt.stream import PAD, VOCAB_SIZE

# ----------------------------------------------------------------------------- model

ROW_BUCKET = 128
"""In CPU training, the byte-level decoder's rows (predicted patches) are padded up to a
multiple of this, a CPU allocator workaround: with bf16 on CPU every new matmul shape is
cached by oneDNN, and batches of varying sizes made the resident memory grow without bound
(~5 GB after 300 steps of the demo; docs/benchmarks.md). The padded rows are dropped from the
loss; other devices run the rows as they are."""

BYTE_CHUNK = 512
"""With gradient checkpointing, the byte-level decoder and its loss run over this many
predicted patches at a time, each chunk checkpointed whole: backward keeps only a chunk's
input features and recomputes the chunk, so the byte level's activations at the peak are
one chunk's, not the batch's (per-layer checkpoints still held every layer's input for all
rows and a whole layer's intermediates: the larger half of the `paper` model's peak)."""


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
            (t <= ops.SHORT_SEQUENCE and q.dtype != torch.float32)
            or (drop and q.device.type == "cpu")
        ):  # the fused CPU kernel has no dropout: it would fall back to this math, slower
            y = ops.explicit_causal_attention(q, k, v, drop, self.training)
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
        pad = (-n) % ROW_BUCKET if self.training and feats.device.type == "cpu" else 0
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

    def generate(self, prompt: bytes | list[bytes] = b"", ext: str = "bin", **options):
        """Sample a file's bytes after `prompt` (`bgpt.generate.generate`; options are the
        fields of `bgpt.generate.GenerateOptions`)."""
        from bgpt.generate import generate

        return generate(self, prompt, ext, **options)

    def stream(self, prompt: bytes = b"", ext: str = "bin", **options):
        """Like `generate`, yielding bytes as they are produced (`to=...`: a conversion)."""
        from bgpt.generate import stream

        return stream(self, prompt, ext, **options)

    def convert(self, data: bytes, ext: str, to: str, **options) -> bytes:
        """Conversion inference: the target file for input `data` (SPEC §3); greedy by default."""
        from bgpt.generate import convert

        return convert(self, data, ext, to, **options)

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
    """Patch-level decoder, its outputs pooled over the real patches (mean, the paper's; or
    the last; or attention with a learned query), linear head to K classes."""

    def __init__(self, config: BGPTConfig):
        super().__init__()
        if not config.is_classifier:
            raise ValueError("BGPTClassifier needs num_classes > 0")
        self.config = config
        self.patch_decoder = PatchDecoder(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_classes)
        if config.pooling == "attention":  # one learned query over the patch features
            self.pool_query = nn.Parameter(torch.zeros(config.hidden_size))
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
        pooling = self.config.pooling
        if pooling == "last":  # the last real patch has seen them all
            last = mask.long().sum(1).clamp_min(1) - 1  # (B,)
            pooled = features[torch.arange(len(features), device=features.device), last]
        elif pooling == "attention":
            scores = features @ self.pool_query.to(features.dtype) / math.sqrt(features.shape[-1])
            weights = scores.float().masked_fill(~mask.bool(), float("-inf")).softmax(1)  # (B, P)
            pooled = (weights.to(features.dtype).unsqueeze(-1) * features).sum(1)  # (B, H)
        else:  # mean over the real patches (the paper)
            m = mask.unsqueeze(-1).to(features.dtype)
            pooled = (features * m).sum(1) / m.sum(1).clamp_min(1)  # (B, H)
        return self.classifier(pooled)


def build_model(config: BGPTConfig) -> BGPT | BGPTClassifier:
    return BGPTClassifier(config) if config.is_classifier else BGPT(config)
