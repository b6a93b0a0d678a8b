"""Patient-level voting of per-slice predictions and the validation threshold choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ichseq.errors import ConfigError
from ichseq.training.votes import aggregate_patient, aggregate_predictions, choose_patient_threshold

PROBS = np.array([0.1, 0.6, 0.4])

# --------------------------------------------------------------------------- aggregate_patient


def test_any_rule_positive_when_one_slice_crosses_threshold():
    assert aggregate_patient(PROBS, "any", threshold=0.5) == (0.6, 1)


def test_any_rule_negative_when_no_slice_crosses_threshold():
    assert aggregate_patient(PROBS, "any", threshold=0.7) == (0.6, 0)


def test_threshold_is_inclusive():
    assert aggregate_patient(np.array([0.5]), "any", threshold=0.5)[1] == 1


def test_k_of_n_needs_k_positive_slices():
    assert aggregate_patient(PROBS, "k_of_n", threshold=0.5, k=2) == (0.6, 0)
    assert aggregate_patient(PROBS, "k_of_n", threshold=0.5, k=1) == (0.6, 1)
    # Lowering the slice threshold to 0.4 makes two slices (0.6, 0.4) positive.
    assert aggregate_patient(PROBS, "k_of_n", threshold=0.4, k=2) == (0.6, 1)


def test_max_prob_uses_patient_threshold():
    assert aggregate_patient(PROBS, "max_prob", patient_threshold=0.65) == (0.6, 0)
    assert aggregate_patient(PROBS, "max_prob", patient_threshold=0.55) == (0.6, 1)


def test_max_prob_defaults_to_slice_threshold():
    assert aggregate_patient(PROBS, "max_prob", threshold=0.5) == (0.6, 1)
    assert aggregate_patient(PROBS, "max_prob", threshold=0.61) == (0.6, 0)


@pytest.mark.parametrize(("rule", "k"), [("any", None), ("max_prob", None), ("k_of_n", 3)])
def test_probability_is_the_highest_slice_whatever_the_rule(rule, k):
    probability, _ = aggregate_patient(np.array([0.2, 0.93, 0.05, 0.4]), rule, k=k)
    assert probability == pytest.approx(0.93)
    assert type(probability) is float


def test_empty_slice_array_raises():
    with pytest.raises(ValueError, match="empty"):
        aggregate_patient(np.array([]), "any")


@pytest.mark.parametrize("bad", [[0.2, 1.2], [np.nan, 0.3]])
def test_invalid_slice_probabilities_raise(bad):
    with pytest.raises(ValueError, match="slice_probs"):
        aggregate_patient(np.array(bad), "any")


def test_unknown_rule_names_the_key():
    allowed = r"aggregation\.rule.*any.*max_prob.*k_of_n.*'majority'"
    with pytest.raises(ConfigError, match=allowed):
        aggregate_patient(PROBS, "majority")


@pytest.mark.parametrize("k", [None, 0, -1, 1.5, True])
def test_k_of_n_requires_a_positive_integer_k(k):
    with pytest.raises(ConfigError, match=r"aggregation\.k"):
        aggregate_patient(PROBS, "k_of_n", k=k)


# --------------------------------------------------------------------------- aggregate_predictions


def _slices() -> pd.DataFrame:
    # Rows deliberately out of patient order to check sorting.
    return pd.DataFrame(
        {
            "patient": ["p3", "p1", "p2", "p1", "p3", "p1", "p2", "p3"],
            "label": [0, 0, 0, 1, 0, 0, 0, 0],
            "probability": [0.2, 0.1, 0.3, 0.6, 0.7, 0.4, 0.2, 0.8],
        }
    )


def test_aggregate_predictions_any_rule_on_three_patients():
    out = aggregate_predictions(_slices(), "any", threshold=0.5)
    assert list(out.columns) == [
        "patient", "label", "probability", "prediction", "n_slices", "n_positive_predicted",
    ]
    assert out["patient"].tolist() == ["p1", "p2", "p3"]
    assert out["label"].tolist() == [1, 0, 0]
    assert out["probability"].tolist() == pytest.approx([0.6, 0.3, 0.8])
    assert out["prediction"].tolist() == [1, 0, 1]
    assert out["n_slices"].tolist() == [3, 2, 3]
    assert out["n_positive_predicted"].tolist() == [1, 0, 2]


def test_aggregate_predictions_k_of_n_and_max_prob():
    k2 = aggregate_predictions(_slices(), "k_of_n", threshold=0.5, k=2)
    assert k2["prediction"].tolist() == [0, 0, 1]
    mp = aggregate_predictions(_slices(), "max_prob", patient_threshold=0.65)
    assert mp["prediction"].tolist() == [0, 0, 1]


def test_aggregate_predictions_missing_column():
    with pytest.raises(ValueError, match="probability"):
        aggregate_predictions(_slices().drop(columns="probability"), "any")


def test_aggregate_predictions_unknown_rule():
    with pytest.raises(ConfigError, match=r"aggregation\.rule"):
        aggregate_predictions(_slices(), "vote")


# ------------------------------------------------------- choose_patient_threshold


def test_threshold_on_separable_set_lands_between_the_classes():
    labels = [0, 0, 0, 1, 1]
    probs = [0.1, 0.2, 0.3, 0.6, 0.8]
    t = choose_patient_threshold(labels, probs)
    assert 0.3 < t < 0.6
    assert t == pytest.approx(0.45)  # midpoint of the gap


def test_threshold_moves_away_from_half_when_classes_are_shifted():
    # All scores are low, but positives still rank above negatives; 0.5 would call all negative.
    t = choose_patient_threshold([0, 0, 1, 1], [0.01, 0.05, 0.2, 0.3])
    assert t == pytest.approx(0.125)


def test_threshold_ties_go_to_the_candidate_closest_to_half():
    # Sorted: 0.1(neg) 0.3(pos) 0.6(neg) 0.9(pos). Balanced accuracy at the midpoints:
    # 0.2 -> (1 + 0.5)/2 = 0.75; 0.45 -> 0.5; 0.75 -> (0.5 + 1)/2 = 0.75.
    # 0.2 and 0.75 tie; 0.75 is closer to 0.5.
    t = choose_patient_threshold([0, 1, 0, 1], [0.1, 0.3, 0.6, 0.9])
    assert t == pytest.approx(0.75)


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1]])
def test_threshold_with_one_class_is_half(labels):
    assert choose_patient_threshold(labels, np.linspace(0.1, 0.9, len(labels))) == 0.5


def test_threshold_inputs_are_validated():
    with pytest.raises(ValueError, match="patient_probs has 1 values"):
        choose_patient_threshold([0, 1], [0.5])
    with pytest.raises(ValueError, match="patient_labels must contain only 0 and 1"):
        choose_patient_threshold([0, 3], [0.1, 0.5])
