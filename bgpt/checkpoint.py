"""Checkpoints: our format (model.safetensors + config.json) and the reference's `.pth`.

`load(path)` takes any of:
  - a saved model folder (config.json + model.safetensors),
  - a run folder (its best checkpoint, else its latest),
  - a reference `.pth` (SPEC §2 keys, with or without the {'model': ...} wrapper and the
    old attention-mask buffers, generative or classification), read with
    `torch.load(weights_only=True)` only; its config is inferred from tensor shapes.
A file that is none of these is one `CheckpointError` with a human message.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bgpt.config import BGPTConfig
from bgpt.errors import BGPTError, CheckpointError
from bgpt.files import atomic_write, atomic_write_text  # noqa: F401 - re-exported
from bgpt.hub import is_hub_path
from bgpt.hub import resolve as resolve_hub
from bgpt.model import BGPT, BGPTClassifier, build_model
from bgpt.quantize import quantize, weights_of
from bgpt.stream import VOCAB_SIZE

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "bgpt"


# --------------------------------------------------------------------------- writing


def save_pretrained(
    model: BGPT | BGPTClassifier, directory: str | Path, extra: dict | None = None
) -> Path:
    """Write `model.safetensors` and `config.json` into `directory`, each atomically.

    The weights go first: a folder whose config.json exists always has matching weights
    except for an interrupted overwrite, which `load` reports as a mismatch."""
    if weights_of(model) == "int8":
        raise BGPTError("an int8 model is for inference; save the model it was loaded from")
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(
        directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT})
    )
    meta = {"format": FORMAT, "config": model.config.to_dict(), **(extra or {})}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2))
    return directory


def from_pretrained(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> BGPT | BGPTClassifier:
    directory = Path(directory)
    try:
        meta = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{directory}: unreadable {CONFIG_NAME}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{directory / CONFIG_NAME}: this is not a bgpt config")
    try:
        config = BGPTConfig.from_dict(meta["config"])
    except BGPTError as e:
        raise CheckpointError(f"{directory / CONFIG_NAME}: {e}") from None
    try:
        state = load_file(str(directory / WEIGHTS_NAME), device=str(map_location))
    except (OSError, SafetensorError, RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{directory / WEIGHTS_NAME}: corrupt or unreadable weights ({_short(e)})"
        ) from None
    model = build_model(config)
    _load_state(model, state, directory / WEIGHTS_NAME)
    return model


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the config "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(v.shape)}, config expects {tuple(expected[k].shape)}"
            )
    model.load_state_dict(state)


# --------------------------------------------------------------------------- reference

_REF_PATCH = "patch_level_decoder."
_REF_BYTE = "byte_level_decoder.base."
_CONV1D = re.compile(r"\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")


def _block_map(ref_prefix: str, our_prefix: str, layers: int) -> dict[str, tuple[str, bool]]:
    """Reference GPT-2 block names -> (our name, transpose?) for `layers` blocks."""
    out = {}
    for n in range(layers):
        for part in ("ln_1", "ln_2"):
            for p in ("weight", "bias"):
                out[f"{ref_prefix}h.{n}.{part}.{p}"] = (f"{our_prefix}blocks.{n}.{part}.{p}", False)
        for part in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            out[f"{ref_prefix}h.{n}.{part}.weight"] = (
                f"{our_prefix}blocks.{n}.{part}.weight",
                True,
            )
            out[f"{ref_prefix}h.{n}.{part}.bias"] = (f"{our_prefix}blocks.{n}.{part}.bias", False)
    return out


def reference_name_map(config: BGPTConfig) -> dict[str, tuple[str, bool]]:
    """Every reference key -> (our key, transpose?), for this config."""
    p, ours = _REF_PATCH + "base.", "patch_decoder.transformer."
    m = {
        _REF_PATCH + "patch_embedding.weight": ("patch_decoder.embed.table", True),
        _REF_PATCH + "patch_embedding.bias": ("patch_decoder.embed.bias", False),
        p + "wpe.weight": (ours + "wpe.weight", False),
        p + "ln_f.weight": (ours + "ln_f.weight", False),
        p + "ln_f.bias": (ours + "ln_f.bias", False),
        **_block_map(p + "", ours, config.patch_layers),
    }
    if config.is_classifier:
        m["classifier.weight"] = ("classifier.weight", False)
        m["classifier.bias"] = ("classifier.bias", False)
    else:
        b, ours = _REF_BYTE + "transformer.", "byte_decoder.transformer."
        m.update(
            {
                b + "wte.weight": ("byte_decoder.wte.weight", False),
                b + "wpe.weight": (ours + "wpe.weight", False),
                b + "ln_f.weight": (ours + "ln_f.weight", False),
                b + "ln_f.bias": (ours + "ln_f.bias", False),
                **_block_map(b, ours, config.byte_layers),
            }
        )
    return m


def _ignored(key: str) -> bool:
    """Keys the reference may carry that hold no weights of ours."""
    return (
        key.endswith((".attn.bias", ".attn.masked_bias"))  # old GPT-2 causal-mask buffers
        or key == _REF_PATCH + "base.wte.weight"  # vocabulary of one, never used
        or key == _REF_BYTE + "lm_head.weight"  # tied to wte
    )


def infer_reference_config(state: dict[str, torch.Tensor]) -> BGPTConfig:
    """S, L, H and layer counts from tensor shapes; heads = H/64 as in the reference."""
    try:
        hidden, in_dim = state[_REF_PATCH + "patch_embedding.weight"].shape
        max_patches = state[_REF_PATCH + "base.wpe.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"missing {e.args[0]!r}") from None
    if in_dim % VOCAB_SIZE:
        raise CheckpointError(f"patch embedding input {in_dim} is not a multiple of {VOCAB_SIZE}")

    def layers(prefix: str) -> int:
        pat = re.compile(re.escape(prefix) + r"h\.(\d+)\.")
        found = [int(m.group(1)) for k in state if (m := pat.match(k))]
        return max(found) + 1 if found else 0

    num_classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else 0
    return BGPTConfig(
        patch_size=in_dim // VOCAB_SIZE,
        max_patches=max_patches,
        hidden_size=hidden,
        patch_layers=layers(_REF_PATCH + "base."),
        byte_layers=layers(_REF_BYTE + "transformer.") if not num_classes else 0,
        heads=max(1, hidden // 64),
        num_classes=num_classes,
    )


def from_reference_state_dict(
    state: dict[str, torch.Tensor], source: str = "checkpoint"
) -> BGPT | BGPTClassifier:
    """Build our model from a reference state dict (SPEC §2 names, Conv1D layout)."""
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not any(k.startswith(_REF_PATCH) for k in state):
        raise CheckpointError(f"{source}: this is not a bGPT checkpoint (no {_REF_PATCH}* weights)")
    try:
        config = infer_reference_config(state)
    except (CheckpointError, BGPTError) as e:
        raise CheckpointError(f"{source}: not a usable bGPT checkpoint: {e}") from None
    names = reference_name_map(config)
    unknown = sorted(k for k in state if k not in names and not _ignored(k))
    if unknown:
        raise CheckpointError(
            f"{source}: unexpected weights for a bGPT model: {', '.join(unknown[:3])}"
        )
    ours = {}
    for ref_key, (our_key, transpose) in names.items():
        if ref_key not in state:
            raise CheckpointError(f"{source}: missing weight {ref_key}")
        t = state[ref_key].float()
        ours[our_key] = t.t().contiguous() if transpose else t
    model = build_model(config)
    _load_state(model, ours, source)
    return model


def to_reference_state_dict(model: BGPT | BGPTClassifier) -> dict[str, torch.Tensor]:
    """Our weights under the reference's names and layout (for export and parity tests)."""
    config = model.config
    if config.byte_context:
        raise CheckpointError(
            "a model with byte_context has no reference (.pth) form: the paper's model reads no byte context"
        )
    if config.pooling != "mean":
        raise CheckpointError(
            f"a classifier pooling by {config.pooling} has no reference (.pth) form: the paper's pools by the mean"
        )
    ours = model.state_dict()
    out = {
        ref: (ours[k].t().contiguous() if tr else ours[k].clone())
        for ref, (k, tr) in reference_name_map(config).items()
    }
    out[_REF_PATCH + "base.wte.weight"] = torch.zeros(1, config.hidden_size)
    if not config.is_classifier:
        out[_REF_BYTE + "lm_head.weight"] = out[_REF_BYTE + "transformer.wte.weight"]
    return out


