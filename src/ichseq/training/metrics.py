"""Patient-level binary metrics (positive = hemorrhage = 1).

The study reports accuracy, precision, recall, F1 and ROC AUC on a small test set (a few
dozen patients). On such sets a split can easily hold a single class, or a model can
predict no positive at all; a metric whose denominator is then zero is *undefined* and is
reported as ``None`` (JSON ``null``) rather than 0, so a summary table never mistakes
"could not be measured" for "measured and was zero".

Every value in the returned dict is a plain Python ``int``/``float``/``None`` so the dict
can be written with ``json.dumps`` as-is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

ArrayLike = Sequence[float] | np.ndarray


def as_binary_array(name: str, values: ArrayLike) -> np.ndarray:
    """Return ``values`` as a 1-D int array of 0/1, or raise ``ValueError`` naming ``name``.

    Accepts bools, ints or floats that are exactly 0 or 1; anything else (2, 0.5, NaN) is
    a caller bug, e.g. probabilities passed where predictions were expected.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))][0]
        raise ValueError(f"{name} must contain only 0 and 1, found {bad!r}")
    return arr.astype(np.int64)


def as_probability_array(name: str, values: ArrayLike) -> np.ndarray:
    """Return ``values`` as a 1-D float array in ``[0, 1]``, or raise ``ValueError``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric probabilities: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, found NaN or infinity")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(
            f"{name} must lie in [0, 1], found values in [{arr.min():g}, {arr.max():g}]"
        )
    return arr


def _ratio(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator`` as a float, or ``None`` when the denominator is 0."""
    return None if denominator == 0 else float(numerator) / float(denominator)


def binary_metrics(
    y_true: ArrayLike, y_pred: ArrayLike, y_prob: ArrayLike | None = None
) -> dict[str, float | int | None]:
    """Confusion matrix and derived metrics of one patient-level evaluation.

    ``y_true`` and ``y_pred`` are 0/1 per patient; ``y_prob`` (optional) is the patient's
    probability of hemorrhage, used only for ROC AUC. Undefined metrics are ``None``:

    * precision when nothing is predicted positive (tp + fp == 0);
    * recall when there is no positive label; specificity when there is no negative label;
    * f1 = 2tp / (2tp + fp + fn) when that denominator is 0 (no positive label and no
      positive prediction). Written this way, f1 is 0.0 -- not undefined -- for a model
      that predicts no positive on a set that has positives: it missed them all;
    * balanced accuracy when recall or specificity is undefined;
    * roc_auc when no probabilities are given or ``y_true`` holds a single class.
    """
    truth = as_binary_array("y_true", y_true)
    pred = as_binary_array("y_pred", y_pred)
    if truth.size == 0:
        raise ValueError("y_true is empty: there is nothing to evaluate")
    if pred.size != truth.size:
        raise ValueError(f"y_pred has {pred.size} values but y_true has {truth.size}")
    prob = None
    if y_prob is not None:
        prob = as_probability_array("y_prob", y_prob)
        if prob.size != truth.size:
            raise ValueError(f"y_prob has {prob.size} values but y_true has {truth.size}")

    tp = int(np.sum((truth == 1) & (pred == 1)))
    tn = int(np.sum((truth == 0) & (pred == 0)))
    fp = int(np.sum((truth == 0) & (pred == 1)))
    fn = int(np.sum((truth == 1) & (pred == 0)))
    n = int(truth.size)

    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    balanced = None if recall is None or specificity is None else (recall + specificity) / 2.0

    roc_auc = None
    # sklearn raises on a single class; AUC is genuinely undefined there, so report None.
    if prob is not None and np.unique(truth).size == 2:
        roc_auc = float(roc_auc_score(truth, prob))

    return {
        "accuracy": _ratio(tp + tn, n),
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "specificity": specificity,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": balanced,
        "roc_auc": roc_auc,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
        "n_test": n,
    }
