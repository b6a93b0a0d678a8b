"""Figures of a model comparison: metric boxes, confusion matrices, paired runs, ROC, training, cost.

Every figure is written twice next to each other: ``STEM.png`` (150 dpi, what the Snakemake
HTML report shows) and ``STEM.svg`` (vector, text kept as text so it stays editable). Both are
rendered in memory first and then written with :func:`ichseq.atomic.write_bytes_atomic`, so a
failure while plotting leaves no file, or the previous complete ones, behind.

Output is reproducible: no date in the SVG, ``svg.hashsalt`` fixed (stable element ids), and
the only random element -- the horizontal jitter of run points in the box plots -- drawn from
a fixed seed. Figures are built as :class:`matplotlib.figure.Figure` objects, never through
pyplot, so nothing here needs or selects an interactive backend or leaves figures open.

Models appear in sorted order and each keeps one colour in every figure
(:func:`model_palette`). Each ``*_figure`` function returns the :class:`Figure`; the function
of the same name without the suffix writes it and returns ``[STEM.png, STEM.svg]``.

Input tables (long format, one row per run, epoch or patient; see the column constants):

* runs -- ``model, replicate, metric, value``; ``value`` NaN means the metric is undefined
  for that run (e.g. precision with no positive prediction) and is left out of the plots;
* predictions -- ``model, replicate, patient, label, probability, prediction`` (the
  reliability diagram also reads ``probability_uncalibrated`` where present);
* history -- ``model, replicate, epoch, train_loss, val_loss, val_roc_auc,
  val_balanced_accuracy, seconds, best``;
* cost -- ``model, replicate, parameters_total, parameters_trainable, feature_seconds,
  training_seconds, samples_per_second, device``.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import roc_auc_score, roc_curve

from ichseq.columns import COST_COLUMNS, COST_NUMBERS, COUNT_METRICS, PREDICTION_COLUMNS, RATE_METRICS, RUN_COLUMNS, RUN_KEYS
from ichseq.columns import HISTORY_COLUMNS as RUN_HISTORY_COLUMNS
from ichseq.analysis.calibration import UNCALIBRATED, calibration_models, calibration_predictions, calibration_runs
from ichseq.analysis.checked import is_validated, mark_validated
from ichseq.atomic import write_bytes_atomic
from ichseq.errors import DataError
from ichseq.training.calibration import BINS, reliability_table

#: Resolution of the PNG copies.
DPI = 150


#: What each figure reads from the collected tables: a run's own columns behind RUN_KEYS.
PREDICTIONS_COLUMNS = (*RUN_KEYS, *PREDICTION_COLUMNS)
HISTORY_COLUMNS = (*RUN_KEYS, *RUN_HISTORY_COLUMNS)

#: Common false-positive-rate grid of the mean ROC curve.
ROC_GRID = np.linspace(0.0, 1.0, 101)

#: Seed of the horizontal jitter of run points.
JITTER_SEED = 0

METRIC_LABELS = {
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall (sensitivity)",
    "specificity": "Specificity",
    "f1": "F1 score",
    "balanced_accuracy": "Balanced accuracy",
    "roc_auc": "ROC AUC",
    "tn": "True negatives",
    "fp": "False positives",
    "fn": "False negatives",
    "tp": "True positives",
    "n_test": "Test patients",
}

CLASS_NAMES = ("no hemorrhage", "hemorrhage")

_SVG_HASHSALT = "ichseq"
_RC = {
    "svg.hashsalt": _SVG_HASHSALT,
    "svg.fonttype": "none",  # text stays <text>: editable, small, no font-dependent glyph ids
    "font.size": 9,
    "axes.titlesize": 10,
    "figure.titlesize": 11,
    "legend.fontsize": 8,
}
# No dates in the files, so that an unchanged figure is an unchanged file.
_METADATA = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


# --------------------------------------------------------------------------- writing


def figure_paths(stem: str | Path) -> tuple[Path, Path]:
    """``STEM.png`` and ``STEM.svg``: the pair ``ichseq stats`` writes into its folder."""
    stem = Path(stem)
    # Not with_suffix: a stem such as "rep.1" must keep its dot.
    return stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")


def save_figure(fig: Figure, paths: Sequence[str | Path], dpi: int = DPI) -> list[Path]:
    """Write ``fig`` to each of ``paths`` in the format its suffix names (png, svg or pdf);
    return the paths.

    Every image is rendered in memory before any file is touched, so a rendering error leaves
    existing files as they were. Each file is then written atomically; if a later write fails,
    all the names are removed so that no half-updated set is left.
    """
    if isinstance(paths, (str, Path)):
        raise TypeError("save_figure: paths must be a list of files (e.g. figure_paths(stem)), not one path")
    paths = [Path(p) for p in paths]
    bad = [str(p) for p in paths if p.suffix.lower().lstrip(".") not in _METADATA]
    if bad or not paths:
        raise ValueError(f"save_figure: each path must end in {', '.join('.' + f for f in _METADATA)}; got {bad or paths}")
    rendered: list[tuple[Path, bytes]] = []
    with matplotlib.rc_context(_RC):
        for path in paths:
            fmt = path.suffix.lower().lstrip(".")
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=dpi, metadata=dict(_METADATA[fmt]))
            rendered.append((path, buffer.getvalue()))
    try:
        for path, data in rendered:
            write_bytes_atomic(path, data)
    except BaseException:
        for path, _ in rendered:
            path.unlink(missing_ok=True)
        raise
    return paths


@contextmanager
def figure_style():
    """Seaborn's white-grid look and this module's rc settings, restored afterwards."""
    with sns.axes_style("whitegrid"), matplotlib.rc_context(_RC):
        yield


@contextmanager
def _seeded_numpy(seed: int):
    """Seed NumPy's global generator (seaborn's stripplot jitter uses it) and restore it after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


