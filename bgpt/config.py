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
from bgpt.validation import check_fields, check_ranges

WEIGHTS = ("fp32", "bf16", "fp16", "int8")
"""Forms a loaded model's weights take for inference (`bgpt.quantize`, `--weights`); their
positions are codes in .bgz headers: append only."""
WEIGHTS_HELP = (
    "form of the weights for inference: fp32 (the checkpoint's, exact; default), bf16, fp16 "
    "(fp16 weights, fp32 sums), or int8 (int8 weights, activations quantized per row); on CPU "
    "the paper-size model generates one sample ~3.5x faster in int8 than in fp32 and a batch "
    "of 8 ~3x (fp16: ~2x at batch 8, no faster alone) (docs/benchmarks.md: speed and quality)"
)


POOLINGS = ("mean", "last", "attention")


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
    pooling: str = "mean"
    """How a classifier pools its patch features into one vector: "mean" over the real
    patches (the paper), "last" (the last real patch's feature, which has seen every
    patch: the decoder is causal) or "attention" (a learned query attends over them)."""
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
            raise BGPTError(
                f"config: patch_positions must be learned or sinusoidal, got {self.patch_positions!r}"
            )
        if self.pooling not in POOLINGS:
            raise BGPTError(f"config: pooling must be {', '.join(POOLINGS)}, got {self.pooling!r}")
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
            raise BGPTError(
                f"config: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
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
    # train-classifier's default from scratch (issue 17's study, docs/media.md): at equal CPU
    # minutes 4-5x the steps of `small`, which won on images and file types and tied on text;
    # 8 KiB of context, so the paper's 8 KB formats (WAV, files cut at 8160 bytes) are seen whole.
    "classifier": dict(
        patch_size=16, max_patches=512, hidden_size=128, patch_layers=2, byte_layers=2
    ),
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
            raise BGPTError(
                f"config: {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a .json file"
            )
        base = BGPTConfig.from_json(path).to_dict()
    base.update({k: v for k, v in overrides.items() if v is not None})
    return BGPTConfig.from_dict(base)


# ----------------------------------------------------------------------------- training runs

MODEL_FIELDS = (
    "patch_size",
    "max_patches",
    "hidden_size",
    "patch_layers",
    "byte_layers",
    "heads",
    "dropout",
    "byte_context",
    "patch_positions",
    "pooling",
)


TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # next-byte prediction: the small preset at GPT-2-like settings
    "generate": {"config": "small", "lr": 3e-4},
    # classifiers: the narrow preset at a higher rate (issue 17's study, docs/media.md); a model
    # given with --init keeps its own shape
    "classify": {"config": "classifier", "lr": 1e-3},
}
"""`TrainConfig` fields whose default depends on the task (`bgpt train` / `train-classifier`)."""


