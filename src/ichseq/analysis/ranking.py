"""Comparison of many models over the same replicates (Demsar 2006), and a leaderboard.

With three or more models, for every rate metric:

* a Friedman test over the replicates (blocks = replicates, treatments = models), via
  :func:`autorank.autorank` with ``force_mode="nonparametric"`` (its p-value is scipy's
  :func:`scipy.stats.friedmanchisquare`, whose statistic is reported next to it);
* the models' mean ranks (rank 1 = highest value, ties share the average rank) and the
  Nemenyi critical difference at ``alpha`` from autorank: two models whose mean ranks differ
  by more than it differ significantly -- what the critical-difference diagram draws;
* post-hoc pairwise comparisons: Wilcoxon signed-rank on the paired replicates
  (:func:`scipy.stats.wilcoxon`) with Holm's correction over the model pairs of that metric
  (one family per metric), as Benavoli et al. (2016) recommend next to the mean-rank tests.

Blocks must be complete: a replicate in which some model's value is undefined (after the
``drop`` policy) is left out of that metric's Friedman test, ranks and post-hoc tests (the
``n_replicates`` column says how many were used). A metric with fewer than
:data:`MIN_BLOCKS` complete replicates, or whose values are all equal, is reported as
undefined with the reason in ``note``.

The leaderboard (any number of models) has one row per model: the mean and bootstrap 95% CI
of every rate metric (the same numbers as ``summary.csv``), sorted by the first of
:data:`LEADERBOARD_ORDER` present, with the parameter count and mean training seconds from the
cost table and the pretraining source, when given.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..atomic import write_csv_atomic, write_text_atomic
from ..columns import COST_NUMBERS
from ..errors import DataError
from ..report.ranking import friedman_html, leaderboard_html, leaderboard_markdown
from . import figures
from .outputs import COMPARISON_NAMES, FRIEDMAN_OUTPUTS, MIN_MODELS
from .stats import (ALPHA, NAN, RESAMPLES, UNDEFINED, check_options, holm_pvalues, metric_values, no_progress,
                    rate_metrics, summarise, validate_runs, wilcoxon_signed_rank)

#: Fewest complete replicates for a Friedman test: autorank refuses fewer than 5
#: ("requires at least five performance estimations").
MIN_BLOCKS = 5
#: The leaderboard is sorted by the first of these metrics in the table (else the first rate metric).
LEADERBOARD_ORDER = ("roc_auc", "balanced_accuracy")

FRIEDMAN_COLUMNS = (
    "metric", "n_models", "n_replicates", "statistic", "df", "p_value", "critical_difference", "best_model", "note",
)  # fmt: skip
RANK_COLUMNS = ("metric", "model", "mean_rank", "n_replicates")
POSTHOC_COLUMNS = (
    "metric", "model_a", "model_b", "n_replicates", "mean_rank_a", "mean_rank_b", "rank_difference",
    "critical_difference", "nemenyi_significant", "statistic", "p_value", "p_holm", "holm_significant", "note",
)  # fmt: skip
#: Cost columns the leaderboard carries (mean over the model's runs), in this order.
LEADERBOARD_COST = ("parameters_total", "training_seconds")


def complete_blocks(runs: pd.DataFrame, metric: str, undefined: str = UNDEFINED) -> pd.DataFrame:
    """Replicates x models of ``metric``, only the replicates that every model has a value for."""
    models = list(dict.fromkeys(runs["model"]))
    wide = pd.concat({m: metric_values(runs, m, metric, undefined) for m in models}, axis=1)
    return wide.dropna(axis=0, how="any").sort_index()


def _autorank(blocks: pd.DataFrame, alpha: float):
    """autorank's Friedman/Nemenyi result; its messages (it prints unconditionally) are dropped."""
    from autorank import autorank  # imported here: it imports pyplot, which nothing else needs

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return autorank(blocks.reset_index(drop=True), alpha=alpha, verbose=False, order="descending",
                        force_mode="nonparametric")  # fmt: skip