# --------------------------------------------------------------------------- validation


def _table(df: pd.DataFrame, columns: Sequence[str], table: str) -> pd.DataFrame:
    """A copy of ``df`` with ``model`` as text, after checking it is a non-empty table."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{table} table must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{table} table lacks column(s) {', '.join(missing)}; "
            f"it needs {', '.join(columns)}"
        )
    if df.empty:
        raise DataError(f"{table} table is empty: nothing to plot")
    out = df.loc[:, list(columns)].copy()
    if out["model"].isna().any():
        raise DataError(f"{table} table: column model has an empty value")
    out["model"] = out["model"].astype(str)
    return out


def _numeric(df: pd.DataFrame, column: str, table: str, allow_nan: bool = True) -> None:
    """Convert ``df[column]`` to float in place, or raise naming the first bad value."""
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = values.isna() & raw.notna()
    if bad.any():
        raise DataError(
            f"{table} table: column {column} holds a non-numeric value {raw[bad].iloc[0]!r}"
        )
    if np.isinf(values).any():
        raise DataError(f"{table} table: column {column} holds an infinite value")
    if not allow_nan and values.isna().any():
        raise DataError(f"{table} table: column {column} has an empty (NaN) value")
    df[column] = values


def _no_duplicates(df: pd.DataFrame, keys: Sequence[str], table: str) -> None:
    dup = df.duplicated(list(keys), keep=False)
    if dup.any():
        first = df.loc[dup, list(keys)].iloc[0]
        where = ", ".join(f"{k}={first[k]}" for k in keys)
        raise DataError(f"{table} table has more than one row for {where}")


def _runs(runs: pd.DataFrame) -> pd.DataFrame:
    if is_validated(runs, "runs"):  # e.g. from stats.read_runs, or validated by metric_figures
        return runs
    df = _table(runs, RUN_COLUMNS, "runs")
    df["metric"] = df["metric"].astype(str)
    _numeric(df, "value", "runs")
    _no_duplicates(df, ("model", "replicate", "metric"), "runs")
    return mark_validated(df, "runs")


def _choose_metrics(df: pd.DataFrame, metrics: Iterable[str] | str | None) -> list[str]:
    present = set(df["metric"])
    if metrics is None:
        # The known rates in their order, then any other non-count metric of the table (another
        # study's "sensitivity", say) in order of first appearance -- what the statistics test.
        chosen = [m for m in RATE_METRICS if m in present]
        chosen += [m for m in dict.fromkeys(df["metric"]) if m not in RATE_METRICS and m not in COUNT_METRICS]
        if not chosen:
            raise DataError(
                f"runs table holds no metric to plot, only the counts {', '.join(sorted(present))}"
            )
        return chosen
    chosen = [metrics] if isinstance(metrics, str) else list(dict.fromkeys(metrics))
    if not chosen:
        raise ValueError("metrics is empty: name at least one metric (or pass None)")
    absent = [m for m in chosen if m not in present]
    if absent:
        raise DataError(
            f"runs table has no rows for metric(s) {', '.join(map(str, absent))} "
            f"(it has {', '.join(sorted(present))})"
        )
    return chosen


# --------------------------------------------------------------------------- layout helpers


def model_palette(models: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per model: sorted names take seaborn's colour-blind palette in turn.

    Every figure of a comparison gets the same set of models, hence the same colours.
    """
    names = sorted({str(m) for m in models})
    colours = sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))
    return {name: tuple(colour) for name, colour in zip(names, colours)}


