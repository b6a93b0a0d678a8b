"""Model comparison statistics: every number against scipy/statsmodels/pingouin on fixed inputs."""

from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

from ichseq.analysis.stats import (
    TEST_COLUMNS,
    TESTS,
    bootstrap_mean_ci,
    compare_models,
    read_runs,
    run_stats,
    validate_runs,
    write_stats,
)
from ichseq.analysis.outputs import COMPARISON_NAMES, comparison_outputs
from ichseq.cli import main
from ichseq.errors import ConfigError, DataError

ALPHA = 0.05
FAST = 99  # bootstrap resamples in tests
ABSENT = object()  # a replicate with no row at all (not an undefined value)
OUTPUTS = ("tests.csv", "summary.csv", "confusion.csv", "tables.md", "tables.tex", "tables.html", "summary.md",
           "findings.html")
RECORD = "ichseq-stats.json"  # what `ichseq stats` keeps in its folder: the files it writes there
# The command also draws the figures that need only the runs table.
FIGURES = tuple(f"{stem}.{ext}" for stem in ("metrics_boxplot", "confusion_matrices", "paired_runs") for ext in ("png", "svg"))
REQUIRED_TEST_COLUMNS = (
    "metric,test,model_a,model_b,n_a,n_b,statistic,p_value,p_holm,"
    "effect_size,effect_size_name,power,ci_low,ci_high,note"
).split(",")

# Perfectly normal samples: standard normal quantiles at (i + 0.5) / n.
Q = sps.norm.ppf((np.arange(10) + 0.5) / 10)


def long_table(data: dict[str, dict[str, list]]) -> pd.DataFrame:
    """``{model: {metric: values by replicate}}`` -> long table; None = undefined, ABSENT = no row."""
    rows = []
    for model, metrics in data.items():
        for metric, values in metrics.items():
            for replicate, value in enumerate(values):
                if value is ABSENT:
                    continue
                rows.append({"model": model, "replicate": replicate, "metric": metric, "value": value})
    return pd.DataFrame(rows, columns=["model", "replicate", "metric", "value"])


def write_runs(path: Path, data) -> Path:
    long_table(data).to_csv(path, index=False)  # None is written as an empty cell
    return path


def one(tests: pd.DataFrame, **where) -> pd.Series:
    rows = tests
    for col, value in where.items():
        rows = rows[rows[col] == value]
    assert len(rows) == 1, (where, rows)
    return rows.iloc[0]


def ttest_row(tests: pd.DataFrame, metric: str, a: str, b: str) -> pd.Series:
    rows = tests[(tests.metric == metric) & (tests.model_a == a) & (tests.model_b == b)]
    rows = rows[rows.test.isin(["student_t", "welch_t"])]
    assert len(rows) == 1
    return rows.iloc[0]


# Two models, three rate metrics and confusion counts; fixed, unremarkable numbers.
RNG = np.random.default_rng(20240611)
VIVIT = {m: np.round(RNG.normal(0.82, 0.04, 10), 4).tolist() for m in ("accuracy", "recall", "roc_auc")}
CONVNEXT = {m: np.round(RNG.normal(0.77, 0.06, 10), 4).tolist() for m in ("accuracy", "recall", "roc_auc")}
COUNTS_V = {"tn": [10, 12, 11, 9, 10, 11, 12, 10, 11, 10], "fp": [1, 0, 2, 3, 1, 1, 0, 2, 1, 1],
            "fn": [2, 1, 1, 2, 3, 1, 2, 1, 2, 2], "tp": [10, 10, 9, 9, 9, 10, 9, 10, 9, 10]}  # fmt: skip
COUNTS_C = {"tn": [9, 10, 10, 8, 9, 10, 11, 9, 10, 9], "fp": [2, 2, 3, 4, 2, 2, 1, 3, 2, 2],
            "fn": [3, 2, 2, 3, 4, 2, 3, 2, 3, 3], "tp": [9, 9, 8, 8, 8, 9, 8, 9, 8, 9]}  # fmt: skip
STUDY = {"vivit": {**VIVIT, **COUNTS_V}, "convnext": {**CONVNEXT, **COUNTS_C}}


@pytest.fixture(scope="module")
def study_tests() -> pd.DataFrame:
    return compare_models(validate_runs(long_table(STUDY)), alpha=ALPHA, n_resamples=FAST)


# --------------------------------------------------------------------------- the study's tests


def test_tests_table_shape(study_tests):
    t = study_tests
    assert set(REQUIRED_TEST_COLUMNS) <= set(t.columns)
    assert set(t.test) <= set(TESTS)
    # Counts are averaged, never tested.
    assert set(t.metric) == {"accuracy", "recall", "roc_auc"}
    for metric in ("accuracy", "recall", "roc_auc"):
        rows = t[t.metric == metric]
        assert sorted(rows[rows.test == "shapiro"].model_a) == ["convnext", "vivit"]
        assert (rows[rows.test == "shapiro"].model_b == "").all()
        pair = rows[rows.test != "shapiro"]
        # Exactly one of Student/Welch per pair, and one row of every other test.
        assert pair.test.isin(["student_t", "welch_t"]).sum() == 1
        for name in ("levene", "mann_whitney_u", "paired_t", "wilcoxon"):
            assert (pair.test == name).sum() == 1


@pytest.mark.parametrize("metric", ["accuracy", "recall", "roc_auc"])
def test_every_statistic_matches_the_libraries(study_tests, metric):
    t = study_tests
    a, b = np.array(VIVIT[metric]), np.array(CONVNEXT[metric])

    for model, x in (("vivit", a), ("convnext", b)):
        row = one(t, metric=metric, test="shapiro", model_a=model)
        ref = sps.shapiro(x)
        assert (row.n_a, row.statistic, row.p_value) == (10, pytest.approx(ref.statistic), pytest.approx(ref.pvalue))

    lev = sps.levene(a, b, center="median")
    row = one(t, metric=metric, test="levene")
    assert (row.statistic, row.p_value) == (pytest.approx(lev.statistic), pytest.approx(lev.pvalue))

    row = ttest_row(t, metric, "vivit", "convnext")
    ref = sps.ttest_ind(a, b, equal_var=row.test == "student_t")
    d = pg.compute_effsize(a, b, paired=False, eftype="cohen")
    assert row.statistic == pytest.approx(ref.statistic)
    assert row.p_value == pytest.approx(ref.pvalue)
    assert row.df == pytest.approx(ref.df)
    assert (row.effect_size, row.effect_size_name) == (pytest.approx(d), "cohen_d")
    power = TTestIndPower().power(effect_size=abs(d), nobs1=10, alpha=ALPHA, ratio=1.0, df=ref.df)
    assert row.power == pytest.approx(power)
    if row.test == "student_t":  # pingouin agrees for the equal-variance test
        assert row.power == pytest.approx(pg.power_ttest2n(10, 10, d=d, alpha=ALPHA))

    row = one(t, metric=metric, test="mann_whitney_u")
    ref = sps.mannwhitneyu(a, b, alternative="two-sided")
    assert (row.statistic, row.p_value) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    # Rank-biserial correlation: 2U/(n_a n_b) - 1, positive when vivit ranks higher.
    assert row.effect_size == pytest.approx(2 * ref.statistic / 100 - 1)
    assert row.effect_size == pytest.approx(pg.mwu(a, b)["RBC"].iloc[0])
    assert row.effect_size_name == "rank_biserial"


