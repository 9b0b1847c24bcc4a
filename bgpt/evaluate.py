"""Evaluation: bits per byte, the reference loss, accuracy.

Bits per byte (SPEC §3): the bits of every data byte plus the symbol that ends the
file, divided by the number of data bytes; every byte of a long file is scored once
(deterministic windows, `stream.eval_windows`). For conversion pairs the input part
(X) and the target part (Y) are reported separately. The reference loss is the mean
cross-entropy in nats over every predicted symbol (padding included), as the reference
computes it.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch
from tqdm import tqdm

from bgpt.data import Example, StreamDataset
from bgpt.device import autocast
from bgpt.model import BGPT, BGPTClassifier
from bgpt.stream import PAD, ROLE_INPUT, ROLE_TARGET, collate, extension_of

LN2 = math.log(2)


def batches(examples: list[Example], batch_size: int):
    """Examples in batches, longest first so similar lengths share a batch."""
    order = sorted(range(len(examples)), key=lambda i: -examples[i].stream.num_patches)
    for k in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[k : k + batch_size]]
        yield chunk, collate([e.stream for e in chunk], [e.first_scored for e in chunk])


def spread(total: int, max_items: int | None) -> list[int]:
    """Indices of `max_items` of `total` items evenly spaced over the whole list (all of them
    when max_items is None or larger): the folders are sorted by name, so a head would hold
    only the first labels or sources."""
    if max_items is None or max_items >= total:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, max_items).round()})


@torch.inference_mode()
def evaluate_generative(
    model: BGPT,
    dataset: StreamDataset,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    max_items: int | None = None,
    progress: bool = False,
) -> dict:
    """BPB overall, by extension and by part; the reference loss; counts."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    items = spread(len(dataset), max_items)
    n = len(items)
    row_of = {i: r for r, i in enumerate(items)}
    examples = [e for i in items for e in dataset.eval_examples(i)]
    # per item: bits and data bytes of the input part and of the target part
    bits = np.zeros((n, 2))
    nbytes = np.zeros((n, 2), dtype=np.int64)
    ref_nats, ref_count = 0.0, 0
    bar = tqdm(total=len(examples), desc="eval", unit="win", disable=not progress, leave=False)
    for chunk, batch in batches(examples, batch_size):
        batch = batch.to(device)
        with autocast(device, dtype):
            lp = model.symbol_logprobs(batch.patches, batch.mask)  # (B, P-1, S)
        scored = batch.scored[:, 1:].unsqueeze(-1)  # prediction of patch i+1 counts
        roles = batch.roles[:, 1:]
        is_data = batch.patches[:, 1:] != PAD
        ref_nats -= float(lp[batch.scored[:, 1:]].sum())
        ref_count += int(batch.scored[:, 1:].sum()) * batch.patches.shape[-1]
        rows = np.array([row_of[e.item] for e in chunk])
        for k, role in enumerate((ROLE_INPUT, ROLE_TARGET)):
            sel = scored & (roles == role)
            np.add.at(bits[:, k], rows, (-(lp * sel).sum((1, 2)) / LN2).cpu().numpy())
            np.add.at(nbytes[:, k], rows, (sel & is_data).sum((1, 2)).cpu().numpy())
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)

    def bpb(b: float, m: int) -> float | None:
        return b / m if m else None

    total_bits, total_bytes = float(bits.sum()), int(nbytes.sum())
    by_ext: dict[str, list] = defaultdict(lambda: [np.zeros(2), np.zeros(2, dtype=np.int64), 0])
    for r, i in enumerate(items):
        it = dataset.items[i]
        key = (
            f"{it[2]}->{it[3]}"
            if len(it) > 1
            else (extension_of(dataset.files.names[it[0]]) or "(none)")
        )
        acc = by_ext[key]
        acc[0] += bits[r]
        acc[1] += nbytes[r]
        acc[2] += 1
    out = {
        "bpb": bpb(total_bits, total_bytes),
        "reference_loss": ref_nats / ref_count if ref_count else None,
        "files": n,
        "bytes": total_bytes,
        "bits": total_bits,
        "by_ext": {k: _breakdown(*v) for k, v in sorted(by_ext.items())},
    }
    if any(len(dataset.items[i]) > 1 for i in items):
        out["bpb_input"] = bpb(float(bits[:, 0].sum()), int(nbytes[:, 0].sum()))
        out["bpb_target"] = bpb(float(bits[:, 1].sum()), int(nbytes[:, 1].sum()))
        out["bytes_input"], out["bytes_target"] = int(nbytes[:, 0].sum()), int(nbytes[:, 1].sum())
    return out


def _breakdown(bits: np.ndarray, nbytes: np.ndarray, files: int) -> dict:
    """BPB of a group of files; for conversion pairs also of its input and target parts
    (so 'abc->mid' and 'mid->abc' give the paper's BPB_abc and BPB_midi per direction)."""
    out = {
        "bpb": float(bits.sum() / nbytes.sum()) if nbytes.sum() else None,
        "bytes": int(nbytes.sum()),
        "files": files,
    }
    if nbytes[1]:
        out["bpb_input"] = float(bits[0] / nbytes[0]) if nbytes[0] else None
        out["bpb_target"] = float(bits[1] / nbytes[1])
    return out


@torch.inference_mode()
def classify_examples(
    model: BGPTClassifier, examples: list[Example], batch_size: int, device, dtype
) -> torch.Tensor:
    """Class probabilities (N, K) in the order of `examples`."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    probs = torch.zeros(len(examples), model.config.num_classes)
    order = sorted(range(len(examples)), key=lambda i: -examples[i].stream.num_patches)
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        batch = collate([examples[i].stream for i in idx]).to(device)
        with autocast(device, dtype):
            logits = model(batch.patches, batch.mask)
        probs[idx] = logits.float().softmax(-1).cpu()
    model.train(was_training)
    return probs


def evaluate_classifier(
    model: BGPTClassifier,
    dataset: StreamDataset,
    batch_size: int = 8,
    device="cpu",
    dtype=torch.float32,
    max_items: int | None = None,
) -> dict:
    """Accuracy and confusion matrix (rows: truth, columns: prediction) on the head window
    of every file, as the reference classifies."""
    items = spread(len(dataset), max_items)
    n = len(items)
    examples = [dataset.eval_examples(i)[0] for i in items]
    probs = classify_examples(model, examples, batch_size, device, dtype)
    pred = probs.argmax(-1).numpy()
    truth = np.array([e.label for e in examples])
    k = model.config.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, pred), 1)
    nll = (
        -np.log(probs[torch.arange(n), torch.from_numpy(truth)].clamp_min(1e-12).numpy()).mean()
        if n
        else None
    )
    return {
        "accuracy": float((pred == truth).mean()) if n else None,
        "loss": float(nll) if n else None,
        "files": n,
        "labels": model.config.labels,
        "confusion": confusion.tolist(),
    }
