"""The report's calibration: ECE and Brier score per run and per model before/after each run's
calibration, old runs without raw probabilities, and the reliability diagram."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from ichseq.analysis import figures
from ichseq.analysis.calibration import (
    UNCALIBRATED,
    calibration_models,
    calibration_predictions,
    calibration_runs,
    write_calibration,
)
from ichseq.analysis.collect import _stack
from ichseq.analysis.figures import figure_paths, reliability_figure
from ichseq.training import calibration as fitted
from tests.analysis.test_figures import check_png, check_svg
from tests.conftest import one_line_error


def _table(model_rows: dict) -> pd.DataFrame:
    """``{(model, replicate): (raw, calibrated, labels)}`` -> a collected predictions table."""
    frames = []
    for (model, replicate), (raw, calibrated, labels) in model_rows.items():
        n = len(labels)
        frames.append(pd.DataFrame({"model": model, "replicate": replicate, "patient": np.arange(n),
                                    "label": labels, "probability": calibrated,
                                    "prediction": (np.asarray(calibrated) >= 0.5).astype(int), UNCALIBRATED: raw}))
    return pd.concat(frames, ignore_index=True)


def _calibrated_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, n)
    return p, (rng.uniform(size=n) < p).astype(int)


def _overconfident(p: np.ndarray) -> np.ndarray:
    return expit(5.0 * logit(p))  # the same ranks, pushed to 0 and 1


def _runs(n_reps: int = 3, n: int = 22) -> pd.DataFrame:
    rows = {}
    for m_i, model in enumerate(("vivit", "convnext")):
        for r in range(n_reps):
            p, y = _calibrated_sample(n, seed=10 * m_i + r)
            rows[(model, r)] = (_overconfident(p), p, y)
    return _table(rows)


def test_calibrated_sample_has_ece_near_zero_and_an_overconfident_one_a_large_ece():
    p, y = _calibrated_sample(20_000, seed=0)
    runs = calibration_runs(_table({("m", 0): (_overconfident(p), p, y)}))
    (row,) = runs.itertuples()
    assert row.n == 20_000 and row.calibrated
    assert row.ece_after < 0.02  # labels drawn as Bernoulli(p): p is a frequency
    assert row.ece_before > 0.15  # the same ranks pushed to 0/1 are not
    assert row.brier_after < row.brier_before


def test_per_run_numbers_are_the_training_modules_on_that_runs_rows():
    predictions = _runs()
    runs = calibration_runs(predictions)
    assert list(zip(runs.model, runs.replicate)) == [(m, r) for m in ("convnext", "vivit") for r in range(3)]
    for row in runs.itertuples():
        run = predictions[(predictions.model == row.model) & (predictions.replicate == row.replicate)]
        assert row.n == len(run) == 22
        assert row.ece_before == pytest.approx(fitted.expected_calibration_error(run[UNCALIBRATED], run.label))
        assert row.ece_after == pytest.approx(fitted.expected_calibration_error(run.probability, run.label))
        assert row.brier_before == pytest.approx(fitted.brier_score(run[UNCALIBRATED], run.label))
        assert row.brier_after == pytest.approx(fitted.brier_score(run.probability, run.label))
    assert runs.ece_before.nunique() == len(runs)  # the runs' own rows, not one pooled number


def test_per_model_table_is_mean_sd_over_replicates_and_the_pooled_ece():
    predictions = _runs()
    runs = calibration_runs(predictions)
    models = calibration_models(runs, predictions).set_index("model")
    assert list(models.index) == ["convnext", "vivit"]
    for model in models.index:
        own = runs[runs.model == model]
        row = models.loc[model]
        assert (row.replicates, row.calibrated_replicates, row.patients) == (3, 3, 66)
        for column in ("ece_before", "ece_after", "brier_before", "brier_after"):
            assert row[f"{column}_mean"] == pytest.approx(own[column].mean())
            assert row[f"{column}_sd"] == pytest.approx(np.std(own[column], ddof=1))
        pooled = predictions[predictions.model == model]
        assert row.ece_after_pooled == pytest.approx(fitted.expected_calibration_error(pooled.probability, pooled.label))
        assert row.ece_before_pooled == pytest.approx(fitted.expected_calibration_error(pooled[UNCALIBRATED],
                                                                                        pooled.label))
        assert row.ece_after_pooled < row.ece_after_mean  # pooling: fuller bins, less small-sample bias


def test_old_predictions_without_the_column_count_as_uncalibrated(tmp_path):
    old = _runs().drop(columns=[UNCALIBRATED])
    runs = calibration_runs(old)
    assert not runs.calibrated.any()
    assert (runs.ece_before == runs.ece_after).all() and (runs.brier_before == runs.brier_after).all()
    models = calibration_models(runs, old)
    assert (models.calibrated_replicates == 0).all()
    assert (models.ece_before_pooled == models.ece_after_pooled).all()
    # Stacked by collect beside a newer run: the column is kept, the old run's cells empty.
    new = _runs()
    files = []
    for name, table in (("old", old), ("new", new)):
        path = tmp_path / f"{name}.csv"
        table[(table.model == "vivit") & (table.replicate == 0)].drop(columns=["model", "replicate"]).to_csv(path,
                                                                                                           index=False)
        files.append(path)
    stacked = _stack(files, [("old", 0), ("new", 0)], "predictions")
    assert UNCALIBRATED in stacked.columns and stacked.loc[stacked.model == "old", UNCALIBRATED].isna().all()
    runs = calibration_runs(stacked).set_index("model")
    assert not runs.at["old", "calibrated"] and runs.at["new", "calibrated"]
    assert runs.at["old", "ece_before"] == runs.at["old", "ece_after"]
    assert runs.at["new", "ece_before"] != runs.at["new", "ece_after"]


def test_bad_input_is_one_line_naming_the_table():
    predictions = _runs()
    one_line_error(lambda: calibration_runs(predictions.drop(columns=["label"])),
                   "predictions table lacks column(s) label")
    one_line_error(lambda: calibration_runs(predictions.iloc[0:0]), "predictions table is empty")
    one_line_error(lambda: calibration_runs(predictions.assign(probability=1.5)), "predictions table", "[0, 1]")
    one_line_error(lambda: calibration_runs(predictions.assign(label=2)), "predictions table", "label")
    partial = predictions.copy()
    partial.loc[0, UNCALIBRATED] = np.nan
    one_line_error(lambda: calibration_runs(partial), "predictions table", "vivit replicate 0",
                   "for some patients only")
    runs = calibration_runs(predictions)
    one_line_error(lambda: calibration_models(runs.drop(columns=["ece_after"]), predictions),
                   "calibration runs table lacks column(s) ece_after")


def test_write_calibration_writes_exactly_the_tables_and_page(tmp_path):
    predictions = _runs()
    predictions.loc[predictions.model == "vivit", UNCALIBRATED] = np.nan  # vivit's runs predate calibration
    outputs = {"models": tmp_path / "calibration.csv", "runs": tmp_path / "calibration_runs.csv",
               "html": tmp_path / "calibration.html"}
    lines = []
    assert write_calibration(predictions, outputs, log=lines.append) == outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in outputs.values())
    models = pd.read_csv(outputs["models"]).set_index("model")
    assert models.at["vivit", "calibrated_replicates"] == 0 and models.at["convnext", "calibrated_replicates"] == 3
    assert len(pd.read_csv(outputs["runs"])) == 6
    page = outputs["html"].read_text()
    assert page.count("<table>") == 2 and "Not calibrated" in page and "vivit replicate 2" in page
    assert len(lines) == 2 and "convnext: ECE" in lines[0]


def _panels(fig) -> dict[str, str]:
    """The titled (reliability) axes by model: the title's first line."""
    return {ax.get_title().split("\n")[0]: ax.get_title() for ax in fig.axes if ax.get_title()}


