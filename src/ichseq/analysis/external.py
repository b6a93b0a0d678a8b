"""External validation: the trained runs of each model on a cohort they never saw.

The study trains each model on replicate splits of one cohort; an *external* cohort (another
dataset, e.g. CQ500 for models trained on CT-ICH) is scored by every replicate of every model
(:mod:`ichseq.inference.external`, one ``scores.csv`` per model: one row per external patient and
replicate, the calibrated probability and the run's own decision). This module turns those
tables into:

* per model and replicate the binary metrics (:func:`replicate_metrics`,
  :func:`ichseq.training.metrics.binary_metrics`);
* per model the mean over replicates and the **ensemble** (mean probability, majority vote, a tie
  counting as hemorrhage as in ``ichseq predict``), each with a percentile bootstrap 95% CI over
  the external *patients* (:func:`summarise`): every resample draws patients with replacement
  (``numpy.random.default_rng(seed)``), every replicate and the ensemble are evaluated on the same
  resampled patients, and the mean over replicates is taken within each resample, so the interval
  is about the cohort's sampling, which the replicates' spread does not show;
* the internal (the study's test metrics, ``results/metrics/runs.csv``) against external table
  (:func:`internal_vs_external`);
* an ROC figure per model (:func:`external_roc_figure`).

Only patient labels are used: a cohort without slice labels (CQ500) tests any model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import roc_auc_score, roc_curve

from ..atomic import write_csv_atomic, write_text_atomic
from ..columns import PREDICTION_COLUMNS
from ..errors import DataError
from ..report import htmlpage
from ..report.tables import md_table
from ..rule_outputs import output_paths
from ..training.metrics import binary_metrics
from .figures import figure_style, model_palette, new_figure, roc_axes, save_figure
from .stats import read_runs

#: Columns of an external ``scores.csv`` (one row per external patient and replicate).
SCORE_COLUMNS = ("patient", "label", "replicate", "probability", "prediction")
#: The metrics reported with bootstrap CIs, in table order.
METRICS = ("roc_auc", "balanced_accuracy", "recall", "specificity", "accuracy", "precision", "f1")
#: The two estimates per model: the replicates' mean, and their ensemble.
REPLICATE_MEAN, ENSEMBLE = "replicate_mean", "ensemble"
ENSEMBLE_RULE = "mean probability; majority of the replicates' decisions, a tie counting as hemorrhage"
#: Names of the outputs :func:`write_external` writes (the external_metrics rule's).
EXTERNAL_OUTPUTS = ("metrics", "replicates", "page", "table", "table_md", "roc_png", "roc_svg")
#: Most values (resamples x patients) one batch of the bootstrap holds at once.
_BATCH_VALUES = 4_000_000


# --------------------------------------------------------------------------- scores


def check_scores(scores: pd.DataFrame, source: str = "scores") -> pd.DataFrame:
    """``scores`` validated (columns, 0/1 labels and predictions, probabilities in [0, 1], one row
    per patient and replicate, one label per patient, every patient scored by every replicate)."""
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)}; expected {','.join(SCORE_COLUMNS)}")
    df = scores[list(SCORE_COLUMNS)].copy()
    if df.empty:
        raise DataError(f"{source}: no rows")
    for column in ("label", "prediction"):
        if not df[column].isin((0, 1)).all():
            raise DataError(f"{source}: column {column} must hold 0 or 1")
    probability = pd.to_numeric(df.probability, errors="coerce")
    if probability.isna().any() or ((probability < 0) | (probability > 1)).any():
        raise DataError(f"{source}: column probability must hold numbers in [0, 1]")
    df["probability"] = probability.astype(float)
    df[["patient", "label", "replicate", "prediction"]] = df[["patient", "label", "replicate", "prediction"]].astype(int)
    if df.duplicated(["patient", "replicate"]).any():
        raise DataError(f"{source}: a patient is scored twice by one replicate")
    if (df.groupby("patient").label.nunique() > 1).any():
        raise DataError(f"{source}: a patient has two labels")
    counts = df.groupby("replicate").patient.nunique()
    if (counts != df.patient.nunique()).any():
        raise DataError(f"{source}: not every replicate scored every patient ({counts.to_dict()})")
    return df.sort_values(["replicate", "patient"]).reset_index(drop=True)


def ensemble_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: its label, the replicates' mean probability and their majority
    decision (a tie counts as hemorrhage), as ``ichseq predict`` decides."""
    df = check_scores(scores)
    grouped = df.groupby("patient", sort=True)
    out = pd.DataFrame({"label": grouped.label.first(), "probability": grouped.probability.mean(),
                        "prediction": (grouped.prediction.mean() >= 0.5).astype(int)}).reset_index()
    return out[list(PREDICTION_COLUMNS)]


