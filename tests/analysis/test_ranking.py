"""Many-model comparison: Friedman, mean ranks and post-hoc numbers against scipy/autorank called directly."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest
from autorank import autorank
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from ichseq.analysis.outputs import COMPARISON_NAMES, FRIEDMAN_OUTPUTS, comparison_outputs
from ichseq.analysis.ranking import Friedman, leaderboard, write_comparison
from ichseq.analysis.stats import OUTPUT_NAMES, run_stats, validate_runs
from ichseq.errors import DataError
from ichseq.report.ranking import leaderboard_markdown

MODELS = ("alpha", "beta", "gamma", "delta")
METRICS = ("roc_auc", "accuracy")
FAST = 99


def _runs(models=MODELS, replicates=10, seed=3) -> pd.DataFrame:
    """A fixed runs table: model i scores 0.7 + 0.04 i plus seeded noise."""
    rng = np.random.default_rng(seed)
    rows = [(m, r, metric, 0.7 + 0.04 * i + rng.normal(0, 0.05))
            for i, m in enumerate(models) for r in range(replicates) for metric in METRICS]  # fmt: skip
    return validate_runs(pd.DataFrame(rows, columns=["model", "replicate", "metric", "value"]))


def _wide(runs, metric):
    sub = runs[runs["metric"] == metric]
    return sub.pivot(index="replicate", columns="model", values="value")[list(dict.fromkeys(runs["model"]))]


@pytest.fixture(scope="module")
def friedman():
    return _runs(), Friedman(_runs())


@pytest.mark.parametrize("metric", METRICS)
def test_friedman_equals_scipy_and_autorank(friedman, metric):
    runs, result = friedman
    wide = _wide(runs, metric)
    row = result.tests.set_index("metric").loc[metric]
    expected = sps.friedmanchisquare(*wide.to_numpy().T)
    assert row["statistic"] == pytest.approx(expected.statistic, rel=1e-12)
    assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert row["n_replicates"] == 10 and row["df"] == 3
    with contextlib.redirect_stdout(io.StringIO()):
        direct = autorank(wide.reset_index(drop=True), alpha=0.05, force_mode="nonparametric")
    assert row["critical_difference"] == pytest.approx(direct.cd)
    assert row["best_model"] == direct.rankdf["meanrank"].astype(float).idxmin()
    got = result.ranks[result.ranks["metric"] == metric].set_index("model")["mean_rank"]
    assert got.to_dict() == pytest.approx(direct.rankdf["meanrank"].astype(float).to_dict())


@pytest.mark.parametrize("metric", METRICS)
def test_mean_ranks_are_the_average_per_replicate_ranks(friedman, metric):
    runs, result = friedman
    wide = _wide(runs, metric)
    # rank 1 = highest value in each replicate, by hand from the sorted order (no ties in this table)
    by_hand = {m: np.mean([1 + int(np.sum(row > row[m])) for _, row in wide.iterrows()]) for m in MODELS}
    got = result.ranks[result.ranks["metric"] == metric].set_index("model")["mean_rank"]
    assert got.to_dict() == pytest.approx(by_hand)
    assert got.sum() == pytest.approx(10 / 10 * sum(range(1, 5)))


@pytest.mark.parametrize("metric", METRICS)
def test_posthoc_equals_scipy_wilcoxon_with_holm_per_metric(friedman, metric):
    runs, result = friedman
    wide = _wide(runs, metric)
    post = result.posthoc[result.posthoc["metric"] == metric]
    assert len(post) == 6
    p = [sps.wilcoxon(wide[a], wide[b]).pvalue for a, b in zip(post["model_a"], post["model_b"])]
    np.testing.assert_allclose(post["p_value"], p, rtol=1e-12)
    np.testing.assert_allclose(post["p_holm"], multipletests(p, method="holm")[1], rtol=1e-12)
    cd = result.tests.set_index("metric").at[metric, "critical_difference"]
    assert list(post["nemenyi_significant"]) == list((post["mean_rank_a"] - post["mean_rank_b"]).abs() > cd)


def test_incomplete_replicates_are_left_out_of_the_blocks():
    runs = _runs().copy()
    hole = (runs["model"] == "beta") & (runs["replicate"] == 4) & (runs["metric"] == "roc_auc")
    runs.loc[hole, "value"] = np.nan
    runs = validate_runs(runs)
    row = Friedman(runs).tests.set_index("metric").loc["roc_auc"]
    wide = _wide(runs, "roc_auc").drop(index=4)
    assert row["n_replicates"] == 9
    assert row["statistic"] == pytest.approx(sps.friedmanchisquare(*wide.to_numpy().T).statistic)


def test_fewer_than_three_models_is_refused():
    with pytest.raises(ValueError, match="at least 3 models"):
        Friedman(_runs(MODELS[:2]))
    assert not set(FRIEDMAN_OUTPUTS) & set(comparison_outputs(2))
    assert set(comparison_outputs(3)) == set(COMPARISON_NAMES)


def test_leaderboard_sorted_with_means_cis_and_cost(tmp_path):
    runs = _runs()
    cost = pd.DataFrame({"model": list(MODELS) * 2, "replicate": [0] * 4 + [1] * 4,
                         "parameters_total": [10, 20, 30, 40] * 2, "training_seconds": [1.0, 2, 3, 4, 3, 4, 5, 6],
                         "class_imbalance": ["none", "weighted", "balanced", "weighted"] * 2})  # fmt: skip
    board = leaderboard(runs, cost, {"delta": "pretrain"}, n_resamples=FAST)
    means = {m: runs[(runs["model"] == m) & (runs["metric"] == "roc_auc")]["value"].mean() for m in MODELS}
    assert list(board["model"]) == sorted(MODELS, key=lambda m: -means[m])
    assert list(board["rank"]) == [1, 2, 3, 4]
    got = board.set_index("model")
    assert got["roc_auc_mean"].to_dict() == pytest.approx(means)
    assert (got["roc_auc_ci_low"] < got["roc_auc_mean"]).all() and (got["roc_auc_mean"] < got["roc_auc_ci_high"]).all()
    assert got.at["delta", "training_seconds"] == 5.0 and got.at["alpha", "parameters_total"] == 10
    assert got.at["delta", "pretrained"] == "pretrain" and got.at["alpha", "pretrained"] == "none (random init)"
    # The imbalance option each model was trained with (training.class_imbalance).
    assert got["class_imbalance"].to_dict() == {"alpha": "none", "beta": "weighted", "gamma": "balanced",
                                                "delta": "weighted"}
    assert "| class_imbalance |" in leaderboard_markdown(board) and "balanced" in leaderboard_markdown(board)


def test_write_comparison_writes_every_declared_file(tmp_path):
    outputs = {k: tmp_path / name for k, name in COMPARISON_NAMES.items()}
    write_comparison(_runs(), outputs, n_resamples=FAST)
    for key, path in outputs.items():
        assert path.stat().st_size > 0, key
    assert (tmp_path / "critical_difference.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "critical_difference.svg").read_bytes()
    assert "| 1 | delta |" in (tmp_path / "leaderboard.md").read_text()


def test_two_models_get_the_leaderboard_and_no_friedman(tmp_path):
    runs = _runs(MODELS[:2])
    outputs = {k: tmp_path / COMPARISON_NAMES[k] for k in comparison_outputs(2)}
    write_comparison(runs, outputs, n_resamples=FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in outputs.values())
    with pytest.raises(DataError, match="2 models; the Friedman comparison"):
        write_comparison(runs, {"friedman": tmp_path / "friedman.csv"})


def test_two_model_statistics_unchanged_by_the_comparison(tmp_path):
    """The pairwise outputs of a 2-model table are byte-identical with or without the comparison next to them."""
    runs = _runs(MODELS[:2])
    run_stats(runs, tmp_path / "before", n_resamples=FAST, log=lambda _: None)
    write_comparison(runs, {k: tmp_path / "after" / COMPARISON_NAMES[k] for k in comparison_outputs(2)}, n_resamples=FAST)
    run_stats(runs, tmp_path / "after", n_resamples=FAST, log=lambda _: None)
    for name in OUTPUT_NAMES.values():
        if (tmp_path / "before" / name).exists():
            assert (tmp_path / "before" / name).read_bytes() == (tmp_path / "after" / name).read_bytes(), name


@pytest.mark.parametrize("replicates", [2, 4])
def test_too_few_replicates_give_an_undefined_test_and_a_diagram_that_says_why(tmp_path, replicates):
    """autorank needs 5 replicates: fewer is an undefined test with its reason, never a crash."""
    runs = _runs(replicates=replicates)
    friedman = Friedman(runs)
    assert friedman.tests["statistic"].isna().all() and friedman.ranks.empty
    assert friedman.tests["note"].str.contains(f"{replicates} replicate\\(s\\) with a value for every model, fewer than 5").all()
    outputs = {k: tmp_path / name for k, name in COMPARISON_NAMES.items()}
    write_comparison(runs, outputs, n_resamples=FAST)
    assert outputs["critical_difference_png"].stat().st_size > 1000
