"""Patient-level decisions of a per-slice model (e.g. ConvNeXt on single slices).

The per-slice baseline predicts each slice; a patient's diagnosis is then voted from its
slices. The patient *probability* -- the score ROC AUC ranks patients by -- is always the
highest slice probability, whatever the decision rule, so AUC does not depend on the rule.

A slice is "predicted positive" when its probability is ``>= threshold``.

Rules:

* ``any`` -- the study: the patient is positive if any slice is predicted positive;
* ``max_prob`` -- positive if the highest slice probability is ``>= patient_threshold``,
  a threshold chosen on validation patients (:func:`choose_patient_threshold`);
* ``k_of_n`` -- positive if at least ``k`` slices are predicted positive, which trades
  the ``any`` rule's sensitivity to a single noisy slice for specificity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ichseq.errors import ConfigError
from ichseq.training.metrics import as_binary_array, as_probability_array

RULES = ("any", "max_prob", "k_of_n")

#: Columns a per-slice prediction table must have.
SLICE_COLUMNS = ("patient", "label", "probability")


def _check_rule(rule: str, k: int | None) -> None:
    if rule not in RULES:
        raise ConfigError(f"aggregation.rule must be one of {', '.join(RULES)}; got {rule!r}")
    if rule == "k_of_n":
        if k is None or isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(
                f"aggregation.k must be an integer >= 1 for rule k_of_n; got {k!r}"
            )


def _check_threshold(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def aggregate_patient(
    slice_probs: np.ndarray,
    rule: str,
    threshold: float = 0.5,
    k: int | None = None,
    patient_threshold: float | None = None,
) -> tuple[float, int]:
    """``(patient probability, patient prediction)`` from one patient's slice probabilities.

    ``patient_threshold`` is used by ``max_prob`` only and defaults to ``threshold``.
    """
    _check_rule(rule, k)
    probs = as_probability_array("slice_probs", slice_probs)
    if probs.size == 0:
        raise ValueError("slice_probs is empty: a patient needs at least one slice")
    threshold = _check_threshold("threshold", threshold)

    probability = float(probs.max())
    if rule == "any":
        positive = bool((probs >= threshold).any())
    elif rule == "max_prob":
        cut = threshold if patient_threshold is None else patient_threshold
        positive = probability >= _check_threshold("patient_threshold", cut)
    else:  # k_of_n
        positive = int((probs >= threshold).sum()) >= k
    return probability, int(positive)


def aggregate_predictions(
    df: pd.DataFrame,
    rule: str,
    threshold: float = 0.5,
    k: int | None = None,
    patient_threshold: float | None = None,
) -> pd.DataFrame:
    """Per-patient table from a per-slice table with columns patient, label, probability.

    Returns columns patient, label (1 if any slice is labelled hemorrhage), probability,
    prediction, n_slices, n_positive_predicted (slices ``>= threshold``), sorted by patient.
    """
    _check_rule(rule, k)
    missing = [c for c in SLICE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"slice predictions lack column(s) {', '.join(missing)}")
    # Validate the whole columns up front so the error names the column, not a patient.
    labels = as_binary_array("label", df["label"].to_numpy())
    probs = as_probability_array("probability", df["probability"].to_numpy())
    threshold = _check_threshold("threshold", threshold)

    slices = pd.DataFrame(
        {"patient": df["patient"].to_numpy(), "label": labels, "probability": probs}
    )
    rows = []
    for patient, group in slices.groupby("patient", sort=True):
        p = group["probability"].to_numpy()
        probability, prediction = aggregate_patient(
            p, rule, threshold=threshold, k=k, patient_threshold=patient_threshold
        )
        rows.append(
            {
                "patient": patient,
                "label": int(group["label"].max()),
                "probability": probability,
                "prediction": prediction,
                "n_slices": int(p.size),
                "n_positive_predicted": int((p >= threshold).sum()),
            }
        )
    columns = ["patient", "label", "probability", "prediction", "n_slices", "n_positive_predicted"]
    return pd.DataFrame(rows, columns=columns).reset_index(drop=True)


def _balanced_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    recall = float(np.mean(preds[labels == 1] == 1))
    specificity = float(np.mean(preds[labels == 0] == 0))
    return (recall + specificity) / 2.0


def choose_patient_threshold(
    patient_labels: Sequence[int] | np.ndarray, patient_probs: Sequence[float] | np.ndarray
) -> float:
    """Threshold on patient probability that maximises balanced accuracy (for ``max_prob``).

    Candidates are the midpoints between consecutive distinct probabilities -- so on a
    separable set the threshold falls strictly between the classes rather than on a
    validation patient's score -- plus 0.0 (everyone positive) and 1.0 (everyone below
    certainty negative).
    Ties go to the candidate closest to 0.5 (then the lower one), the prior default, so the
    choice moves away from 0.5 only when that buys balanced accuracy. With a single class
    balanced accuracy is undefined and 0.5 is returned.
    """
    labels = as_binary_array("patient_labels", patient_labels)
    probs = as_probability_array("patient_probs", patient_probs)
    if labels.size != probs.size:
        raise ValueError(
            f"patient_probs has {probs.size} values but patient_labels has {labels.size}"
        )
    if labels.size == 0:
        raise ValueError("no validation patients to choose a threshold on")
    if np.unique(labels).size < 2:
        return 0.5

    distinct = np.unique(probs)
    candidates = np.unique(np.concatenate([[0.0, 1.0], (distinct[:-1] + distinct[1:]) / 2.0]))
    best_key, best = None, 0.5
    for t in candidates:
        score = _balanced_accuracy(labels, (probs >= t).astype(np.int64))
        # Highest score first, then closest to 0.5, then the lower threshold.
        key = (-score, abs(t - 0.5), t)
        if best_key is None or key < best_key:
            best_key, best = key, float(t)
    return best
