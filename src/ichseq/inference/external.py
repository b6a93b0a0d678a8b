"""A whole cached cohort scored by the trained runs of one model (external validation).

Where ``ichseq predict`` reads one new scan into a one-patient slice cache, an external cohort
(another dataset, cached by the same brain-window step with the study's preprocessing) is a
slice cache already: each replicate builds its samples over every patient at once with the
same ``build_samples`` as training, scores them in batches and decides each patient with its
own rule on its own calibrated scale (:func:`ichseq.training.calibration.decide`, the function
its test patients were decided by). Head-mode replicates share the frozen backbone: its
features of the cohort are computed once per model (:class:`~ichseq.inference.predict.SharedFeatures`).

Only patient labels are read (the highest slice label of each patient, which a scan-labelled
cohort such as CQ500 gives every slice): a slice-level model trained with slice labels can be
tested on a cohort without them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import write_csv_atomic
from ..data.cache import SliceCache
from ..errors import DataError
from ..training.calibration import decide
from ..training.loop import predict_logits
from ..training.samples import SLICE_LEVEL, build_samples
from .predict import SharedFeatures, TrainedRun, load_runs

#: Columns of ``scores.csv`` (as :data:`ichseq.analysis.external.SCORE_COLUMNS`).
SCORE_COLUMNS = ("patient", "label", "replicate", "probability", "prediction")


def check_preprocess(runs: list[TrainedRun], cache: SliceCache) -> None:
    """Refuse a cohort cached otherwise than the runs' training cache (window, slice size)."""
    cached = {"window": cache.meta.get("window"), "image_size": int(cache.slices.shape[1])}
    for run in runs:
        trained = {"window": run.preprocess.get("window"), "image_size": int(run.preprocess["image_size"])}
        if cached != trained:
            raise DataError(f"{cache.path}: cached with {cached} but {run.path} was trained on slices made with "
                            f"{trained}; cache the external cohort with the study's preprocess section")


def run_decision(run: TrainedRun) -> dict:
    """The run's decision rule as ``score_run`` applies it."""
    decision = dict(run.info.get("decision") or {"rule": "threshold", "threshold": run.plan.aggregation["threshold"]})
    if run.model.kind not in SLICE_LEVEL and decision["rule"] not in ("threshold", "max_prob"):
        decision["rule"] = "threshold"
    return decision


def score_cohort_run(run: TrainedRun, cache: SliceCache, shared: SharedFeatures) -> pd.DataFrame:
    """One replicate's patient rows (patient, label, replicate, probability, prediction) on ``cache``."""
    model, plan = run.model, run.plan
    samples = build_samples(cache, model.kind, model.num_frames, plan.frames["policy"], plan.frames["padding"],
                            context=int(getattr(model, "context", 0)))
    with torch.no_grad():
        logits = predict_logits(model, shared.fetch(run, samples, "cohort"), np.arange(len(samples)),
                                plan.training.feature_batch_size)
    z = (logits[:, 1] - logits[:, 0]).double().numpy()
    decision = run_decision(run)
    labels = cache.manifest.groupby("patient").label.max()
    rows = []
    order = np.argsort(samples.patient, kind="stable")
    patients, starts = np.unique(samples.patient[order], return_index=True)
    for patient, chunk in zip(patients, np.split(order, starts[1:])):
        probability, positive, _ = decide(z[chunk], decision, run.calibration)
        rows.append({"patient": int(patient), "label": int(labels.loc[patient] > 0), "replicate": run.replicate,
                     "probability": float(probability), "prediction": int(positive)})
    missing = sorted(set(cache.patients) - set(int(p) for p in patients))
    if missing:
        raise DataError(f"{cache.path}: {run.path} made no sample of patient(s) {missing[:5]}")
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def score_cohort(runs, cache_path, out=None, device: str | None = None, log=print) -> pd.DataFrame:
    """Every patient of the cached cohort at ``cache_path`` scored by every run of ``runs`` (run
    or model folders, see :func:`~ichseq.inference.predict.load_runs`); written to ``out`` (CSV)
    when given. One row per patient and replicate."""
    runs = load_runs(runs, device=device, log=log) if not (runs and isinstance(runs[0], TrainedRun)) else runs
    cache = SliceCache(cache_path)
    check_preprocess(runs, cache)
    shared = SharedFeatures(cache)
    tables = []
    for run in runs:
        table = score_cohort_run(run, cache, shared)
        log(f"{run.plan.name} rep-{run.replicate}: {len(table)} patients scored, {int(table.prediction.sum())} "
            f"positive ({int(table.label.sum())} labelled positive)")
        tables.append(table)
    scores = pd.concat(tables, ignore_index=True)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(scores, out)
    return scores
