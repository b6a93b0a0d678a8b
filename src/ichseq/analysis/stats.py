"""Statistical comparison of models over replicates: the study's protocol and a paired one.

Input is a long table ``model,replicate,metric,value`` -- one row per metric of every run's
``metrics.json`` -- where an empty value is an *undefined* metric (``None`` in
:func:`ichseq.metrics.binary_metrics`, e.g. precision of a model that predicted no positive).
The confusion counts ``tn, fp, fn, tp, n_test`` are averaged into mean confusion matrices;
every other metric is a *rate metric* and is tested.

The study's protocol, for every rate metric:

* Shapiro--Wilk per model (undefined for fewer than 3 values or values that are all equal);
* Levene's test, median-centred (Brown--Forsythe), per model pair;
* Student's t when both samples pass Shapiro--Wilk (p >= alpha) and Levene (p >= alpha),
  otherwise Welch's t -- exactly one of ``student_t`` / ``welch_t`` per pair and metric --
  with Cohen's d (pooled SD, :func:`pingouin.compute_effsize`) and the power of that test at
  ``alpha`` (:class:`statsmodels.stats.power.TTestIndPower` with the test's own degrees of
  freedom; for Welch this is the usual approximation, exact for equal group sizes). The
  study computed its power at alpha 0.5 while testing at 0.05; here the power uses the
  test's alpha unless ``power_alpha`` is given (then every table and the findings say so);
* Mann--Whitney U (two-sided) with the rank-biserial correlation;
* min/max, means and mean confusion matrices per model.

Only the rate metrics are needed: a table of another study's published per-run results
(say accuracy, precision and recall) is compared the same way. The mean confusion matrices
need the counts ``tn, fp, fn, tp``; without them they are skipped, with one line saying why
in the log and in place of Table IX. A test that lacks data (Shapiro--Wilk with fewer than 3
values, any test with fewer than 2, Levene when each sample's deviations from its median are
all equal, as with 2 values) is reported as undefined, with the reason in ``note``.

Beyond the study, because every model of replicate ``r`` is trained and tested on the same
split, model pairs are also compared *paired by replicate*: paired t with Cohen's d_z and
Wilcoxon signed-rank with the matched-pairs rank-biserial correlation (only replicates that
have a value for both models after the undefined-value policy are paired).

Undefined values (``undefined``): ``drop`` (default) removes them -- from one model's sample
for the unpaired tests, the whole replicate for the paired ones; ``zero`` counts them as 0,
as the study did. Replicates absent from the table are never invented.

Holm correction (``p_holm`` in ``tests.csv``): a *family* is one comparison test over all
rate metrics and all model pairs -- with two models that is "this test, this pair, every
metric"; with more models the pairs join the same family. Student's and Welch's t form one
family (the t-test of each pair/metric is whichever of them was chosen). Shapiro--Wilk and
Levene are assumption checks whose raw p-value drives the Student/Welch choice; they get no
``p_holm``. Undefined p-values do not count towards a family's size.

Bootstrap 95% confidence intervals (:func:`scipy.stats.bootstrap`, BCa, falling back to the
percentile method when BCa is degenerate, e.g. all values equal -> ``(v, v)``) are given for
each model's mean (``summary.csv``) and for the paired mean difference ``a - b``
(``paired_t`` rows of ``tests.csv``). Every interval is drawn with a fresh
``numpy.random.default_rng(seed)``, so it does not depend on which other models or metrics
are in the table.

Sign conventions: every effect size and difference is ``model_a`` minus ``model_b`` --
positive when ``model_a`` scores higher.
"""

from __future__ import annotations

import gc
import html
import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from tabulate import tabulate

from . import htmlpage
from .errors import ConfigError, DataError
from .io import write_csv_atomic, write_text_atomic

#: Columns the runs table must have.
RUN_COLUMNS = ("model", "replicate", "metric", "value")
#: Metrics that are counts: averaged into confusion matrices, never tested.
COUNT_METRICS = ("tn", "fp", "fn", "tp", "n_test")
#: The counts a mean confusion matrix is made of.
CONFUSION_COUNTS = ("tn", "fp", "fn", "tp")
#: Rate metrics in report order (others follow in order of first appearance).
RATE_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "balanced_accuracy", "roc_auc")
UNDEFINED_POLICIES = ("drop", "zero")
#: Values of the ``test`` column of ``tests.csv``.
TESTS = ("shapiro", "levene", "student_t", "welch_t", "mann_whitney_u", "paired_t", "wilcoxon")
TEST_COLUMNS = (
    "metric", "test", "model_a", "model_b", "n_a", "n_b", "mean_a", "mean_b", "statistic", "df",
    "p_value", "p_holm", "effect_size", "effect_size_name", "power", "ci_low", "ci_high", "note",
)  # fmt: skip
SUMMARY_COLUMNS = (
    "model", "metric", "n", "n_undefined", "mean", "sd", "median", "min", "max", "ci_low", "ci_high", "ci_method",
)  # fmt: skip
#: Holm families: tests not listed (the assumption checks) get no p_holm.
HOLM_FAMILY = {
    "student_t": "t-test",
    "welch_t": "t-test",
    "mann_whitney_u": "Mann-Whitney U",
    "paired_t": "paired t",
    "wilcoxon": "Wilcoxon",
}
#: Cells that mean "undefined" in the CSV (case-insensitive), besides the empty cell.
_UNDEFINED_CELLS = {"", "nan", "na", "null", "none"}
_POLICY_TEXT = {
    "drop": "undefined values dropped (paired tests drop the replicate from both models)",
    "zero": "undefined values counted as 0 (as in the study)",
}
NAN = float("nan")
#: What :func:`run_stats` and :func:`write_stats` write: output key -> file name under ``--out``.
OUTPUT_NAMES = {
    "tests": "tests.csv",
    "summary": "summary.csv",
    "confusion": "confusion.csv",
    "tables_md": "tables.md",
    "tables_tex": "tables.tex",
    "tables_html": "tables.html",
    "summary_md": "summary.md",
    "findings_html": "findings.html",
}


