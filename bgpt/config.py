"""Model configuration: one dataclass, two presets, JSON in and out.

A JSON object of `BGPTConfig` fields is a valid config everywhere a config is taken;
unknown keys are an error so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bgpt.errors import BGPTError
from bgpt.validation import check_fields


@dataclass
class BGPTConfig:
    """Shape of a bGPT model (SPEC §2). Defaults are the paper's 110 M model."""

    patch_size: int = 16
    """Bytes per patch (S)."""
    max_patches: int = 512
    """Patches of context (L), header and end patch included: S*L bytes."""
    hidden_size: int = 768
    """Width H of both decoders."""
    patch_layers: int = 12
    """Transformer blocks of the patch-level decoder."""
    byte_layers: int = 3
    """Transformer blocks of the byte-level decoder."""
    heads: int = 0
    """Attention heads; 0 means hidden_size // 64 (the reference's choice)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention and residual paths (GPT-2 default)."""
    byte_context: bool = False
    """Beyond the paper: the byte-level decoder also reads the bytes of the patch whose
    feature it starts from (the previous patch), as S more input positions before the
    feature, so it can copy from them directly instead of through one vector. Off (the
    paper's model) for the reference checkpoints."""
    patch_positions: str = "learned"
    """Initial patch positions: "learned" (GPT-2's N(0, 0.02), the paper) or "sinusoidal"
    (sines at frequencies pi * 2^(-k/2), still trained: position p and position 4p are one
    linear map apart, so attention can look up "the patch a quarter of the way back")."""
    num_classes: int = 0
    """0: a generative model; K > 0: a classifier over K labels (no byte-level decoder)."""
    labels: list[str] = field(default_factory=list)
    """Names of the classifier's labels, index order; empty for generative models."""

    def __post_init__(self) -> None:
        if isinstance(self.labels, tuple):
            self.labels = list(self.labels)
        check_fields(self, "config: ")
        if self.heads == 0:
            self.heads = max(1, self.hidden_size // 64)
        self.labels = [str(x) for x in self.labels]
        for name in ("patch_size", "max_patches", "hidden_size", "patch_layers", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BGPTError(f"config: {name} must be a positive integer, got {value!r}")
        if not isinstance(self.byte_layers, int) or self.byte_layers < 0:
            raise BGPTError(f"config: byte_layers must be >= 0, got {self.byte_layers!r}")
        if self.byte_layers == 0 and self.num_classes == 0:
            raise BGPTError("config: a generative model needs byte_layers >= 1")
        if self.max_patches < 2:
            raise BGPTError("config: max_patches must be >= 2 (a header patch and one more)")
        if self.patch_size > 4096 or self.max_patches > 1 << 20 or self.hidden_size > 1 << 16:
            raise BGPTError("config: patch_size, max_patches or hidden_size is absurdly large")
        if self.hidden_size % self.heads:
            raise BGPTError(
                f"config: hidden_size {self.hidden_size} is not divisible by heads {self.heads}"
            )
        if self.patch_positions not in ("learned", "sinusoidal"):
            raise BGPTError(f"config: patch_positions must be learned or sinusoidal, got {self.patch_positions!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise BGPTError(f"config: dropout must be in [0, 1), got {self.dropout!r}")
        if self.num_classes < 0:
            raise BGPTError(f"config: num_classes must be >= 0, got {self.num_classes}")
        if self.labels and len(self.labels) != self.num_classes:
            raise BGPTError(
                f"config: {len(self.labels)} labels given for num_classes={self.num_classes}"
            )

    @property
    def is_classifier(self) -> bool:
        return self.num_classes > 0

    @property
    def context_bytes(self) -> int:
        return self.patch_size * self.max_patches

    def replace(self, **changes: Any) -> BGPTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BGPTConfig:
        if not isinstance(data, dict):
            raise BGPTError("config: expected a JSON object of BGPTConfig fields")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BGPTError(f"config: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> BGPTConfig:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise BGPTError(f"config: no such file: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BGPTError(f"config: cannot read {path}: {e}") from None
        return cls.from_dict(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's model: 8 KiB of context, ~110 M parameters.
    "paper": dict(patch_size=16, max_patches=512, hidden_size=768, patch_layers=12, byte_layers=3),
    # Trains in minutes on a laptop CPU: 4 KiB of context, ~5 M parameters.
    "small": dict(patch_size=16, max_patches=256, hidden_size=256, patch_layers=4, byte_layers=2),
}


def resolve_config(spec: str | Path | BGPTConfig | None, **overrides: Any) -> BGPTConfig:
    """A preset name, a JSON file path or a config, with per-field overrides applied."""
    if isinstance(spec, BGPTConfig):
        base = spec.to_dict()
    elif spec is None:
        base = dict(PRESETS["small"])
    elif str(spec) in PRESETS:
        base = dict(PRESETS[str(spec)])
    else:
        path = Path(spec)
        if not path.suffix == ".json":
            raise BGPTError(f"config: {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a .json file")
        base = BGPTConfig.from_json(path).to_dict()
    base.update({k: v for k, v in overrides.items() if v is not None})
    return BGPTConfig.from_dict(base)
