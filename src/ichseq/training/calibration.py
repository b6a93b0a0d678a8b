"""Calibrating a run's patient probabilities on its validation patients.

A classifier's softmax output ranks scans (its ROC AUC) but need not be a frequency: a slice
model's patient probability is its *highest* slice's, which for a scan of 40 slices sits near 1
even when no slice bleeds (the twin's ConvNeXt: ECE 0.26, specificity 0.51 at 0.5), and a
scan model trained on 40 scans may squeeze every answer into 0.4-0.6. Each run therefore fits
a monotone map of its patient logit ``z`` (the positive minus the negative class logit of the
scan's sample, or the highest over a slice model's slices) to a probability, on its own
validation patients (never the test ones), and records it beside the model:

* ``platt`` (default; Platt 1999): ``p = sigmoid(a*z + b)``, ``a > 0``. The intercept moves the
  decision boundary, which the max over slices needs; a temperature cannot.
* ``temperature`` (Guo et al. 2017): ``p = sigmoid(z / T)``, i.e. ``b = 0``: it rescales
  confidence but keeps ``p = 0.5`` at ``z = 0``.
* ``none``: ``p = sigmoid(z)``, the raw softmax.

Both fits minimise the log-loss against Platt's smoothed targets, ``(n+ + 1)/(n+ + 2)`` for a
positive and ``1/(n- + 2)`` for a negative patient (as scikit-learn's sigmoid calibration): a
validation split of 10 patients is often perfectly separated, and the plain log-loss would then
drive the slope to infinity, i.e. certainty. The map is strictly increasing, so each run's
ROC AUC and every decision taken on ranks are unchanged.

The calibration error is measured as the expected calibration error (ECE, Naeini et al. 2015)
over equal-width probability bins, with its reliability table (:func:`reliability_table`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, log_expit

METHODS = ("platt", "temperature", "none")
#: Equal-width bins of the expected calibration error and the reliability diagram.
BINS = 10
#: Bounds of the fitted slope (a = 1/T): wide enough for any real fit, finite on any input.
SLOPE_BOUNDS = (1e-3, 1e3)
IDENTITY = {"method": "none", "slope": 1.0, "intercept": 0.0}


def patient_logits(patients: np.ndarray, logits: np.ndarray) -> pd.DataFrame:
    """One row per patient (sorted): its logit ``z``, the highest of its samples' (a scan
    model has one sample per patient). ``logits``: (N,) positive-minus-negative logits."""
    frame = pd.DataFrame({"patient": np.asarray(patients), "z": np.asarray(logits, np.float64)})
    return frame.groupby("patient", sort=True).z.max().reset_index()


def _smoothed_targets(labels: np.ndarray) -> np.ndarray:
    positives = int(labels.sum())
    negatives = int(len(labels) - positives)
    return np.where(labels == 1, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))


def _log_loss(z: np.ndarray, targets: np.ndarray) -> float:
    return float(-np.mean(targets * log_expit(z) + (1.0 - targets) * log_expit(-z)))


def fit_calibration(method: str, logits: Sequence[float], labels: Sequence[int]) -> dict:
    """The calibration map of ``method`` fitted on patient ``logits`` and 0/1 ``labels``:
    ``{"method", "slope", "intercept", "patients", "positives"}`` (``temperature`` too for the
    temperature method). With one class only, or ``method: none``, the identity (slope 1,
    intercept 0) with a ``note`` saying why when it was not asked for."""
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.int64)
    if z.shape != y.shape:
        raise ValueError(f"{z.size} logits but {y.size} labels")
    counts = {"patients": int(y.size), "positives": int(y.sum())}
    if method == "none":
        return {**IDENTITY, **counts}
    if y.size == 0 or y.min() == y.max():
        return {**IDENTITY, **counts, "method": method, "fitted": False,
                "note": "the validation patients hold one class only: not calibrated (identity)"}
    targets = _smoothed_targets(y)
    low, high = np.log(SLOPE_BOUNDS[0]), np.log(SLOPE_BOUNDS[1])
    if method == "temperature":
        result = minimize(lambda v: _log_loss(np.exp(v[0]) * z, targets), [0.0], method="L-BFGS-B",
                          bounds=[(low, high)])
        slope, intercept = float(np.exp(result.x[0])), 0.0
    else:
        result = minimize(lambda v: _log_loss(np.exp(v[0]) * z + v[1], targets), [0.0, 0.0], method="L-BFGS-B",
                          bounds=[(low, high), (None, None)])
        slope, intercept = float(np.exp(result.x[0])), float(result.x[1])
    fitted = {"method": method, "slope": slope, "intercept": intercept, **counts, "fitted": True}
    if method == "temperature":
        fitted["temperature"] = 1.0 / slope
    return fitted


def calibrated(calibration: dict | None, logits) -> np.ndarray:
    """Probabilities of ``logits`` under a fitted map (None or an empty record: the identity,
    as for a run trained before ichseq calibrated)."""
    calibration = calibration or IDENTITY
    z = np.asarray(logits, np.float64)
    return expit(float(calibration.get("slope", 1.0)) * z + float(calibration.get("intercept", 0.0)))


def _checked(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, np.float64)
    y = np.asarray(labels, np.float64)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} probabilities but {y.size} labels")
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1 or np.isnan(p).any()):
        raise ValueError("probabilities must lie in [0, 1]")
    return p, y


def reliability_table(probabilities, labels, bins: int = BINS) -> pd.DataFrame:
    """Per equal-width bin of predicted probability (``[k/bins, (k+1)/bins)``, the last closed):
    lower, upper, count, mean predicted probability, observed share of positives. Empty bins are
    kept with count 0 and NaN means."""
    p, y = _checked(probabilities, labels)
    which = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for k in range(bins):
        inside = which == k
        n = int(inside.sum())
        rows.append({"bin": k, "lower": k / bins, "upper": (k + 1) / bins, "count": n,
                     "mean_probability": float(p[inside].mean()) if n else np.nan,
                     "observed": float(y[inside].mean()) if n else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(probabilities, labels, bins: int = BINS) -> float:
    """ECE: the count-weighted mean of |observed share - mean probability| over the bins of
    :func:`reliability_table` (NaN with no sample)."""
    table = reliability_table(probabilities, labels, bins)
    filled = table[table["count"] > 0]
    if filled.empty:
        return float("nan")
    weights = filled["count"] / filled["count"].sum()
    return float((weights * (filled.observed - filled.mean_probability).abs()).sum())


def brier_score(probabilities, labels) -> float:
    p, y = _checked(probabilities, labels)
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


def calibration_summary(probabilities, labels, bins: int = BINS) -> dict:
    """``{"ece", "brier"}`` of ``probabilities``, rounded to 4 decimals (None when undefined)."""
    def rounded(v):
        return None if not np.isfinite(v) else round(float(v), 4)
    return {"ece": rounded(expected_calibration_error(probabilities, labels, bins)),
            "brier": rounded(brier_score(probabilities, labels))}


# -- decisions on calibrated probabilities -----------------------------------------------------


def decision_cut(decision: dict, calibration: dict | None) -> float:
    """The threshold of ``decision`` on the calibrated scale. ``max_prob``'s patient threshold
    was chosen on calibrated validation probabilities; the fixed ``threshold`` of ``any``,
    ``k_of_n`` and a scan model's ``threshold`` rule applies to the model's own probability, and
    is carried through the (increasing) map: raw >= t exactly when calibrated >= map(t)."""
    if decision.get("rule") == "max_prob":
        return float(decision.get("patient_threshold", decision.get("threshold", 0.5)))
    t = float(decision.get("threshold", 0.5))
    with np.errstate(divide="ignore"):
        z = np.log(t) - np.log1p(-t)  # the logit; +-inf at 1 and 0
    return float(calibrated(calibration, z))


def decide(logits, decision: dict, calibration: dict | None) -> tuple[float, bool, np.ndarray]:
    """One patient's ``(probability, positive, sample probabilities)`` from its samples' logits
    (a slice model's slices, a scan model's one sample), all on the calibrated scale: the
    probability is the highest sample's, the decision ``decision``'s rule against
    :func:`decision_cut`. The same function decides at training and in ``ichseq predict``."""
    z = np.asarray(logits, np.float64)
    if z.size == 0:
        raise ValueError("a patient needs at least one sample")
    probs = calibrated(calibration, z)
    probability = float(probs.max())
    cut = decision_cut(decision, calibration)
    rule = decision.get("rule")
    if rule == "any":
        positive = bool((probs >= cut).any())
    elif rule == "k_of_n":
        positive = int((probs >= cut).sum()) >= int(decision["k"])
    elif rule in ("max_prob", "threshold"):
        positive = probability >= cut
    else:
        raise ValueError(f"unknown decision rule {rule!r}")
    return probability, bool(positive), probs