def test_power_uses_the_configured_alpha_not_the_studys_half():
    data = {"a": {"accuracy": (0.80 + 0.03 * Q).tolist()}, "b": {"accuracy": (0.77 + 0.03 * Q).tolist()}}
    runs = validate_runs(long_table(data))
    strict = ttest_row(compare_models(runs, alpha=0.01, n_resamples=FAST), "accuracy", "a", "b")
    loose = ttest_row(compare_models(runs, alpha=0.5, n_resamples=FAST), "accuracy", "a", "b")
    d = strict.effect_size
    assert strict.power == pytest.approx(TTestIndPower().power(effect_size=abs(d), nobs1=10, alpha=0.01, ratio=1.0))
    assert loose.power == pytest.approx(TTestIndPower().power(effect_size=abs(d), nobs1=10, alpha=0.5, ratio=1.0))
    assert strict.power < loose.power


# --------------------------------------------------------------------------- Student vs Welch


def _choice(a, b) -> pd.Series:
    runs = validate_runs(long_table({"vivit": {"f1": list(a)}, "convnext": {"f1": list(b)}}))
    return ttest_row(compare_models(runs, alpha=ALPHA, n_resamples=FAST), "f1", "vivit", "convnext")


def test_equal_variance_normal_samples_get_student():
    a, b = 0.80 + 0.03 * Q, 0.75 + 0.03 * Q[::-1]
    assert sps.shapiro(a).pvalue >= ALPHA and sps.shapiro(b).pvalue >= ALPHA
    assert sps.levene(a, b, center="median").pvalue >= ALPHA
    row = _choice(a, b)
    assert row.test == "student_t"
    assert row.statistic == pytest.approx(sps.ttest_ind(a, b, equal_var=True).statistic)
    assert row.df == 18


def test_very_unequal_variances_get_welch():
    a, b = 0.80 + 0.03 * Q, 0.75 + 0.002 * Q
    assert sps.shapiro(a).pvalue >= ALPHA and sps.shapiro(b).pvalue >= ALPHA
    assert sps.levene(a, b, center="median").pvalue < ALPHA
    row = _choice(a, b)
    assert row.test == "welch_t"
    assert "levene p<0.05" in row.note and "shapiro p<" not in row.note
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert (row.statistic, row.df) == (pytest.approx(ref.statistic), pytest.approx(ref.df))


def test_non_normal_sample_gets_welch():
    a, b = 0.80 + 0.03 * Q, np.array([0.70] * 9 + [0.95])
    assert sps.shapiro(b).pvalue < ALPHA
    assert sps.levene(a, b, center="median").pvalue >= ALPHA
    row = _choice(a, b)
    assert row.test == "welch_t"
    assert "shapiro p<0.05 for convnext" in row.note and "levene p<" not in row.note


def test_shapiro_needs_three_values():
    runs = validate_runs(long_table({"a": {"f1": [0.8, 0.7]}, "b": {"f1": [0.6, 0.5, 0.55]}}))
    t = compare_models(runs, n_resamples=FAST)
    row = one(t, test="shapiro", model_a="a")
    assert np.isnan(row.statistic) and np.isnan(row.p_value)
    assert "n=2 < 3" in row.note
    # Normality cannot be established, so the t-test is Welch's.
    assert ttest_row(t, "f1", "a", "b").test == "welch_t"


# --------------------------------------------------------------------------- undefined values

# Hand-made paired table, values exact in binary. Replicate 2 is undefined for vivit, and
# convnext has no replicate 5 at all.
PAIRED = {
    "vivit": {"precision": [0.75, 0.625, None, 0.5, 0.875, 0.9375]},
    "convnext": {"precision": [0.625, 0.6875, 0.5, 0.375, 0.625, ABSENT]},
}


def test_paired_tests_on_hand_computed_differences():
    t = compare_models(validate_runs(long_table(PAIRED)), alpha=ALPHA, seed=3, n_resamples=FAST)
    # drop: replicates 0, 1, 3, 4 are paired; vivit - convnext by hand:
    diffs = np.array([0.125, -0.0625, 0.125, 0.25])
    pt = one(t, test="paired_t")
    assert (pt.n_a, pt.n_b) == (4, 4)
    assert "paired over 4 replicates" in pt.note
    assert pt.mean_a - pt.mean_b == pytest.approx(0.109375)
    assert pt.statistic == pytest.approx(diffs.mean() / (diffs.std(ddof=1) / 2))  # t = mean / (sd / sqrt n)
    assert pt.df == 3
    assert pt.p_value == pytest.approx(sps.ttest_1samp(diffs, 0.0).pvalue)
    assert (pt.effect_size, pt.effect_size_name) == (pytest.approx(diffs.mean() / diffs.std(ddof=1)), "cohen_dz")
    assert pt.power == pytest.approx(TTestPower().power(effect_size=pt.effect_size, nobs=4, alpha=ALPHA))
    ci = sps.bootstrap((diffs,), np.mean, n_resamples=FAST, rng=np.random.default_rng(3)).confidence_interval
    assert (pt.ci_low, pt.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))

    w = one(t, test="wilcoxon")
    # |d| ranks: 0.0625 -> 1, 0.125 -> 2.5 twice, 0.25 -> 4: R+ = 9, R- = 1.
    assert w.statistic == 1.0
    assert w.p_value == pytest.approx(sps.wilcoxon(diffs).pvalue)
    assert (w.effect_size, w.effect_size_name) == (pytest.approx((9 - 1) / 10), "matched_pairs_rank_biserial")

    # The unpaired tests use every defined value of each model.
    assert (one(t, test="mann_whitney_u").n_a, one(t, test="mann_whitney_u").n_b) == (5, 5)


def test_zero_policy_counts_undefined_as_zero_and_keeps_the_pair():
    t = compare_models(validate_runs(long_table(PAIRED)), undefined="zero", n_resamples=FAST)
    diffs = np.array([0.125, -0.0625, 0.0 - 0.5, 0.125, 0.25])
    pt = one(t, test="paired_t")
    assert (pt.n_a, "paired over 5 replicates" in pt.note) == (5, True)
    assert pt.statistic == pytest.approx(sps.ttest_1samp(diffs, 0.0).statistic)
    assert one(t, test="shapiro", model_a="vivit").n_a == 6


@pytest.mark.parametrize(
    ("policy", "n", "mean", "paired"),
    [("drop", 4, (0.8 + 0.7 + 0.9 + 0.8) / 4, 4), ("zero", 6, (0.8 + 0.7 + 0.9 + 0.8) / 6, 6)],
)
def test_undefined_policy_in_every_output(tmp_path, policy, n, mean, paired):
    data = {
        "vivit": {"precision": [0.8, None, 0.7, 0.9, None, 0.8]},
        "convnext": {"precision": [0.6, 0.7, 0.65, 0.7, 0.6, 0.75]},
    }
    paths = run_stats(long_table(data), tmp_path, undefined=policy, n_resamples=FAST)
    summary = pd.read_csv(paths["summary"])
    row = summary[(summary.model == "vivit") & (summary.metric == "precision")].iloc[0]
    assert (row.n, row.n_undefined, row["mean"]) == (n, 2, pytest.approx(mean))
    assert row["min"] == (0.0 if policy == "zero" else 0.7)
    tests = pd.read_csv(paths["tests"], keep_default_na=False, na_values=[""])
    assert one(tests, test="shapiro", model_a="vivit").n_a == n
    assert one(tests, test="paired_t").n_a == paired
    # Under every table drawn; Table IX (no confusion counts here) is one line saying it is skipped.
    line = f"Undefined values: {policy}"
    skipped = "Mean confusion matrices skipped"
    md = paths["tables_md"].read_text()
    assert md.count(line) == md.count("## Table") - 1 == 8 and md.count(skipped) == 1
    tex = paths["tables_tex"].read_text()
    assert tex.count(line) == tex.count("\\begin{table}") - 1 == 8 and tex.count(skipped) == 1
    page = paths["tables_html"].read_text()
    assert page.count(line) == page.count("<table>") == 8 and page.count(skipped) == 1
    assert line in paths["summary_md"].read_text()