@dataclass
class TrainConfig:
    """Everything a training run needs; every `bgpt train` flag is one field."""

    data: list[str] = field(default_factory=list)
    """Folders of files or packed sets to train on."""
    out: str = "runs/bgpt"
    """Run folder to write (config, metrics, checkpoints, loss curve)."""
    eval: list[str] = field(default_factory=list)
    """Folders to evaluate on; default: a deterministic held-out part of the data."""
    eval_fraction: float = 0.05
    """Share of the data held out for evaluation when no eval folder is given."""
    task: str = "generate"
    """'generate' (next-byte prediction) or 'classify' (label = file name up to '_')."""
    config: str | None = None
    """Model preset (small, paper, classifier) or a JSON file of BGPTConfig fields (each task
    has its default)."""
    model_overrides: dict = field(default_factory=dict)
    """Per-field changes to the model config (hidden_size=..., ...)."""
    conversion: str | None = None
    """Train on conversion pairs: 'X->Y' one way or 'X&Y' both ways (pairs by path stem)."""
    init: str | None = None
    """Start from these weights: a run folder, a saved model or a reference .pth (a classifier
    takes its patch-level decoder); none: random initialisation from --config."""
    steps: int = 0
    """Optimizer steps (0: from epochs; neither: 1000)."""
    epochs: float = 0.0
    """Passes over the training data, when steps is 0."""
    minutes: float = 0.0
    """Train for about this long instead: the step count is set from timed trial steps."""
    batch_size: int = 8
    """Files per optimizer step, over all processes and accumulation steps."""
    grad_accum: int = 1
    """Split each batch into this many sequential micro-batches (same result, less memory)."""
    lr: float | None = None
    """Peak learning rate (each task has its default; the reference fine-tunes its 110 M model
    at 1e-5)."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a share of the peak (cosine decay)."""
    warmup: float = 0.1
    """Share of the steps spent warming up linearly."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices (not on biases, LayerNorms or positions)."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this (0: off)."""
    sample_patches: int = 0
    """Train the byte-level decoder on this many random patches per micro-batch (0: all)."""
    loss_from_patch: int = 0
    """Train on the predictions of patches from this index of each sequence on; the ones before
    are read as context only (0: every patch after the header, as the paper). CPU states: 65,
    the header and the 64 patches of the program in memory."""
    label_smoothing: float = 0.0
    """Classifiers: share of each label's probability spread over the other labels in the
    training loss (0: plain cross-entropy)."""
    shift_bytes: int = 0
    """Classifiers: each training crop starts a random 0..shift_bytes-1 bytes into its file, so
    the same content lands at every position of a patch (0: every crop starts at byte 0)."""
    seed: int = 0
    """Seed of initialisation, data order, crops and dropout."""
    save_every: int = 200
    """Save (and evaluate) every this many steps, and at the end."""
    eval_max_files: int = 200
    """Files evaluated during training, evenly spaced over the sorted eval files (bgpt eval
    scores all)."""
    log_every: int = 10
    """Write a metrics line every this many steps."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    dtype: str = "auto"
    """Autocast dtype: auto (bf16), bf16, fp16 (CUDA) or fp32."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30 % more compute."""
    compile: bool = False
    """torch.compile the model: on CUDA 1.39x the bytes/s for `paper`, bf16, batch 8 (H100); on
    CPU slower than the eager path's fused kernels (0.58x for `small`, 0.72x for `paper`; see
    docs/benchmarks.md)."""
    resume: bool = False
    """Continue the run in `out` from its latest checkpoint."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.task not in TASK_DEFAULTS:
            raise BGPTError(f"task must be generate or classify, got {self.task!r}")
        for name, value in TASK_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        check_ranges(
            self,
            {  # bounds checked before anything is allocated
                "batch_size": (1, MAX_BATCH),
                "grad_accum": (1, MAX_BATCH),
                "steps": (0, 10**12),
                "epochs": (0, 10**6),
                "minutes": (0, 60 * 24 * 366),
                "weight_decay": (0, 100),
                "grad_clip": (0, 10**6),
                "save_every": (1, None),
                "log_every": (1, None),
                "eval_max_files": (1, None),
                "loss_from_patch": (0, 1 << 20),
                "label_smoothing": (0, 1),
                "shift_bytes": (0, 1 << 20),
            },
        )
        checks = {
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "steps": self.steps >= 0,
            "epochs": self.epochs >= 0,
            "minutes": self.minutes >= 0,
            "lr": 0 < self.lr < 1,
            "warmup": 0 <= self.warmup < 1,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "weight_decay": self.weight_decay >= 0,
            "grad_clip": self.grad_clip >= 0,
            "sample_patches": self.sample_patches >= 0,
            "loss_from_patch": self.loss_from_patch >= 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "shift_bytes": self.shift_bytes >= 0,
            "save_every": self.save_every >= 1,
            "log_every": self.log_every >= 1,
            "eval_max_files": self.eval_max_files >= 1,
            "eval_fraction": 0 < self.eval_fraction < 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise BGPTError(
                f"absurd setting: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}"
            )
        if self.batch_size % self.grad_accum:
            raise BGPTError(
                f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}"
            )
        unknown = set(self.model_overrides) - set(MODEL_FIELDS)
        if unknown:
            raise BGPTError(f"unknown model field(s): {', '.join(sorted(unknown))}")


MAX_BATCH = 1 << 16
"""Most files in one optimizer step: a larger batch is a typo, not a run."""