# ----------------------------------------------------------------------------- input


def _parse_value(value) -> float:
    """A cell as float (NaN when undefined); ``ValueError`` when it is not a number."""
    if value is None:
        return NAN
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(repr(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
    else:
        text = str(value).strip()
        if text.lower() in _UNDEFINED_CELLS:
            return NAN
        number = float(text)  # ValueError for "abc"
    if math.isinf(number):
        raise ValueError(repr(value))
    return number


def validate_runs(df: pd.DataFrame, source: str = "runs table", *, csv_lines: bool = False) -> pd.DataFrame:
    """Check and normalise a runs table; ``DataError`` naming ``source`` on bad input.

    Returns a new frame with string ``model``/``metric``, ``replicate`` as int when every
    replicate is an integer (else string) and float ``value`` (NaN = undefined). Problems are
    located by row position, or by CSV line number (header = line 1) when ``csv_lines``.
    """

    def where(i: int) -> str:
        return f"line {i + 2}" if csv_lines else f"row {i}"

    missing = [c for c in RUN_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)} (expected {','.join(RUN_COLUMNS)})"
        )
    if len(df) == 0:
        raise DataError(f"{source}: no rows")
    out = pd.DataFrame(index=range(len(df)))
    for col in ("model", "replicate", "metric"):
        raw = df[col].tolist()
        texts = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip() for v in raw]
        empty = [i for i, t in enumerate(texts) if not t]
        if empty:
            raise DataError(f"{source}: empty {col} at {where(empty[0])}")
        out[col] = texts
    values = []
    for i, v in enumerate(df["value"].tolist()):
        try:
            values.append(_parse_value(v))
        except (TypeError, ValueError):
            raise DataError(
                f"{source}: column value: {v!r} at {where(i)} is not a number "
                f"(model {out.at[i, 'model']}, replicate {out.at[i, 'replicate']}, metric {out.at[i, 'metric']})"
            ) from None
    out["value"] = np.asarray(values, dtype=np.float64)
    try:
        out["replicate"] = [int(r) for r in out["replicate"]]
    except ValueError:
        pass  # keep string replicate ids
    dup = out.duplicated(["model", "replicate", "metric"], keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(
            f"{source}: duplicate row for model {out.at[i, 'model']}, replicate "
            f"{out.at[i, 'replicate']}, metric {out.at[i, 'metric']} ({where(i)})"
        )
    models = list(dict.fromkeys(out["model"]))
    if len(models) < 2:
        raise DataError(f"{source}: needs at least 2 models to compare, found {len(models)} ({', '.join(models)})")
    if not _rate_metrics(out):
        raise DataError(f"{source}: no rate metric to compare (only {', '.join(sorted(set(out['metric'])))})")
    out.attrs["source"] = source
    return out


def read_runs(path: str | Path) -> pd.DataFrame:
    """Read and validate a ``model,replicate,metric,value`` CSV (empty value = undefined)."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CSV file") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file, expected columns {','.join(RUN_COLUMNS)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    return validate_runs(df, source=str(path), csv_lines=True)


def _rate_metrics(runs: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(runs["metric"]))
    known = [m for m in RATE_METRICS if m in present]
    return known + [m for m in present if m not in RATE_METRICS and m not in COUNT_METRICS]


def _check_alpha(name: str, alpha) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"{name} must be a number in (0, 1); got {alpha!r}")


def _check_options(alpha, undefined, seed, n_resamples, power_alpha=None) -> None:
    _check_alpha("alpha", alpha)
    if power_alpha is not None:
        _check_alpha("power_alpha", power_alpha)
    if undefined not in UNDEFINED_POLICIES:
        raise ConfigError(f"undefined must be one of {', '.join(UNDEFINED_POLICIES)}; got {undefined!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0; got {seed!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ConfigError(f"n_resamples must be an integer >= 1; got {n_resamples!r}")


def _values(runs: pd.DataFrame, model: str, metric: str, undefined: str) -> pd.Series:
    """One model's values of one metric, indexed by replicate, after the undefined policy."""
    rows = runs[(runs["model"] == model) & (runs["metric"] == metric)]
    series = pd.Series(rows["value"].to_numpy(dtype=np.float64), index=rows["replicate"].to_numpy())
    series = series.sort_index()
    return series.dropna() if undefined == "drop" else series.fillna(0.0)


# ----------------------------------------------------------------------------- primitives


def bootstrap_mean_ci(
    values, n_resamples: int = 9999, seed: int = 0, confidence_level: float = 0.95
) -> tuple[float, float, str]:
    """``(low, high, method)`` bootstrap CI of the mean of ``values`` (NaN, NaN, "" if n < 2).

    BCa via :func:`scipy.stats.bootstrap` with ``numpy.random.default_rng(seed)``; when BCa is
    degenerate (all values equal, or too few distinct values) the percentile method is used
    with a fresh generator of the same seed -- for equal values that is ``(v, v)``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return NAN, NAN, ""
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = sps.bootstrap(
                (x,),
                np.mean,
                n_resamples=int(n_resamples),
                confidence_level=confidence_level,
                method=method,
                rng=np.random.default_rng(seed),
            ).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            return float(ci.low), float(ci.high), method
    return NAN, NAN, ""  # pragma: no cover - percentile of finite values is finite


def _quiet(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


def _row(metric, test, model_a, model_b, a, b, **fields) -> dict:
    row = dict.fromkeys(TEST_COLUMNS, NAN)
    row.update(
        metric=metric,
        test=test,
        model_a=model_a,
        model_b=model_b,
        n_a=len(a),
        n_b=None if b is None else len(b),
        mean_a=float(np.mean(a)) if len(a) else NAN,
        mean_b=NAN if b is None or not len(b) else float(np.mean(b)),
        effect_size_name="",
        note="",
    )
    row.update(fields)
    return row


#: Decimals kept in paired differences (see :func:`_differences`).
DIFF_DECIMALS = 12


def _constant(x: np.ndarray) -> bool:
    """All values equal, up to floating-point noise (``0.1 + 0.2`` vs ``0.3``)."""
    return bool(x.size) and float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.abs(x).max()))


def _differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b`` rounded to :data:`DIFF_DECIMALS` decimals.

    Metrics are ratios of small counts, so two models' differences are often equal in exact
    arithmetic but not in floating point (``0.8 - 0.7 != 0.5 - 0.4``). Rounding removes that
    noise so that it neither breaks Wilcoxon ties nor hides a zero or constant difference.
    """
    return np.round(a - b, DIFF_DECIMALS)


def _shapiro(x: np.ndarray) -> tuple[float, float, str]:
    if x.size < 3:
        return NAN, NAN, f"n={x.size} < 3: Shapiro-Wilk undefined"
    if _constant(x):
        return NAN, NAN, "all values equal: Shapiro-Wilk undefined"
    res = _quiet(sps.shapiro, x)
    return float(res.statistic), float(res.pvalue), ""


def _levene(a: np.ndarray, b: np.ndarray) -> tuple[float, float, str]:
    if a.size < 2 or b.size < 2:
        return NAN, NAN, f"n={min(a.size, b.size)} < 2: Levene undefined"
    dev_a, dev_b = np.abs(a - np.median(a)), np.abs(b - np.median(b))
    if _constant(dev_a) and _constant(dev_b) and (dev_a.any() or dev_b.any()):
        # Levene's W divides by the spread of these deviations within the samples: with none
        # it is infinite (or floating-point noise), not evidence of unequal variances.
        return NAN, NAN, (
            "deviations from the median equal within each sample (always so for 2 values): Levene undefined"
        )
    res = _quiet(sps.levene, a, b, center="median")
    if not np.isfinite(res.pvalue):
        return NAN, NAN, "no spread around the median in either sample: Levene undefined"
    return float(res.statistic), float(res.pvalue), ""


def _fmt_alpha(alpha: float) -> str:
    return f"{alpha:g}"


def _independent_t(metric, ma, mb, a, b, alpha, sh_a, sh_b, lev, power_alpha) -> dict:
    """Student's or Welch's t by the study's rule, with Cohen's d and power at ``power_alpha``."""
    al = _fmt_alpha(alpha)
    reasons = []
    for model, p in ((ma, sh_a), (mb, sh_b)):
        if not np.isfinite(p):
            reasons.append(f"shapiro undefined for {model}")
        elif p < alpha:
            reasons.append(f"shapiro p<{al} for {model}")
    if not np.isfinite(lev):
        reasons.append("levene undefined")
    elif lev < alpha:
        reasons.append(f"levene p<{al}")
    test = "welch_t" if reasons else "student_t"
    why = ", ".join(reasons) if reasons else f"shapiro p>={al} for both models and levene p>={al}"
    note = f"{test}: {why}"
    if a.size < 2 or b.size < 2:
        return _row(metric, test, ma, mb, a, b, note=f"{note}; n < 2: t-test undefined")
    if _constant(a) and _constant(b):
        return _row(metric, test, ma, mb, a, b, note=f"{note}; no variance in either sample: t-test undefined")
    res = _quiet(sps.ttest_ind, a, b, equal_var=(test == "student_t"))
    d = float(_quiet(pg.compute_effsize, a, b, paired=False, eftype="cohen"))
    power = float(
        TTestIndPower().power(
            effect_size=abs(d), nobs1=a.size, alpha=power_alpha, ratio=b.size / a.size, df=float(res.df)
        )
    )
    pal = _fmt_alpha(power_alpha)
    note += f"; d: pingouin.compute_effsize (pooled SD); power: statsmodels TTestIndPower at alpha={pal}"
    if test == "welch_t":
        note += " with Welch df"
    return _row(
        metric, test, ma, mb, a, b,
        statistic=float(res.statistic), df=float(res.df), p_value=float(res.pvalue),
        effect_size=d, effect_size_name="cohen_d", power=power, note=note,
    )  # fmt: skip


def _mann_whitney(metric, ma, mb, a, b) -> dict:
    if a.size < 1 or b.size < 1:
        return _row(metric, "mann_whitney_u", ma, mb, a, b, note="a sample is empty: Mann-Whitney U undefined")
    res = _quiet(sps.mannwhitneyu, a, b, alternative="two-sided")
    rbc = float(_quiet(pg.mwu, a, b, alternative="two-sided")["RBC"].iloc[0])
    return _row(
        metric, "mann_whitney_u", ma, mb, a, b,
        statistic=float(res.statistic), p_value=float(res.pvalue), effect_size=rbc,
        effect_size_name="rank_biserial", note="U of model_a; two-sided; rank-biserial r via pingouin.mwu",
    )  # fmt: skip


def _paired(metric, ma, mb, sa: pd.Series, sb: pd.Series, power_alpha, seed, n_resamples) -> list[dict]:
    """Paired t (Cohen's d_z) and Wilcoxon signed-rank over the replicates both models have.

    Cohen's d_z is the mean of the paired differences divided by their standard deviation
    (ddof 1; :func:`pingouin.compute_effsize` with ``eftype="cohen_dz"``), i.e. ``t / sqrt(n)``.
    Wilcoxon runs on the differences rounded by :func:`_differences` (zero differences
    dropped, scipy's default ``zero_method="wilcox"``). Both are undefined with fewer than 2
    pairs; the paired t also when the differences are all equal (their SD is 0), Wilcoxon
    when they are all 0.
    """
    common = sa.index.intersection(sb.index)
    a = sa.loc[common].to_numpy()
    b = sb.loc[common].to_numpy()
    paired = f"paired over {len(common)} replicates present for both models ({ma}: {len(sa)}, {mb}: {len(sb)})"
    al = _fmt_alpha(power_alpha)
    if len(common) < 2:
        undefined = f"{paired}; fewer than 2 pairs: undefined"
        return [
            _row(metric, "paired_t", ma, mb, a, b, note=undefined),
            _row(metric, "wilcoxon", ma, mb, a, b, note=undefined),
        ]
    diff = _differences(a, b)
    low, high, method = bootstrap_mean_ci(diff, n_resamples=n_resamples, seed=seed)
    ci = f"ci: bootstrap {method} 95% of mean diff ({n_resamples} resamples, seed {seed})"
    if _constant(diff):
        why = "all paired differences are 0" if not diff.any() else "all paired differences are equal (sd 0)"
        t_row = _row(metric, "paired_t", ma, mb, a, b, ci_low=low, ci_high=high,
                     note=f"{paired}; {ci}; {why}: paired t undefined")  # fmt: skip
    else:
        res = _quiet(sps.ttest_rel, a, b)
        dz = float(_quiet(pg.compute_effsize, a, b, paired=True, eftype="cohen_dz"))
        power = float(TTestPower().power(effect_size=abs(dz), nobs=len(common), alpha=power_alpha))
        t_note = (f"{paired}; d_z = mean diff / sd of diffs (pingouin cohen_dz); "
                  f"power: statsmodels TTestPower at alpha={al}; {ci}")  # fmt: skip
        t_row = _row(
            metric, "paired_t", ma, mb, a, b,
            statistic=float(res.statistic), df=float(res.df), p_value=float(res.pvalue),
            effect_size=dz, effect_size_name="cohen_dz", power=power, ci_low=low, ci_high=high, note=t_note,
        )  # fmt: skip
    if not diff.any():
        return [t_row, _row(metric, "wilcoxon", ma, mb, a, b,
                            note=f"{paired}; all paired differences are 0: Wilcoxon undefined")]  # fmt: skip
    wres = _quiet(sps.wilcoxon, diff)
    rbc = float(_quiet(pg.wilcoxon, diff)["RBC"].iloc[0])
    zeros = int(np.sum(diff == 0))
    w_note = (f"{paired}; two-sided on the differences, {zeros} zero difference(s) dropped; "
              "matched-pairs rank-biserial r via pingouin.wilcoxon")  # fmt: skip
    w_row = _row(
        metric, "wilcoxon", ma, mb, a, b,
        statistic=float(wres.statistic), p_value=float(wres.pvalue), effect_size=rbc,
        effect_size_name="matched_pairs_rank_biserial", note=w_note,
    )  # fmt: skip
    return [t_row, w_row]


def holm_adjust(tests: pd.DataFrame, alpha: float = 0.05) -> pd.Series:
    """Holm-adjusted p-values of ``tests`` (NaN for assumption checks and undefined p).

    One family per comparison test (:data:`HOLM_FAMILY`: Student's and Welch's t together)
    over every metric and model pair in ``tests``.
    """
    adjusted = pd.Series(NAN, index=tests.index, dtype=np.float64)
    family = tests["test"].map(HOLM_FAMILY)
    for _, group in tests[family.notna()].groupby(family[family.notna()]):
        p = group["p_value"].astype(np.float64)
        p = p[np.isfinite(p)]
        if len(p):
            adjusted.loc[p.index] = _holm(p.to_numpy(), alpha)
    return adjusted


def _holm(pvalues: np.ndarray, alpha: float) -> np.ndarray:
    """``multipletests(method="holm")`` adjusted p-values.

    statsmodels' Holm branch ends with ``gc.collect()``, a full collection that takes over
    0.1 s per call once pandas, scipy and pingouin are loaded; freezing the current heap for
    the call makes that collection cheap and changes nothing else.
    """
    gc.freeze()
    try:
        return multipletests(pvalues, alpha=alpha, method="holm")[1]
    finally:
        gc.unfreeze()


# ----------------------------------------------------------------------------- tables


def compare_models(
    runs: pd.DataFrame,
    alpha: float = 0.05,
    undefined: str = "drop",
    seed: int = 0,
    n_resamples: int = 9999,
    power_alpha: float | None = None,
) -> pd.DataFrame:
    """The tidy ``tests.csv`` table (columns :data:`TEST_COLUMNS`) of a validated runs table.

    ``power`` is computed at ``power_alpha`` (default: ``alpha``, the level of the tests).
    """
    power_alpha = alpha if power_alpha is None else power_alpha
    models = list(dict.fromkeys(runs["model"]))
    rows = []
    for metric in _rate_metrics(runs):
        series = {m: _values(runs, m, metric, undefined) for m in models}
        shapiro = {}
        for m in models:
            x = series[m].to_numpy()
            w, p, note = _shapiro(x)
            shapiro[m] = p
            rows.append(_row(metric, "shapiro", m, "", x, None, statistic=w, p_value=p, note=note))
        for ma, mb in itertools.combinations(models, 2):
            a, b = series[ma].to_numpy(), series[mb].to_numpy()
            w, lev, note = _levene(a, b)
            rows.append(_row(metric, "levene", ma, mb, a, b, statistic=w, p_value=lev, note=note or "center=median"))
            rows.append(_independent_t(metric, ma, mb, a, b, alpha, shapiro[ma], shapiro[mb], lev, power_alpha))
            rows.append(_mann_whitney(metric, ma, mb, a, b))
            rows.extend(_paired(metric, ma, mb, series[ma], series[mb], power_alpha, seed, n_resamples))
    tests = pd.DataFrame(rows, columns=list(TEST_COLUMNS))
    tests["p_holm"] = holm_adjust(tests, alpha)
    for col in ("n_a", "n_b"):
        tests[col] = tests[col].astype("Int64")
    return tests


def summarise(runs: pd.DataFrame, undefined: str = "drop", seed: int = 0, n_resamples: int = 9999) -> pd.DataFrame:
    """``summary.csv``: per model and metric (rate metrics first, then counts); sd has ddof 1."""
    models = list(dict.fromkeys(runs["model"]))
    metrics = _rate_metrics(runs) + [m for m in COUNT_METRICS if m in set(runs["metric"])]
    rows = []
    for metric in metrics:
        for model in models:
            raw = runs[(runs["model"] == model) & (runs["metric"] == metric)]["value"]
            x = _values(runs, model, metric, undefined).to_numpy()
            low, high, method = bootstrap_mean_ci(x, n_resamples=n_resamples, seed=seed)
            have = x.size > 0
            rows.append(
                {
                    "model": model,
                    "metric": metric,
                    "n": int(x.size),
                    "n_undefined": int(raw.isna().sum()),
                    "mean": float(np.mean(x)) if have else NAN,
                    "sd": float(np.std(x, ddof=1)) if x.size > 1 else NAN,
                    "median": float(np.median(x)) if have else NAN,
                    "min": float(np.min(x)) if have else NAN,
                    "max": float(np.max(x)) if have else NAN,
                    "ci_low": low,
                    "ci_high": high,
                    "ci_method": method,
                }
            )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def confusion_skip_reason(runs: pd.DataFrame) -> str | None:
    """Why the mean confusion matrices cannot be computed from ``runs`` (None when they can)."""
    absent = [c for c in CONFUSION_COUNTS if c not in set(runs["metric"])]
    if not absent:
        return None
    return f"no rows for {', '.join(absent)}"


def mean_confusion(runs: pd.DataFrame, undefined: str = "drop") -> pd.DataFrame:
    """``confusion.csv``: per model the mean and sd (ddof 1) of tn, fp, fn, tp over replicates.

    ``n_replicates`` counts the replicates that have all four counts after the policy; the
    mean of a count absent from the table is NaN.
    """
    rows = []
    for model in dict.fromkeys(runs["model"]):
        row = {"model": model}
        have = None
        for count in ("tn", "fp", "fn", "tp"):
            x = _values(runs, model, count, undefined)
            have = set(x.index) if have is None else have & set(x.index)
            row[f"{count}_mean"] = float(x.mean()) if len(x) else NAN
            row[f"{count}_sd"] = float(x.std(ddof=1)) if len(x) > 1 else NAN
        row["n_replicates"] = len(have)
        rows.append(row)
    columns = ["model", "n_replicates"] + [f"{c}_{s}" for c in ("tn", "fp", "fn", "tp") for s in ("mean", "sd")]
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------- formatting


def format_p(p: float) -> str:
    """3 significant digits, ``<0.001`` below 0.001, ``n/a`` when undefined."""
    if p is None or not np.isfinite(p):
        return "n/a"
    if p < 0.001:
        return "<0.001"
    return f"{p:#.3g}"


def _num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "n/a"
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _int(x) -> str:
    return "n/a" if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)) else str(int(x))


