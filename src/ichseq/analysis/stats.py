"""Statistical comparison of models over replicates: the study's protocol and a paired one.

Input is a long table ``model,replicate,metric,value`` -- one row per metric of every run's
``metrics.json`` -- where an empty value is an *undefined* metric (``None`` in
:func:`ichseq.training.metrics.binary_metrics`, e.g. precision of a model that predicted no positive).
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

This module computes; the tables (Markdown, LaTeX, HTML) and the findings are rendered by
:mod:`ichseq.report`, and :func:`write_stats` writes both.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

from ..atomic import write_csv_atomic, write_json_atomic, write_text_atomic
from ..config import config_default
from ..errors import ConfigError, DataError
from ..report.findings import render_findings, render_findings_html
from ..report.formatting import confusion_skipped_line, format_alpha
from ..report.tables import render_tables, render_tables_html
from .checked import is_validated, mark_validated
from ..columns import CONFUSION_COUNTS, COUNT_METRICS, RATE_METRICS, RUN_COLUMNS

#: The defaults of the config's statistics section (written in the schema only).
_STATISTICS = config_default("statistics")
ALPHA: float = _STATISTICS["alpha"]
UNDEFINED: str = _STATISTICS["undefined"]
RESAMPLES: int = _STATISTICS["bootstrap_resamples"]

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
#: Metrics that are fractions in [0, 1]: the classification rates and seg_cls's Dice. They are
#: checked on input (a percentage among fractions would be compared as if it were one) and,
#: when the table says its rates are percentages (``percent``), divided by 100. Every other
#: metric -- a count, seg_cls's volume_spearman (a correlation in [-1, 1]), a time in seconds,
#: another study's metric of unknown scale -- is used as it is.
FRACTION_METRICS = (*RATE_METRICS, "dice")
#: How many offending rows an error message lists before it only counts the rest.
_LISTED_ROWS = 3
#: Cells that mean "undefined" in the CSV (case-insensitive), besides the empty cell.
_UNDEFINED_CELLS = {"", "nan", "na", "null", "none"}
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


def validate_runs(
    df: pd.DataFrame, source: str = "runs table", *, csv_lines: bool = False, percent: bool = False
) -> pd.DataFrame:
    """Check and normalise a runs table; ``DataError`` naming ``source`` on bad input.

    Returns a new frame with string ``model``/``metric``, ``replicate`` as int when every
    replicate is an integer (else string) and float ``value`` (NaN = undefined). Problems are
    located by row position, or by CSV line number (header = line 1) when ``csv_lines``.
    The :data:`FRACTION_METRICS` must lie in [0, 1]; with ``percent`` the table gives them as
    percentages, which must lie in [0, 100] and are divided by 100 here.
    """

    if is_validated(df, "runs") and not percent:  # the very table returned here: checked already
        return df

    def where(i: int) -> str:
        return f"line {i + 2}" if csv_lines else f"row {i}"

    missing = [c for c in RUN_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)} (expected {','.join(RUN_COLUMNS)})"
        )
    if len(df) == 0:
        raise DataError(f"{source}: no rows")
    out = _key_columns(df, source, where)
    values = _parsed_values(df, out, source, where)
    out["value"] = _fractions(np.asarray(values, dtype=np.float64), out, source, where, percent)
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
    if not rate_metrics(out):
        raise DataError(f"{source}: no rate metric to compare (only {', '.join(sorted(set(out['metric'])))})")
    out.attrs["source"] = source
    return mark_validated(out, "runs")


def _key_columns(df: pd.DataFrame, source: str, where: Callable[[int], str]) -> pd.DataFrame:
    """``model``, ``replicate`` and ``metric`` of ``df`` as stripped strings; ``DataError`` at
    the first empty cell (``where(i)`` locates row ``i``)."""
    out = pd.DataFrame(index=range(len(df)))
    for col in ("model", "replicate", "metric"):
        raw = df[col].tolist()
        texts = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip() for v in raw]
        empty = [i for i, t in enumerate(texts) if not t]
        if empty:
            raise DataError(f"{source}: empty {col} at {where(empty[0])}")
        out[col] = texts
    return out


def _parsed_values(df: pd.DataFrame, keys: pd.DataFrame, source: str, where: Callable[[int], str]) -> list[float]:
    """The ``value`` column of ``df`` as numbers (NaN = undefined); ``DataError`` naming the
    first cell that is not a number, with its row's ``keys``."""
    values = []
    for i, v in enumerate(df["value"].tolist()):
        try:
            values.append(_parse_value(v))
        except (TypeError, ValueError):
            raise DataError(
                f"{source}: column value: {v!r} at {where(i)} is not a number "
                f"(model {keys.at[i, 'model']}, replicate {keys.at[i, 'replicate']}, metric {keys.at[i, 'metric']})"
            ) from None
    return values