class Friedman:
    """Per-metric Friedman tests, mean ranks and post-hoc comparisons of a validated runs table.

    ``tests``, ``ranks`` and ``posthoc`` are the tables :data:`FRIEDMAN_COLUMNS`,
    :data:`RANK_COLUMNS` and :data:`POSTHOC_COLUMNS`; ``results`` maps each metric whose test
    is defined to autorank's ``RankResult`` (what :func:`autorank.plot_stats` draws).
    """

    def __init__(self, runs: pd.DataFrame, alpha: float = ALPHA, undefined: str = UNDEFINED,
                 log: Callable[[str], None] = no_progress):  # fmt: skip
        models = list(dict.fromkeys(runs["model"]))
        if len(models) < MIN_MODELS:
            raise ValueError(f"the Friedman comparison needs at least {MIN_MODELS} models, got {len(models)}")
        self.alpha = alpha
        self.models = models
        self.results = {}
        tests, ranks, posthoc = [], [], []
        metrics = rate_metrics(runs)
        n_pairs = len(models) * (len(models) - 1) // 2
        for i, metric in enumerate(metrics, 1):
            started = time.perf_counter()
            blocks = complete_blocks(runs, metric, undefined)
            n = len(blocks)
            row = dict.fromkeys(FRIEDMAN_COLUMNS, NAN)
            row.update(metric=metric, n_models=len(models), n_replicates=n, best_model="", note="")
            values = blocks.to_numpy()
            if n < MIN_BLOCKS:
                row["note"] = f"{n} replicate(s) with a value for every model, fewer than {MIN_BLOCKS}: undefined"
            elif np.ptp(values) == 0:
                row["note"] = "every value is equal: Friedman test undefined"
            else:
                result = _autorank(blocks, alpha)
                stat = sps.friedmanchisquare(*values.T).statistic
                self.results[metric] = result
                rank = result.rankdf["meanrank"].astype(float)
                row.update(statistic=float(stat), df=len(models) - 1, p_value=float(result.pvalue),
                           critical_difference=float(result.cd), best_model=str(rank.idxmin()),
                           note=f"autorank (Friedman, Nemenyi CD at alpha {alpha}) over {n} complete replicates")  # fmt: skip
                ranks.extend({"metric": metric, "model": m, "mean_rank": float(rank[m]), "n_replicates": n}
                             for m in models)  # fmt: skip
                posthoc.extend(self._posthoc(metric, blocks, rank, float(result.cd), alpha))
            tests.append(row)
            log(f"comparison: Friedman test of {metric} (metric {i} of {len(metrics)}), {n_pairs} post-hoc pairs: "
                f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        self.tests = pd.DataFrame(tests, columns=list(FRIEDMAN_COLUMNS))
        self.ranks = pd.DataFrame(ranks, columns=list(RANK_COLUMNS))
        self.posthoc = pd.DataFrame(posthoc, columns=list(POSTHOC_COLUMNS))

    def _posthoc(self, metric, blocks, rank, cd, alpha) -> list[dict]:
        rows = []
        for ma, mb in itertools.combinations(self.models, 2):
            diff = blocks[ma].to_numpy() - blocks[mb].to_numpy()
            row = dict(metric=metric, model_a=ma, model_b=mb, n_replicates=len(blocks), mean_rank_a=float(rank[ma]),
                       mean_rank_b=float(rank[mb]), rank_difference=float(rank[ma] - rank[mb]),
                       critical_difference=cd, nemenyi_significant=bool(abs(rank[ma] - rank[mb]) > cd),
                       statistic=NAN, p_value=NAN, p_holm=NAN, holm_significant=pd.NA)  # fmt: skip
            if not diff.any():
                row["note"] = "all paired differences are 0: Wilcoxon undefined"
            else:
                # scipy.stats.wilcoxon's numbers, without its call per sign pattern when values tie.
                statistic, p_value, _ = wilcoxon_signed_rank(blocks[ma].to_numpy(), blocks[mb].to_numpy())
                row.update(statistic=statistic, p_value=p_value,
                           note="Wilcoxon signed-rank, two-sided; Holm over this metric's model pairs")  # fmt: skip
            rows.append(row)
        p = np.array([r["p_value"] for r in rows], dtype=np.float64)
        defined = np.isfinite(p)
        if defined.any():
            adjusted = holm_pvalues(p[defined], alpha)
            for r, q in zip((r for r, d in zip(rows, defined) if d), adjusted):
                r["p_holm"] = float(q)
                r["holm_significant"] = bool(q < alpha)
        return rows


def leaderboard(
    runs: pd.DataFrame,
    cost: pd.DataFrame | None = None,
    pretrained: dict[str, str | None] | None = None,
    undefined: str = UNDEFINED,
    seed: int = 0,
    n_resamples: int = RESAMPLES,
    summary: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per model, best first: ``rank, model``, the pretraining source and cost columns
    when known, then ``METRIC_mean, METRIC_ci_low, METRIC_ci_high`` per rate metric.

    ``summary`` is :func:`ichseq.analysis.stats.summarise` of ``runs`` (computed when not given).
    ``cost`` is the collected cost table (:data:`LEADERBOARD_COST` columns are averaged per
    model); ``pretrained`` maps a model to where its weights come from (``None`` = random init).
    """
    if summary is None:
        summary = summarise(runs, undefined=undefined, seed=seed, n_resamples=n_resamples)
    models = list(dict.fromkeys(runs["model"]))
    metrics = rate_metrics(runs)
    board = pd.DataFrame({"model": models})
    if pretrained is not None:
        board["pretrained"] = [pretrained.get(m) or "none (random init)" for m in models]
    if cost is not None and "class_imbalance" in cost.columns:
        # How the class imbalance was handled (training.class_imbalance): none, weighted, balanced.
        used = cost.groupby(cost["model"].astype(str))["class_imbalance"].agg(
            lambda v: ", ".join(sorted(set(map(str, v.dropna())))))
        board["class_imbalance"] = [used.get(m, "") for m in models]
    if cost is not None:
        for column in LEADERBOARD_COST:
            if column in cost.columns and column in COST_NUMBERS:
                means = pd.to_numeric(cost[column], errors="coerce").groupby(cost["model"].astype(str)).mean()
                board[column] = [means.get(m, NAN) for m in models]
    by = summary.set_index(["model", "metric"])
    for metric in metrics:
        for stat in ("mean", "ci_low", "ci_high"):
            board[f"{metric}_{stat}"] = [float(by.at[(m, metric), stat]) for m in models]
    key = next((m for m in LEADERBOARD_ORDER if m in metrics), metrics[0])
    board = board.sort_values(f"{key}_mean", ascending=False, kind="stable", na_position="last").reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    board.attrs["sorted_by"] = key
    return board


def write_comparison(
    runs: pd.DataFrame,
    outputs,
    cost: pd.DataFrame | None = None,
    pretrained: dict[str, str | None] | None = None,
    alpha: float = ALPHA,
    undefined: str = UNDEFINED,
    seed: int = 0,
    n_resamples: int = RESAMPLES,
    log: Callable[[str], None] = no_progress,
) -> dict:
    """Write exactly ``outputs`` (keys of :data:`COMPARISON_NAMES` -> paths); return the paths.

    Asking for a Friedman output of a table with fewer than 3 models is an error: with two
    models the pairwise tests of :mod:`ichseq.analysis.stats` are the comparison. ``log``
    gets progress lines: the leaderboard, each metric's Friedman test, the diagram.
    """
    unknown = [k for k in outputs if k not in COMPARISON_NAMES]
    if unknown:
        raise ValueError(f"unknown output key(s) {', '.join(unknown)}; known: {', '.join(COMPARISON_NAMES)}")
    check_options(alpha, undefined, seed, n_resamples)
    runs = validate_runs(runs, source=runs.attrs.get("source", "runs table"))
    n_models = runs["model"].nunique()
    paths = {k: Path(outputs[k]) for k in COMPARISON_NAMES if k in outputs}
    wanted = [k for k in paths if k in FRIEDMAN_OUTPUTS]
    if wanted and n_models < MIN_MODELS:
        raise DataError(f"{runs.attrs['source']}: {n_models} models; the Friedman comparison "
                        f"({', '.join(wanted)}) needs at least {MIN_MODELS}")  # fmt: skip
    started = time.perf_counter()
    _write_leaderboard(leaderboard(runs, cost, pretrained, undefined, seed, n_resamples), paths)
    log(f"comparison: leaderboard ({n_models} models): {time.perf_counter() - started:.1f} s")
    if wanted:
        _write_friedman(Friedman(runs, alpha, undefined, log), paths, alpha, log)
    return paths


def _write_leaderboard(board: pd.DataFrame, paths: dict[str, Path]) -> None:
    """The leaderboard's outputs among ``paths``: its table, Markdown, HTML page and plot."""
    if "leaderboard" in paths:
        write_csv_atomic(board, paths["leaderboard"])
    if "leaderboard_md" in paths:
        write_text_atomic(paths["leaderboard_md"], leaderboard_markdown(board) + "\n")
    if "leaderboard_html" in paths:
        write_text_atomic(paths["leaderboard_html"], leaderboard_html(board))
    figure = [paths[k] for k in ("leaderboard_png", "leaderboard_svg") if k in paths]
    if figure:
        figures.leaderboard_plot(board, figure)


def _write_friedman(friedman: Friedman, paths: dict[str, Path], alpha: float, log: Callable[[str], None]) -> None:
    """The Friedman comparison's outputs among ``paths``: its tests, mean ranks and post-hoc
    tables, their HTML page and the critical-difference diagram."""
    for key, table in (("friedman", friedman.tests), ("mean_ranks", friedman.ranks), ("posthoc", friedman.posthoc)):
        if key in paths:
            write_csv_atomic(table, paths[key])
    if "friedman_html" in paths:
        write_text_atomic(paths["friedman_html"], friedman_html(friedman.tests, friedman.ranks, friedman.posthoc, alpha))
    figure = [paths[k] for k in ("critical_difference_png", "critical_difference_svg") if k in paths]
    if figure:
        started = time.perf_counter()
        undefined = {r.metric: r.note for r in friedman.tests.itertuples() if r.metric not in friedman.results}
        figures.critical_difference(friedman.results, figure, undefined)
        log(f"comparison: critical-difference diagram: {time.perf_counter() - started:.1f} s")