def _power_differs(alpha: float, power_alpha: float | None) -> bool:
    return power_alpha is not None and power_alpha != alpha


def policy_line(undefined: str, alpha: float, markdown: bool = True, power_alpha: float | None = None) -> str:
    """The line printed under every table: undefined-value policy, alpha, and the power's
    alpha when it is not the tests' one."""
    text = f"Undefined values: {undefined} -- {_POLICY_TEXT[undefined]}."
    power = _power_differs(alpha, power_alpha)
    if markdown:
        extra = f"; power at α = {_fmt_alpha(power_alpha)}" if power else ""
        return f"*{text.replace(' -- ', ' — ')} α = {_fmt_alpha(alpha)}{extra}.*"
    extra = f"; power at $\\alpha = {_fmt_alpha(power_alpha)}$" if power else ""
    return f"{text} $\\alpha = {_fmt_alpha(alpha)}${extra}."


def _md_table(headers, rows, align) -> str:
    cells = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    return tabulate(cells, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)


def _tex_table(headers, rows, align) -> str:
    return tabulate(rows, headers=headers, tablefmt="latex_booktabs", disable_numparse=True, colalign=align)


def _holm_text(tests: pd.DataFrame) -> str:
    n_metrics = tests["metric"].nunique()
    n_pairs = len(tests[tests["test"] != "shapiro"][["model_a", "model_b"]].drop_duplicates())
    across = f"{n_metrics} metric{'s' if n_metrics != 1 else ''}" + (f" x {n_pairs} model pairs" if n_pairs > 1 else "")
    return f"Holm: within each test across {across}."