def _fractions(values: np.ndarray, runs: pd.DataFrame, source: str, where, percent: bool) -> np.ndarray:
    """``values`` with the :data:`FRACTION_METRICS` checked and, under ``percent``, divided by 100.

    ``DataError`` listing the rows (``where(i)``, model, replicate, metric, value) of a rate
    outside [0, 1] -- [0, 100] under ``percent`` -- and, under ``percent``, naming a model
    whose every rate lies in (0, 1] while another model's exceed 1: read as percentages they
    would be a hundred times too small, so the table mixes fractions and percentages.
    """
    rate = runs["metric"].isin(FRACTION_METRICS).to_numpy()
    top = 100.0 if percent else 1.0
    with np.errstate(invalid="ignore"):  # NaN (undefined) is never outside
        outside = rate & ((values < 0.0) | (values > top))

    def row(i: int) -> str:
        return (f"{where(i)} (model {runs.at[i, 'model']}, replicate {runs.at[i, 'replicate']}, "
                f"metric {runs.at[i, 'metric']}: {values[i]:g})")  # fmt: skip

    if outside.any():
        bad = np.flatnonzero(outside)
        listed = "; ".join(row(int(i)) for i in bad[:_LISTED_ROWS])
        more = f" and {len(bad) - _LISTED_ROWS} more" if len(bad) > _LISTED_ROWS else ""
        what = (
            "with --percent the rates (accuracy, precision, ...) are percentages: correct these rows"
            if percent
            else "rates (accuracy, precision, ...) are fractions: if the table gives them as percentages "
            "(0-100), pass --percent (percent=True), else correct these rows"
        )
        raise DataError(f"{source}: {len(bad)} rate value(s) outside [0, {top:g}]: {listed}{more}; {what}")
    if not percent:
        return values
    rates = pd.Series(np.where(rate, values, NAN)).groupby(runs["model"].to_numpy(), sort=False).max()
    if (rates > 1.0).any():
        for model, highest in rates.items():
            if 0.0 < highest <= 1.0:
                first = int(np.flatnonzero(rate & (runs["model"] == model).to_numpy() & (values > 0.0))[0])
                raise DataError(
                    f"{source}: with --percent the rates are percentages, but every rate of model {model} "
                    f"lies in (0, 1], e.g. {row(first)}, while other models' exceed 1: the table mixes fractions "
                    "and percentages; give every rate in one scale"
                )
    return np.where(rate, values / 100.0, values)


def read_runs(path: str | Path, percent: bool = False) -> pd.DataFrame:
    """Read and validate a ``model,replicate,metric,value`` CSV (empty value = undefined);
    ``percent``: its rates are percentages (see :func:`validate_runs`)."""
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
    return validate_runs(df, source=str(path), csv_lines=True, percent=percent)


def rate_metrics(runs: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(runs["metric"]))
    known = [m for m in RATE_METRICS if m in present]
    return known + [m for m in present if m not in RATE_METRICS and m not in COUNT_METRICS]


def _check_alpha(name: str, alpha) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"{name} must be a number in (0, 1); got {alpha!r}")


