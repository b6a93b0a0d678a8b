"""The calibration map a run fits on its validation patients, and the decisions taken on it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from ichseq.training.calibration import (
    calibrated, decide, decision_cut, expected_calibration_error, fit_calibration, patient_logits, reliability_table,
)


def logistic_sample(n, slope, intercept, seed=0):
    """Logits and labels drawn so that P(y=1 | z) = sigmoid(slope*z + intercept)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, n)
    return z, (rng.random(n) < expit(slope * z + intercept)).astype(int)


def test_platt_recovers_the_map_that_made_the_labels():
    z, y = logistic_sample(20000, 0.4, -1.5)
    fitted = fit_calibration("platt", z, y)
    assert fitted["slope"] == pytest.approx(0.4, abs=0.03) and fitted["intercept"] == pytest.approx(-1.5, abs=0.1)
    assert fitted["patients"] == 20000 and fitted["positives"] == int(y.sum())


def test_temperature_keeps_the_boundary_at_zero():
    z, y = logistic_sample(20000, 0.5, 0.0, seed=1)
    fitted = fit_calibration("temperature", z, y)
    assert fitted["intercept"] == 0.0 and fitted["temperature"] == pytest.approx(2.0, rel=0.1)
    assert calibrated(fitted, [0.0])[0] == 0.5


def test_separable_validation_patients_give_a_finite_slope():
    # Ten perfectly separated patients: the plain log-loss would send the slope to infinity.
    z = np.array([-9.0, -8.0, -7.5, -6.0, -5.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    y = (z > 0).astype(int)
    fitted = fit_calibration("platt", z, y)
    p = calibrated(fitted, z)
    # Platt's smoothed targets: no patient at certainty, the top ones near (5+1)/(5+2).
    assert p.max() < 0.95 and p.min() > 0.05 and fitted["slope"] < 5


def test_the_map_is_increasing_so_ranks_are_kept():
    z, y = logistic_sample(300, 2.0, 1.0, seed=2)
    for method in ("platt", "temperature"):
        p = calibrated(fit_calibration(method, z, y), z)
        assert (np.diff(p[np.argsort(z)]) >= 0).all()


def test_one_class_or_none_is_the_identity():
    assert calibrated(fit_calibration("none", [1.0, -1.0], [1, 0]), [2.0])[0] == pytest.approx(expit(2.0))
    single = fit_calibration("platt", [1.0, 2.0], [0, 0])
    assert single["slope"] == 1.0 and single["intercept"] == 0.0 and not single["fitted"] and "one class" in single["note"]
    assert calibrated(None, [0.3])[0] == pytest.approx(expit(0.3))  # a run trained before calibration
    with pytest.raises(ValueError, match="not one of"):
        fit_calibration("isotonic", [0.0], [1])


def test_patient_logit_is_its_highest_sample():
    table = patient_logits(np.array([3, 1, 3, 1]), np.array([0.5, -2.0, 4.0, -1.0]))
    assert table.patient.tolist() == [1, 3] and table.z.tolist() == [-1.0, 4.0]


def test_ece_of_calibrated_and_overconfident_probabilities():
    rng = np.random.default_rng(3)
    p = rng.random(50000)
    y = (rng.random(50000) < p).astype(int)
    assert expected_calibration_error(p, y) < 0.01
    overconfident = np.where(p > 0.5, 0.99, 0.01)
    assert expected_calibration_error(overconfident, y) > 0.2
    # By hand: one bin [0.9, 1] with mean 0.95 and observed 0.5.
    assert expected_calibration_error([0.9, 1.0], [1, 0]) == pytest.approx(0.45)
    table = reliability_table([0.05, 0.15, 1.0], [0, 1, 1])
    assert table["count"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]  # 1.0 falls in the last bin
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.5], [1])


def test_decisions_on_the_calibrated_scale_equal_those_on_the_model_s_own():
    calibration = {"method": "platt", "slope": 0.5, "intercept": -2.0}
    rng = np.random.default_rng(4)
    for _ in range(200):
        z = rng.normal(-1, 3, rng.integers(1, 30))
        raw = expit(z)
        # any / k_of_n: the fixed threshold applies to the model's own probabilities.
        _, positive, _ = decide(z, {"rule": "any", "threshold": 0.45}, calibration)
        assert positive == bool((raw >= 0.45).any())
        _, positive, _ = decide(z, {"rule": "k_of_n", "threshold": 0.5, "k": 2}, calibration)
        assert positive == bool((raw >= 0.5).sum() >= 2)
        p, positive, probs = decide(z, {"rule": "max_prob", "threshold": 0.5, "patient_threshold": 0.2}, calibration)
        assert p == pytest.approx(expit(0.5 * z.max() - 2.0)) and positive == (p >= 0.2) and probs.max() == p
    assert decision_cut({"rule": "threshold", "threshold": 0.5}, calibration) == pytest.approx(expit(-2.0))
    assert decision_cut({"rule": "any", "threshold": 1.0}, calibration) == 1.0
    assert decision_cut({"rule": "any", "threshold": 0.0}, calibration) == 0.0
    assert decision_cut({"rule": "any", "threshold": 0.3}, None) == pytest.approx(0.3)
