"""External validation's metrics, bootstrap CIs, ensemble and internal-vs-external table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ichseq.analysis.external import (ENSEMBLE, METRICS, REPLICATE_MEAN, check_scores, ensemble_scores,
                                      internal_vs_external, internal_vs_external_markdown, replicate_metrics,
                                      resample_weights, summarise, weighted_metrics, write_external)
from ichseq.errors import DataError
from ichseq.training.metrics import binary_metrics


def scores_table(n_patients: int, replicates: int = 3, seed: int = 0) -> pd.DataFrame:
    """A separable-ish cohort: positives score higher on average, each replicate with its own noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_patients) % 2
    rows = []
    for rep in range(replicates):
        probability = np.clip(0.3 + 0.35 * labels + rng.normal(0, 0.4, n_patients), 0, 1)
        for patient in range(n_patients):
            rows.append({"patient": patient + 100, "label": int(labels[patient]), "replicate": rep,
                         "probability": float(probability[patient]), "prediction": int(probability[patient] >= 0.5)})
    return pd.DataFrame(rows)


def test_weighted_metrics_with_unit_weights_equal_binary_metrics_and_resamples_equal_repeated_rows():
    df = scores_table(30, replicates=1)
    ones = np.ones((1, len(df)))
    got = weighted_metrics(df.label, df.prediction, df.probability, ones)
    want = binary_metrics(df.label, df.prediction, df.probability)
    for metric in METRICS:
        assert got[metric][0] == pytest.approx(want[metric]), metric
    # A weight of k is the patient repeated k times.
    weights = resample_weights(len(df), 5, seed=3)
    got = weighted_metrics(df.label, df.prediction, df.probability, weights)
    for r, w in enumerate(weights.astype(int)):
        repeated = df.loc[df.index.repeat(w)]
        want = binary_metrics(repeated.label, repeated.prediction, repeated.probability)
        for metric in METRICS:
            expected = np.nan if want[metric] is None else want[metric]
            assert got[metric][r] == pytest.approx(expected, nan_ok=True), (r, metric)


def test_replicate_metrics_and_ensemble_majority_with_ties_positive():
    df = pd.DataFrame({"patient": [1, 2, 1, 2], "label": [1, 0, 1, 0], "replicate": [0, 0, 1, 1],
                       "probability": [0.8, 0.6, 0.4, 0.2], "prediction": [1, 1, 0, 0]})
    reps = replicate_metrics(df).set_index("replicate")
    assert reps.at[0, "recall"] == 1 and reps.at[0, "specificity"] == 0 and reps.at[1, "recall"] == 0
    ens = ensemble_scores(df).set_index("patient")
    assert ens.probability.to_dict() == pytest.approx({1: 0.6, 2: 0.4})
    assert ens.prediction.to_dict() == {1: 1, 2: 1}  # one vote of two: a tie counts as hemorrhage


def test_bootstrap_cis_contain_the_estimate_shrink_with_more_patients_and_are_seeded():
    small = summarise(scores_table(40), n_resamples=500, seed=1)
    large = summarise(scores_table(400), n_resamples=500, seed=1)
    for table in (small, large):
        assert set(table.estimate) == {REPLICATE_MEAN, ENSEMBLE} and set(table.metric) == set(METRICS)
        assert ((table.ci_low <= table.value + 1e-12) & (table.value <= table.ci_high + 1e-12)).all()
    width = lambda t: (t.ci_high - t.ci_low).set_axis(pd.MultiIndex.from_frame(t[["estimate", "metric"]]))
    assert (width(large) < width(small)).all()
    again = summarise(scores_table(40), n_resamples=500, seed=1)
    pd.testing.assert_frame_equal(small, again)
    other = summarise(scores_table(40), n_resamples=500, seed=2)
    assert not np.allclose(other.ci_low, small.ci_low)
    # The point estimates: the replicates' mean of binary_metrics and the ensemble's own.
    df = scores_table(40)
    reps = replicate_metrics(df)
    ens = ensemble_scores(df)
    value = small.set_index(["estimate", "metric"]).value
    assert value[REPLICATE_MEAN, "roc_auc"] == pytest.approx(reps.roc_auc.mean())
    assert value[ENSEMBLE, "balanced_accuracy"] == pytest.approx(
        binary_metrics(ens.label, ens.prediction, ens.probability)["balanced_accuracy"])


def test_scores_are_checked():
    df = scores_table(6)
    with pytest.raises(DataError, match="not every replicate scored every patient"):
        check_scores(df.iloc[1:])
    with pytest.raises(DataError, match="missing column"):
        check_scores(df.drop(columns="prediction"))


def test_internal_vs_external_table_sets_the_study_test_metrics_beside_the_external_ones(tmp_path):
    summary = pd.concat([summarise(scores_table(30, seed=s), n_resamples=200, model=m)
                         for s, m in ((0, "convnext"), (1, "vivit"))])
    runs = pd.DataFrame([{"model": m, "replicate": r, "metric": metric, "value": v}
                         for m, base in (("convnext", 0.9), ("vivit", 0.8)) for r in range(3)
                         for metric, v in (("roc_auc", base + 0.01 * r), ("recall", 0.5), ("tp", 3))])
    table = internal_vs_external(runs, summary, "cq500").set_index(["model", "metric"])
    assert table.at[("convnext", "roc_auc"), "internal"] == pytest.approx(0.91)
    assert table.at[("vivit", "roc_auc"), "internal_sd"] == pytest.approx(0.01)
    ext = summary.set_index(["model", "estimate", "metric"]).value
    assert table.at[("vivit", "roc_auc"), "external"] == ext["vivit", REPLICATE_MEAN, "roc_auc"]
    assert table.at[("vivit", "roc_auc"), "difference"] == pytest.approx(ext["vivit", REPLICATE_MEAN, "roc_auc"] - 0.81)
    assert np.isnan(table.at[("vivit", "specificity"), "internal"])  # not in the runs table: left empty
    md = internal_vs_external_markdown(table.reset_index(), "cq500")
    assert "cq500 ensemble" in md and "| convnext" in md


def test_write_external_writes_every_output(tmp_path):
    paths = {}
    for model, seed in (("convnext", 0), ("vivit", 1)):
        paths[model] = tmp_path / f"{model}.csv"
        scores_table(20, seed=seed).to_csv(paths[model], index=False)
    runs = tmp_path / "runs.csv"
    pd.DataFrame({"model": ["convnext", "vivit"], "replicate": [0, 0], "metric": ["roc_auc"] * 2,
                  "value": [0.9, 0.8]}).to_csv(runs, index=False)
    names = ("metrics.csv", "replicates.csv", "metrics.html", "ive.csv", "ive.md", "roc.png", "roc.svg")
    outputs = dict(zip(("metrics", "replicates", "page", "table", "table_md", "roc_png", "roc_svg"),
                       (str(tmp_path / "out" / n) for n in names)))
    write_external(paths, runs, outputs, name="twin", n_resamples=200, log=lambda _: None)
    assert all((tmp_path / "out" / n).is_file() for n in names)
    assert (tmp_path / "out/roc.png").stat().st_size > 1000
    metrics = pd.read_csv(tmp_path / "out/metrics.csv")
    assert set(metrics.model) == {"convnext", "vivit"} and (metrics.cohort == "twin").all()
    assert "External validation: twin" in (tmp_path / "out/metrics.html").read_text()
