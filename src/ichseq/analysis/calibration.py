"""Calibration of every run's test probabilities, before and after its calibration map.

Each run fits a monotone map of its patient logit on its own validation patients
(:mod:`ichseq.training.calibration`) and writes both probabilities of each test patient to its
``predictions.csv``: ``probability`` (calibrated) and ``probability_uncalibrated`` (the model's
raw one). The collected table (``results/metrics/predictions.csv``, ``model, replicate`` in
front) is read here into:

* :func:`calibration_runs` -- one row per run: test patients, expected calibration error (ECE,
  equal-width bins :data:`~ichseq.training.calibration.BINS`) and Brier score before and after;
* :func:`calibration_models` -- one row per model: mean and sd over replicates of each, and the
  ECE of all replicates' test patients pooled.

A run trained before ichseq calibrated has no ``probability_uncalibrated`` column (or, stacked
with newer runs, empty cells there): its ``probability`` is the raw one, so it counts as
uncalibrated, before == after, with ``calibrated`` false -- never an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ichseq.analysis.checked import is_validated, mark_validated
from ichseq.atomic import write_csv_atomic, write_text_atomic
from ichseq.columns import RUN_KEYS, UNCALIBRATED
from ichseq.errors import DataError
from ichseq.report import htmlpage
from ichseq.training import calibration as fitted

#: What the collected predictions table must hold (``probability_uncalibrated`` is optional).
REQUIRED = (*RUN_KEYS, "patient", "label", "probability")
#: The per-run numbers, each ``_before`` (raw) and ``_after`` (calibrated).
MEASURES = ("ece", "brier")
RUN_TABLE_COLUMNS = (*RUN_KEYS, "n", "calibrated", "ece_before", "ece_after", "brier_before", "brier_after")
#: The outputs :func:`write_calibration` knows: per-model CSV, per-run CSV, the HTML page.
OUTPUT_NAMES = ("models", "runs", "html")


def _frame(df, columns, table: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{table} table must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{table} table lacks column(s) {', '.join(missing)}; it needs {', '.join(columns)}")
    if df.empty:
        raise DataError(f"{table} table is empty: no test patient to measure")
    return df


def _probabilities(df: pd.DataFrame, column: str, table: str, allow_nan: bool = False) -> pd.Series:
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = values.isna() & raw.notna()
    if bad.any():
        raise DataError(f"{table} table: column {column} holds a non-numeric value {raw[bad].iloc[0]!r}")
    if not allow_nan and values.isna().any():
        raise DataError(f"{table} table: column {column} has an empty (NaN) value")
    outside = (values < 0.0) | (values > 1.0)
    if outside.any():
        raise DataError(f"{table} table: column {column} must lie in [0, 1], found {values[outside].iloc[0]:g}")
    return values


def calibration_predictions(predictions: pd.DataFrame, table: str = "predictions") -> pd.DataFrame:
    """The collected predictions checked: ``model, replicate, patient, label, probability,
    probability_uncalibrated, calibrated``. Where a run has no uncalibrated probability (a run
    from before calibration: the column absent, or empty for all its rows) it is its
    ``probability`` and ``calibrated`` is False. One-line :class:`DataError` naming ``table``
    on a missing column, an empty table, a label other than 0/1, a probability outside [0, 1],
    a patient twice in a run, or a run with the uncalibrated probability for some patients only.
    The very frame returned is not checked again (so its ``calibrated`` flags are kept)."""
    if is_validated(predictions, "calibration predictions"):  # its flags would be lost by a second pass
        return predictions
    df = _frame(predictions, REQUIRED, table)
    out = df.loc[:, list(REQUIRED)].copy()
    if out["model"].isna().any():
        raise DataError(f"{table} table: column model has an empty value")
    out["model"] = out["model"].astype(str)
    label = pd.to_numeric(out["label"], errors="coerce")
    bad = ~label.isin((0, 1))
    if bad.any():
        raise DataError(f"{table} table: column label must hold 0 or 1, found {out.loc[bad, 'label'].iloc[0]!r}")
    out["label"] = label.astype(int)
    out["probability"] = _probabilities(df, "probability", table)
    raw = (_probabilities(df, UNCALIBRATED, table, allow_nan=True) if UNCALIBRATED in df.columns
           else pd.Series(np.nan, index=df.index))  # fmt: skip
    present = raw.notna().groupby([out["model"], out["replicate"]]).agg(["all", "any"])
    partial = present[present["any"] & ~present["all"]]
    if not partial.empty:
        model, replicate = partial.index[0]
        raise DataError(f"{table} table: run {model} replicate {replicate} has {UNCALIBRATED} for some patients "
                        "only; rerun its train rule")  # fmt: skip
    out["calibrated"] = raw.notna()
    out[UNCALIBRATED] = raw.where(raw.notna(), out["probability"])
    dup = out.duplicated(["model", "replicate", "patient"], keep=False)
    if dup.any():
        first = out.loc[dup].iloc[0]
        raise DataError(f"{table} table has more than one row for model={first.model}, replicate={first.replicate}, "
                        f"patient={first.patient}")  # fmt: skip
    out = out[[*REQUIRED, UNCALIBRATED, "calibrated"]].sort_values(list(RUN_KEYS), kind="stable")
    return mark_validated(out, "calibration predictions")


def _measures(before, after, labels) -> dict:
    return {"ece_before": fitted.expected_calibration_error(before, labels),
            "ece_after": fitted.expected_calibration_error(after, labels),
            "brier_before": fitted.brier_score(before, labels),
            "brier_after": fitted.brier_score(after, labels)}  # fmt: skip


def calibration_runs(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, replicate), sorted: ``n`` test patients, ``calibrated`` (False for a
    run without uncalibrated probabilities: then before == after), and ECE and Brier score of
    the test patients' probabilities before (raw) and after (calibrated) calibration, as
    :func:`ichseq.training.calibration.expected_calibration_error` and ``brier_score``."""
    df = calibration_predictions(predictions)
    rows = []
    for (model, replicate), run in df.groupby(list(RUN_KEYS), sort=True):
        labels = run["label"].to_numpy()
        rows.append({"model": model, "replicate": replicate, "n": len(run), "calibrated": bool(run["calibrated"].all()),
                     **_measures(run[UNCALIBRATED].to_numpy(), run["probability"].to_numpy(), labels)})
    return pd.DataFrame(rows, columns=list(RUN_TABLE_COLUMNS))


