"""The pretrain stage: a model trained whole on a pretraining cohort, saved as a checkpoint folder.

A model entry with ``pretrained: pretrain`` is built from its ``config`` (random init), trained
end to end (backbone and classifier) on the pretraining cohort -- a dataset of its own, never
the study cohort -- and saved with the model's ``save`` (for the Hugging Face models a
``save_pretrained`` folder with ``preprocessor_config.json``). The ``features`` and ``train``
jobs then load that folder exactly as they load a hub id or a local checkpoint
(``ModelPlan.with_weights``), so the study's head-only protocol runs unchanged on a backbone
that has seen hemorrhages.

The kept epoch is the one with the best ROC AUC on a held-out, stratified part of the
pretraining patients (``pretrain.holdout_fraction``); its held-out AUC is reported.

Before anything is trained, :func:`check_disjoint` compares the windowed volumes of both
cohorts and refuses a pretraining cohort that shares a scan with the study cohort: test
patients seen in pretraining would leak into every replicate's backbone.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..analysis.figures import training_curves
from ..atomic import atomic_dir, write_csv_atomic, write_json_atomic, write_text_atomic
from ..config import config_default
from ..data.cache import SliceCache
from ..errors import DataError
from ..report import htmlpage
from ..rule_outputs import output_paths
from .loop import fit, select_device
from .plan import ModelPlan
from .runs import CHECKPOINT_NAME, device_name, full_mode_fetches, json_sha256, samples_for
from .settings import TrainSettings, derive_seed

#: Share of the pretraining patients held out: the config's pretrain.holdout_fraction default.
HOLDOUT_FRACTION: float = config_default("pretrain", "holdout_fraction")

#: What ``pretrain_model`` writes, by the pretrain rule's output names.
PRETRAIN_OUTPUTS = ("model", "history", "metrics")


def scan_digests(cache: SliceCache) -> dict[int, str]:
    """SHA-256 of each patient's windowed volume (the cached uint8 slices, in order, with their shape)."""
    digests = {}
    for patient in cache.patients:
        volume = np.ascontiguousarray(cache.slices[cache.patient_rows(patient)])
        digest = hashlib.sha256(str(volume.shape).encode())
        digest.update(volume.tobytes())
        digests[patient] = digest.hexdigest()
    return digests


