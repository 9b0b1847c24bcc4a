"""The `digits` set: scikit-learn's bundled 8 x 8 handwritten digits as 32 x 32 BMP."""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from bgpt.tasks.media.convert import IMAGE_SIZE, _bmp, _need
from bgpt.tasks.media.sets import Item, _select_labels, _stratified

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- digits


def build_digits(out, test_fraction=0.2, per_label=None, labels=None, seed=0, **_) -> list[Item]:
    """scikit-learn's bundled handwritten digits (1,797 images of 8 x 8, ink 0..16) as
    32 x 32 RGB BMP: white ink on black, each pixel repeated 4 x 4. Stratified hash split."""
    datasets = _need("sklearn.datasets", "the digits set")
    Image = _need("PIL.Image", "the digits set")
    d = datasets.load_digits()
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(d.target):
        by_label[str(int(t))].append(i)
    chosen = _select_labels(sorted(by_label), labels, "digits")
    split = _stratified(
        {lab: by_label[lab] for lab in chosen}, test_fraction, seed, "digits", per_label
    )
    items = []
    for lab in chosen:
        for part, idx in zip(("train", "test"), split[lab], strict=True):
            for i in sorted(idx):
                pixels = np.round(d.images[i] * (255.0 / 16.0)).astype(np.uint8)  # (8, 8)
                img = Image.fromarray(pixels, "L").resize(
                    (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.NEAREST
                )
                items.append(Item(part, lab, ".bmp", _bmp(img), {"index": int(i)}))
    return items