def test_degenerate_samples_are_undefined_not_errors(tmp_path):
    data = {
        # Equal paired differences (0.1) that floating point makes unequal: 0.9 - 0.8 != 0.5 - 0.4.
        "vivit": {"precision": [0.5, 0.6, 0.7, 0.8, 0.9], "specificity": [1.0] * 5, "roc_auc": [None] * 5},
        "convnext": {"precision": [0.4, 0.5, 0.6, 0.7, 0.8], "specificity": [1.0] * 5,
                     "roc_auc": [0.7, 0.8, 0.75, 0.72, 0.9]},
    }  # fmt: skip
    paths = run_stats(long_table(data), tmp_path, n_resamples=FAST)
    t = pd.read_csv(paths["tests"], keep_default_na=False, na_values=[""])

    pt = one(t, metric="precision", test="paired_t")
    assert np.isnan(pt.p_value) and "all paired differences are equal (sd 0)" in pt.note
    w = one(t, metric="precision", test="wilcoxon")  # five tied differences of 0.1
    assert w.p_value == pytest.approx(sps.wilcoxon(np.full(5, 0.1)).pvalue)
    assert w.effect_size == 1.0

    spec = t[t.metric == "specificity"].set_index("test")
    assert spec.loc["shapiro"].note.tolist() == ["all values equal: Shapiro-Wilk undefined"] * 2
    assert spec[["statistic", "p_value"]].drop(index="mann_whitney_u").isna().all().all()
    assert "no variance in either sample" in spec.loc["welch_t"].note
    assert spec.loc["mann_whitney_u"].p_value == 1.0

    auc = t[t.metric == "roc_auc"].set_index("test")
    assert auc.loc["paired_t"].n_a == 0 and "fewer than 2 pairs" in auc.loc["paired_t"].note
    assert auc.drop(index="shapiro").p_value.isna().all()
    summary = pd.read_csv(paths["summary"])
    row = summary[(summary.model == "vivit") & (summary.metric == "roc_auc")].iloc[0]
    assert (row.n, row.n_undefined) == (0, 5) and np.isnan(row["mean"])
    assert "no value for vivit" in paths["summary_md"].read_text()


# --------------------------------------------------------------------------- Holm


def statsmodels_holm(p) -> np.ndarray:
    """The reference: statsmodels' Holm (heap frozen: its Holm branch runs a full gc.collect())."""
    gc.freeze()
    try:
        return multipletests(np.asarray(p), alpha=ALPHA, method="holm")[1]
    finally:
        gc.unfreeze()