def _power_note(alpha: float, power_alpha: float | None) -> str:
    if _power_differs(alpha, power_alpha):
        pal, al = _fmt_alpha(power_alpha), _fmt_alpha(alpha)
        return f"Power of the test used at alpha = {pal}, not the tests' alpha = {al}."
    return f"Power of the test used at alpha = {_fmt_alpha(alpha)}."


def _confusion_skipped_line(reason: str) -> str:
    return f"Mean confusion matrices skipped: the runs table has {reason}, which they need."


class _Section(NamedTuple):
    title: str
    headers: list
    rows: list
    align: tuple
    extra: str  # note after the policy line
    skipped: str = ""  # the line that replaces a table whose inputs are missing


def _sections(tests, summary, confusion, alpha: float, power_alpha: float | None = None):
    """Every table as a :class:`_Section`, in the study's order. ``confusion`` is the reason
    string instead of a table when the mean confusion matrices were skipped."""
    t = tests
    holm = _holm_text(tests)
    by = lambda name: t[t["test"] == name]  # noqa: E731
    pair = lambda r: f"{r.model_a} vs {r.model_b}"  # noqa: E731
    out = []
    out.append(_Section(
        "Table I. Shapiro-Wilk test of normality",
        ["metric", "model", "n", "W", "p"],
        [[r.metric, r.model_a, _int(r.n_a), _num(r.statistic), format_p(r.p_value)]
         for r in by("shapiro").itertuples()],
        ("left", "left", "right", "right", "right"), "",
    ))  # fmt: skip
    out.append(_Section(
        "Table II. Levene's test of equal variances (median-centred)",
        ["metric", "models", "W", "p"],
        [[r.metric, pair(r), _num(r.statistic), format_p(r.p_value)] for r in by("levene").itertuples()],
        ("left", "left", "right", "right"), "",
    ))  # fmt: skip
    ttests = t[t["test"].isin(["student_t", "welch_t"])]
    names = {"student_t": "Student", "welch_t": "Welch"}
    out.append(_Section(
        "Table III. t-tests (Student's if both samples pass Shapiro-Wilk and Levene, else Welch's)",
        ["metric", "models", "test", "t", "df", "p", "p Holm", "Cohen's d", "power"],
        [[r.metric, pair(r), names[r.test], _num(r.statistic), _num(r.df, 1), format_p(r.p_value),
          format_p(r.p_holm), _num(r.effect_size), _num(r.power)] for r in ttests.itertuples()],
        ("left", "left", "left") + ("right",) * 6, f"{_power_note(alpha, power_alpha)} {holm}",
    ))  # fmt: skip
    out.append(_Section(
        "Table IV. Mann-Whitney U test (two-sided)",
        ["metric", "models", "U", "p", "p Holm", "rank-biserial r"],
        [[r.metric, pair(r), _num(r.statistic, 1), format_p(r.p_value), format_p(r.p_holm), _num(r.effect_size)]
         for r in by("mann_whitney_u").itertuples()],
        ("left", "left") + ("right",) * 4, holm,
    ))  # fmt: skip
    rates = summary[~summary["metric"].isin(COUNT_METRICS)]
    out.append(_Section(
        "Table V. Minimum and maximum over replicates",
        ["metric", "model", "n", "min", "max"],
        [[r.metric, r.model, _int(r.n), _num(r.min), _num(r.max)] for r in rates.itertuples()],
        ("left", "left", "right", "right", "right"), "",
    ))  # fmt: skip
    out.append(_Section(
        "Table VI. Means over replicates",
        ["metric", "model", "n", "undefined", "mean", "sd", "median"],
        [[r.metric, r.model, _int(r.n), _int(r.n_undefined), _num(r.mean), _num(r.sd), _num(r.median)]
         for r in rates.itertuples()],
        ("left", "left") + ("right",) * 5, "sd with ddof 1.",
    ))  # fmt: skip
    paired_t = by("paired_t").set_index(["metric", "model_a", "model_b"])
    rows = []
    for r in by("wilcoxon").itertuples():
        p = paired_t.loc[(r.metric, r.model_a, r.model_b)]
        rows.append([r.metric, pair(r), _int(r.n_a), _num(p.mean_a - p.mean_b), _num(p.statistic), format_p(p.p_value),
                     format_p(p.p_holm), _num(p.effect_size), _num(r.statistic, 1), format_p(r.p_value),
                     format_p(r.p_holm), _num(r.effect_size)])  # fmt: skip
    out.append(_Section(
        "Table VII. Paired tests by replicate (paired t and Wilcoxon signed-rank)",
        ["metric", "models", "pairs", "mean diff", "t", "p", "p Holm", "d_z", "Wilcoxon W", "p", "p Holm", "matched r"],
        rows, ("left", "left") + ("right",) * 10,
        "Differences are first model minus second; only replicates present for both are paired. " + holm,
    ))  # fmt: skip
    rows = [[r.metric, r.model, _num(r.mean), f"[{_num(r.ci_low)}, {_num(r.ci_high)}]", r.ci_method or "n/a"]
            for r in rates.itertuples()]  # fmt: skip
    rows += [[r.metric, f"{r.model_a} - {r.model_b} (paired)", _num(r.mean_a - r.mean_b),
              f"[{_num(r.ci_low)}, {_num(r.ci_high)}]", _ci_method(r.note)]
             for r in by("paired_t").itertuples()]  # fmt: skip
    out.append(_Section(
        "Table VIII. Bootstrap 95% confidence intervals of means and paired mean differences",
        ["metric", "model / difference", "estimate", "95% CI", "method"],
        rows, ("left", "left", "right", "right", "left"), "",
    ))  # fmt: skip
    skipped = isinstance(confusion, str)
    out.append(_Section(
        "Table IX. Mean confusion matrices over replicates",
        ["model", "replicates", "TN", "FP", "FN", "TP"],
        [] if skipped else
        [[r.model, _int(r.n_replicates)] + [f"{_num(getattr(r, c + '_mean'), 1)} ({_num(getattr(r, c + '_sd'), 1)})"
         for c in ("tn", "fp", "fn", "tp")] for r in confusion.itertuples()],
        ("left",) + ("right",) * 5, "Mean (sd) of the test-set counts.",
        _confusion_skipped_line(confusion) if skipped else "",
    ))  # fmt: skip
    return out