def replicate_metrics(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per replicate: :func:`~ichseq.training.metrics.binary_metrics` on its patients."""
    df = check_scores(scores)
    rows = []
    for replicate, run in df.groupby("replicate", sort=True):
        rows.append({"replicate": int(replicate), **binary_metrics(run.label, run.prediction, run.probability)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- weighted metrics


def weighted_metrics(labels, predictions, probabilities, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric of :data:`METRICS` for each row of ``weights`` (R, N): patient ``i`` counted
    ``weights[r, i]`` times (a bootstrap resample's multiplicities). NaN where undefined (one class).
    With all weights 1 it equals :func:`binary_metrics`."""
    y = np.asarray(labels, np.int64)
    pred = np.asarray(predictions, np.int64)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    tp = w @ ((y == 1) & (pred == 1)).astype(float)
    tn = w @ ((y == 0) & (pred == 0)).astype(float)
    fp = w @ ((y == 0) & (pred == 1)).astype(float)
    fn = w @ ((y == 1) & (pred == 0)).astype(float)

    def ratio(a, b):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)

    recall, specificity = ratio(tp, tp + fn), ratio(tn, tn + fp)
    out = {"recall": recall, "specificity": specificity, "balanced_accuracy": (recall + specificity) / 2,
           "accuracy": ratio(tp + tn, tp + tn + fp + fn), "precision": ratio(tp, tp + fp),
           "f1": ratio(2 * tp, 2 * tp + fp + fn)}
    # ROC AUC as the Mann-Whitney statistic over the distinct scores (a tie counts one half).
    values, inverse = np.unique(np.asarray(probabilities, np.float64), return_inverse=True)
    positive = np.zeros((len(y), len(values)))
    positive[np.arange(len(y)), inverse] = 1.0
    pos = w @ (positive * (y == 1)[:, None])  # (R, U) positive weight at each distinct score
    neg = w @ (positive * (y == 0)[:, None])
    below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    out["roc_auc"] = ratio((pos * (below + 0.5 * neg)).sum(axis=1), pairs)
    return {name: out[name] for name in METRICS}


def resample_weights(n_patients: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_patients) multiplicities of patients drawn with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=int(n_resamples)).astype(np.float64)