def _sd(values: pd.Series) -> float:
    values = values.dropna().to_numpy(dtype=float)
    return float(np.std(values, ddof=1)) if values.size > 1 else float("nan")


def calibration_models(runs_table: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per model, sorted: ``replicates``, ``calibrated_replicates``, ``patients`` (test
    patients over all replicates), the mean and sample sd over replicates of each per-run
    number of ``runs_table`` (:func:`calibration_runs`; sd empty with one replicate), and
    ``ece_before_pooled`` / ``ece_after_pooled``: the ECE of every replicate's test patients
    taken together.

    The pooled ECE is the steadier number: with ~22 test patients per replicate most of the 10
    bins hold 0-3 patients, so a replicate's ECE is dominated by the noise of a few observed
    shares (and biased upwards: even perfectly calibrated probabilities show a gap in a bin of
    two patients). Pooling the replicates puts ~10 times as many patients in the bins. The mean
    ± sd says how much one replicate's value varies."""
    runs = _frame(runs_table, RUN_TABLE_COLUMNS, "calibration runs")
    df = calibration_predictions(predictions)
    unknown = sorted(set(runs["model"].astype(str)) - set(df["model"]))
    if unknown:
        raise DataError(f"calibration runs table: model(s) {', '.join(unknown)} have no row in the predictions table")
    rows = []
    for model, sub in runs.assign(model=runs["model"].astype(str)).groupby("model", sort=True):
        row = {"model": model, "replicates": int(sub["replicate"].nunique()),
               "calibrated_replicates": int(sub["calibrated"].astype(bool).sum()), "patients": int(sub["n"].sum())}
        for measure in MEASURES:
            for when in ("before", "after"):
                column = sub[f"{measure}_{when}"].astype(float)
                row[f"{measure}_{when}_mean"] = float(column.mean())
                row[f"{measure}_{when}_sd"] = _sd(column)
        pooled = df[(df["model"] == model) & df["replicate"].isin(sub["replicate"])]
        labels = pooled["label"].to_numpy()
        row["ece_before_pooled"] = fitted.expected_calibration_error(pooled[UNCALIBRATED].to_numpy(), labels)
        row["ece_after_pooled"] = fitted.expected_calibration_error(pooled["probability"].to_numpy(), labels)
        rows.append(row)
    return pd.DataFrame(rows)


def calibration_html(models: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The report page: the per-model table, then the per-run one, with what they mean."""
    notes = [
        f"Expected calibration error (ECE) over {fitted.BINS} equal-width probability bins: the patient-weighted "
        "mean gap between the mean predicted probability and the observed share of hemorrhage in each bin "
        "(0 = calibrated). Brier score: mean squared error of the probability. Before: the model's raw "
        "probability; after: mapped by the calibration each run fitted on its own validation patients.",
        "With ~22 test patients per replicate a replicate's ECE is noisy (and biased upwards); the pooled ECE, "
        "over every replicate's test patients together, is the steadier number.",
    ]
    old = runs.loc[~runs["calibrated"].astype(bool)]
    if not old.empty:
        which = ", ".join(f"{r.model} replicate {r.replicate}" for r in old.itertuples())
        notes.append(f"Not calibrated (trained before ichseq calibrated; before = after): {which}.")
    return htmlpage.page("Calibration of the test probabilities", [
        *(htmlpage.note(n) for n in notes),
        htmlpage.heading("Per model (mean ± sd over replicates, and pooled)"), htmlpage.frame_table(models),
        htmlpage.heading("Per run"), htmlpage.frame_table(runs),
    ])


def write_calibration(predictions: pd.DataFrame, outputs: Mapping[str, str | Path],
                      log: Callable[[str], None] = lambda _: None) -> dict[str, Path]:
    """Write exactly ``outputs`` (keys of :data:`OUTPUT_NAMES` -> paths): ``models`` (CSV of
    :func:`calibration_models`), ``runs`` (CSV of :func:`calibration_runs`), ``html`` (both as a
    page). Everything is computed before the first file is written; returns the paths."""
    unknown = [k for k in outputs if k not in OUTPUT_NAMES]
    if unknown:
        raise ValueError(f"unknown output key(s) {', '.join(unknown)}; known: {', '.join(OUTPUT_NAMES)}")
    runs = calibration_runs(predictions)
    models = calibration_models(runs, predictions)
    for row in models.itertuples():
        log(f"calibration: {row.model}: ECE {row.ece_before_pooled:.3f} -> {row.ece_after_pooled:.3f} (pooled over "
            f"{row.replicates} replicates, {row.patients} test patients; {row.calibrated_replicates} calibrated)")
    texts = {"models": models, "runs": runs, "html": calibration_html(models, runs)}
    paths = {k: Path(outputs[k]) for k in OUTPUT_NAMES if k in outputs}
    for key, path in paths.items():
        if key == "html":
            write_text_atomic(path, texts[key])
        else:
            write_csv_atomic(texts[key], path)
    return paths
