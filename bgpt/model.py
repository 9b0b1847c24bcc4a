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

from bgpt.config import BGPTConfig
from bgpt.stream import PAD, VOCAB_SIZE


class LayerKV:
    """Key/value cache of one attention layer: preallocated (B, heads, T_max, head_dim)."""

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, device, dtype):
        self.k = torch.empty(batch, heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.empty_like(self.k)
        self.len = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.shape[2]
        if self.len + t > self.k.shape[2]:
            raise RuntimeError(f"key/value cache full ({self.k.shape[2]} positions)")
        self.k[:, :, self.len : self.len + t] = k
        self.v[:, :, self.len : self.len + t] = v
        self.len += t
        return self.k[:, :, : self.len], self.v[:, :, : self.len]


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(hidden, 3 * hidden)
        self.c_proj = nn.Linear(hidden, hidden)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None) -> torch.Tensor:
        b, t, h = x.shape
        # (B, T, 3H) -> 3 x (B, heads, T, H/heads)
        q, k, v = self.c_attn(x).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        past = 0
        if kv is not None:
            past = kv.len
            k, v = kv.append(k, v)
        drop = self.dropout if self.training else 0.0
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        elif t == 1:  # one new position sees everything cached
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:  # several new positions after a cached prefix: causal, offset by `past`
            allowed = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=drop)
        y = y.transpose(1, 2).reshape(b, t, h)  # (B, heads, T, hd) -> (B, T, H)
        return self.resid_drop(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.c_fc = nn.Linear(hidden, 4 * hidden)
        self.c_proj = nn.Linear(4 * hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LayerNorm GPT-2 block."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden, eps=1e-5)
        self.attn = CausalSelfAttention(hidden, heads, dropout)
        self.ln_2 = nn.LayerNorm(hidden, eps=1e-5)
        self.mlp = MLP(hidden, dropout)

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Learned positions + blocks + final LayerNorm: GPT-2 without a token embedding."""

    def __init__(self, hidden: int, heads: int, layers: int, positions: int, dropout: float):
        super().__init__()
        self.wpe = nn.Embedding(positions, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden, eps=1e-5)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, cache: list[LayerKV] | None = None) -> torch.Tensor:
        start = cache[0].len if cache else 0
        pos = torch.arange(start, start + x.shape[1], device=x.device)
        x = self.drop(x + self.wpe(pos))
        for i, block in enumerate(self.blocks):
            if self.gradient_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, cache[i] if cache else None)
        return self.ln_f(x)

    def new_cache(self, batch: int, max_len: int, device, dtype) -> list[LayerKV]:
        heads = self.blocks[0].attn.heads
        hidden = self.wpe.embedding_dim
        return [LayerKV(batch, heads, max_len, hidden // heads, device, dtype) for _ in self.blocks]


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
        self.transformer = Transformer(c.hidden_size, c.heads, c.patch_layers, c.max_patches, c.dropout)

    def forward(self, patches: torch.Tensor, cache: list[LayerKV] | None = None) -> torch.Tensor:
        """(B, P, S) symbols -> (B, P, H) features; feature i predicts patch i+1."""
        return self.transformer(self.embed(patches), cache)


class ByteDecoder(nn.Module):
    def __init__(self, config: BGPTConfig):
        super().__init__()
        c = config
        self.patch_size = c.patch_size
        self.wte = nn.Embedding(VOCAB_SIZE, c.hidden_size)
        # The reference allots S+1 positions; S are used.
        self.transformer = Transformer(c.hidden_size, c.heads, c.byte_layers, c.patch_size + 1, c.dropout)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """features (N, H) and target patches (N, S) -> logits (N, S, 257), teacher forced:
        input [feature, emb(b1) .. emb(b_{S-1})], position t predicts byte t+1."""
        x = torch.cat([features.unsqueeze(1).to(self.wte.weight.dtype), self.wte(targets[:, :-1])], dim=1)
        return self.logits(self.transformer(x))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.wte.weight)  # head tied to the token embedding


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


def predicted_pairs(features: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Select (feature of patch i, patch i+1) for every real patch i+1 >= 1.

    features (B, P, H), patches (B, P, S), mask (B, P) -> features (N, H), targets (N, S),
    and `where` (B, P-1) bool, the positions selected (row-major order).
    """
    where = mask[:, 1:]
    return features[:, :-1][where], patches[:, 1:][where], where


@dataclass
class ModelOutput:
    loss: torch.Tensor
    """The reference loss: mean cross-entropy (nats) over every predicted symbol."""
    num_symbols: int


class BGPT(nn.Module):
    """Generative bGPT: next-byte prediction over patches."""

    def __init__(self, config: BGPTConfig):
        super().__init__()
        if config.is_classifier:
            raise ValueError("BGPT is generative; use BGPTClassifier for num_classes > 0")
        self.config = config
        self.patch_decoder = PatchDecoder(config)
        self.byte_decoder = ByteDecoder(config)
        _init_weights(self, {self.patch_decoder.transformer: config.patch_layers, self.byte_decoder.transformer: config.byte_layers})

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_gradient_checkpointing(self, on: bool = True) -> None:
        self.patch_decoder.transformer.gradient_checkpointing = on
        self.byte_decoder.transformer.gradient_checkpointing = on

    def forward(self, patches: torch.Tensor, mask: torch.Tensor, sample_patches: int = 0, generator: torch.Generator | None = None) -> ModelOutput:
        """Reference loss of a batch: patches (B, P, S), mask (B, P).

        `sample_patches` > 0 trains the byte-level decoder on that many randomly chosen
        predicted patches of the batch (the reference's patch sampling)."""
        features = self.patch_decoder(patches)
        feats, targets, _ = predicted_pairs(features, patches, mask)
        if 0 < sample_patches < len(targets):
            pick = torch.randperm(len(targets), device=targets.device, generator=generator)[:sample_patches]
            feats, targets = feats[pick], targets[pick]
        logits = self.byte_decoder(feats, targets)  # (N, S, 257)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE).float(), targets.reshape(-1))
        return ModelOutput(loss, targets.numel())

    def symbol_logprobs(self, patches: torch.Tensor, mask: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """log p(symbol) of every predicted symbol: (B, P-1, S) float32, zero where the
        target patch is padding (mask 0). Entry [b, i, j] is byte j of patch i+1."""
        features = self.patch_decoder(patches)
        feats, targets, where = predicted_pairs(features, patches, mask)
        out = torch.zeros(where.shape + (self.config.patch_size,), dtype=torch.float32, device=patches.device)
        picked = []
        for i in range(0, len(targets), chunk):  # bound the (N, S, 257) logits in memory
            logits = self.byte_decoder(feats[i : i + chunk], targets[i : i + chunk]).float()
            picked.append(logits.log_softmax(-1).gather(-1, targets[i : i + chunk, :, None]).squeeze(-1))
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
        dummy = torch.full((b, self.config.patch_size), PAD, dtype=torch.long, device=patches.device)
        dummy[:, :t] = prefix
        return self.byte_decoder(features, dummy)[:, t]  # (B, 257)


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