def new_figure(n_panels: int, max_cols: int, panel_size: tuple[float, float]):
    """A constrained-layout figure with ``n_panels`` axes in rows of at most ``max_cols``."""
    ncols = min(max_cols, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _spread(n: int, width: float = 0.3) -> np.ndarray:
    """Deterministic horizontal offsets for ``n`` points around a category."""
    return np.zeros(1) if n == 1 else np.linspace(-width / 2, width / 2, n)


def _sd(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1), NaN with fewer than two values."""
    values = np.asarray(values, dtype=float)
    return float(np.std(values, ddof=1)) if values.size > 1 else float("nan")


def _pm(mean: float, sd: float, fmt: str = ".2f") -> str:
    return f"{mean:{fmt}}" if np.isnan(sd) else f"{mean:{fmt}} ± {sd:{fmt}}"


def _human(n: float) -> str:
    """86389250 -> '86.4 M', 1538 -> '1.5 k', 12 -> '12'."""
    if np.isnan(n):
        return "?"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.1f} {suffix}"
    return f"{n:.0f}"


# --------------------------------------------------------------------------- metric box plots


def _undefined_counts(sub: pd.DataFrame, models: Sequence[str]) -> dict[str, int]:
    counts = sub["value"].isna().groupby(sub["model"]).sum()
    return {m: int(counts.get(m, 0)) for m in models}


def _model_ticks(ax, models: Sequence[str], undefined: Mapping[str, int]) -> None:
    labels = [m if not undefined.get(m) else f"{m}\n({undefined[m]} undefined)" for m in models]
    ax.set_xticks(range(len(models)), labels=labels)
    ax.set_xlim(-0.5, len(models) - 0.5)


def metric_boxplot_figure(runs: pd.DataFrame, metrics: Iterable[str] | str | None = None) -> Figure:
    """Box plot per model of each metric with every run drawn as a point (the study's Figs 4-6).

    One panel per metric (default: the rate metrics present). Undefined (NaN) values are left
    out; their number per model is written under the model's name.
    """
    df = _runs(runs)
    chosen = _choose_metrics(df, metrics)
    models = sorted(df["model"].unique())
    palette = model_palette(models)
    with figure_style():
        fig, axes = new_figure(len(chosen), 4, (max(2.6, 0.9 * len(models) + 1.0), 3.4))
        for ax, metric in zip(axes, chosen):
            sub = df[df["metric"] == metric]
            defined = sub.dropna(subset=["value"])
            common = dict(
                data=defined,
                x="model",
                y="value",
                hue="model",
                order=models,
                hue_order=models,
                palette=palette,
                legend=False,
                ax=ax,
            )
            if defined.empty:
                ax.text(0.5, 0.5, "no defined value", transform=ax.transAxes,
                        ha="center", va="center", color="0.4")
            else:
                with warnings.catch_warnings():
                    # seaborn 0.13.2 passes matplotlib 3.11 the deprecated ``vert``; not ours.
                    warnings.filterwarnings("ignore", message="vert: bool was deprecated")
                    sns.boxplot(**common, fill=False, showfliers=False, width=0.6, linewidth=1.2)
                with _seeded_numpy(JITTER_SEED):
                    sns.stripplot(**common, jitter=0.12, size=4, alpha=0.8,
                                  edgecolor="0.2", linewidth=0.4)
            _model_ticks(ax, models, _undefined_counts(sub, models))
            ax.set_title(METRIC_LABELS.get(metric, metric))
            ax.set_xlabel("")
            ax.set_ylabel("")
        fig.suptitle("Test-set metrics per model (one point per run)")
    return fig


def metric_boxplot(
    runs: pd.DataFrame, paths: Sequence[str | Path], metrics: Iterable[str] | str | None = None
) -> list[Path]:
    """Write :func:`metric_boxplot_figure` to ``paths`` (see :func:`save_figure`)."""
    return save_figure(metric_boxplot_figure(runs, metrics), paths)


# --------------------------------------------------------------------------- confusion matrices


def _absent_counts(df: pd.DataFrame) -> list[str]:
    present = set(df["metric"])
    return [c for c in ("tn", "fp", "fn", "tp") if c not in present]


def confusion_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample sd over runs of each confusion-matrix cell, per model.

    Columns ``model, true, predicted, mean, sd, n`` (``true``/``predicted`` 0 = no hemorrhage,
    1 = hemorrhage; ``n`` runs with that count; sd NaN with a single run), sorted by model.
    """
    df = _runs(runs)
    cells = {"tn": (0, 0), "fp": (0, 1), "fn": (1, 0), "tp": (1, 1)}
    absent = _absent_counts(df)
    if absent:
        raise DataError(
            f"runs table has no rows for metric(s) {', '.join(absent)}, "
            "which the confusion matrices need"
        )
    rows = []
    for model in sorted(df["model"].unique()):
        for metric, (true, predicted) in cells.items():
            values = df.loc[(df["model"] == model) & (df["metric"] == metric), "value"].dropna()
            values = values.to_numpy(dtype=float)
            rows.append(
                {
                    "model": model,
                    "true": true,
                    "predicted": predicted,
                    "mean": float(values.mean()) if values.size else float("nan"),
                    "sd": _sd(values),
                    "n": int(values.size),
                }
            )
    return pd.DataFrame(rows, columns=["model", "true", "predicted", "mean", "sd", "n"])


def confusion_matrices_figure(runs: pd.DataFrame) -> Figure:
    """Mean confusion matrix per model, annotated mean ± sd (the study's Figs 7-8).

    Rows are the true class, columns the predicted class (no hemorrhage, hemorrhage). All
    panels share one colour scale so that shades compare across models.
    """
    summary = confusion_summary(runs)
    models = sorted(summary["model"].unique())
    vmax = float(np.nanmax(summary["mean"].to_numpy())) if summary["mean"].notna().any() else 1.0
    with figure_style():
        fig, axes = new_figure(len(models), 3, (3.3, 3.0))
        for ax, model in zip(axes, models):
            cells = summary[summary["model"] == model]
            mean = np.full((2, 2), np.nan)
            text = np.full((2, 2), "n/a", dtype=object)
            for row in cells.itertuples():
                mean[row.true, row.predicted] = row.mean
                if not np.isnan(row.mean):
                    text[row.true, row.predicted] = _pm(row.mean, row.sd, ".1f")
            sns.heatmap(
                mean,
                annot=text,
                fmt="",
                cmap="Blues",
                vmin=0.0,
                vmax=max(vmax, 1e-9),
                cbar=False,
                square=True,
                linewidths=1.0,
                linecolor="white",
                xticklabels=CLASS_NAMES,
                yticklabels=CLASS_NAMES,
                annot_kws={"fontsize": 10},
                ax=ax,
            )
            n_runs = int(cells["n"].max())
            ax.set_title(f"{model} (mean of {n_runs} run{'s' if n_runs != 1 else ''})")
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.tick_params(axis="y", rotation=90)
            for label in ax.get_yticklabels():
                label.set_verticalalignment("center")
        fig.suptitle("Mean test-set confusion matrix per model (mean ± sd over runs)")
    return fig


def confusion_matrices(runs: pd.DataFrame, paths: Sequence[str | Path]) -> list[Path]:
    """Write :func:`confusion_matrices_figure` to ``paths`` (see :func:`save_figure`)."""
    return save_figure(confusion_matrices_figure(runs), paths)


# --------------------------------------------------------------------------- paired runs


def paired_plot_figure(runs: pd.DataFrame, metrics: Iterable[str] | str | None = None) -> Figure:
    """Run-by-run comparison: one grey line per replicate joining its value under each model.

    Replicate ``r`` of every model is trained and tested on the same split, so the lines show
    whether one model beats another split by split. The black diamonds are the model means;
    undefined values are left out (a line breaks there) and counted under the model's name.
    """
    df = _runs(runs)
    chosen = _choose_metrics(df, metrics)
    models = sorted(df["model"].unique())
    palette = model_palette(models)
    x = np.arange(len(models))
    with figure_style():
        fig, axes = new_figure(len(chosen), 4, (max(2.6, 0.9 * len(models) + 1.0), 3.4))
        for ax, metric in zip(axes, chosen):
            sub = df[df["metric"] == metric]
            wide = sub.pivot(index="replicate", columns="model", values="value").reindex(
                columns=models
            )
            wide = wide.sort_index()
            for _, row in wide.iterrows():
                ax.plot(x, row.to_numpy(dtype=float), color="0.55", alpha=0.6, lw=1.0, zorder=1)
            for i, model in enumerate(models):
                values = wide[model].dropna().to_numpy(dtype=float)
                ax.scatter(np.full(values.size, i), values, color=palette[model], s=22,
                           edgecolors="0.2", linewidths=0.4, zorder=2)
            means = wide.mean(axis=0, skipna=True).to_numpy(dtype=float)
            ax.plot(x, means, color="black", lw=2.0, marker="D", markersize=6, zorder=3,
                    label="mean")
            _model_ticks(ax, models, _undefined_counts(sub, models))
            ax.set_title(METRIC_LABELS.get(metric, metric))
        axes[0].legend(loc="best")
        fig.suptitle("Paired runs: one line per replicate (same split for every model)")
    return fig


def paired_plot(
    runs: pd.DataFrame, paths: Sequence[str | Path], metrics: Iterable[str] | str | None = None
) -> list[Path]:
    """Write :func:`paired_plot_figure` to ``paths`` (see :func:`save_figure`)."""
    return save_figure(paired_plot_figure(runs, metrics), paths)


# --------------------------------------------------------------------------- ROC curves


def interpolate_roc(fpr: Sequence[float], tpr: Sequence[float], grid: Sequence[float]) -> np.ndarray:
    """TPR of one ROC curve at each false-positive rate of ``grid`` (vertical averaging).

    At an FPR where the curve rises vertically (several points share it) the highest TPR is
    taken -- the best sensitivity at that false-positive rate; between points the curve is
    linear, as drawn. ``fpr`` must be non-decreasing from 0 to 1 (as from ``roc_curve``).
    """
    fpr = np.asarray(fpr, dtype=float)
    tpr = np.asarray(tpr, dtype=float)
    grid = np.asarray(grid, dtype=float)
    if fpr.ndim != 1 or fpr.shape != tpr.shape or fpr.size < 2:
        raise ValueError("fpr and tpr must be 1-D arrays of the same length (at least 2)")
    if not (np.isfinite(fpr).all() and np.isfinite(tpr).all()):
        raise ValueError("fpr and tpr must be finite")
    if np.any(np.diff(fpr) < 0) or fpr[0] != 0.0 or fpr[-1] != 1.0:
        raise ValueError("fpr must rise (non-decreasing) from 0 to 1")
    if grid.ndim != 1 or grid.size == 0 or grid.min() < 0.0 or grid.max() > 1.0:
        raise ValueError("grid must be a non-empty 1-D array within [0, 1]")
    # Last curve point at or left of each grid value: the top of a vertical segment.
    left = np.searchsorted(fpr, grid, side="right") - 1
    right = np.minimum(left + 1, fpr.size - 1)
    span = fpr[right] - fpr[left]
    weight = np.divide(grid - fpr[left], span, out=np.zeros_like(grid), where=span > 0)
    return tpr[left] + weight * (tpr[right] - tpr[left])


def _predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    df = _table(predictions, PREDICTIONS_COLUMNS, "predictions")
    _numeric(df, "label", "predictions", allow_nan=False)
    _numeric(df, "probability", "predictions", allow_nan=False)
    bad = ~df["label"].isin((0.0, 1.0))
    if bad.any():
        raise DataError(
            f"predictions table: column label must hold 0 or 1, found {df.loc[bad, 'label'].iloc[0]:g}"
        )
    out = (df["probability"] < 0.0) | (df["probability"] > 1.0)
    if out.any():
        raise DataError(
            "predictions table: column probability must lie in [0, 1], found "
            f"{df.loc[out, 'probability'].iloc[0]:g}"
        )
    _no_duplicates(df, ("model", "replicate", "patient"), "predictions")
    return df


def roc_curves_figure(predictions: pd.DataFrame, grid: Sequence[float] = ROC_GRID) -> Figure:
    """One panel per model: each run's ROC curve faint, the vertical mean bold with ± sd band.

    The legend gives the mean ± sd of the runs' AUCs. A run whose test labels hold a single
    class has no ROC curve; it is skipped and named in the panel title.
    """
    df = _predictions(predictions)
    grid = np.asarray(grid, dtype=float)
    models = sorted(df["model"].unique())
    palette = model_palette(models)
    with figure_style():
        fig, axes = new_figure(len(models), 3, (3.6, 3.9))
        for ax, model in zip(axes, models):
            colour = palette[model]
            curves, aucs, skipped = [], [], []
            for replicate, run in df[df["model"] == model].groupby("replicate", sort=True):
                labels = run["label"].to_numpy(dtype=int)
                scores = run["probability"].to_numpy(dtype=float)
                if np.unique(labels).size < 2:
                    skipped.append(replicate)
                    continue
                fpr, tpr, _ = roc_curve(labels, scores)
                curves.append((fpr, tpr))
                aucs.append(float(roc_auc_score(labels, scores)))
                ax.plot(fpr, tpr, color=colour, alpha=0.3, lw=0.9)
            ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8)
            handles = []
            if curves:
                tprs = np.vstack([interpolate_roc(f, t, grid) for f, t in curves])
                mean = tprs.mean(axis=0)
                if len(curves) > 1:
                    sd = tprs.std(axis=0, ddof=1)
                    ax.fill_between(grid, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1),
                                    color=colour, alpha=0.15, lw=0)
                ax.plot(grid, mean, color=colour, lw=2.2)
                n = len(curves)
                handles = [
                    Line2D([], [], color=colour, alpha=0.3, lw=0.9,
                           label=f"{n} run{'s' if n != 1 else ''}"),
                    Line2D([], [], color=colour, lw=2.2,
                           label=f"mean (AUC {_pm(float(np.mean(aucs)), _sd(np.array(aucs)))})"),
                ]
                ax.legend(handles=handles, loc="lower right")
            else:
                ax.text(0.5, 0.5, "no run has both classes", transform=ax.transAxes,
                        ha="center", va="center", color="0.4")
            title = model
            if skipped:
                which = ", ".join(str(r) for r in skipped)
                title += f"\nreplicate(s) {which} skipped: one class only"
            ax.set_title(title)
            roc_axes(ax)
        fig.suptitle("Patient-level ROC curves on the test sets")
    return fig