def _holm_families(t: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {
        "t": t[t.test.isin(["student_t", "welch_t"])],
        "mann_whitney_u": t[t.test == "mann_whitney_u"],
        "paired_t": t[t.test == "paired_t"],
        "wilcoxon": t[t.test == "wilcoxon"],
    }


def test_holm_equals_statsmodels_across_metrics(study_tests):
    t = study_tests
    for name, family in _holm_families(t).items():
        assert len(family) == 3, name  # 3 metrics, 1 pair
        expected = statsmodels_holm(family.p_value)
        np.testing.assert_allclose(family.p_holm.to_numpy(), expected, err_msg=name)
    # Assumption checks are not corrected.
    assert t[t.test.isin(["shapiro", "levene"])].p_holm.isna().all()


def test_three_models_holm_across_pairs_too(tmp_path):
    rng = np.random.default_rng(5)
    data = {m: {k: np.round(rng.normal(mu, 0.05, 8), 4).tolist() for k in ("accuracy", "f1")}
            for m, mu in (("vivit", 0.85), ("convnext", 0.8), ("timesformer", 0.75))}  # fmt: skip
    tests = pd.read_csv(run_stats(long_table(data), tmp_path, n_resamples=FAST)["tests"])
    pairs = set(zip(tests[tests.test == "levene"].model_a, tests[tests.test == "levene"].model_b))
    assert pairs == {("vivit", "convnext"), ("vivit", "timesformer"), ("convnext", "timesformer")}
    for name, family in _holm_families(tests).items():
        assert len(family) == 2 * 3, name  # 2 metrics x 3 pairs in one family
        expected = statsmodels_holm(family.p_value)
        np.testing.assert_allclose(family.p_holm.to_numpy(), expected, err_msg=name)
        # Correcting within one pair only would give smaller (or equal) p-values.
        per_pair = family.groupby(["model_a", "model_b"]).p_value.transform(
            lambda p: statsmodels_holm(p)
        )
        assert (family.p_holm >= per_pair - 1e-12).all() and (family.p_holm > per_pair).any()


# --------------------------------------------------------------------------- bootstrap, summaries


def test_bootstrap_ci_is_scipys_bca_with_the_seed():
    x = np.array([0.71, 0.74, 0.69, 0.8, 0.77, 0.73, 0.75, 0.72])
    low, high, method = bootstrap_mean_ci(x, n_resamples=FAST, seed=11)
    ref = sps.bootstrap((x,), np.mean, n_resamples=FAST, method="BCa", rng=np.random.default_rng(11))
    assert (low, high, method) == (ref.confidence_interval.low, ref.confidence_interval.high, "BCa")
    assert bootstrap_mean_ci(x, n_resamples=FAST, seed=11) == (low, high, method)


def test_bootstrap_falls_back_to_percentile_when_degenerate():
    assert bootstrap_mean_ci([0.9] * 6, n_resamples=FAST) == (0.9, 0.9, "percentile")
    low, high, method = bootstrap_mean_ci([0.9], n_resamples=FAST)
    assert np.isnan(low) and np.isnan(high) and method == ""


def test_summary_and_confusion_files(tmp_path):
    paths = run_stats(long_table(STUDY), tmp_path, seed=2, n_resamples=FAST)
    summary = pd.read_csv(paths["summary"])
    assert list(summary.columns[:11]) == "model metric n n_undefined mean sd median min max ci_low ci_high".split()
    row = summary[(summary.model == "convnext") & (summary.metric == "recall")].iloc[0]
    x = np.array(CONVNEXT["recall"])
    assert row["mean"] == pytest.approx(x.mean())
    assert row["sd"] == pytest.approx(x.std(ddof=1))
    assert (row["median"], row["min"], row["max"]) == (pytest.approx(np.median(x)), x.min(), x.max())
    low, high, _ = bootstrap_mean_ci(x, n_resamples=FAST, seed=2)
    assert (row.ci_low, row.ci_high) == (pytest.approx(low), pytest.approx(high))

    conf = pd.read_csv(paths["confusion"]).set_index("model")
    for model, counts in (("vivit", COUNTS_V), ("convnext", COUNTS_C)):
        for count in ("tn", "fp", "fn", "tp"):
            assert conf.loc[model, f"{count}_mean"] == pytest.approx(np.mean(counts[count]))
            assert conf.loc[model, f"{count}_sd"] == pytest.approx(np.std(counts[count], ddof=1))
        assert conf.loc[model, "n_replicates"] == 10


def test_findings_name_the_higher_model_and_holm_verdict(tmp_path):
    data = {"vivit": {"accuracy": (0.90 + 0.01 * Q).tolist()}, "convnext": {"accuracy": (0.70 + 0.01 * Q).tolist()}}
    text = run_stats(long_table(data), tmp_path, n_resamples=FAST)["summary_md"].read_text()
    assert "**accuracy**: vivit has the higher mean (0.900 vs 0.700 for convnext)" in text
    assert "Student's t-test (shapiro p>=0.05 for both models and levene p>=0.05): t = " in text
    assert ", p < 0.001, Holm p < 0.001, Cohen's d = " in text
    assert "significant at α = 0.05 after Holm" in text and "not significant" not in text


def test_outputs_are_deterministic(tmp_path):
    first = run_stats(long_table(STUDY), tmp_path / "a", n_resamples=FAST)
    second = run_stats(long_table(STUDY), tmp_path / "b", n_resamples=FAST)
    for key in first:
        assert first[key].read_bytes() == second[key].read_bytes(), key
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temp files left


# --------------------------------------------------------------------------- command and errors


def test_command_writes_every_file(tmp_path, capsys):
    csv = write_runs(tmp_path / "metrics.csv", STUDY)
    out = tmp_path / "stats"
    args = ["stats", str(csv), "--out", str(out), "--alpha", "0.01", "--undefined", "zero", "--resamples", "50"]
    assert main([*args, "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
        assert f"written {out / name}" in printed
    md = (out / "tables.md").read_text()
    for numeral in ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX"):
        assert f"## Table {numeral}. " in md
    assert "α = 0.01" in md and "Undefined values: zero" in md


def test_html_tables_hold_the_markdown_tables_cells(tmp_path, html_tables):
    paths = run_stats(long_table(STUDY), tmp_path, n_resamples=FAST)
    md_tables = [
        [[cell.strip().replace("\\|", "|") for cell in line.strip("|").split("|")]
         for line in block.splitlines() if line.startswith("|") and not line.startswith("|:") and "---" not in line]
        for block in paths["tables_md"].read_text().split("## Table")[1:]
    ]
    assert html_tables(paths["tables_html"].read_text()) == md_tables
    assert "<script" not in paths["tables_html"].read_text()  # shown offline, nothing to run or fetch


@pytest.mark.slow
def test_console_script_end_to_end(tmp_path):
    csv = write_runs(tmp_path / "metrics.csv", STUDY)
    script = Path(sys.executable).parent / "ichseq"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "ichseq.cli"]
    out = tmp_path / "stats"
    args = ["stats", str(csv), "--out", str(out), "--resamples", "50"]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # Two models: the pairwise tables and the leaderboard, no Friedman test.
    leaderboard = [COMPARISON_NAMES[k] for k in comparison_outputs(2)]
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS + FIGURES + tuple(leaderboard) + (RECORD,))
    assert "friedman.csv" not in leaderboard
    tests = pd.read_csv(out / "tests.csv")
    assert len(tests) == 3 * (2 + 5)  # 3 metrics x (2 shapiro + levene, t, MWU, paired t, Wilcoxon)

    bad = tmp_path / "bad.csv"
    bad.write_text("model,replicate,metric\nvivit,0,accuracy\n")
    done = subprocess.run([*cmd, "stats", str(bad), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"ichseq stats: {bad}: missing column(s) value")


BAD_INPUTS = {
    "missing column": ("model,replicate,value\nvivit,0,0.8\n", "missing column(s) metric"),
    "non-numeric": ("model,replicate,metric,value\nvivit,0,accuracy,0.8\nconvnext,0,accuracy,high\n",
                    "'high' at line 3 is not a number"),
    "duplicate": ("model,replicate,metric,value\nvivit,0,accuracy,0.8\nvivit,0,accuracy,0.7\nconvnext,0,accuracy,0.6\n",
                  "duplicate row for model vivit, replicate 0, metric accuracy"),
    "one model": ("model,replicate,metric,value\nvivit,0,accuracy,0.8\nvivit,1,accuracy,0.7\n", "at least 2 models"),
    "counts only": ("model,replicate,metric,value\nvivit,0,tp,3\nconvnext,0,tp,4\n", "no rate metric"),
    "empty file": ("", "empty file"),
    "infinite": ("model,replicate,metric,value\nvivit,0,accuracy,inf\nconvnext,0,accuracy,0.6\n", "not a number"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys, case):
    text, message = BAD_INPUTS[case]
    csv = tmp_path / "metrics.csv"
    csv.write_text(text)
    assert main(["stats", str(csv), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ichseq stats: {csv}: ")
    assert message in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="metrics.csv"):
        read_runs(csv)


def test_missing_file(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == f"ichseq stats: {tmp_path / 'nope.csv'}: no such file\n"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"undefined": "ignore"}, "undefined"),
     ({"seed": -1}, "seed"), ({"n_resamples": 0}, "n_resamples"), ({"power_alpha": 1.0}, "power_alpha"),
     ({"power_alpha": "0.5"}, "power_alpha")],
)  # fmt: skip
def test_bad_options(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        run_stats(long_table(STUDY), tmp_path, **kwargs)


def test_data_frame_input_is_validated_too(tmp_path):
    runs = long_table({"vivit": {"accuracy": [0.8, 0.9]}})
    with pytest.raises(DataError, match="runs table: needs at least 2 models"):
        run_stats(runs, tmp_path)


# --------------------------------------------------------------------------- other studies' tables

SKIPPED_TABLE = "Mean confusion matrices skipped: the runs table has no rows for tn, fp, fn, tp, which they need."
SKIPPED_FIGURE = "Confusion-matrix figure skipped: the runs table has no rows for tn, fp, fn, tp, which it needs."
CONFUSION_FILES = {"confusion.csv", "confusion_matrices.png", "confusion_matrices.svg"}


def published(models, replicates: int, metrics, seed: int = 11) -> dict:
    """What studies publish per run: a few rates, no confusion counts."""
    rng = np.random.default_rng(seed)
    return {m: {k: np.round(rng.uniform(0.6, 0.95, replicates), 3).tolist() for k in metrics} for m in models}


@pytest.mark.parametrize(
    ("models", "replicates", "metrics"),
    [
        (("vivit", "convnext", "resnet"), 5, ("accuracy", "precision", "recall", "f1")),
        (("vivit", "convnext"), 5, ("accuracy",)),
        (("vivit", "convnext", "resnet"), 2, ("accuracy", "recall")),
        (("vivit", "convnext"), 4, ("sensitivity", "dice")),  # names this package does not know
    ],
)
def test_command_runs_on_a_published_table_without_confusion_counts(tmp_path, capsys, models, replicates, metrics):
    data = published(models, replicates, metrics)
    csv = write_runs(tmp_path / "published.csv", data)
    out = tmp_path / "stats"
    assert main(["stats", str(csv), "--out", str(out), "--resamples", "50"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if "skipped" in line] == [SKIPPED_TABLE, SKIPPED_FIGURE]
    comparison = {COMPARISON_NAMES[k] for k in comparison_outputs(len(models))}  # Friedman's with 3+ models
    assert sorted(p.name for p in out.iterdir()) == sorted((set(OUTPUTS + FIGURES) - CONFUSION_FILES) | comparison
                                                           | {RECORD})  # fmt: skip

    tests = pd.read_csv(out / "tests.csv", keep_default_na=False, na_values=[""])
    n_pairs = len(models) * (len(models) - 1) // 2
    assert set(tests.metric) == set(metrics)
    assert len(tests) == len(metrics) * (len(models) + 5 * n_pairs)
    # Still the libraries' numbers, e.g. the first pair on the last metric.
    a, b = np.array(data[models[0]][metrics[-1]]), np.array(data[models[1]][metrics[-1]])
    where = {"metric": metrics[-1], "model_a": models[0], "model_b": models[1]}
    assert one(tests, test="mann_whitney_u", **where).p_value == pytest.approx(sps.mannwhitneyu(a, b).pvalue)
    assert one(tests, test="paired_t", **where).p_value == pytest.approx(sps.ttest_rel(a, b).pvalue)
    t = ttest_row(tests, metrics[-1], models[0], models[1])
    assert t.p_value == pytest.approx(sps.ttest_ind(a, b, equal_var=t.test == "student_t").pvalue)

    # Table IX is one line saying why, in every rendering; the findings end with it.
    md = (out / "tables.md").read_text()
    assert md.split("## Table IX. Mean confusion matrices over replicates\n\n")[1] == f"*{SKIPPED_TABLE}*\n"
    assert SKIPPED_TABLE in (out / "tables.tex").read_text()
    assert SKIPPED_TABLE in (out / "tables.html").read_text()
    assert (out / "summary.md").read_text().rstrip().endswith(SKIPPED_TABLE)
    assert SKIPPED_TABLE in (out / "findings.html").read_text()


def test_two_replicates_run_every_test_that_two_values_allow():
    data = {"a": {"accuracy": [0.70, 0.74], "recall": [0.7, 0.7, 0.8, 0.8]},
            "b": {"accuracy": [0.80, 0.81], "recall": [0.6, 0.6, 0.9, 0.9]}}  # fmt: skip
    t = compare_models(validate_runs(long_table(data)), n_resamples=FAST)
    a, b = np.array(data["a"]["accuracy"]), np.array(data["b"]["accuracy"])
    acc = t[t.metric == "accuracy"].set_index("test")
    assert acc.loc["shapiro"].note.tolist() == ["n=2 < 3: Shapiro-Wilk undefined"] * 2
    # Two values lie equally far from their median, so Levene's W divides by zero: undefined,
    # not the p of 1e-30 that floating-point noise gives.
    for metric in ("accuracy", "recall"):  # recall: four values, deviations equal within each model
        levene = one(t, metric=metric, test="levene")
        assert np.isnan(levene.p_value) and np.isnan(levene.statistic), metric
        assert levene.note.startswith("deviations from the median equal within each sample"), metric
    assert acc.loc["welch_t"].p_value == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    assert "levene undefined" in acc.loc["welch_t"].note
    assert acc.loc["mann_whitney_u"].p_value == pytest.approx(sps.mannwhitneyu(a, b).pvalue)
    assert acc.loc["paired_t"].p_value == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert acc.loc["wilcoxon"].p_value == pytest.approx(sps.wilcoxon(a - b).pvalue)


def test_one_replicate_leaves_each_test_undefined_with_its_reason(tmp_path):
    data = {"a": {"accuracy": [0.7]}, "b": {"accuracy": [0.8]}, "c": {"accuracy": [0.75]}}
    paths = run_stats(long_table(data), tmp_path, n_resamples=FAST, log=lambda _line: None)
    tests = pd.read_csv(paths["tests"], keep_default_na=False, na_values=[""])
    undefined = tests[tests.test != "mann_whitney_u"]
    assert undefined.p_value.isna().all()
    assert undefined.note.str.contains("undefined").all()
    assert "undefined (n < 2: t-test undefined)" in paths["summary_md"].read_text()


def test_published_table_leaves_no_confusion_results_of_an_earlier_table(tmp_path, capsys):
    out = tmp_path / "stats"
    full = write_runs(tmp_path / "full.csv", STUDY)
    assert main(["stats", str(full), "--out", str(out), "--resamples", "50"]) == 0
    assert CONFUSION_FILES <= {p.name for p in out.iterdir()}
    assert "skipped" not in capsys.readouterr().out  # the full table lacks nothing
    rates = write_runs(tmp_path / "published.csv", published(("vivit", "convnext"), 5, ("accuracy",)))
    assert main(["stats", str(rates), "--out", str(out), "--resamples", "50"]) == 0
    assert not CONFUSION_FILES & {p.name for p in out.iterdir()}


# --------------------------------------------------------------------------- outputs as a rule declares them


def test_write_stats_writes_exactly_the_outputs_asked_for(tmp_path):
    asked = {"summary_md": tmp_path / "results/summary.md", "tests": tmp_path / "results/stats/t.csv",
             "findings_html": tmp_path / "page.html"}  # fmt: skip
    # A rule's outputs are Snakemake's: a file there (of an earlier run) is replaced, no record is kept.
    asked["summary_md"].parent.mkdir(parents=True)
    asked["summary_md"].write_text("from an earlier run of the rule\n")
    paths = write_stats(long_table(STUDY), asked, n_resamples=FAST)
    assert paths == asked
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(asked.values())
    reference = run_stats(long_table(STUDY), tmp_path / "reference", n_resamples=FAST)
    for key, path in asked.items():
        assert path.read_bytes() == reference[key].read_bytes(), key


def test_write_stats_refuses_a_confusion_file_it_cannot_fill(tmp_path):
    csv = write_runs(tmp_path / "runs.csv", published(("vivit", "convnext"), 3, ("accuracy",)))
    asked = {"tests": tmp_path / "out/tests.csv", "confusion": tmp_path / "out/confusion.csv"}
    with pytest.raises(DataError) as error:
        write_stats(read_runs(csv), asked, n_resamples=FAST)
    assert str(error.value) == (f"{csv}: no rows for tn, fp, fn, tp, which the mean confusion matrices "
                                f"({tmp_path / 'out/confusion.csv'}) need")  # fmt: skip
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="unknown output key.*findings"):
        write_stats(long_table(STUDY), {"findings": tmp_path / "f.html"})


# --------------------------------------------------------------------------- power at another alpha

POWER = {"a": {"accuracy": (0.80 + 0.03 * Q).tolist()}, "b": {"accuracy": (0.77 + 0.03 * Q[::-1] ** 2).tolist()}}


def test_power_alpha_changes_the_power_only():
    runs = validate_runs(long_table(POWER))
    tested = compare_models(runs, alpha=0.05, n_resamples=FAST)
    half = compare_models(runs, alpha=0.05, power_alpha=0.5, n_resamples=FAST)
    same = [c for c in TEST_COLUMNS if c not in ("power", "note")]
    pd.testing.assert_frame_equal(tested[same], half[same])  # same tests, choice, p and Holm
    t = ttest_row(half, "accuracy", "a", "b")
    expected = TTestIndPower().power(effect_size=abs(t.effect_size), nobs1=10, alpha=0.5, ratio=1.0, df=t.df)
    assert t.power == pytest.approx(expected) and t.power > ttest_row(tested, "accuracy", "a", "b").power
    assert "TTestIndPower at alpha=0.5" in t.note
    pt = one(half, test="paired_t")
    assert pt.power == pytest.approx(TTestPower().power(effect_size=abs(pt.effect_size), nobs=10, alpha=0.5))
    assert "TTestPower at alpha=0.5" in pt.note


def test_power_alpha_is_named_under_every_table_and_in_the_findings(tmp_path):
    csv = write_runs(tmp_path / "metrics.csv", STUDY)
    out = tmp_path / "stats"
    assert main(["stats", str(csv), "--out", str(out), "--resamples", "50", "--power-alpha", "0.5"]) == 0
    md = (out / "tables.md").read_text()
    assert md.count("α = 0.05; power at α = 0.5.") == md.count("## Table") == 9
    assert "Power of the test used at alpha = 0.5, not the tests' alpha = 0.05." in md
    assert (out / "tables.tex").read_text().count("$\\alpha = 0.05$; power at $\\alpha = 0.5$.") == 9
    assert (out / "tables.html").read_text().count("α = 0.05; power at α = 0.5.") == 9
    findings = (out / "summary.md").read_text()
    assert "power (α = 0.5) = " in findings and "power at α = 0.5" in findings
    assert "significant at α = 0.05 after Holm" in findings


def test_power_alpha_unset_or_equal_to_alpha_changes_nothing(tmp_path):
    unset = run_stats(long_table(STUDY), tmp_path / "unset", n_resamples=FAST)
    equal = run_stats(long_table(STUDY), tmp_path / "equal", power_alpha=ALPHA, n_resamples=FAST)
    for key in unset:
        assert unset[key].read_bytes() == equal[key].read_bytes(), key
    assert "power at" not in unset["tables_md"].read_text()


def test_caveats_head_every_table_and_the_findings(tmp_path):
    caveat = "BIASED: the kept epoch of vivit was chosen on each replicate's test patients"
    keys = ("tables_md", "tables_tex", "tables_html", "summary_md", "findings_html")
    logged = []
    paths = write_stats(long_table(STUDY), {k: tmp_path / k for k in keys}, n_resamples=FAST,
                        caveats=[caveat], log=logged.append)
    for key in keys:
        text = paths[key].read_text()
        at = text.find("Caveat: BIASED")
        assert at >= 0, key
        # Above the first table / finding, not in a footnote.
        first = min(i for i in (text.find("## "), text.find("<h2>"), text.find("\\begin{table}"), text.find("- **"),
                                text.find("<ul>")) if i >= 0)
        assert at < first, key
    assert any(line.startswith("WARNING: BIASED") for line in logged)
    plain = write_stats(long_table(STUDY), {"summary_md": tmp_path / "plain.md"}, n_resamples=FAST)
    assert "Caveat" not in plain["summary_md"].read_text()


def test_run_stats_passes_caveats_to_every_page(tmp_path):
    caveat = "BIASED: the kept epoch of vivit was chosen on each replicate's test patients"
    paths = run_stats(long_table(STUDY), tmp_path, n_resamples=FAST, caveats=[caveat], log=lambda _line: None)
    assert "Caveat: BIASED" in paths["summary_md"].read_text() and "Caveat: BIASED" in paths["tables_md"].read_text()


def test_a_runs_table_is_validated_once_where_it_enters(tmp_path, monkeypatch):
    import ichseq.analysis.stats as stats_module

    checked = []
    real = stats_module._parse_value
    monkeypatch.setattr(stats_module, "_parse_value", lambda v: checked.append(v) or real(v))
    runs = validate_runs(long_table(STUDY))
    once = len(checked)
    assert once == len(runs)
    assert validate_runs(runs) is runs and len(checked) == once  # the returned table passes as it is
    run_stats(runs, tmp_path, n_resamples=FAST, log=lambda _line: None)
    assert len(checked) == once  # neither run_stats nor write_stats checked it again
    # Any other frame is checked: a copy, and a subset that is no longer valid.
    validate_runs(runs.copy())
    assert len(checked) == 2 * once
    with pytest.raises(DataError, match="needs at least 2 models"):
        validate_runs(runs[runs.model == runs.model.iloc[0]])


def test_command_with_three_models_adds_the_friedman_comparison(tmp_path, capsys):
    third = {metric: [v * 0.9 if v is not None else None for v in values] for metric, values in STUDY["vivit"].items()}
    csv = write_runs(tmp_path / "metrics.csv", {**STUDY, "cnn_rnn": third})
    out = tmp_path / "stats"
    assert main(["stats", str(csv), "--out", str(out), "--resamples", "50"]) == 0
    printed = capsys.readouterr().out
    for name in COMPARISON_NAMES.values():  # every comparison file, Friedman's included
        assert (out / name).stat().st_size > 0 and f"written {out / name}" in printed, name
    friedman = pd.read_csv(out / "friedman.csv").set_index("metric")
    assert friedman.at["roc_auc", "n_models"] == 3


# --------------------------------------------------------------------------- rates: fractions or percentages


def csv_of(path: Path, rows) -> Path:
    """A runs CSV of ``(model, replicate, metric, value)`` rows in this order (line 2 onwards)."""
    path.write_text("model,replicate,metric,value\n" + "".join(f"{m},{r},{k},{v}\n" for m, r, k, v in rows))
    return path


# Model a's rates are percentages, model b's fractions: the hostile tester's "57.000 vs 0.640".
MIXED = [("a", r, "accuracy", v) for r, v in enumerate((57, 61, 55, 60))] + \
        [("b", r, "accuracy", v) for r, v in enumerate((0.64, 0.62, 0.66, 0.61))]  # fmt: skip


def test_rates_outside_zero_one_are_refused_naming_the_lines(tmp_path, capsys):
    csv = csv_of(tmp_path / "metrics.csv", MIXED)
    out = tmp_path / "out"
    assert main(["stats", str(csv), "--out", str(out), "--resamples", "50"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ichseq stats: {csv}: 4 rate value(s) outside [0, 1]: ")
    # The first lines in full, the rest counted; and what to do.
    assert "line 2 (model a, replicate 0, metric accuracy: 57)" in err
    assert "line 4 (model a, replicate 2, metric accuracy: 55)" in err and "and 1 more" in err
    assert "--percent" in err
    assert not out.exists()
    with pytest.raises(DataError, match="outside \\[0, 1\\]"):
        read_runs(csv)
    # A data frame names its rows by position.
    with pytest.raises(DataError, match="row 0 \\(model a, replicate 0, metric accuracy: 57\\)"):
        validate_runs(pd.read_csv(csv))


def test_only_the_fraction_metrics_are_bounded():
    # Counts, a correlation in [-1, 1] (seg_cls's volume_spearman) and metrics of unknown scale
    # (seconds, another study's loss) are compared as they are.
    rows = [(m, r, k, v) for m in ("a", "b") for r in range(3) for k, v in
            (("accuracy", 0.8), ("tp", 30), ("n_test", 40), ("volume_spearman", -0.4), ("seconds", 312.5),
             ("loss", 2.5))]  # fmt: skip
    runs = validate_runs(pd.DataFrame(rows, columns=["model", "replicate", "metric", "value"]))
    assert runs.groupby("metric")["value"].first().to_dict() == {
        "accuracy": 0.8, "tp": 30, "n_test": 40, "volume_spearman": -0.4, "seconds": 312.5, "loss": 2.5}
    for metric in ("precision", "recall", "specificity", "f1", "balanced_accuracy", "roc_auc", "dice"):
        bad = pd.DataFrame([("a", 0, metric, 0.5), ("b", 0, metric, -0.01)], columns=list(runs.columns))
        with pytest.raises(DataError, match=f"row 1 \\(model b, replicate 0, metric {metric}: -0.01\\)"):
            validate_runs(bad)


def test_percent_divides_the_rates_by_100_and_nothing_else(tmp_path, capsys):
    fractions = {"a": {"accuracy": [0.57, 0.61, 0.55, 0.59], "roc_auc": [0.7, 0.75, 0.72, 0.69], "tp": [3, 4, 3, 5],
                       "seconds": [12.5, 13.0, 12.0, 12.25]},
                 "b": {"accuracy": [0.64, 0.62, 0.66, 0.6], "roc_auc": [0.8, 0.77, 0.79, 0.81], "tp": [4, 4, 5, 4],
                       "seconds": [20.0, 21.5, 19.5, 20.5]}}  # fmt: skip
    rates = ("accuracy", "roc_auc")
    percents = {m: {k: [round(100 * v) if k in rates else v for v in vs] for k, vs in ms.items()}
                for m, ms in fractions.items()}  # fmt: skip
    as_fractions = write_runs(tmp_path / "fractions.csv", fractions)
    as_percents = write_runs(tmp_path / "percents.csv", percents)
    assert main(["stats", str(as_fractions), "--out", str(tmp_path / "f"), "--resamples", "50"]) == 0
    assert main(["stats", str(as_percents), "--out", str(tmp_path / "p"), "--resamples", "50", "--percent"]) == 0
    capsys.readouterr()
    for name in ("summary.csv", "tests.csv", "leaderboard.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "p" / name), pd.read_csv(tmp_path / "f" / name))
    assert "a has the higher mean" not in (tmp_path / "p/summary.md").read_text()
    assert "**accuracy**: b has the higher mean (0.630 vs 0.580 for a)" in (tmp_path / "p/summary.md").read_text()
    runs = read_runs(as_percents, percent=True)
    assert runs[runs.metric == "tp"].value.tolist() == [3, 4, 3, 5, 4, 4, 5, 4]
    assert runs[runs.metric == "seconds"].value.tolist() == [12.5, 13.0, 12.0, 12.25, 20.0, 21.5, 19.5, 20.5]


def test_percent_help_names_every_rate_it_divides():
    import argparse

    from ichseq.analysis.stats import FRACTION_METRICS
    from ichseq.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    percent = next(a for a in commands.choices["stats"]._actions if "--percent" in a.option_strings)
    assert [m for m in FRACTION_METRICS if m not in percent.help] == []


def test_percent_refuses_rates_outside_zero_to_100(tmp_path, capsys):
    csv = csv_of(tmp_path / "metrics.csv", [("a", 0, "accuracy", 57), ("a", 1, "recall", 101.5),
                                            ("b", 0, "accuracy", 64), ("b", 1, "recall", -3)])  # fmt: skip
    assert main(["stats", str(csv), "--out", str(tmp_path / "out"), "--percent"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ichseq stats: {csv}: 2 rate value(s) outside [0, 100]: ")
    assert ("line 3 (model a, replicate 1, metric recall: 101.5); "
            "line 5 (model b, replicate 1, metric recall: -3)") in err  # fmt: skip


def test_percent_refuses_a_model_whose_rates_are_fractions(tmp_path, capsys):
    # Read as percentages, b's 0.64 would be 0.0064: a table that mixes the two is refused.
    csv = csv_of(tmp_path / "metrics.csv", MIXED)
    assert main(["stats", str(csv), "--out", str(tmp_path / "out"), "--percent"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ichseq stats: {csv}: ")
    assert "model b" in err and "line 6" in err and "fractions" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- where --out may be


@pytest.mark.parametrize("where", ["the input", "its folder", "inside the input"])
def test_out_overlapping_the_input_is_refused_before_any_work(tmp_path, capsys, where):
    csv = write_runs(tmp_path / "metrics.csv", STUDY)
    before = csv.read_bytes()
    out = {"the input": csv, "its folder": tmp_path, "inside the input": csv / "stats"}[where]
    assert main(["stats", str(csv), "--out", str(out), "--resamples", "50"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ichseq stats: --out {out}: ")
    assert str(csv) in err and "choose a folder outside every input" in err
    assert csv.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    csv = write_runs(tmp_path / "metrics.csv", STUDY)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    assert main(["stats", str(csv), "--out", str(notes), "--resamples", "50"]) == 1
    err = capsys.readouterr().err
    assert err == f"ichseq stats: --out {notes}: is a file, not a folder; give a folder (it is created if missing)\n"
    assert notes.read_text() == "mine\n"


def test_a_file_that_stats_did_not_write_is_not_replaced(tmp_path, capsys):
    csv = write_runs(tmp_path / "metrics.csv", STUDY)
    out = tmp_path / "paper"
    out.mkdir()
    (out / "summary.md").write_text("my own summary\n")
    (out / "draft.tex").write_text("another name: never touched\n")
    assert main(["stats", str(csv), "--out", str(out), "--resamples", "50"]) == 1
    err = capsys.readouterr().err
    assert err == (f"ichseq stats: --out {out}: {out / 'summary.md'} exists and no earlier ichseq stats wrote it "
                   f"(it is not listed in {out / RECORD}); move it away or choose another folder\n")
    assert sorted(p.name for p in out.iterdir()) == ["draft.tex", "summary.md"]  # nothing written
    assert (out / "summary.md").read_text() == "my own summary\n"
    # The library function refuses the same way.
    with pytest.raises(DataError, match="summary.md exists and no earlier ichseq stats wrote it"):
        run_stats(read_runs(csv), out, n_resamples=FAST, log=lambda _line: None)


@pytest.mark.parametrize("record", ["not json", '["tests.csv"]', '{"files": ["tests.csv"]}'])
def test_a_record_that_stats_did_not_write_is_refused(tmp_path, capsys, record):
    csv = write_runs(tmp_path / "metrics.csv", STUDY)
    out = tmp_path / "stats"
    out.mkdir()
    (out / RECORD).write_text(record)
    (out / "tests.csv").write_text("someone else's\n")
    assert main(["stats", str(csv), "--out", str(out), "--resamples", "50"]) == 1
    assert capsys.readouterr().err == (f"ichseq stats: --out {out}: {out / RECORD} is not a record written by "
                                       "ichseq stats; move it away or choose another folder\n")  # fmt: skip
    assert (out / "tests.csv").read_text() == "someone else's\n" and (out / RECORD).read_text() == record


@pytest.mark.slow
def test_stats_replaces_its_own_files_and_only_those(tmp_path, capsys):
    csv = write_runs(tmp_path / "metrics.csv", STUDY)
    out = tmp_path / "stats"
    assert main(["stats", str(csv), "--out", str(out), "--resamples", "50"]) == 0
    record = json.loads((out / RECORD).read_text())
    written = sorted(p.name for p in out.iterdir() if p.name != RECORD)
    assert set(written) <= set(record["files"])
    assert main(["stats", str(csv), "--out", str(out), "--resamples", "50"]) == 0  # its own: replaced
    # With three models it would write the Friedman files, which the two-model run did not.
    third = {metric: [v * 0.9 for v in values] for metric, values in STUDY["vivit"].items()}
    three = write_runs(tmp_path / "three.csv", {**STUDY, "cnn_rnn": third})
    (out / "friedman.csv").write_text("someone else's\n")
    capsys.readouterr()
    assert main(["stats", str(three), "--out", str(out), "--resamples", "50"]) == 1
    assert f"{out / 'friedman.csv'} exists and no earlier ichseq stats wrote it" in capsys.readouterr().err
    (out / "friedman.csv").unlink()
    assert main(["stats", str(three), "--out", str(out), "--resamples", "50"]) == 0
    assert "friedman.csv" in json.loads((out / RECORD).read_text())["files"]
    # Back to two models: the three-model run's Friedman files are ichseq's own and would read as
    # this table's results, so they go; nothing else does.
    assert main(["stats", str(csv), "--out", str(out), "--resamples", "50"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not (out / "friedman.csv").exists() and (out / "leaderboard.csv").exists()


def test_a_run_stopped_partway_can_be_run_again(tmp_path, capsys, monkeypatch):
    import ichseq.analysis.ranking as ranking

    csv = write_runs(tmp_path / "metrics.csv", STUDY)
    out = tmp_path / "stats"
    real = ranking.write_comparison

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # the user pressed Ctrl-C after the tables and figures were written

    monkeypatch.setattr(ranking, "write_comparison", stopped)
    with pytest.raises(KeyboardInterrupt):
        main(["stats", str(csv), "--out", str(out), "--resamples", "50"])
    assert (out / "tests.csv").exists() and (out / "metrics_boxplot.png").exists()
    monkeypatch.setattr(ranking, "write_comparison", real)
    assert main(["stats", str(csv), "--out", str(out), "--resamples", "50"]) == 0, capsys.readouterr().err


# --------------------------------------------------------------------------- progress and speed


def models_table(n_models: int, replicates: int = 6, seed: int = 5) -> dict:
    """``n_models`` models, three rate metrics and the confusion counts, seeded."""
    rng = np.random.default_rng(seed)
    return {f"m{i}": {**{k: np.round(rng.uniform(0.6, 0.95, replicates), 3).tolist()
                         for k in ("accuracy", "recall", "roc_auc")},
                      **{k: rng.integers(1, 20, replicates).tolist() for k in ("tn", "fp", "fn", "tp")}}
            for i in range(n_models)}  # fmt: skip


SECONDS = r"\d+\.\d s"
#: What `ichseq stats` prints while it works (3 rate metrics, 4 models: 6 pairs), in this order.
PROGRESS = [
    r"stats: 4 models \(6 pairs\), 3 rate metrics, 50 bootstrap resamples",
    *(rf"tests: {m} \(metric {i} of 3\), 6 model pairs: {SECONDS}" for i, m in enumerate(("accuracy", "recall",
                                                                                          "roc_auc"), 1)),
    rf"summaries: 4 models x 7 metrics, bootstrap CIs: {SECONDS}",
    rf"tables and findings: {SECONDS}",
    rf"figures: metrics_boxplot \(3 metrics x 4 models\): {SECONDS}",
    rf"figures: confusion_matrices \(4 models\): {SECONDS}",
    rf"figures: paired_runs \(3 metrics x 4 models\): {SECONDS}",
    rf"figures: 6 files written: {SECONDS}",
    rf"comparison: leaderboard \(4 models\): {SECONDS}",
    *(rf"comparison: Friedman test of {m} \(metric {i} of 3\), 6 post-hoc pairs: {SECONDS}"
      for i, m in enumerate(("accuracy", "recall", "roc_auc"), 1)),
    rf"comparison: critical-difference diagram: {SECONDS}",
    rf"done in {SECONDS}",
]  # fmt: skip


@pytest.mark.slow
def test_command_reports_its_progress_per_stage_not_per_pair(tmp_path, capsys):
    csv = write_runs(tmp_path / "four.csv", models_table(4))
    assert main(["stats", str(csv), "--out", str(tmp_path / "four"), "--resamples", "50"]) == 0
    progress = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("written ")]
    assert len(progress) == len(PROGRESS), progress
    for line, pattern in zip(progress, PROGRESS):
        assert re.fullmatch(pattern, line), (line, pattern)
    # Seven models (21 pairs): as many lines, with other counts.
    csv = write_runs(tmp_path / "seven.csv", models_table(7))
    assert main(["stats", str(csv), "--out", str(tmp_path / "seven"), "--resamples", "50"]) == 0
    progress = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("written ")]
    assert len(progress) == len(PROGRESS)
    assert "tests: accuracy (metric 1 of 3), 21 model pairs: " in "\n".join(progress)


def test_the_workflow_rule_logs_the_same_progress(tmp_path):
    logged = []
    write_stats(long_table(models_table(4)), {"tests": tmp_path / "tests.csv"}, n_resamples=50, log=logged.append)
    assert [re.sub(SECONDS, "S", line) for line in logged] == [
        "stats: 4 models (6 pairs), 3 rate metrics, 50 bootstrap resamples",
        "tests: accuracy (metric 1 of 3), 6 model pairs: S", "tests: recall (metric 2 of 3), 6 model pairs: S",
        "tests: roc_auc (metric 3 of 3), 6 model pairs: S", "summaries: 4 models x 7 metrics, bootstrap CIs: S",
        "tables and findings: S",
    ]  # fmt: skip


def test_bootstrap_of_many_samples_equals_one_at_a_time():
    from ichseq.analysis.stats import bootstrap_mean_cis

    rng = np.random.default_rng(7)
    samples = [np.round(rng.uniform(0.5, 1.0, n), 3) for n in (10, 10, 3, 10, 2, 7, 10, 3)]
    samples += [np.full(10, 0.8), np.array([0.5, 0.5, 0.5, 0.9]), np.array([0.7]), np.array([]),
                np.round(rng.normal(0, 0.1, 10), 12)]  # fmt: skip
    for seed, n_resamples in ((0, FAST), (3, 1000)):
        expected = [bootstrap_mean_ci(x, n_resamples=n_resamples, seed=seed) for x in samples]
        got = bootstrap_mean_cis(samples, n_resamples=n_resamples, seed=seed)
        # Identical, not merely close: the numbers in the tables must not change.
        assert [tuple(map(repr, ci)) for ci in got] == [tuple(map(repr, ci)) for ci in expected]


def signed_rank_cases() -> list[np.ndarray]:
    """Paired differences of every kind Wilcoxon meets: ties, zeros, both, neither; 2 to 60 pairs."""
    rng = np.random.default_rng(11)
    cases = []
    for n in (2, 3, 5, 8, 10, 14, 20, 60):
        cases.append(np.round(rng.normal(0.02, 0.05, n), 12))  # no ties, no zero
        cases.append(np.round(rng.integers(-4, 5, n) / 40, 12))  # rates of 40 patients: ties and zeros
        cases.append(np.round(rng.integers(1, 4, n) / 20, 12))  # ties, one sign
    # 13: the most differences scipy's permutation p-value takes (2**13 sign patterns, seconds in scipy).
    cases.append(np.round(rng.integers(-4, 5, 13) / 40, 12))
    return cases + [np.array([0.1, 0.1, 0.1, 0.1, 0.1]), np.array([0.0, 0.0, 0.05]), np.array([-0.025, 0.025])]


def test_signed_rank_test_equals_scipy_and_pingouin():
    from ichseq.analysis.stats import wilcoxon_signed_rank

    for diff in signed_rank_cases():
        if not diff.any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's note that ties or zeros make its exact p a permutation p
            expected = sps.wilcoxon(diff)
        statistic, p_value, rbc = wilcoxon_signed_rank(diff)
        # Identical, not merely close: the numbers in the tables must not change.
        assert (repr(statistic), repr(p_value)) == (repr(float(expected.statistic)), repr(float(expected.pvalue))), diff
        assert repr(rbc) == repr(float(pg.wilcoxon(diff)["RBC"].iloc[0])), diff
        # The form the Friedman post-hoc tests use: two paired samples.
        a = np.round(0.5 + np.abs(diff), 12)
        b = np.round(a - diff, 12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = sps.wilcoxon(a, b)
        assert wilcoxon_signed_rank(a, b)[:2] == (float(expected.statistic), float(expected.pvalue)), (a, b)


def test_rank_biserial_of_mann_whitney_equals_pingouin():
    from ichseq.analysis.stats import mann_whitney_u

    rng = np.random.default_rng(12)
    for n_a, n_b in ((2, 2), (5, 3), (10, 10), (7, 12)):
        for a, b in ((rng.normal(0.8, 0.05, n_a), rng.normal(0.78, 0.05, n_b)),
                     (rng.integers(30, 36, n_a) / 40, rng.integers(29, 36, n_b) / 40)):  # fmt: skip
            u, p, rbc = mann_whitney_u(a, b)
            expected = pg.mwu(a, b, alternative="two-sided")
            assert (u, p) == (float(expected["U_val"].iloc[0]), float(expected["p_val"].iloc[0]))
            assert repr(rbc) == repr(float(expected["RBC"].iloc[0]))