def _percentile_ci(values: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.nan, np.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def summarise(scores: pd.DataFrame, n_resamples: int = 9999, seed: int = 0, confidence: float = 0.95,
              model: str | None = None) -> pd.DataFrame:
    """One model's external summary: per metric of :data:`METRICS` the replicates' mean (with
    their sd) and the ensemble's value, each with a percentile bootstrap CI over patients (the
    same resampled patients for every replicate and the ensemble; the mean over replicates is
    taken in each resample, replicates undefined there left out)."""
    df = check_scores(scores)
    if int(n_resamples) < 1:
        raise ValueError("n_resamples must be at least 1")
    patients = np.sort(df.patient.unique())
    labels = df.drop_duplicates("patient").set_index("patient").label.loc[patients].to_numpy()
    replicates = sorted(df.replicate.unique())
    runs = {r: df[df.replicate == r].set_index("patient").loc[patients] for r in replicates}
    ens = ensemble_scores(df).set_index("patient").loc[patients]
    ones = np.ones((1, len(patients)))
    point_reps = {r: weighted_metrics(labels, run.prediction, run.probability, ones) for r, run in runs.items()}
    point_ens = weighted_metrics(labels, ens.prediction, ens.probability, ones)
    weights = resample_weights(len(patients), n_resamples, seed)
    boot_mean = {m: [] for m in METRICS}
    boot_ens = {m: [] for m in METRICS}
    step = max(1, _BATCH_VALUES // max(1, len(patients)))
    for start in range(0, len(weights), step):
        w = weights[start:start + step]
        per_rep = [weighted_metrics(labels, run.prediction, run.probability, w) for run in runs.values()]
        ensemble = weighted_metrics(labels, ens.prediction, ens.probability, w)
        for m in METRICS:
            stacked = np.vstack([p[m] for p in per_rep])
            defined = np.isfinite(stacked)
            total = np.where(defined, stacked, 0.0).sum(axis=0)
            count = defined.sum(axis=0)
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            boot_mean[m].append(mean)
            boot_ens[m].append(ensemble[m])
    rows = []
    common = {"model": model, "patients": int(len(patients)), "positives": int(labels.sum()),
              "replicates": len(replicates), "resamples": int(n_resamples), "confidence": confidence}
    for m in METRICS:
        values = np.array([point_reps[r][m][0] for r in replicates])
        defined = values[np.isfinite(values)]
        low, high = _percentile_ci(np.concatenate(boot_mean[m]), confidence)
        rows.append({**common, "estimate": REPLICATE_MEAN, "metric": m,
                     "value": float(defined.mean()) if defined.size else np.nan,
                     "sd": float(defined.std(ddof=1)) if defined.size > 1 else np.nan,
                     "ci_low": low, "ci_high": high, "defined_replicates": int(defined.size)})
        low, high = _percentile_ci(np.concatenate(boot_ens[m]), confidence)
        rows.append({**common, "estimate": ENSEMBLE, "metric": m, "value": float(point_ens[m][0]), "sd": np.nan,
                     "ci_low": low, "ci_high": high, "defined_replicates": np.nan})
    out = pd.DataFrame(rows)
    if model is None:
        out = out.drop(columns="model")
    return out


# --------------------------------------------------------------------------- internal vs external


def internal_vs_external(runs: pd.DataFrame, summary: pd.DataFrame, name: str = "external",
                         metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Per model and metric: the study's test metric (mean and sd over replicates of the
    ``model,replicate,metric,value`` runs table) beside the external cohort's (the replicates'
    mean with its bootstrap CI, and the ensemble's), and the drop external minus internal."""
    internal = runs[runs.metric.isin(metrics)].copy()
    internal["value"] = pd.to_numeric(internal.value, errors="coerce")
    stats = internal.groupby(["model", "metric"]).value.agg(["mean", "std"]).rename(
        columns={"mean": "internal", "std": "internal_sd"})
    mean = summary[summary.estimate == REPLICATE_MEAN].set_index(["model", "metric"])
    ens = summary[summary.estimate == ENSEMBLE].set_index(["model", "metric"])
    rows = []
    for model in sorted(summary.model.unique()):
        for metric in metrics:
            key = (model, metric)
            i = stats.loc[key] if key in stats.index else None
            e = mean.loc[key]
            internal_value = float(i["internal"]) if i is not None else np.nan
            rows.append({"model": model, "metric": metric, "internal": internal_value,
                         "internal_sd": float(i["internal_sd"]) if i is not None else np.nan,
                         "external": float(e.value), "external_ci_low": float(e.ci_low),
                         "external_ci_high": float(e.ci_high), "external_ensemble": float(ens.loc[key].value),
                         "ensemble_ci_low": float(ens.loc[key].ci_low), "ensemble_ci_high": float(ens.loc[key].ci_high),
                         "difference": float(e.value) - internal_value, "cohort": name})
    return pd.DataFrame(rows)


def _fmt(value: float, digits: int = 3) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def internal_vs_external_markdown(table: pd.DataFrame, name: str, confidence: float = 0.95) -> str:
    """The table as Markdown: internal mean ± sd, external mean [CI], ensemble [CI], difference."""
    level = f"{confidence:.0%}"
    headers = ["model", "metric", "internal (test, mean ± sd)", f"{name} (mean [{level} CI])",
               f"{name} ensemble [{level} CI]", "difference"]
    rows = [[r.model, r.metric, f"{_fmt(r.internal)} ± {_fmt(r.internal_sd)}" if np.isfinite(r.internal) else "",
             f"{_fmt(r.external)} [{_fmt(r.external_ci_low)}, {_fmt(r.external_ci_high)}]",
             f"{_fmt(r.external_ensemble)} [{_fmt(r.ensemble_ci_low)}, {_fmt(r.ensemble_ci_high)}]",
             _fmt(r.difference)] for r in table.itertuples()]
    text = md_table(headers, rows, ["left", "left", "right", "right", "right", "right"])
    return (f"# Internal vs external ({name})\n\nInternal: the study cohort's test patients, mean ± sd over "
            f"replicates. External: every replicate on every {name} patient; CIs are percentile bootstrap over "
            f"patients. Ensemble: {ENSEMBLE_RULE}. Difference: external mean minus internal mean.\n\n{text}\n")


# --------------------------------------------------------------------------- figure


def external_roc_figure(scores: Mapping[str, pd.DataFrame], name: str = "external") -> Figure:
    """One panel per model: each replicate's ROC curve on the external cohort thin, the
    ensemble's (mean probability) thick; the legend gives the AUCs."""
    models = sorted(scores)
    palette = model_palette(models)
    with figure_style():
        fig, axes = new_figure(max(1, len(models)), 3, (3.6, 3.9))
        for ax, model in zip(axes, models):
            df = check_scores(scores[model], model)
            colour = palette[model]
            ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8)
            if df.label.nunique() < 2:
                ax.text(0.5, 0.5, "one class only: no ROC curve", transform=ax.transAxes, ha="center", color="0.4")
            else:
                aucs = []
                for _, run in df.groupby("replicate", sort=True):
                    fpr, tpr, _ = roc_curve(run.label, run.probability)
                    aucs.append(roc_auc_score(run.label, run.probability))
                    ax.plot(fpr, tpr, color=colour, alpha=0.35, lw=0.9)
                ens = ensemble_scores(df)
                fpr, tpr, _ = roc_curve(ens.label, ens.probability)
                ax.plot(fpr, tpr, color=colour, lw=2.4)
                ax.legend(handles=[
                    Line2D([], [], color=colour, alpha=0.35, lw=0.9,
                           label=f"{len(aucs)} replicate(s), AUC {np.mean(aucs):.2f} mean"),
                    Line2D([], [], color=colour, lw=2.4, label=f"ensemble, AUC {roc_auc_score(ens.label, ens.probability):.2f}"),
                ], loc="lower right")
            ax.set_title(model)
            roc_axes(ax)
        fig.suptitle(f"Patient-level ROC curves on the external cohort ({name})")
    return fig


# --------------------------------------------------------------------------- the rule


def read_scores(path) -> pd.DataFrame:
    try:
        return check_scores(pd.read_csv(path), str(path))
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: unreadable scores table ({exc}); rerun the external_scores rule") from None


def write_external(scores: Mapping[str, str | Path], runs_csv, outputs, name: str = "external",
                   n_resamples: int = 9999, seed: int = 0, confidence: float = 0.95, log=print) -> dict[str, Path]:
    """Every table and figure of the external validation from each model's ``scores.csv``
    (``scores``: model -> path) and the study's runs table, written to ``outputs`` (the names
    of :data:`EXTERNAL_OUTPUTS`)."""
    paths = output_paths(outputs, EXTERNAL_OUTPUTS, "write_external")
    tables = {model: read_scores(path) for model, path in scores.items()}
    per_replicate = pd.concat([replicate_metrics(df).assign(model=model) for model, df in tables.items()])
    per_replicate = per_replicate[["model", *[c for c in per_replicate.columns if c != "model"]]]
    summary = pd.concat([summarise(df, n_resamples, seed, confidence, model=model) for model, df in tables.items()],
                        ignore_index=True)
    summary.insert(0, "cohort", name)
    runs = read_runs(runs_csv)
    versus = internal_vs_external(runs, summary, name)
    for model, df in tables.items():
        auc = summary[(summary.model == model) & (summary.metric == "roc_auc")].set_index("estimate")
        log(f"{model}: {df.patient.nunique()} {name} patients x {df.replicate.nunique()} replicates; ROC AUC "
            f"mean {_fmt(auc.at[REPLICATE_MEAN, 'value'])} [{_fmt(auc.at[REPLICATE_MEAN, 'ci_low'])}, "
            f"{_fmt(auc.at[REPLICATE_MEAN, 'ci_high'])}], ensemble {_fmt(auc.at[ENSEMBLE, 'value'])}")
    write_csv_atomic(summary, paths["metrics"])
    write_csv_atomic(per_replicate, paths["replicates"])
    write_csv_atomic(versus, paths["table"])
    write_text_atomic(paths["table_md"], internal_vs_external_markdown(versus, name, confidence))
    shown = summary.drop(columns=["cohort", "resamples", "confidence"])
    parts = [htmlpage.note(f"Every trained replicate of each model scored every patient of the external cohort "
                           f"{name} ({summary.patients.iloc[0]} patients, {summary.positives.iloc[0]} with "
                           f"hemorrhage). CIs: {confidence:.0%} percentile bootstrap over patients "
                           f"({n_resamples} resamples, seed {seed}); ensemble: {ENSEMBLE_RULE}."),
             htmlpage.heading("Internal (study test) vs external"), htmlpage.frame_table(versus.drop(columns="cohort")),
             htmlpage.heading("Summary per model"), htmlpage.frame_table(shown),
             htmlpage.heading("Per replicate"), htmlpage.frame_table(per_replicate)]
    write_text_atomic(paths["page"], htmlpage.page(f"External validation: {name}", parts))
    save_figure(external_roc_figure(tables, name), [paths["roc_png"], paths["roc_svg"]])
    return paths