def roc_axes(ax) -> None:
    """The unit square, equal aspect and axis labels of an ROC panel."""
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("false-positive rate (1 - specificity)")
    ax.set_ylabel("true-positive rate (recall)")


def roc_curves(predictions: pd.DataFrame, paths: Sequence[str | Path]) -> list[Path]:
    """Write :func:`roc_curves_figure` to ``paths`` (see :func:`save_figure`)."""
    return save_figure(roc_curves_figure(predictions), paths)


# --------------------------------------------------------------------------- training curves


def _history(history: pd.DataFrame) -> pd.DataFrame:
    df = _table(history, HISTORY_COLUMNS, "history")
    _numeric(df, "epoch", "history", allow_nan=False)
    for column in ("train_loss", "val_loss", "best"):
        _numeric(df, column, "history")
    _no_duplicates(df, ("model", "replicate", "epoch"), "history")
    return df.sort_values(["model", "replicate", "epoch"], kind="stable")


def training_curves_figure(history: pd.DataFrame) -> Figure:
    """Per model: training (solid) and validation (dashed) loss against epoch.

    Each run is drawn faint, the mean over the runs that reached an epoch bold; a star marks
    each run's chosen checkpoint (``best == 1``) on its validation loss (on its training loss
    where the validation loss is missing).
    """
    df = _history(history)
    models = sorted(df["model"].unique())
    palette = model_palette(models)
    with figure_style():
        fig, axes = new_figure(len(models), 3, (3.8, 3.2))
        for ax, model in zip(axes, models):
            colour = palette[model]
            sub = df[df["model"] == model]
            for _, run in sub.groupby("replicate", sort=True):
                ax.plot(run["epoch"], run["train_loss"], color=colour, alpha=0.25, lw=0.8)
                ax.plot(run["epoch"], run["val_loss"], color=colour, alpha=0.25, lw=0.8, ls="--")
            mean = sub.groupby("epoch", sort=True)[["train_loss", "val_loss"]].mean()
            ax.plot(mean.index, mean["train_loss"], color=colour, lw=2.0)
            has_val = mean["val_loss"].notna().any()
            if has_val:
                ax.plot(mean.index, mean["val_loss"], color=colour, lw=2.0, ls="--")
            best = sub[sub["best"] == 1]
            y = best["val_loss"].where(best["val_loss"].notna(), best["train_loss"])
            ax.scatter(best["epoch"], y, marker="*", s=70, color=colour, edgecolors="black",
                       linewidths=0.6, zorder=3)
            handles = [Line2D([], [], color=colour, lw=2.0, label="train loss (mean)")]
            if has_val:
                handles.append(Line2D([], [], color=colour, lw=2.0, ls="--",
                                      label="validation loss (mean)"))
            if not best.empty:
                handles.append(Line2D([], [], ls="", marker="*", markersize=9, color=colour,
                                      markeredgecolor="black", label="chosen epoch"))
            ax.legend(handles=handles, loc="upper right")
            n = sub["replicate"].nunique()
            ax.set_title(f"{model} ({n} run{'s' if n != 1 else ''})")
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss")
        fig.suptitle("Training history (faint: runs, bold: mean over runs)")
    return fig


