"""The reference bGPT model, rebuilt on Hugging Face GPT-2 modules the way the published
code builds it (patch_level_decoder / byte_level_decoder, Conv1D layouts, HF's shifted
labels). Used only by the parity tests: our model must compute the same numbers."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

from bgpt.stream import PAD, VOCAB_SIZE


def gpt2_config(
    hidden: int, layers: int, positions: int, vocab: int, dropout: float = 0.0
) -> GPT2Config:
    return GPT2Config(
        n_embd=hidden,
        n_layer=layers,
        n_head=max(1, hidden // 64),  # the reference: H/64 heads
        n_positions=positions,
        vocab_size=vocab,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        attn_implementation="eager",
    )


class RefPatchLevelDecoder(nn.Module):
    def __init__(self, patch_size: int, config: GPT2Config):
        super().__init__()
        self.patch_size = patch_size
        self.patch_embedding = nn.Linear(patch_size * VOCAB_SIZE, config.n_embd)
        self.base = GPT2Model(config)

    def forward(self, patches: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        x = F.one_hot(patches, num_classes=VOCAB_SIZE).float()
        x = x.reshape(len(patches), -1, self.patch_size * VOCAB_SIZE)
        return self.base(
            inputs_embeds=self.patch_embedding(x), attention_mask=masks
        ).last_hidden_state


class RefByteLevelDecoder(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.base = GPT2LMHeadModel(config)

    def forward(self, patch_features: torch.Tensor, target_patches: torch.Tensor):
        # labels: [-100, b1..bS]; inputs: [feature, emb(b1)..emb(bS)] (S+1 positions)
        labels = torch.cat([torch.full_like(target_patches[:, :1], -100), target_patches], dim=1)
        tokens = torch.cat([torch.full_like(target_patches[:, :1], PAD), target_patches], dim=1)
        embeds = F.embedding(tokens, self.base.transformer.wte.weight)
        embeds = torch.cat([patch_features.unsqueeze(1), embeds[:, 1:]], dim=1)
        return self.base(inputs_embeds=embeds, labels=labels)


class RefBGPT(nn.Module):
    def __init__(
        self,
        patch_size: int,
        max_patches: int,
        hidden: int,
        patch_layers: int,
        byte_layers: int,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.patch_level_decoder = RefPatchLevelDecoder(
            patch_size, gpt2_config(hidden, patch_layers, max_patches, 1, dropout)
        )
        self.byte_level_decoder = RefByteLevelDecoder(
            gpt2_config(hidden, byte_layers, patch_size + 1, VOCAB_SIZE, dropout)
        )

    def forward(self, patches: torch.Tensor, masks: torch.Tensor):
        """The reference's training forward: HF loss over every predicted symbol."""
        patches = patches.reshape(len(patches), -1, self.patch_size)
        masks = masks.clone().long()
        encoded = self.patch_level_decoder(patches, masks)
        left_shift = masks * (masks.flip(1).cumsum(1).flip(1) > 1)
        masks[:, 0] = 0
        return self.byte_level_decoder(encoded[left_shift == 1], patches[masks == 1])


class RefClassifier(nn.Module):
    def __init__(
        self, patch_size: int, max_patches: int, hidden: int, patch_layers: int, classes: int
    ):
        super().__init__()
        self.patch_size = patch_size
        self.patch_level_decoder = RefPatchLevelDecoder(
            patch_size, gpt2_config(hidden, patch_layers, max_patches, 1)
        )
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, patches: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        patches = patches.reshape(len(patches), -1, self.patch_size)
        encoded = self.patch_level_decoder(patches, masks.long())
        encoded = encoded * masks.unsqueeze(-1)
        encoded = encoded.sum(dim=1) / masks.sum(dim=1).unsqueeze(-1)
        return self.classifier(encoded)