def check_options(alpha, undefined, seed, n_resamples, power_alpha=None) -> None:
    _check_alpha("alpha", alpha)
    if power_alpha is not None:
        _check_alpha("power_alpha", power_alpha)
    if undefined not in UNDEFINED_POLICIES:
        raise ConfigError(f"undefined must be one of {', '.join(UNDEFINED_POLICIES)}; got {undefined!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0; got {seed!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ConfigError(f"n_resamples must be an integer >= 1; got {n_resamples!r}")


def metric_values(runs: pd.DataFrame, model: str, metric: str, undefined: str) -> pd.Series:
    """One model's values of one metric, indexed by replicate, after the undefined policy."""
    rows = runs[(runs["model"] == model) & (runs["metric"] == metric)]
    series = pd.Series(rows["value"].to_numpy(dtype=np.float64), index=rows["replicate"].to_numpy())
    series = series.sort_index()
    return series.dropna() if undefined == "drop" else series.fillna(0.0)


# ----------------------------------------------------------------------------- primitives


def bootstrap_mean_ci(
    values, n_resamples: int = RESAMPLES, seed: int = 0, confidence_level: float = 0.95
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


def _row_means(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``np.mean(x, axis=-1)`` computed as for a 2-D array, whatever ``x``'s dimensions.

    numpy sums each row of a 1-D or 2-D array pairwise but the rows of a 3-D array one value
    after the other, which can differ in the last bit; as rows of a 2-D array the samples
    stacked by :func:`bootstrap_mean_cis` get exactly the means each gets alone.
    """
    if axis not in (-1, x.ndim - 1):
        raise ValueError(f"_row_means: the mean is over the last axis, not axis {axis}")
    return np.mean(x.reshape(-1, x.shape[-1]), axis=-1).reshape(x.shape[:-1])


#: Most values (samples x resamples x sample size) one batch of :func:`bootstrap_mean_cis`
#: resamples at once: about 16 MB of float64, whatever the number of models.
_BATCH_VALUES = 2_000_000


def bootstrap_mean_cis(
    samples: Sequence, n_resamples: int = RESAMPLES, seed: int = 0, confidence_level: float = 0.95
) -> list[tuple[float, float, str]]:
    """:func:`bootstrap_mean_ci` of each of ``samples``, with identical results, in batches.

    Each interval is drawn with a fresh ``numpy.random.default_rng(seed)``, so its resampled
    indices depend only on the sample's size: :func:`scipy.stats.bootstrap` given the samples
    of one size as the rows of one array draws those indices once and computes every row as it
    would compute that sample alone -- the same numbers, without a call per sample. Rows whose
    BCa interval is degenerate get the percentile interval, again with a fresh generator.
    """
    xs = [np.asarray(values, dtype=np.float64) for values in samples]
    intervals: list[tuple[float, float, str]] = [(NAN, NAN, "")] * len(xs)
    by_size: dict[int, list[int]] = {}
    for i, x in enumerate(xs):
        if x.size >= 2:
            by_size.setdefault(x.size, []).append(i)
    for size, members in by_size.items():
        rows = max(1, _BATCH_VALUES // (int(n_resamples) * size))
        for start in range(0, len(members), rows):
            pending = members[start : start + rows]
            for method in ("BCa", "percentile"):
                if not pending:
                    break
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ci = sps.bootstrap(
                        (np.stack([xs[i] for i in pending]),),
                        _row_means,
                        n_resamples=int(n_resamples),
                        confidence_level=confidence_level,
                        method=method,
                        axis=-1,
                        rng=np.random.default_rng(seed),
                    ).confidence_interval
                degenerate = []
                for i, low, high in zip(pending, np.atleast_1d(ci.low), np.atleast_1d(ci.high)):
                    if np.isfinite(low) and np.isfinite(high):
                        intervals[i] = (float(low), float(high), method)
                    else:
                        degenerate.append(i)
                pending = degenerate
    return intervals


def no_progress(_line: str) -> None:
    """The default ``log`` of the computing functions: no progress lines."""


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


def _independent_t(metric, ma, mb, a, b, alpha, sh_a, sh_b, lev, power_alpha) -> dict:
    """Student's or Welch's t by the study's rule, with Cohen's d and power at ``power_alpha``."""
    al = format_alpha(alpha)
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
    pal = format_alpha(power_alpha)
    note += f"; d: pingouin.compute_effsize (pooled SD); power: statsmodels TTestIndPower at alpha={pal}"
    if test == "welch_t":
        note += " with Welch df"
    return _row(
        metric, test, ma, mb, a, b,
        statistic=float(res.statistic), df=float(res.df), p_value=float(res.pvalue),
        effect_size=d, effect_size_name="cohen_d", power=power, note=note,
    )  # fmt: skip


def mann_whitney_u(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Two-sided :func:`scipy.stats.mannwhitneyu` of ``a`` vs ``b`` as ``(U of a, p, r)``, with
    the rank-biserial correlation ``r`` computed as :func:`pingouin.mwu` computes it (the same
    numbers; pingouin would run the test a second time to get it)."""
    res = _quiet(sps.mannwhitneyu, a, b, alternative="two-sided")
    u_b = a.shape[0] * b.shape[0] - res.statistic  # pingouin's operations, in its order
    return float(res.statistic), float(res.pvalue), float(1 - (2 * u_b) / (a.size * b.size))


#: scipy's Wilcoxon test (method "auto") switches to the normal approximation above this many
#: pairs, and with ties or zeros computes an exact permutation p-value up to this many pairs.
_WILCOXON_NORMAL_ABOVE, _WILCOXON_PERMUTATION_UP_TO = 50, 13


def _signed_rank_sum(d: np.ndarray, axis: int = -1) -> np.ndarray:
    """W+ along ``axis``: the sum of the ranks of ``|d|`` where ``d > 0`` (average ranks for
    ties; zeros left out, as scipy's ``zero_method="wilcox"``)."""
    ranks = sps.rankdata(np.where(d == 0, np.nan, np.abs(d)), axis=axis, nan_policy="omit")
    return np.sum(np.where(d > 0, ranks, 0.0), axis=axis)


def wilcoxon_signed_rank(x, y=None) -> tuple[float, float, float]:
    """:func:`scipy.stats.wilcoxon` of ``x`` (or of ``x - y``) as scipy computes it by default
    (two-sided, zeros dropped, method "auto"): ``(statistic, p, r)``, with the matched-pairs
    rank-biserial correlation ``r`` computed as :func:`pingouin.wilcoxon` computes it.

    With ties or zeros among at most 13 differences -- usual for rates of a few dozen test
    patients -- scipy's p-value is an exact permutation test over the 2**n sign patterns that
    calls its statistic once per pattern (about 0.4 s for 10 pairs; pingouin repeats it).
    Here the same :func:`scipy.stats.permutation_test` gets W+ for every pattern at once. W+
    is a sum of (half-)integer ranks, exact in floating point, so the null distribution and
    the p-value are scipy's own. Every other case is scipy's call as it is.
    """
    x = np.asarray(x, dtype=np.float64)
    d = x if y is None else x - np.asarray(y, dtype=np.float64)
    nonzero = d[d != 0]
    ties_or_zeros = nonzero.size < d.size or np.unique(np.abs(nonzero)).size < nonzero.size
    if ties_or_zeros and d.size <= _WILCOXON_PERMUTATION_UP_TO:
        res = sps.permutation_test(
            (d,), _signed_rank_sum, permutation_type="samples", vectorized=True, alternative="two-sided", axis=-1
        )
        statistic, p_value = min(float(res.statistic), float(_signed_rank_sum(-d))), float(res.pvalue)
    else:
        res = _quiet(sps.wilcoxon, x) if y is None else _quiet(sps.wilcoxon, x, y)
        statistic, p_value = float(res.statistic), float(res.pvalue)
    ranks = sps.rankdata(abs(nonzero))  # pingouin's operations, in its order
    total = ranks.sum()
    r_plus, r_minus = np.sum((nonzero > 0) * ranks), np.sum((nonzero < 0) * ranks)
    return statistic, p_value, float(r_plus / total - r_minus / total)


def _mann_whitney(metric, ma, mb, a, b) -> dict:
    if a.size < 1 or b.size < 1:
        return _row(metric, "mann_whitney_u", ma, mb, a, b, note="a sample is empty: Mann-Whitney U undefined")
    u, p, rbc = mann_whitney_u(a, b)
    return _row(
        metric, "mann_whitney_u", ma, mb, a, b,
        statistic=u, p_value=p, effect_size=rbc,
        effect_size_name="rank_biserial", note="U of model_a; two-sided; rank-biserial r via pingouin.mwu",
    )  # fmt: skip


def _pairs(sa: pd.Series, sb: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The values of the replicates both models have, in replicate order."""
    common = sa.index.intersection(sb.index)
    return sa.loc[common].to_numpy(), sb.loc[common].to_numpy()


def _paired(metric, ma, mb, sa: pd.Series, sb: pd.Series, power_alpha, seed, n_resamples, ci=None) -> list[dict]:
    """Paired t (Cohen's d_z) and Wilcoxon signed-rank over the replicates both models have.

    Cohen's d_z is the mean of the paired differences divided by their standard deviation
    (ddof 1; :func:`pingouin.compute_effsize` with ``eftype="cohen_dz"``), i.e. ``t / sqrt(n)``.
    Wilcoxon runs on the differences rounded by :func:`_differences` (zero differences
    dropped, scipy's default ``zero_method="wilcox"``). Both are undefined with fewer than 2
    pairs; the paired t also when the differences are all equal (their SD is 0), Wilcoxon
    when they are all 0. ``ci``: the bootstrap CI of the mean difference when computed
    already (by :func:`bootstrap_mean_cis`, for every pair at once).
    """
    a, b = _pairs(sa, sb)
    paired = f"paired over {len(a)} replicates present for both models ({ma}: {len(sa)}, {mb}: {len(sb)})"
    al = format_alpha(power_alpha)
    if len(a) < 2:
        undefined = f"{paired}; fewer than 2 pairs: undefined"
        return [
            _row(metric, "paired_t", ma, mb, a, b, note=undefined),
            _row(metric, "wilcoxon", ma, mb, a, b, note=undefined),
        ]
    diff = _differences(a, b)
    low, high, method = bootstrap_mean_ci(diff, n_resamples=n_resamples, seed=seed) if ci is None else ci
    ci_note = f"ci: bootstrap {method} 95% of mean diff ({n_resamples} resamples, seed {seed})"
    if _constant(diff):
        why = "all paired differences are 0" if not diff.any() else "all paired differences are equal (sd 0)"
        t_row = _row(metric, "paired_t", ma, mb, a, b, ci_low=low, ci_high=high,
                     note=f"{paired}; {ci_note}; {why}: paired t undefined")  # fmt: skip
    else:
        res = _quiet(sps.ttest_rel, a, b)
        dz = float(_quiet(pg.compute_effsize, a, b, paired=True, eftype="cohen_dz"))
        power = float(TTestPower().power(effect_size=abs(dz), nobs=len(a), alpha=power_alpha))
        t_note = (f"{paired}; d_z = mean diff / sd of diffs (pingouin cohen_dz); "
                  f"power: statsmodels TTestPower at alpha={al}; {ci_note}")  # fmt: skip
        t_row = _row(
            metric, "paired_t", ma, mb, a, b,
            statistic=float(res.statistic), df=float(res.df), p_value=float(res.pvalue),
            effect_size=dz, effect_size_name="cohen_dz", power=power, ci_low=low, ci_high=high, note=t_note,
        )  # fmt: skip
    if not diff.any():
        return [t_row, _row(metric, "wilcoxon", ma, mb, a, b,
                            note=f"{paired}; all paired differences are 0: Wilcoxon undefined")]  # fmt: skip
    w, p, rbc = wilcoxon_signed_rank(diff)
    zeros = int(np.sum(diff == 0))
    w_note = (f"{paired}; two-sided on the differences, {zeros} zero difference(s) dropped; "
              "matched-pairs rank-biserial r via pingouin.wilcoxon")  # fmt: skip
    w_row = _row(
        metric, "wilcoxon", ma, mb, a, b,
        statistic=w, p_value=p, effect_size=rbc,
        effect_size_name="matched_pairs_rank_biserial", note=w_note,
    )  # fmt: skip
    return [t_row, w_row]


def holm_adjust(tests: pd.DataFrame, alpha: float = ALPHA) -> pd.Series:
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
            adjusted.loc[p.index] = holm_pvalues(p.to_numpy(), alpha)
    return adjusted


def holm_pvalues(pvalues: np.ndarray, alpha: float) -> np.ndarray:
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
    alpha: float = ALPHA,
    undefined: str = UNDEFINED,
    seed: int = 0,
    n_resamples: int = RESAMPLES,
    power_alpha: float | None = None,
    log: Callable[[str], None] = no_progress,
) -> pd.DataFrame:
    """The tidy ``tests.csv`` table (columns :data:`TEST_COLUMNS`) of a validated runs table.

    ``power`` is computed at ``power_alpha`` (default: ``alpha``, the level of the tests).
    ``log`` gets one progress line per metric.
    """
    power_alpha = alpha if power_alpha is None else power_alpha
    models = list(dict.fromkeys(runs["model"]))
    pairs = list(itertools.combinations(models, 2))
    metrics = rate_metrics(runs)
    rows = []
    for i, metric in enumerate(metrics, 1):
        started = time.perf_counter()
        series = {m: metric_values(runs, m, metric, undefined) for m in models}
        shapiro = {}
        for m in models:
            x = series[m].to_numpy()
            w, p, note = _shapiro(x)
            shapiro[m] = p
            rows.append(_row(metric, "shapiro", m, "", x, None, statistic=w, p_value=p, note=note))
        # The bootstrap CIs of every pair's mean difference at once: the same numbers as one call per pair.
        cis = bootstrap_mean_cis([_differences(*_pairs(series[ma], series[mb])) for ma, mb in pairs],
                                 n_resamples=n_resamples, seed=seed)  # fmt: skip
        for (ma, mb), ci in zip(pairs, cis):
            a, b = series[ma].to_numpy(), series[mb].to_numpy()
            w, lev, note = _levene(a, b)
            rows.append(_row(metric, "levene", ma, mb, a, b, statistic=w, p_value=lev, note=note or "center=median"))
            rows.append(_independent_t(metric, ma, mb, a, b, alpha, shapiro[ma], shapiro[mb], lev, power_alpha))
            rows.append(_mann_whitney(metric, ma, mb, a, b))
            rows.extend(_paired(metric, ma, mb, series[ma], series[mb], power_alpha, seed, n_resamples, ci))
        log(f"tests: {metric} (metric {i} of {len(metrics)}), {len(pairs)} model pairs: "
            f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    tests = pd.DataFrame(rows, columns=list(TEST_COLUMNS))
    tests["p_holm"] = holm_adjust(tests, alpha)
    for col in ("n_a", "n_b"):
        tests[col] = tests[col].astype("Int64")
    return tests


def summarise(
    runs: pd.DataFrame, undefined: str = UNDEFINED, seed: int = 0, n_resamples: int = RESAMPLES,
    log: Callable[[str], None] = no_progress,
) -> pd.DataFrame:
    """``summary.csv``: per model and metric (rate metrics first, then counts); sd has ddof 1.

    ``log`` gets one progress line."""
    started = time.perf_counter()
    models = list(dict.fromkeys(runs["model"]))
    metrics = rate_metrics(runs) + [m for m in COUNT_METRICS if m in set(runs["metric"])]
    cells = [(metric, model) for metric in metrics for model in models]
    samples = [metric_values(runs, model, metric, undefined).to_numpy() for metric, model in cells]
    cis = bootstrap_mean_cis(samples, n_resamples=n_resamples, seed=seed)  # as one call per cell, at once
    rows = []
    for (metric, model), x, (low, high, method) in zip(cells, samples, cis):
        raw = runs[(runs["model"] == model) & (runs["metric"] == metric)]["value"]
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
    log(f"summaries: {len(models)} models x {len(metrics)} metrics, bootstrap CIs: "
        f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def confusion_skip_reason(runs: pd.DataFrame) -> str | None:
    """Why the mean confusion matrices cannot be computed from ``runs`` (None when they can)."""
    absent = [c for c in CONFUSION_COUNTS if c not in set(runs["metric"])]
    if not absent:
        return None
    return f"no rows for {', '.join(absent)}"


def mean_confusion(runs: pd.DataFrame, undefined: str = UNDEFINED) -> pd.DataFrame:
    """``confusion.csv``: per model the mean and sd (ddof 1) of tn, fp, fn, tp over replicates.

    ``n_replicates`` counts the replicates that have all four counts after the policy; the
    mean of a count absent from the table is NaN.
    """
    rows = []
    for model in dict.fromkeys(runs["model"]):
        row = {"model": model}
        have = None
        for count in ("tn", "fp", "fn", "tp"):
            x = metric_values(runs, model, count, undefined)
            have = set(x.index) if have is None else have & set(x.index)
            row[f"{count}_mean"] = float(x.mean()) if len(x) else NAN
            row[f"{count}_sd"] = float(x.std(ddof=1)) if len(x) > 1 else NAN
        row["n_replicates"] = len(have)
        rows.append(row)
    columns = ["model", "n_replicates"] + [f"{c}_{s}" for c in ("tn", "fp", "fn", "tp") for s in ("mean", "sd")]
    return pd.DataFrame(rows, columns=columns)


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` atomically, ending with exactly one newline if it has none."""
    write_text_atomic(path, text if text.endswith("\n") else text + "\n")


# ----------------------------------------------------------------------------- entry point


def write_stats(
    runs: pd.DataFrame,
    outputs: Mapping[str, str | Path],
    alpha: float = ALPHA,
    undefined: str = UNDEFINED,
    seed: int = 0,
    n_resamples: int = RESAMPLES,
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
    check_options(alpha, undefined, seed, n_resamples, power_alpha)
    alpha, seed, n_resamples = float(alpha), int(seed), int(n_resamples)
    power_alpha = None if power_alpha is None else float(power_alpha)
    runs = validate_runs(runs, source=runs.attrs.get("source", "runs table"))
    paths = {key: Path(outputs[key]) for key in OUTPUT_NAMES if key in outputs}
    skip = confusion_skip_reason(runs)
    if skip and "confusion" in paths:
        raise DataError(
            f"{runs.attrs['source']}: {skip}, which the mean confusion matrices ({paths['confusion']}) need"
        )
    n_models, n_metrics = runs["model"].nunique(), len(rate_metrics(runs))
    # Progress (a comparison of 50 models runs for minutes): what is compared, then each stage's seconds.
    log(f"stats: {n_models} models ({n_models * (n_models - 1) // 2} pairs), {n_metrics} rate metrics, "
        f"{n_resamples} bootstrap resamples")  # fmt: skip
    tests = compare_models(
        runs, alpha=alpha, undefined=undefined, seed=seed, n_resamples=n_resamples, power_alpha=power_alpha, log=log
    )
    summary = summarise(runs, undefined=undefined, seed=seed, n_resamples=n_resamples, log=log)
    started = time.perf_counter()
    confusion = skip if skip else mean_confusion(runs, undefined=undefined)
    skipped = [confusion_skipped_line(skip)] if skip else []
    for line in [*(f"WARNING: {caveat}" for caveat in caveats), *skipped]:
        log(line)
    _write_tables_and_findings(paths, tests, summary, confusion, skipped, alpha, undefined, power_alpha, caveats)
    log(f"tables and findings: {time.perf_counter() - started:.1f} s")
    return paths


def _write_tables_and_findings(
    paths: dict[str, Path], tests: pd.DataFrame, summary: pd.DataFrame, confusion, skipped: list[str], alpha: float,
    undefined: str, power_alpha: float | None, caveats: Sequence[str],
) -> None:
    """Write the tables, the findings and the CSVs that ``paths`` asks for (keys of
    :data:`OUTPUT_NAMES`); ``confusion`` is the mean confusion table or why it was skipped."""
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


#: The record ``ichseq stats`` keeps in its output folder: the names of the files it writes there.
RECORD_NAME = "ichseq-stats.json"
_RECORD_BY = "ichseq stats"


def recorded_outputs(out: Path, what: str) -> set[str]:
    """The file names the record in ``out`` lists (none when there is no record)."""
    record = out / RECORD_NAME
    if not record.exists():
        return set()
    try:
        content = json.loads(record.read_text(encoding="utf-8"))
        files = content["files"]
        if content.get("written_by") != _RECORD_BY or not isinstance(files, list):
            raise ValueError("not ours")
        return {name for name in files if isinstance(name, str)}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        raise DataError(
            f"{what} {out}: {record} is not a record written by ichseq stats; move it away or choose another folder"
        ) from None


def claim_output_folder(out_dir: str | Path, names: Iterable[str], what: str = "output folder") -> Path:
    """Make ``out_dir`` ready for files of ``names``, refusing to replace what is not ours.

    ``DataError`` (one line; ``what`` says how the folder was given, e.g. ``--out``) when
    ``out_dir`` is a file, or holds a file of one of ``names`` that no earlier ``ichseq stats``
    wrote -- one not listed in its :data:`RECORD_NAME` -- which would be replaced or removed
    (a user's own ``summary.md``, say). Then the record is written *before* any result: it
    lists the names already recorded plus ``names``, so that a run stopped partway leaves
    files the next run recognises as its own. Returns the folder.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{what} {out}: is a file, not a folder; give a folder (it is created if missing)")
    names = list(dict.fromkeys(names))
    recorded = recorded_outputs(out, what)
    for name in names:
        path = out / name
        if name not in recorded and (path.exists() or path.is_symlink()):
            raise DataError(
                f"{what} {out}: {path} exists and no earlier ichseq stats wrote it (it is not listed in "
                f"{out / RECORD_NAME}); move it away or choose another folder"
            )
    if not recorded.issuperset(names):
        write_json_atomic(out / RECORD_NAME, {"written_by": _RECORD_BY, "files": sorted(recorded.union(names))})
    return out


def run_stats(
    runs: pd.DataFrame,
    out_dir: str | Path,
    alpha: float = ALPHA,
    undefined: str = UNDEFINED,
    seed: int = 0,
    n_resamples: int = RESAMPLES,
    power_alpha: float | None = None,
    log: Callable[[str], None] = print,
    caveats: Sequence[str] = (),
) -> dict[str, Path]:
    """:func:`write_stats` into ``out_dir`` under the fixed names of :data:`OUTPUT_NAMES`.

    Returns the written paths keyed as :data:`OUTPUT_NAMES`. Without the counts tn, fp, fn,
    tp, ``confusion.csv`` is skipped (one line to ``log``) and one left in ``out_dir`` by an
    earlier run is removed, so that the folder holds no result of another table. A file of
    one of these names that no earlier run wrote is neither replaced nor removed: see
    :func:`claim_output_folder`.
    """
    check_options(alpha, undefined, seed, n_resamples, power_alpha)
    runs = validate_runs(runs, source=runs.attrs.get("source", "runs table"))
    out = claim_output_folder(out_dir, OUTPUT_NAMES.values())
    skip_confusion = confusion_skip_reason(runs) is not None
    outputs = {key: out / name for key, name in OUTPUT_NAMES.items() if not (skip_confusion and key == "confusion")}
    paths = write_stats(runs, outputs, alpha, undefined, seed, n_resamples, power_alpha, log, caveats)
    if skip_confusion:
        (out / OUTPUT_NAMES["confusion"]).unlink(missing_ok=True)
    return paths
