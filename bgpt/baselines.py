"""Trivial classification baselines: what a classifier must beat, on the same files.

- **majority**: always the most frequent training label.
- **byte n-gram tf-idf + logistic regression**: each file's first `max_bytes` bytes (the
  bytes a model with that context reads), read as latin-1 so that every byte is one
  character; byte 1-4-grams hashed to 2^20 features, tf-idf weighted, and a multinomial
  logistic regression (scikit-learn, the `media` extra). Fits in seconds on a few thousand
  files.

Every classification report (`bgpt eval` on a classifier, `bgpt media build`, docs/media.md)
prints these beside the model, fitted on the model's training files and scored on its test files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

BASELINE_NAMES = {
    "majority": "majority class",
    "ngram_logreg": "logistic regression, byte 1-4-gram tf-idf",
}


def classification_baselines(
    train: Sequence[tuple[bytes, str]],
    test: Sequence[tuple[bytes, str]],
    max_bytes: int | None = None,
) -> dict[str, float]:
    """Accuracy of each baseline on `test`, fitted on `train` ((data, label) pairs). The n-gram
    baseline is left out (with a note under "missing") when scikit-learn is not installed."""
    if not train or not test:
        raise ValueError("baselines need training and test files")
    labels = [y for _, y in train]
    majority = Counter(labels).most_common(1)[0][0]
    out: dict = {"majority": sum(y == majority for _, y in test) / len(test)}
    try:
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        out["missing"] = "install scikit-learn (pip install 'bgpt[media]') for the n-gram baseline"
        return out
    if len(set(labels)) < 2:
        out["ngram_logreg"] = out["majority"]
        return out

    def text(data: bytes) -> str:
        return (data if max_bytes is None else data[:max_bytes]).decode("latin-1")

    hasher = HashingVectorizer(
        analyzer="char", ngram_range=(1, 4), n_features=2**20, alternate_sign=False, norm=None
    )
    tfidf = TfidfTransformer(sublinear_tf=True)
    x_train = tfidf.fit_transform(hasher.transform([text(d) for d, _ in train]))
    x_test = tfidf.transform(hasher.transform([text(d) for d, _ in test]))
    clf = LogisticRegression(C=10.0, max_iter=1000).fit(x_train, labels)
    out["ngram_logreg"] = float((clf.predict(x_test) == [y for _, y in test]).mean())
    return out


def format_baselines(model_accuracy: float | None, baselines: dict) -> list[str]:
    """Report lines: the model's accuracy beside each baseline's, and the margin to the best."""
    lines = []
    if model_accuracy is not None:
        lines.append(f"  {'this model':<44}{model_accuracy:8.4f}")
    for key, name in BASELINE_NAMES.items():
        if key in baselines:
            lines.append(f"  {name:<44}{baselines[key]:8.4f}")
    if "missing" in baselines:
        lines.append(f"  ({baselines['missing']})")
    scores = [baselines[k] for k in BASELINE_NAMES if k in baselines]
    if model_accuracy is not None and scores:
        lines.append(
            f"  model vs best baseline: {100 * (model_accuracy - max(scores)):+.2f} points"
        )
    return lines