def _ci_method(note: str) -> str:
    for method in ("BCa", "percentile"):
        if f"bootstrap {method} " in note:
            return method
    return "n/a"


def _tex_escape(text: str) -> str:
    return "".join(
        {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}"}.get(c, c)
        for c in text
    ).replace("Shapiro-Wilk", "Shapiro--Wilk").replace("Mann-Whitney", "Mann--Whitney")


def render_tables(
    tests, summary, confusion, alpha: float, undefined: str, power_alpha: float | None = None,
    caveats: Sequence[str] = (),
) -> tuple[str, str]:
    """``(markdown, latex)`` of the study's tables, each followed by the policy/alpha line.

    ``confusion`` is the :func:`mean_confusion` table, or the reason it was skipped (a
    string), which then stands in place of Table IX. Each of ``caveats`` (e.g. a biased
    protocol) stands in bold above the tables.
    """
    md = ["# Statistical comparison of models", ""]
    tex = [
        "% ichseq stats: the study's tables. Needs \\usepackage{booktabs} in the preamble.",
        "",
    ]
    for caveat in caveats:
        md += [f"**Caveat: {caveat}**", ""]
        tex += [f"\\noindent\\textbf{{Caveat: {_tex_escape(caveat)}}}\\par", ""]
    policy_md = policy_line(undefined, alpha, markdown=True, power_alpha=power_alpha)
    policy_tex = policy_line(undefined, alpha, markdown=False, power_alpha=power_alpha)
    for title, headers, rows, align, extra, skipped in _sections(tests, summary, confusion, alpha, power_alpha):
        md += [f"## {title}", ""]
        caption = title.split(". ", 1)[1]
        tex += [f"% {title.split('. ', 1)[0]}", "\\begin{table}[htbp]", "\\centering"]
        tex += [f"\\caption{{{_tex_escape(caption)}}}"]
        if skipped:
            md += [f"*{skipped}*", ""]
            tex += [f"{{\\footnotesize {_tex_escape(skipped)}}}", "\\end{table}", ""]
            continue
        md += [_md_table(headers, rows, align) if rows else "(no rows)", ""]
        md += [policy_md + (f" {extra}" if extra else ""), ""]
        tex += [_tex_table(headers, rows, align) if rows else "(no rows)"]  # tabulate escapes cells
        tex += [f"\\par\\smallskip{{\\footnotesize {policy_tex}"
                + (f" {_tex_escape(extra)}" if extra else "") + "}", "\\end{table}", ""]  # fmt: skip
    return "\n".join(md), "\n".join(tex)