def test_reliability_figure_has_one_panel_per_model_and_writes_png_and_svg(tmp_path):
    predictions = _runs()
    fig = reliability_figure(predictions)
    panels = _panels(fig)
    assert sorted(panels) == ["convnext", "vivit"]
    runs = calibration_runs(predictions)
    before = runs[runs.model == "vivit"].ece_before
    assert f"ECE {before.mean():.3f} ± {np.std(before, ddof=1):.3f} →" in panels["vivit"]
    paths = figures.reliability_diagram(predictions, figure_paths(tmp_path / "reliability"))
    assert [p.name for p in paths] == ["reliability.png", "reliability.svg"]
    check_png(paths[0])
    check_svg(paths[1])


def test_reliability_figure_draws_one_bin_models_empty_bins_and_old_runs():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 22)
    rows = {("sure", 0): (np.full(22, 0.97), np.full(22, 0.93), y),  # every probability in the top bin
            ("old", 0): (np.full(22, np.nan), np.linspace(0.0, 0.29, 22), y)}  # bins 4-9 empty
    fig = reliability_figure(_table(rows))
    panels = _panels(fig)
    assert sorted(panels) == ["old", "sure"]
    assert "not calibrated" in panels["old"] and "not calibrated" not in panels["sure"]
    sure = next(ax for ax in fig.axes if ax.get_title().startswith("sure"))
    after = [line for line in sure.get_lines() if line.get_label().startswith("after")]
    assert len(after) == 1 and len(after[0].get_xdata()) == 1  # one point, the bin's
    old = next(ax for ax in fig.axes if ax.get_title().startswith("old"))
    (curve,) = [line for line in old.get_lines() if line.get_label().startswith("after")]
    assert np.isfinite(curve.get_ydata()).all() and len(curve.get_xdata()) == 3  # the filled bins only


def test_validated_frame_keeps_its_flags():
    old = _runs().drop(columns=[UNCALIBRATED])
    checked = calibration_predictions(old)
    assert calibration_predictions(checked) is checked
    assert not calibration_runs(checked).calibrated.any()