def load_reference(path: str | Path) -> BGPT | BGPTClassifier:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder") from None
    except (
        pickle.UnpicklingError
    ):  # weights_only refused a Python object: never load it another way
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path}: this is not a loadable PyTorch checkpoint (not a torch.save archive)"
            ) from None
        raise CheckpointError(
            f"{path}: holds Python objects besides tensors; bgpt reads checkpoints weights-only "
            "(no code from a file ever runs), so this file cannot be loaded"
        ) from None
    except Exception as e:  # zip and format errors all mean "not loadable"
        raise CheckpointError(
            f"{path}: this is not a loadable PyTorch checkpoint ({_short(e)})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: this is not a bGPT checkpoint (holds a {type(state).__name__})"
        )
    return from_reference_state_dict(state, str(path))


# --------------------------------------------------------------------------- any path


def resolve_model_dir(path: Path) -> Path | None:
    """The saved-model folder a path stands for: itself, or a run folder's best / latest."""
    if (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file():
        return path
    for sub in ("best", "latest"):
        if (path / sub / CONFIG_NAME).is_file():
            return path / sub
    return None


def load(
    path: str | Path, map_location: str | torch.device = "cpu", weights: str = "fp32"
) -> BGPT | BGPTClassifier:
    """Load a model from a saved folder, a run folder, a reference `.pth`, or any of these
    files on the Hugging Face Hub as `hf://OWNER/REPO/FILE[@REVISION]` (see module doc).
    `weights`: the form its weights take for inference, "fp32" (as stored, exact), "bf16" or
    "int8" (`bgpt.quantize`)."""
    return quantize(_load(path, map_location), weights)


def _load(path: str | Path, map_location: str | torch.device) -> BGPT | BGPTClassifier:
    if is_hub_path(path):
        path = resolve_hub(str(path))
    path = Path(path)
    if path.is_dir():
        folder = resolve_model_dir(path)
        if folder is None:
            raise CheckpointError(
                f"{path}: no {CONFIG_NAME} + {WEIGHTS_NAME} here (nor in best/ or latest/)"
            )
        return _finite(from_pretrained(folder, map_location), path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    if path.suffix == ".safetensors":
        raise CheckpointError(
            f"{path}: a bare .safetensors file has no config; pass its folder (with {CONFIG_NAME})"
        )
    model = load_reference(path)
    return _finite(model, path).to(map_location)


def _finite(model: BGPT | BGPTClassifier, path: Path) -> BGPT | BGPTClassifier:
    """A model whose weights hold NaN or inf computes nothing meaningful: refuse it at load, before
    a command writes a file from it."""
    with torch.no_grad():
        bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise CheckpointError(
            f"{path}: weights are not finite (NaN or inf in {bad[0]}{' and others' if len(bad) > 1 else ''})"
        )
    return model