def render_tables_html(
    tests, summary, confusion, alpha: float, undefined: str, power_alpha: float | None = None,
    caveats: Sequence[str] = (),
) -> str:
    """The same tables as one self-contained HTML page, for the Snakemake report (which
    offers CSV and Markdown only as downloads)."""
    policy = policy_line(undefined, alpha, markdown=True, power_alpha=power_alpha).strip("*")
    parts = [htmlpage.caveat(f"Caveat: {caveat}") for caveat in caveats]
    for title, headers, rows, align, extra, skipped in _sections(tests, summary, confusion, alpha, power_alpha):
        parts.append(htmlpage.heading(title))
        if skipped:
            parts.append(htmlpage.note(skipped))
            continue
        parts.append(htmlpage.table(headers, rows, align) if rows else htmlpage.note("(no rows)"))
        parts.append(htmlpage.note(policy + (f" {extra}" if extra else "")))
    return htmlpage.page("Statistical comparison of models", parts)


def _p_is(label: str, p: float) -> str:
    text = format_p(p)
    return f"{label} {text[0]} {text[1:]}" if text.startswith("<") else f"{label} = {text}"


def render_findings(
    tests: pd.DataFrame,
    alpha: float,
    undefined: str,
    power_alpha: float | None = None,
    skipped: Sequence[str] = (),
    caveats: Sequence[str] = (),
) -> str:
    """``summary.md``: each of ``caveats`` in bold, then per metric and model pair the higher
    mean and the tests' verdicts; then the policy line and one line per ``skipped`` part (e.g.
    the confusion matrices)."""
    al = _fmt_alpha(alpha)
    power_label = f"power (α = {_fmt_alpha(power_alpha)})" if _power_differs(alpha, power_alpha) else "power"
    lines = ["# Findings", ""]
    for caveat in caveats:
        lines += [f"**Caveat: {caveat}**", ""]
    names = {"student_t": "Student's t-test", "welch_t": "Welch's t-test", "mann_whitney_u": "Mann-Whitney U test",
             "paired_t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}  # fmt: skip
    symbols = {"student_t": "t", "welch_t": "t", "mann_whitney_u": "U", "paired_t": "t", "wilcoxon": "W"}
    effects = {"cohen_d": "Cohen's d", "rank_biserial": "rank-biserial r", "cohen_dz": "Cohen's d_z",
               "matched_pairs_rank_biserial": "matched-pairs rank-biserial r"}  # fmt: skip

    def verdict(r, label: str) -> str:
        if not np.isfinite(r.p_value):
            return f"{label}: undefined ({r.note.split('; ')[-1]})"
        sig = np.isfinite(r.p_holm) and r.p_holm < alpha
        statistic = _num(r.statistic, 1 if symbols[r.test] in "UW" else 2)
        text = (f"{label}: {symbols[r.test]} = {statistic}, {_p_is('p', r.p_value)}, "
                f"{_p_is('Holm p', r.p_holm)}, {effects[r.effect_size_name]} = {_num(r.effect_size, 2)}")  # fmt: skip
        if r.test in ("student_t", "welch_t", "paired_t"):
            text += f", {power_label} = {_num(r.power, 2)}"
        return f"{text} — {'significant' if sig else 'not significant'} at α = {al} after Holm"

    comparisons = tests[tests["test"] != "shapiro"][["metric", "model_a", "model_b"]].drop_duplicates()
    for c in comparisons.itertuples():
        rows = tests[(tests["metric"] == c.metric) & (tests["model_a"] == c.model_a) & (tests["model_b"] == c.model_b)]
        get = {r.test: r for r in rows.itertuples()}
        t = get["student_t"] if "student_t" in get else get["welch_t"]
        ma, mb = t.mean_a, t.mean_b
        if not (np.isfinite(ma) and np.isfinite(mb)):
            undefined_models = [m for m, v in ((c.model_a, ma), (c.model_b, mb)) if not np.isfinite(v)]
            head = f"**{c.metric}**, {c.model_a} vs {c.model_b}: no value for {' and '.join(undefined_models)}."
        elif ma == mb:
            head = f"**{c.metric}**: {c.model_a} and {c.model_b} have the same mean ({_num(ma)})."
        else:
            hi, lo, vhi, vlo = (c.model_a, c.model_b, ma, mb) if ma > mb else (c.model_b, c.model_a, mb, ma)
            head = f"**{c.metric}**: {hi} has the higher mean ({_num(vhi)} vs {_num(vlo)} for {lo})."
        why = t.note.split("; ")[0].split(": ", 1)[1]
        pt = get["paired_t"]
        lines += [
            f"- {head}",
            f"  - {verdict(t, f'{names[t.test]} ({why})')}.",
            f"  - {verdict(get['mann_whitney_u'], names['mann_whitney_u'])}.",
            f"  - Paired by replicate ({_int(pt.n_a)} pair{'' if pt.n_a == 1 else 's'}): "
            f"{verdict(pt, names['paired_t'])}; "
            f"{verdict(get['wilcoxon'], names['wilcoxon'])}.",
        ]
    lines += ["", policy_line(undefined, alpha, markdown=True, power_alpha=power_alpha) + " " + _holm_text(tests), ""]
    for line in skipped:
        lines += [line, ""]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    # The findings use only **bold** for emphasis.
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def render_findings_html(markdown: str) -> str:
    """The findings (the Markdown of :func:`render_findings`: a heading, nested bullet lists,
    a paragraph) as a small self-contained HTML page, for the Snakemake report, which does
    not render Markdown."""
    body, depth, title = [], 0, "Findings"
    for line in markdown.splitlines():
        stripped = line.lstrip(" ")
        level = (len(line) - len(stripped)) // 2 + 1 if stripped.startswith("- ") else 0
        while depth > level:
            body.append("</li></ul>")
            depth -= 1
        if level:
            if depth == level:
                body.append("</li>")
            while depth < level:
                body.append("<ul>")
                depth += 1
            body.append(f"<li>{_inline_html(stripped[2:])}")
        elif stripped.startswith("# "):
            title = stripped[2:]
        elif stripped:
            body.append(f"<p>{_inline_html(stripped)}</p>")
    body += ["</li></ul>"] * depth
    return htmlpage.page(title, body)


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` atomically, ending with exactly one newline if it has none."""
    write_text_atomic(path, text if text.endswith("\n") else text + "\n")


# ----------------------------------------------------------------------------- entry point


def write_stats(
    runs: pd.DataFrame,
    outputs: Mapping[str, str | Path],
    alpha: float = 0.05,
    undefined: str = "drop",
    seed: int = 0,
    n_resamples: int = 9999,
    power_alpha: float | None = None,
    log: Callable[[str], None] = print,
    caveats: Sequence[str] = (),
) -> dict[str, Path]:
    """Compare every pair of models on every rate metric and write exactly ``outputs``.

    ``outputs`` maps keys of :data:`OUTPUT_NAMES` to the paths to write -- any subset, e.g.
    the outputs a Snakemake rule declares; nothing else is written. Each file is written
    atomically. ``confusion`` needs the counts tn, fp, fn, tp (``DataError`` otherwise);
    without them the tables and findings say, in place of Table IX, why it is skipped.
    ``power_alpha`` (default ``alpha``) is the alpha of the power column. ``caveats`` are
    sentences that head the tables and the findings in bold (and go to ``log``), e.g. that a
    model's checkpoint was chosen on the test set. ``runs`` is a
    ``model,replicate,metric,value`` table (e.g. from :func:`read_runs`), validated here.
    Returns the written paths keyed as ``outputs``.
    """
    unknown = [key for key in outputs if key not in OUTPUT_NAMES]
    if unknown:
        raise ValueError(f"unknown output key(s) {', '.join(unknown)}; known: {', '.join(OUTPUT_NAMES)}")
    _check_options(alpha, undefined, seed, n_resamples, power_alpha)
    alpha, seed, n_resamples = float(alpha), int(seed), int(n_resamples)
    power_alpha = None if power_alpha is None else float(power_alpha)
    runs = validate_runs(runs, source=runs.attrs.get("source", "runs table"))
    paths = {key: Path(outputs[key]) for key in OUTPUT_NAMES if key in outputs}
    skip = confusion_skip_reason(runs)
    if skip and "confusion" in paths:
        raise DataError(
            f"{runs.attrs['source']}: {skip}, which the mean confusion matrices ({paths['confusion']}) need"
        )
    tests = compare_models(
        runs, alpha=alpha, undefined=undefined, seed=seed, n_resamples=n_resamples, power_alpha=power_alpha
    )
    summary = summarise(runs, undefined=undefined, seed=seed, n_resamples=n_resamples)
    confusion = skip if skip else mean_confusion(runs, undefined=undefined)
    skipped = [_confusion_skipped_line(skip)] if skip else []
    for line in [*(f"WARNING: {caveat}" for caveat in caveats), *skipped]:
        log(line)
    markdown, latex = render_tables(tests, summary, confusion, alpha, undefined, power_alpha, caveats)
    findings = render_findings(tests, alpha, undefined, power_alpha, skipped=skipped, caveats=caveats)
    writers = {
        "tests": lambda path: write_csv_atomic(tests, path),
        "summary": lambda path: write_csv_atomic(summary, path),
        "confusion": lambda path: write_csv_atomic(confusion, path),
        "tables_md": lambda path: _write_text_atomic(path, markdown),
        "tables_tex": lambda path: _write_text_atomic(path, latex),
        "tables_html": lambda path: _write_text_atomic(
            path, render_tables_html(tests, summary, confusion, alpha, undefined, power_alpha, caveats)
        ),
        "summary_md": lambda path: _write_text_atomic(path, findings),
        "findings_html": lambda path: _write_text_atomic(path, render_findings_html(findings)),
    }
    for key, path in paths.items():
        writers[key](path)
    return paths


def run_stats(
    runs: pd.DataFrame,
    out_dir: str | Path,
    alpha: float = 0.05,
    undefined: str = "drop",
    seed: int = 0,
    n_resamples: int = 9999,
    power_alpha: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """:func:`write_stats` into ``out_dir`` under the fixed names of :data:`OUTPUT_NAMES`.

    Returns the written paths keyed as :data:`OUTPUT_NAMES`. Without the counts tn, fp, fn,
    tp, ``confusion.csv`` is skipped (one line to ``log``) and one left in ``out_dir`` by an
    earlier run is removed, so that the folder holds no result of another table.
    """
    _check_options(alpha, undefined, seed, n_resamples, power_alpha)
    runs = validate_runs(runs, source=runs.attrs.get("source", "runs table"))
    out = Path(out_dir)
    skip_confusion = confusion_skip_reason(runs) is not None
    outputs = {key: out / name for key, name in OUTPUT_NAMES.items() if not (skip_confusion and key == "confusion")}
    paths = write_stats(runs, outputs, alpha, undefined, seed, n_resamples, power_alpha, log)
    if skip_confusion:
        (out / OUTPUT_NAMES["confusion"]).unlink(missing_ok=True)
    return paths
