"""Patient-level binary metrics: hand-computed confusion matrices, undefined cases, AUC."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ichseq.training.metrics import binary_metrics

KEYS = {
    "accuracy", "precision", "recall", "specificity", "f1", "balanced_accuracy",
    "roc_auc", "tn", "fp", "fn", "tp", "n_test",
}


def test_hand_made_confusion_matrix_fills_all_four_cells():
    #            0  1  2  3  4  5  6  7  8  9
    y_true = [1, 1, 1, 0, 0, 0, 0, 1, 0, 1]
    y_pred = [1, 0, 1, 0, 1, 0, 0, 1, 0, 0]
    # tp: 0, 2, 7 -> 3; fn: 1, 9 -> 2; fp: 4 -> 1; tn: 3, 5, 6, 8 -> 4.
    m = binary_metrics(y_true, y_pred)
    assert set(m) == KEYS
    assert (m["tp"], m["fn"], m["fp"], m["tn"], m["n_test"]) == (3, 2, 1, 4, 10)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["precision"] == pytest.approx(0.75)
    assert m["recall"] == pytest.approx(0.6)
    assert m["specificity"] == pytest.approx(0.8)
    assert m["f1"] == pytest.approx(6 / 9)
    assert m["balanced_accuracy"] == pytest.approx(0.7)
    assert m["roc_auc"] is None  # no probabilities given


def test_perfect_classifier():
    y = [0, 1, 1, 0, 1]
    m = binary_metrics(y, y, [0.2, 0.9, 0.7, 0.1, 0.6])
    for key in KEYS - {"tn", "fp", "fn", "tp", "n_test"}:
        assert m[key] == pytest.approx(1.0), key
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 0, 0, 2)


def test_all_negative_predictions_make_precision_undefined_but_recall_and_f1_zero():
    m = binary_metrics([1, 1, 0, 0, 0], [0, 0, 0, 0, 0])
    assert m["precision"] is None
    assert m["recall"] == 0.0
    assert m["f1"] == 0.0
    assert m["specificity"] == 1.0
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.6)


def test_single_class_negative_truth():
    m = binary_metrics([0, 0, 0], [0, 1, 0], [0.1, 0.7, 0.2])
    assert m["roc_auc"] is None
    assert m["recall"] is None
    assert m["balanced_accuracy"] is None
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["precision"] == 0.0  # one positive prediction, wrong
    assert m["f1"] == 0.0  # 2*0 / (0 + 1 + 0)


def test_single_class_positive_truth():
    m = binary_metrics([1, 1], [1, 0], [0.9, 0.4])
    assert m["roc_auc"] is None
    assert m["specificity"] is None
    assert m["balanced_accuracy"] is None
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 / 3)  # 2 / (2 + 0 + 1)


def test_f1_undefined_without_positive_labels_or_predictions():
    m = binary_metrics([0, 0], [0, 0])
    assert m["f1"] is None
    assert m["precision"] is None
    assert m["accuracy"] == 1.0


def test_roc_auc_matches_pair_counting_with_ties():
    y_true = [0, 0, 1, 1, 0, 1]
    y_prob = [0.1, 0.4, 0.4, 0.8, 0.6, 0.3]
    # Positives 0.4, 0.8, 0.3 against negatives 0.1, 0.4, 0.6 (win 1, tie 1/2):
    # 0.4 -> 1 + 0.5 + 0; 0.8 -> 3; 0.3 -> 1 + 0 + 0. Total 5.5 of 9 pairs.
    m = binary_metrics(y_true, [0, 0, 0, 1, 1, 0], y_prob)
    assert m["roc_auc"] == pytest.approx(5.5 / 9)


def test_roc_auc_of_inverted_scores_is_zero():
    m = binary_metrics([0, 1, 0, 1], [0, 1, 0, 1], [0.9, 0.1, 0.8, 0.2])
    assert m["roc_auc"] == pytest.approx(0.0)


def test_json_round_trip_keeps_none_as_null_and_types_plain():
    m = binary_metrics(np.array([1, 1, 0]), np.array([0, 0, 0]), np.array([0.3, 0.2, 0.1]))
    text = json.dumps(m)
    assert '"precision": null' in text
    back = json.loads(text)
    assert back == m
    for key in ("tn", "fp", "fn", "tp", "n_test"):
        assert type(m[key]) is int, key
    for key in ("accuracy", "recall", "specificity", "f1", "balanced_accuracy", "roc_auc"):
        assert type(m[key]) is float, key
    assert m["roc_auc"] == pytest.approx(1.0)


def test_accepts_bools_and_float_zero_one():
    m = binary_metrics([True, False], np.array([1.0, 0.0]))
    assert (m["tp"], m["tn"]) == (1, 1)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "y_prob", "match"),
    [
        ([0, 1, 1], [0, 1], None, "y_pred has 2 values"),
        ([0, 1], [0, 1], [0.5], "y_prob has 1 values"),
        ([0, 2], [0, 1], None, "y_true must contain only 0 and 1"),
        ([0, 1], [0, 0.5], None, "y_pred must contain only 0 and 1"),
        ([0, 1], [0, 1], [0.2, 1.5], r"y_prob must lie in \[0, 1\]"),
        ([0, 1], [0, 1], [-0.1, 0.5], r"y_prob must lie in \[0, 1\]"),
        ([0, 1], [0, 1], [math.nan, 0.5], "y_prob must be finite"),
        ([0, 1], [0, 1], [math.inf, 0.5], "y_prob must be finite"),
        ([], [], None, "empty"),
        ([[0, 1]], [[0, 1]], None, "one-dimensional"),
    ],
)
def test_bad_inputs_raise_value_error(y_true, y_pred, y_prob, match):
    with pytest.raises(ValueError, match=match):
        binary_metrics(y_true, y_pred, y_prob)