def training_curves(history: pd.DataFrame, paths: Sequence[str | Path]) -> list[Path]:
    """Write :func:`training_curves_figure` to ``paths`` (see :func:`save_figure`)."""
    return save_figure(training_curves_figure(history), paths)


# --------------------------------------------------------------------------- cost


def _cost(cost: pd.DataFrame) -> pd.DataFrame:
    df = _table(cost, COST_COLUMNS, "cost")
    for column in COST_NUMBERS:
        _numeric(df, column, "cost")
    df["device"] = df["device"].fillna("?").astype(str)
    _no_duplicates(df, ("model", "replicate"), "cost")
    return df


def _range_text(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "?"
    low, high = float(values.min()), float(values.max())
    return _human(low) if low == high else f"{_human(low)}-{_human(high)}"


def cost_plot_figure(cost: pd.DataFrame) -> Figure:
    """Per model: training time, feature-extraction time and throughput, with parameter counts.

    Bars are means over runs with ± sd error bars and each run as a point; the feature
    extraction is done once per model and shared by its runs. Parameter counts (total and
    trainable) and the device are written under each model's name.
    """
    df = _cost(cost)
    models = sorted(df["model"].unique())
    palette = model_palette(models)
    devices = sorted(df["device"].unique())
    labels = []
    for model in models:
        sub = df[df["model"] == model]
        label = (f"{model}\n{_range_text(sub['parameters_total'])} params"
                 f"\n{_range_text(sub['parameters_trainable'])} trainable")
        if len(devices) > 1:
            label += "\non " + ", ".join(sorted(sub["device"].unique()))
        labels.append(label)
    panels = (
        ("training_seconds", "Training time per run", "seconds"),
        ("feature_seconds", "Feature extraction (shared by a model's runs)", "seconds"),
        ("samples_per_second", "Training throughput", "samples / s"),
    )
    x = np.arange(len(models))
    with figure_style():
        fig, axes = new_figure(len(panels), 3, (max(3.0, 1.1 * len(models) + 1.2), 3.8))
        for ax, (column, title, unit) in zip(axes, panels):
            for i, model in enumerate(models):
                values = df.loc[df["model"] == model, column].dropna().to_numpy(dtype=float)
                if values.size == 0:
                    ax.text(i, 0, "n/a", ha="center", va="bottom", color="0.4")
                    continue
                mean, sd = float(values.mean()), _sd(values)
                ax.bar(i, mean, width=0.6, color=palette[model], alpha=0.55,
                       edgecolor=palette[model], yerr=sd if sd > 0 else None,
                       capsize=4, error_kw={"lw": 1.0, "ecolor": "0.2"})
                if column != "feature_seconds":
                    ax.scatter(i + _spread(values.size), values, s=12, color="0.2", zorder=3)
                top = max(mean + (0.0 if np.isnan(sd) else sd), float(values.max()))
                ax.annotate(f"{mean:.3g}", (i, top), xytext=(0, 4), textcoords="offset points",
                            ha="center", va="bottom", fontsize=8)
            ax.grid(axis="x", visible=False)
            ax.margins(y=0.12)
            ax.set_xticks(x, labels=labels)
            ax.set_xlim(-0.6, len(models) - 0.4)
            ax.set_ylim(bottom=0)
            ax.set_title(title)
            ax.set_ylabel(unit)
        suffix = f" on {devices[0]}" if len(devices) == 1 else ""
        fig.suptitle(f"Computational cost per model{suffix} (mean ± sd over runs)")
    return fig


def cost_plot(cost: pd.DataFrame, paths: Sequence[str | Path]) -> list[Path]:
    """Write :func:`cost_plot_figure` to ``paths`` (see :func:`save_figure`)."""
    return save_figure(cost_plot_figure(cost), paths)


# --------------------------------------------------------------------------- all metric figures


#: The stems :func:`metric_figures` writes (each as STEM.png and STEM.svg).
METRIC_FIGURES = ("metrics_boxplot", "confusion_matrices", "paired_runs")


def metric_figures(
    runs: pd.DataFrame, out_dir: str | Path, log: Callable[[str], None] = print
) -> list[Path]:
    """Write the box plots, confusion matrices and paired runs of ``runs`` into ``out_dir``.

    Stems :data:`METRIC_FIGURES`; returns the paths written (PNG and SVG of each), with a
    progress line per figure to ``log``. Any metric is enough for the box plots and paired runs;
    the confusion matrices need the counts tn, fp, fn, tp: without them they are skipped
    with one line to ``log`` (and a pair left in ``out_dir`` by an earlier run is removed, so
    that the folder holds no figure of another table). The table is validated and every
    figure drawn before anything is written.
    """
    out_dir = Path(out_dir)
    runs = _runs(runs)  # validated once here; the figures below take it as it is
    absent = _absent_counts(runs)
    n_models, n_metrics = runs["model"].nunique(), len(_choose_metrics(runs, None))
    # Progress, figure by figure: with many models each takes seconds.
    drawers = [("metrics_boxplot", metric_boxplot_figure, f"{n_metrics} metrics x {n_models} models")]
    if not absent:
        drawers.append(("confusion_matrices", confusion_matrices_figure, f"{n_models} models"))
    drawers.append(("paired_runs", paired_plot_figure, f"{n_metrics} metrics x {n_models} models"))
    figures = []
    for stem, draw, what in drawers:
        started = time.perf_counter()
        figures.append((draw(runs), stem))
        log(f"figures: {stem} ({what}): {time.perf_counter() - started:.1f} s")
    if absent:
        log(f"Confusion-matrix figure skipped: the runs table has no rows for {', '.join(absent)}, which it needs.")
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for fig, stem in figures:
        paths += save_figure(fig, figure_paths(out_dir / stem))
    log(f"figures: {len(paths)} files written: {time.perf_counter() - started:.1f} s")
    if absent:
        for path in figure_paths(out_dir / "confusion_matrices"):
            path.unlink(missing_ok=True)
    return paths


# --------------------------------------------------------------------------- many models


def critical_difference_figure(results: Mapping[str, object], undefined: Mapping[str, str] | None = None) -> Figure:
    """Critical-difference diagrams (Demsar 2006), one panel per metric, drawn by
    :func:`autorank.plot_stats` from autorank's Friedman/Nemenyi ``RankResult`` of each metric
    (mean ranks on the axis, models whose ranks differ by less than the CD joined by a bar).
    A metric whose Friedman test is not significant is drawn too, its title says so.

    When no metric has a defined test (e.g. fewer than 3 complete replicates) the figure says
    why, per metric (``undefined``: metric -> reason), instead of failing: the comparison
    rule declares it, so it must be written."""
    from autorank import plot_stats  # imported here: autorank imports pyplot, which nothing else needs

    if not results:
        if not undefined:
            raise DataError("no metric has a defined Friedman test: no critical-difference diagram to draw")
        fig = Figure(figsize=(7.0, 0.8 + 0.3 * len(undefined)), layout="constrained")
        ax = fig.subplots()
        ax.axis("off")
        lines = [f"{METRIC_LABELS.get(m, m)}: {why}" for m, why in undefined.items()]
        ax.text(0.0, 1.0, "No critical-difference diagram: the Friedman test is undefined\n" + "\n".join(lines),
                va="top", ha="left", fontsize=8, transform=ax.transAxes)
        return fig
    n_models = len(next(iter(results.values())).rankdf)
    height = 0.9 + 0.22 * n_models
    fig = Figure(figsize=(7.0, height * len(results)), layout="constrained")
    axes = fig.subplots(len(results), 1, squeeze=False)[:, 0]
    with matplotlib.rc_context(_RC), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ax, (metric, result) in zip(axes, results.items()):
            plot_stats(result, allow_insignificant=True, ax=ax)
            verdict = "" if result.pvalue < result.alpha else " (Friedman not significant)"
            ax.set_title(f"{METRIC_LABELS.get(metric, metric)}: Friedman p = {result.pvalue:.3g}, "
                         f"CD = {result.cd:.2f}{verdict}", fontsize=9)  # fmt: skip
    return fig


def critical_difference(results: Mapping[str, object], paths: Sequence[str | Path],
                        undefined: Mapping[str, str] | None = None) -> list[Path]:
    """Write :func:`critical_difference_figure` to ``paths`` (PNG and SVG)."""
    return save_figure(critical_difference_figure(results, undefined), paths)


def leaderboard_figure(board: pd.DataFrame) -> Figure:
    """Each model's mean and 95% CI per rate metric (one panel per metric), in leaderboard order."""
    metrics = [c[: -len("_mean")] for c in board.columns if c.endswith("_mean")]
    if not metrics or board.empty:
        raise DataError("leaderboard is empty: nothing to plot")
    models = list(board["model"])
    palette = model_palette(models)
    with figure_style():
        fig, axes = new_figure(len(metrics), 3, (3.2, 0.5 + 0.35 * len(models)))
        for ax, metric in zip(axes, metrics):
            y = np.arange(len(models))[::-1]
            mean = board[f"{metric}_mean"].to_numpy(dtype=float)
            low = board[f"{metric}_ci_low"].to_numpy(dtype=float)
            high = board[f"{metric}_ci_high"].to_numpy(dtype=float)
            err = np.vstack([np.where(np.isfinite(low), mean - low, 0.0), np.where(np.isfinite(high), high - mean, 0.0)])
            for i, model in enumerate(models):
                ax.errorbar(mean[i], y[i], xerr=err[:, i : i + 1], fmt="o", color=palette[model], capsize=3)
            ax.set_yticks(y, models)
            ax.set_title(METRIC_LABELS.get(metric, metric))
        fig.suptitle(f"Leaderboard: mean and 95% CI over replicates (sorted by {board.attrs.get('sorted_by', '')})")
    return fig


def leaderboard_plot(board: pd.DataFrame, paths: Sequence[str | Path]) -> list[Path]:
    """Write :func:`leaderboard_figure` to ``paths`` (PNG and SVG)."""
    return save_figure(leaderboard_figure(board), paths)


# --------------------------------------------------------------------------- reliability


def reliability_figure(predictions: pd.DataFrame) -> Figure:
    """Reliability diagrams, one panel per model, of every replicate's test patients pooled.

    Each panel: the diagonal (perfect calibration), the observed share of hemorrhage against
    the mean predicted probability in each of :data:`~ichseq.training.calibration.BINS`
    equal-width bins, before calibration (the raw probability; grey, dashed) and after (the
    model's colour); empty bins are left out of a curve, so a model whose probabilities all
    fall in one bin is one point. The strip below counts the patients in each bin (grey
    before, coloured after). The title gives the ECE before -> after as mean ± sd over the
    replicates; the legend the pooled ECE. Runs without uncalibrated probabilities (trained
    before ichseq calibrated) count as uncalibrated (before = after); the title says how many.
    """
    df = calibration_predictions(predictions)
    summary = calibration_models(calibration_runs(df), df).set_index("model")
    models = list(summary.index)
    palette = model_palette(models)
    ncols = min(3, len(models))
    nrows = math.ceil(len(models) / ncols)
    with figure_style():
        fig = Figure(figsize=(3.7 * ncols, 4.9 * nrows), layout="constrained")
        grid = fig.add_gridspec(2 * nrows, ncols, height_ratios=[3.6, 1.0] * nrows)
        for i, model in enumerate(models):
            row, col = divmod(i, ncols)
            ax = fig.add_subplot(grid[2 * row, col])
            strip = fig.add_subplot(grid[2 * row + 1, col], sharex=ax)
            _reliability_panel(ax, strip, df[df["model"] == model], palette[model], summary.loc[model])
            ax.set_title(f"{model}\n{_reliability_title(summary.loc[model])}")
            strip.set_xlabel("predicted probability")
            strip.set_ylabel("patients")
            strip.set_xticks(np.linspace(0.0, 1.0, 6))
        fig.suptitle(f"Reliability on the test patients\n(replicates pooled, {BINS} equal-width bins; "
                     "ECE: mean ± sd over replicates)")  # fmt: skip
    return fig


def _reliability_panel(ax, strip, sub: pd.DataFrame, colour, stats: pd.Series) -> None:
    """One model's reliability curves before and after calibration on ``ax``, and the
    patients in each bin on ``strip``; ``sub``: its pooled test predictions."""
    width = 1.0 / BINS
    tables = {"before": reliability_table(sub[UNCALIBRATED], sub["label"]),
              "after": reliability_table(sub["probability"], sub["label"])}  # fmt: skip
    styles = {"before": dict(color="0.45", ls="--", lw=1.2, marker="o", ms=4),
              "after": dict(color=colour, ls="-", lw=2.0, marker="o", ms=5)}  # fmt: skip
    ax.plot([0, 1], [0, 1], ls=":", color="0.6", lw=0.9, label="perfectly calibrated")
    for when, table in tables.items():
        filled = table[table["count"] > 0]
        ax.plot(filled["mean_probability"], filled["observed"], zorder=3 if when == "after" else 2,
                label=f"{when} (pooled ECE {stats[f'ece_{when}_pooled']:.3f})", **styles[when])
        offset = -width / 4 if when == "before" else width / 4
        strip.bar(table["lower"] + width / 2 + offset, table["count"], width=width / 2.2,
                  color=styles[when]["color"], alpha=0.8 if when == "after" else 0.6)
    ax.legend(loc="upper left")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("observed share with hemorrhage")
    ax.tick_params(labelbottom=False)


def _reliability_title(stats: pd.Series) -> str:
    """A reliability panel's title under the model's name: the ECE before -> after over the
    replicates, and how many of them were calibrated when not all were."""
    ece = (f"ECE {_pm(stats['ece_before_mean'], stats['ece_before_sd'], '.3f')} → "
           f"{_pm(stats['ece_after_mean'], stats['ece_after_sd'], '.3f')}")  # fmt: skip
    calibrated, replicates = int(stats["calibrated_replicates"]), int(stats["replicates"])
    if calibrated == 0:
        return f"{ece}\nnot calibrated (runs predate calibration)"
    if calibrated < replicates:
        return f"{ece}\n{calibrated} of {replicates} replicates calibrated"
    return ece


def reliability_diagram(predictions: pd.DataFrame, paths: Sequence[str | Path]) -> list[Path]:
    """Write :func:`reliability_figure` to ``paths`` (PNG and SVG)."""
    return save_figure(reliability_figure(predictions), paths)