def check_disjoint(pretrain_cache: SliceCache, study_cache: SliceCache, log=print) -> None:
    """Refuse (one-line DataError) a pretraining cohort that shares a windowed scan with the study cohort."""
    study = {}
    for patient, digest in scan_digests(study_cache).items():
        study.setdefault(digest, patient)
    shared = [(patient, study[digest]) for patient, digest in scan_digests(pretrain_cache).items() if digest in study]
    if shared:
        pairs = ", ".join(f"{p} = study {s}" for p, s in shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
        raise DataError(
            f"pretrain.dataset: {len(shared)} scan(s) of the pretraining cohort are scans of the study cohort "
            f"(patient {pairs}); pretraining on them leaks test patients into the backbone: use a disjoint cohort"
        )
    log(f"pretraining cohort ({len(pretrain_cache.patients)} scans) shares no scan with the study cohort "
        f"({len(study_cache.patients)} scans)")


def holdout_split(patients: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out) patient lists: ``fraction`` of each class held out, at least one of each."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for cls in (0, 1):
        members = np.sort(patients[labels == cls])
        if len(members) < 2:
            raise DataError(f"pretrain.dataset: needs at least 2 patients of each class, has {len(members)} with "
                            f"label {cls}")
        n_held = min(len(members) - 1, max(1, round(fraction * len(members))))
        order = rng.permutation(members)
        held += sorted(int(p) for p in order[:n_held])
        train += sorted(int(p) for p in order[n_held:])
    return sorted(train), sorted(held)


def pretrain_model(plan: ModelPlan, settings: TrainSettings, cache_path, study_cache_path, outputs,
                   holdout_fraction: float = HOLDOUT_FRACTION, seed: int = 0, threads: int = 1, log=print) -> dict:
    """Pretrain ``plan``'s model on the cohort at ``cache_path`` and write ``outputs`` (by the
    names of ``PRETRAIN_OUTPUTS``): the saved model folder, the history and metrics.json."""
    torch.set_num_threads(max(1, int(threads)))
    paths = output_paths(outputs, PRETRAIN_OUTPUTS, "pretrain_model")
    cache, study = SliceCache(cache_path), SliceCache(study_cache_path)
    check_disjoint(cache, study, log=log)

    device = select_device(settings.device)
    model = plan.build()
    samples = samples_for(model, cache, plan)
    patients = np.array(cache.patients, dtype=np.int64)
    labels = np.array([int(cache.patient_labels(p).max()) for p in patients], dtype=np.int64)
    train, held = holdout_split(patients, labels, holdout_fraction, seed)
    train_index, held_index = samples.select(train), samples.select(held)
    run_seed = derive_seed(settings.seed, "pretrain", plan.name)
    model.init_classifier_(run_seed)
    fetch, train_fetch = full_mode_fetches(model, samples, cache, settings, run_seed)
    model.to(device)
    counts = model.parameter_counts()
    log(f"{plan.name}: pretraining {type(model).__name__} ({counts['total']:,} parameters) on {device}: "
        f"{len(train)} patients ({len(train_index)} samples), {len(held)} held out ({len(held_index)} samples)")

    fingerprint = json_sha256({"plan": plan.as_dict(), "settings": settings.as_dict(), "holdout": held,
                           "cache": cache.meta})
    t0 = time.perf_counter()
    result = fit(model, model, fetch, samples.label, samples.patient, train_index, held_index, settings, run_seed,
                 checkpoint=paths["metrics"].parent / CHECKPOINT_NAME, fingerprint=fingerprint, log=log,
                 train_fetch=train_fetch)
    model.load_state_dict(result.best_state)
    best = result.history.loc[result.history.best == 1].iloc[0]
    report = {
        "model": plan.name, "architecture": plan.architecture, "best_epoch": int(result.best_epoch),
        "holdout_roc_auc": None if np.isnan(best["val_roc_auc"]) else float(best["val_roc_auc"]),
        "holdout_balanced_accuracy": None if np.isnan(best["val_balanced_accuracy"]) else float(best["val_balanced_accuracy"]),
        "patients": {"train": len(train), "holdout": len(held),
                     "holdout_positive": int(labels[np.isin(patients, held)].sum())},
        "samples": {"train": int(len(train_index)), "holdout": int(len(held_index))},
        "cohort": cache.meta.get("source"), "settings": settings.as_dict(),
        "training_seconds": round(result.seconds, 3), "device": device_name(device),
    }
    with atomic_dir(paths["model"]) as tmp:
        model.save(tmp, settings=plan.model)
        (tmp / "pretrain.json").write_text(json.dumps(report, indent=2) + "\n")
    write_csv_atomic(result.history, paths["history"])
    write_json_atomic(paths["metrics"], report)  # last: its presence means the stage is complete
    (paths["metrics"].parent / CHECKPOINT_NAME).unlink(missing_ok=True)
    auc = report["holdout_roc_auc"]
    log(f"{plan.name}: kept epoch {result.best_epoch}, held-out patient ROC AUC "
        f"{'n/a' if auc is None else f'{auc:.3f}'} ({time.perf_counter() - t0:.0f} s)")
    return report


#: What ``summarise_pretraining`` reads per model and writes, by the pretrain_summary rule's names.
SUMMARY_INPUTS = ("metrics", "history")
SUMMARY_OUTPUTS = ("table", "page", "curves", "curves_svg")


def summarise_pretraining(inputs, outputs) -> dict[str, Path]:
    """One row per pretrained model (cohort size, held-out AUC, kept epoch, seconds) as a CSV and an
    HTML page, and the pretraining curves (the training-curves figure; ``val`` = held out).
    ``inputs`` maps SUMMARY_INPUTS to per-model file lists (same model order); ``outputs`` maps
    SUMMARY_OUTPUTS to paths."""
    reports = [json.loads(Path(p).read_text()) for p in inputs["metrics"]]
    table = pd.DataFrame([{
        "model": r["model"], "cohort": r["cohort"], "patients_train": r["patients"]["train"],
        "patients_holdout": r["patients"]["holdout"], "holdout_positive": r["patients"]["holdout_positive"],
        "samples_train": r["samples"]["train"], "best_epoch": r["best_epoch"],
        "holdout_roc_auc": r["holdout_roc_auc"], "holdout_balanced_accuracy": r["holdout_balanced_accuracy"],
        "training_seconds": r["training_seconds"], "device": r["device"],
    } for r in reports])
    histories = []
    for report, path in zip(reports, inputs["history"]):
        history = pd.read_csv(path)
        history.insert(0, "replicate", 0)
        history.insert(0, "model", report["model"])
        histories.append(history)
    paths = output_paths(outputs, SUMMARY_OUTPUTS, "summarise_pretraining")
    write_csv_atomic(table, paths["table"])
    write_text_atomic(paths["page"], htmlpage.page("Pretraining", [
        htmlpage.note("Each backbone was pretrained on the pretraining cohort below, which shares no scan with the "
                      "study cohort; the held-out AUC is read on its held-out patients, never on study patients."),
        htmlpage.frame_table(table)]))
    training_curves(pd.concat(histories, ignore_index=True), [paths["curves"], paths["curves_svg"]])
    return paths
