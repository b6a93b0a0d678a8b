"""One model's feature extraction, and one (model, replicate) training run with its outputs.

These are what the ``features`` and ``train`` rules call. A run writes exactly the paths it is
given (the ``train`` rule's outputs, keyed by name, see ``RUN_OUTPUTS``):

* ``metrics.json``  patient-level test metrics (undefined ones are null), plus those only the
  model defines (``extra_test_metrics``: seg_cls's segmentation Dice), the decision rule and the
  calibration map with the test patients' ECE and Brier score before and after it; written last;
* ``predictions.csv``  one row per test patient: patient, label, probability (calibrated on the
  val patients, :mod:`ichseq.training.calibration`), prediction, probability_uncalibrated (the
  model's own: the softmax of the patient's highest sample);
* ``sample_predictions.csv``  one row per test *sample*: each slice (slice models) or each scan
  clip with the slice numbers of its frames (sequence models), with the model's own probability;
* ``history.csv``  per epoch: train loss, val loss, val ROC AUC, val balanced accuracy, lr;
* ``cost.json``  parameters, feature-extraction and training seconds, samples/s, device;
* ``model``  a folder: the trained classifier (head mode: the model's ``save_classifier``,
  ``head.safetensors``) or the whole fine-tuned model (full mode: the model's ``save``; Hugging
  Face ``save_pretrained`` layout for HF models), with ``ichseq.json`` saying how it was made.

Under ``training.checkpoint_selection: test`` (the study's biased protocol) the kept epoch is
chosen on the test patients: metrics.json and cost.json then say ``"checkpoint_selection":
"test"`` and history.csv has test_loss, test_roc_auc and test_balanced_accuracy columns too.

While it trains, ``resume-checkpoint.pt`` beside metrics.json lets a killed job continue; it is
removed once the outputs are complete. It is the one file a run writes that no rule declares:
Snakemake deletes the declared outputs of a failed job, which would defeat resuming.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from ..atomic import atomic_dir, write_csv_atomic, write_json_atomic
from ..columns import COST_COLUMNS, PREDICTION_COLUMNS, UNCALIBRATED
from ..data.cache import SliceCache
from ..data.layout import NIFTI_LAYOUT
from ..data.splits import read_split
from ..errors import ConfigError, DataError
from ..models import load_model
from ..rule_outputs import output_paths
from .feature_store import extract_features, read_feature_store, write_feature_store
from .ood import OOD_FILE, fit_reference, save_reference
from .loop import fit, predict_logits, select_device
from .metrics import binary_metrics
from .plan import ModelPlan
from .samples import SLICE_LEVEL, Samples, build_samples
from .settings import TrainSettings, backbone_seed, derive_seed, run_seed
from .calibration import calibrated, calibration_summary, decide, fit_calibration, patient_logits
from .votes import choose_patient_threshold

if TYPE_CHECKING:
    from ..models.base import CTClassifier

CHECKPOINT_NAME = "resume-checkpoint.pt"
#: What ``train_run`` writes, by the names of the train rule's outputs.
RUN_OUTPUTS = ("metrics", "predictions", "sample_predictions", "history", "cost", "model")
#: The model folder's description of how it was made (read back by ``load_run_model``).
RUN_MODEL_INFO = "ichseq.json"
def full_mode_fetches(model: "CTClassifier", samples, cache, settings: TrainSettings, seed: int):
    """(fetch, train_fetch) of a model trained whole: ``fetch`` gives a batch as it is (held-out
    and test samples); ``train_fetch`` (None when nothing is random) a training batch with the
    settings' random clips and flips/shifts. Turns the model's auxiliary mask loss on when
    ``mask_loss_weight`` asks for it (its head initialised from ``seed``)."""
    if settings.mask_loss_weight:
        model.use_mask_loss(settings.mask_loss_weight, derive_seed(seed, "mask_head"))
    fetch = lambda idx: samples.batch(model, cache, idx)  # noqa: E731
    if not settings.augments:
        return fetch, None
    return fetch, lambda idx, generator: samples.batch(model, cache, idx, augment=settings, generator=generator)


def json_sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def samples_for(model: "CTClassifier", cache: SliceCache, plan: ModelPlan) -> Samples:
    return build_samples(cache, model.kind, model.num_frames, plan.frames["policy"], plan.frames["padding"],
                         context=int(getattr(model, "context", 0)))


def _feature_identity(plan: ModelPlan, kind: str) -> dict:
    """What the cached features depend on: the backbone and which frames a sample holds."""
    if kind == "sequence":
        frames = plan.frames
    elif plan.model.get("num_frames"):  # a slice model limited to N slices per scan: the policy picks them
        frames = {"policy": plan.frames["policy"]}
    else:
        frames = None
    return {"model": plan.name, "architecture": plan.architecture, "settings": plan.model,
            "backbone_seed": backbone_seed(plan.training.seed, plan.name), "frames": frames}


def compute_features(plan: ModelPlan, cache_path, out, threads: int = 1, log=print) -> dict:
    """Backbone features of every sample of the cohort, written as a feature store at ``out``."""
    if plan.backbone is not None:
        raise ConfigError(f"models.{plan.name}: a two-stage model has no feature store of its own; it reads "
                          f"models.{plan.backbone.name}'s (rule features for {plan.backbone.name})")
    torch.set_num_threads(max(1, int(threads)))
    device = select_device(plan.training.device)
    cache = SliceCache(cache_path)
    model = plan.build().freeze_backbone()
    samples = samples_for(model, cache, plan)
    counts = model.parameter_counts()
    log(f"{plan.name}: {type(model).__name__}, {counts['total']:,} parameters, {model.kind} samples: "
        f"{len(samples)} from {len(cache.patients)} patients, on {device}")
    t0 = time.perf_counter()
    features = extract_features(model, cache, samples, plan.training.feature_batch_size, device, log)
    seconds = time.perf_counter() - t0
    meta = {
        **_feature_identity(plan, model.kind),
        "feature_dim": int(features.shape[1]),
        "head_init_std": model.head_init_std,
        "image_size": model.image_size,
        "num_frames": model.num_frames,
        "parameters": {"total": counts["total"], "trainable": counts["trainable"]},
        "device": device_name(device),
        "seconds": round(seconds, 3),
        "samples_per_second": round(len(samples) / seconds, 3) if seconds > 0 else None,
        "cache": cache.meta,
    }
    write_feature_store(out, features, samples, meta)
    log(f"{len(samples)} feature vectors of size {features.shape[1]} in {seconds:.1f} s -> {out}")
    return meta


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _split_indices(samples: Samples, split: dict, cache: SliceCache, split_path) -> dict[str, np.ndarray]:
    known = set(cache.patients)
    index = {}
    for part in ("train", "val", "test"):
        missing = sorted(set(split[part]) - known)
        if missing:
            raise DataError(f"{split_path}: {part} patient {missing[0]} is not in the slice cache; rerun the split rule")
        index[part] = samples.select(split[part])
    return index


def _decide(plan: ModelPlan, kind: str, samples: Samples, index: np.ndarray, logits: np.ndarray,
            val_index: np.ndarray, val_logits: np.ndarray) -> tuple[pd.DataFrame, dict, dict]:
    """Patient predictions of the test samples ``index`` from their logits (positive minus
    negative class), the decision rule used and the calibration map, both fitted on the
    validation samples (:mod:`ichseq.training.calibration`): the table's ``probability`` is the
    calibrated patient probability, ``probability_uncalibrated`` the model's own."""
    aggregation = plan.aggregation
    val = patient_logits(samples.patient[val_index], val_logits)
    val["label"] = pd.Series(samples.label[val_index]).groupby(samples.patient[val_index]).max().to_numpy()
    calibration = fit_calibration(aggregation.get("calibration", "none"), val.z.to_numpy(), val.label.to_numpy())
    rule = aggregation["rule"]
    if kind not in SLICE_LEVEL and rule != "max_prob":
        rule = "threshold"  # one sample per scan: any / k_of_n are its probability >= threshold
    decision = {"rule": rule, "threshold": float(aggregation["threshold"])}
    if rule == "k_of_n":
        decision["k"] = int(aggregation["k"])
    if rule == "max_prob":
        decision["patient_threshold"] = choose_patient_threshold(val.label, calibrated(calibration, val.z))
    frame = pd.DataFrame({"patient": samples.patient[index], "label": samples.label[index], "z": logits})
    rows = []
    for patient, group in frame.groupby("patient", sort=True):
        z = group.z.to_numpy()
        probability, positive, _ = decide(z, decision, calibration)
        rows.append({"patient": int(patient), "label": int(group.label.max()), "probability": probability,
                     "prediction": int(positive), UNCALIBRATED: float(expit(z.max()))})
    return pd.DataFrame(rows), decision, calibration


def preprocess_of(cache: SliceCache) -> dict:
    """How the slices a run trained on were made from a scan (``ichseq.json``'s ``preprocess``,
    so that ``ichseq predict`` puts a new scan through exactly the same steps): the HU window
    (or how the dataset came windowed), the cached slice size, the dataset layout."""
    meta = cache.meta
    return {"window": meta.get("window"), "image_size": int(cache.slices.shape[1]), "layout": meta.get("layout")}


#: A new scan must cover at least this share of the shortest scan (in slices and in mm along the
#: head) the model was developed on (its train and val patients) to get a patient-level answer:
#: its decisions were measured on whole heads only, and a slice model's "no hemorrhage" over a
#: partial scan says nothing about the slices that were not taken.
COVERAGE_FRACTION = 0.75


def input_requirements(cache: SliceCache, patients) -> dict:
    """``ichseq.json``'s ``input_requirements``: the fewest slices and the shortest extent along
    the head (positions' span plus one slice spacing, as :func:`ichseq.data.headcheck.scan_coverage`
    measures a new scan) that ``ichseq predict`` accepts without ``--allow-partial``, from the
    development ``patients``' scans in ``cache``."""
    rows = cache.manifest[cache.manifest.patient.isin([int(p) for p in patients])]
    slices, extents = [], []
    for _patient, scan in rows.groupby("patient"):
        positions = np.sort(scan.position_mm.to_numpy(float))
        spacing = float(np.median(np.diff(positions))) if len(positions) > 1 else 0.0
        slices.append(len(positions))
        extents.append(float(positions[-1] - positions[0]) + spacing)
    if not slices:
        raise DataError(f"{cache.path}: none of the run's development patients is in the slice cache; rerun the "
                        f"brain_window rule")
    return {"min_slices": max(1, int(np.floor(COVERAGE_FRACTION * min(slices)))),
            "min_extent_mm": round(COVERAGE_FRACTION * min(extents), 1),
            "developed_on": {"patients": len(slices), "fewest_slices": int(min(slices)),
                             "shortest_extent_mm": round(min(extents), 1), "fraction": COVERAGE_FRACTION}}


def trained_on(cache: SliceCache, split: dict) -> dict:
    """``ichseq.json``'s ``trained_on``: the dataset the model learnt from (the cache's
    ``dataset`` provenance: whether it is synthetic, its description and generator spec; its
    content digest) and how many patients each part of the split had. ``ichseq predict`` says it
    on every prediction and ``ichseq card`` prints it. A cache written before the provenance was
    recorded gives ``synthetic: None`` (unknown)."""
    dataset = cache.meta.get("dataset") or {"source": None, "synthetic": None,
                                            "description": "not recorded (a slice cache older than ichseq's "
                                                           "dataset provenance)"}
    return {**dataset, "dataset_sha256": cache.meta.get("dataset_sha256"), "cache": str(cache.path),
            "patients": {part: len(split.get(part) or []) for part in ("train", "val", "test")}}


def training_geometry(cache: SliceCache, patients) -> dict:
    """``ichseq.json``'s ``geometry``: the acquisition geometry of the development ``patients``'
    scans in ``cache`` (a run's train and val patients), so that ``ichseq predict`` can reformat a
    new scan to what the model learned from: thin slices averaged into slabs of the training
    spacing, and the in-plane field resampled by millimetres (``model_pixel_mm``) rather than by
    pixel count, which would shrink or blow up a head scanned with another field of view.

    * ``slice_spacing_mm``: the median over patients of each scan's median spacing between
      consecutive slice positions (None when no scan has two slices, or when the layout's
      positions are slice numbers, not mm: the v1.0.0 JPGs);
    * ``pixel_mm``: the median in-plane pixel spacing of the scans as stored, before the resize
      to the cache's size (None when unknown: the JPGs, or a cache written before the manifest
      recorded it);
    * ``field_of_view_mm``: the median over patients of pixel spacing x columns (None when unknown);
    * ``image_size``: the cache's slice size, what the model reads;
    * ``model_pixel_mm``: ``field_of_view_mm / image_size``, the spacing of the pixels the model
      reads (None when unknown);
    * ``patients``: how many of ``patients`` the cache holds, which these were computed from.

    Spacings are rounded to 4 decimals (0.1 um), far below any scanner's precision."""
    rows = cache.manifest[cache.manifest.patient.isin([int(p) for p in patients])]
    if rows.empty:
        raise DataError(f"{cache.path}: none of the run's development patients is in the slice cache; rerun the "
                        f"brain_window rule")
    positions_in_mm = cache.meta.get("layout") == NIFTI_LAYOUT
    spacings, fields = [], []
    for _patient, scan in rows.groupby("patient"):
        positions = np.sort(scan.position_mm.to_numpy(float))
        if positions_in_mm and len(positions) > 1:
            spacings.append(float(np.median(np.diff(positions))))
        field_mm = scan.pixel_mm.to_numpy(float) * scan.source_size.to_numpy(float)
        field_mm = field_mm[np.isfinite(field_mm)]
        if len(field_mm):
            fields.append(float(np.median(field_mm)))
    pixel_mm = rows.pixel_mm.to_numpy(float)
    pixel_mm = pixel_mm[np.isfinite(pixel_mm)]
    image_size = int(cache.slices.shape[1])
    field_of_view = float(np.median(fields)) if fields else None

    def rounded(value):
        return None if value is None else round(float(value), 4)

    return {"slice_spacing_mm": rounded(np.median(spacings)) if spacings else None,
            "pixel_mm": rounded(np.median(pixel_mm)) if len(pixel_mm) else None,
            "field_of_view_mm": rounded(field_of_view),
            "image_size": image_size,
            "model_pixel_mm": rounded(field_of_view / image_size) if field_of_view is not None else None,
            "patients": int(rows.patient.nunique())}


def _save_model_dir(out: Path, model: "CTClassifier", mode: str, info: dict, ood: dict | None = None) -> None:
    with atomic_dir(out) as tmp:
        if mode == "head":
            model.save_classifier(tmp)
        else:
            model.save(tmp, settings=ModelPlan.from_dict(info["plan"]).build_settings())
        if ood is not None:
            save_reference(tmp, ood)
        (tmp / RUN_MODEL_INFO).write_text(json.dumps(info, indent=2, default=str) + "\n")


def _ood_reference(model, plan: "ModelPlan", cache: SliceCache, split: dict, samples, stored_features,
                   store_samples, device, log) -> dict | None:
    """The run's out-of-distribution reference (:mod:`ichseq.training.ood`) on the features its
    classifier reads: the feature store's rows (head mode; a two-stage model's backbone slice
    features), or the trained model's features of its development samples (full mode)."""
    development = [*split["train"], *split["val"]]
    if stored_features is not None:
        features, patients = stored_features, store_samples.patient
    else:
        dev = samples.select(development)
        subset = replace(samples, patient=samples.patient[dev], slice=samples.slice[dev], label=samples.label[dev],
                         rows=samples.rows[dev])
        features = extract_features(model, cache, subset, plan.training.feature_batch_size, device, log=lambda _m: None,
                                    pool=True)
        patients = subset.patient
    keep = np.isin(patients, np.asarray(development, np.int64))
    try:
        return fit_reference(features[keep], patients[keep], split["train"], split["val"])
    except ValueError as exc:  # too few samples: no guard rather than no run
        log(f"{plan.name}: no out-of-distribution reference ({exc})")
        return None


def check_labels_suffice(plan: ModelPlan, model: "CTClassifier", cache: SliceCache) -> None:
    """Refuse, in one line, to train on labels the cache does not have: a dataset with only a
    scan label per patient (CQ500: ``slice_labels: false`` in cache.json, each slice carrying
    its scan's label) cannot teach a slice-level model, whose every slice of a bleeding scan
    would be called a bleed; one without masks (``masks: false``) cannot teach a model that
    learns from them (seg_cls, ``training.mask_loss_weight``). Older caches lack the flags: both true."""
    meta = cache.meta
    if meta.get("slice_labels", True) is False and model.kind in SLICE_LEVEL:
        raise ConfigError(f"models.{plan.name}: a {model.kind}-level model needs slice labels, and the dataset of "
                          f"{cache.path} ({(meta.get('dataset') or {}).get('description', meta.get('layout'))}) has "
                          f"one label per scan only; train it on a dataset with slice labels and use this one as an "
                          f"external test set, or train a scan-level model (vivit, videomae, timesformer, cnn_rnn)")
    needs_masks = "masks" in getattr(model, "needs", ()) or plan.training.mask_loss_weight > 0
    if meta.get("masks", True) is False and needs_masks:
        raise ConfigError(f"models.{plan.name}: it learns from hemorrhage masks, and the dataset of {cache.path} has "
                          f"none; train it on a dataset with masks (CT-ICH, the synthetic twin)")


def load_run_model(model_dir, info: dict | None = None) -> tuple["CTClassifier", dict]:
    """The trained model of a run (its ``model`` output folder) in eval mode, and its ``ichseq.json``
    (``info``: that file's content, already read and adjusted, e.g. paths made absolute).

    A head-mode run saved only the classifier: the backbone is rebuilt from the run's plan (the
    same seed or checkpoint its features came from)."""
    model_dir = Path(model_dir)
    try:
        info = info if info is not None else json.loads((model_dir / RUN_MODEL_INFO).read_text())
        plan = ModelPlan.from_dict(info["plan"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{model_dir}: not a trained model folder ({exc}); rerun the train rule") from None
    if plan.training.mode == "head":
        model = plan.build().load_classifier(model_dir)
    else:
        model = load_model(plan.architecture, model_dir, plan.build_settings(), entry=plan.name)
    return model.eval(), info


@dataclass
class TrainingInputs:
    """What a run trains and how it reads its samples: the same loop serves both modes."""

    module: torch.nn.Module  # what the optimiser updates: the classifier (head) or the whole model (full)
    samples: Samples
    fetch: Callable  # sample indices -> a batch as it is (held-out and test samples)
    train_fetch: Callable | None  # full mode with augmentation: indices, generator -> a training batch
    parameters: dict  # total and trainable, for cost.json
    feature_seconds: float
    provenance: dict  # what the run's inputs were made from (part of the resume fingerprint)
    ood_inputs: tuple  # (stored features, their samples) of a head-mode run; (None, None) in full mode
    store_meta: dict | None = None  # a head-mode run's feature store description


def head_inputs(plan: ModelPlan, model: "CTClassifier", cache: SliceCache, features_path, seed: int,
                device: torch.device, log) -> TrainingInputs:
    """A head-mode run's inputs: the classifier alone trains, on the stored features (the
    backbone never runs); a two-stage model's frames take their slices' rows of its backbone's store."""
    if features_path is None:
        raise ConfigError(f"models.{plan.name}: head mode needs the model's feature store (the features rule)")
    features, samples, meta = read_feature_store(features_path)
    owner = plan.backbone or plan  # a two-stage model reads its backbone's store
    expected = _feature_identity(owner, samples.kind)
    if {k: meta.get(k) for k in expected} != json.loads(json.dumps(expected)):
        raise DataError(f"{features_path}: features were computed for other model settings than "
                        f"models.{owner.name}'s; rerun the features rule")
    model.freeze_backbone().init_classifier_(seed).to(device)
    module = model.classifier
    stored = torch.from_numpy(features).to(device)
    ood_inputs = (features, samples)  # what the classifier reads: the store's rows and their samples
    if plan.backbone is not None:
        # Each frame of a scan / context sample takes its slice's stored row.
        feature_rows = np.full(cache.slices.shape[0], -1, np.int64)
        feature_rows[samples.rows[:, 0]] = np.arange(len(samples))
        samples = samples_for(model, cache, plan)
        log(f"{plan.name}: the slice features of models.{owner.name} from its feature store {features_path} "
            f"(no slice goes through the backbone again)")
        fetch = lambda idx: samples.batch(model, cache, idx, features=stored, feature_rows=feature_rows)  # noqa: E731
    else:
        fetch = lambda idx: samples.batch(model, cache, idx, features=stored)  # noqa: E731
    trainable = sum(p.numel() for p in module.parameters())
    # The stored backbone's parameters, plus a two-stage model's own head.
    parameters = {"total": meta["parameters"]["total"] + (trainable if plan.backbone is not None else 0),
                  "trainable": trainable}
    return TrainingInputs(module, samples, fetch, None, parameters, meta["seconds"],
                          {"features": str(features_path), "feature_store": meta}, ood_inputs, meta)


def full_inputs(plan: ModelPlan, model: "CTClassifier", cache: SliceCache, seed: int,
                device: torch.device) -> TrainingInputs:
    """A full-mode run's inputs: the whole model trains on the cached slices."""
    settings = plan.training
    model.init_classifier_(seed)
    samples = samples_for(model, cache, plan)
    fetch, train_fetch = full_mode_fetches(model, samples, cache, settings, seed)
    model.to(device)
    return TrainingInputs(model, samples, fetch, train_fetch, model.parameter_counts(), 0.0,
                          {"backbone_seed": backbone_seed(settings.seed, plan.name)}, (None, None))


def sample_predictions_table(samples: Samples, cache: SliceCache, kind: str, index: np.ndarray,
                             probabilities: np.ndarray) -> pd.DataFrame:
    """sample_predictions.csv: each test sample with the model's own probability (a slice
    model's rows name their slice, the others' the frames of their clip)."""
    table = samples.table(cache).iloc[index].reset_index(drop=True)
    table["probability"] = probabilities
    return table.drop(columns="slice" if kind not in SLICE_LEVEL else "frames")


def run_cost(plan: ModelPlan, replicate: int, inputs: TrainingInputs, result, device: torch.device) -> dict:
    """cost.json: parameters, seconds, throughput, epochs and device (``COST_COLUMNS``)."""
    settings = plan.training
    values = {
        "model": plan.name, "replicate": int(replicate), "mode": settings.mode,
        "class_imbalance": settings.class_imbalance,
        "parameters_total": int(inputs.parameters["total"]),
        "parameters_trainable": int(inputs.parameters["trainable"]),
        "feature_seconds": inputs.feature_seconds, "training_seconds": round(result.seconds, 3),
        "samples_per_second": round(result.samples_seen / result.seconds, 3) if result.seconds > 0 else None,
        "epochs_run": int(len(result.history)), "best_epoch": int(result.best_epoch),
        "resumed_from_epoch": int(result.resumed_from), "device": device_name(device),
    }
    return {key: values[key] for key in COST_COLUMNS}


def model_info(plan: ModelPlan, replicate: int, best_epoch: int, decision: dict, calibration: dict,
               cache: SliceCache, split: dict, ood: dict | None, inputs: TrainingInputs, features_path) -> dict:
    """The model folder's ichseq.json: how it was made and what it expects of a scan."""
    development = [*split["train"], *split["val"]]  # what the model was developed on: never the test patients
    info = {"plan": plan.as_dict(), "replicate": int(replicate), "best_epoch": int(best_epoch),
            "decision": decision, "calibration": calibration, "preprocess": preprocess_of(cache),
            "input_requirements": input_requirements(cache, development),
            "geometry": training_geometry(cache, development),
            "trained_on": trained_on(cache, split)}
    if ood is not None:
        info["ood"] = {"file": OOD_FILE, "threshold": float(ood["threshold"]), "dim": int(ood["dim"]),
                       "score": "median Mahalanobis distance of the scan's samples (Ledoit-Wolf)"}
    if plan.training.mode == "head":
        info.update({"feature_dim": int(inputs.store_meta["feature_dim"]), "features": str(features_path)})
    return info


def evaluate(plan: ModelPlan, model: "CTClassifier", inputs: TrainingInputs, cache: SliceCache,
             index: dict[str, np.ndarray]) -> tuple[pd.DataFrame, dict, dict, dict, np.ndarray]:
    """The kept epoch's (predictions, decision rule, calibration map, test metrics, test sample
    logits): the rule's threshold and the map are fitted on the val patients."""
    batch_size = plan.training.feature_batch_size

    def positive_logits(idx):
        logits = predict_logits(model, inputs.fetch, idx, batch_size).double()
        return (logits[:, 1] - logits[:, 0]).numpy()

    samples = inputs.samples
    test_logits, val_logits = positive_logits(index["test"]), positive_logits(index["val"])
    predictions, decision, calibration = _decide(plan, model.kind, samples, index["test"], test_logits,
                                                 index["val"], val_logits)
    metrics = binary_metrics(predictions.label, predictions.prediction, predictions.probability)
    # Metrics only some models define (seg_cls: its segmentation Dice), on the test samples' pixels.
    metrics.update(model.extra_test_metrics(lambda idx: samples.batch(model, cache, idx), index["test"],
                                            samples.patient, batch_size))
    return predictions, decision, calibration, metrics, test_logits


def train_run(plan: ModelPlan, replicate: int, split_path, cache_path, outputs, features_path=None,
              threads: int = 1, log=print) -> dict:
    """Train ``plan`` on replicate ``replicate``'s split and write the run's outputs: ``outputs``
    maps each name of ``RUN_OUTPUTS`` to its path (the train rule's ``snakemake.output``).

    ``features_path`` (the model's feature store) is required in head mode. Returns metrics.json's content.
    """
    settings = plan.training
    torch.set_num_threads(max(1, int(threads)))
    device = select_device(settings.device)
    paths = output_paths(outputs, RUN_OUTPUTS, "train_run")
    cache = SliceCache(cache_path)
    split = read_split(split_path)
    seed = run_seed(settings.seed, plan.name, replicate)
    model = plan.build()
    check_labels_suffice(plan, model, cache)
    inputs = (head_inputs(plan, model, cache, features_path, seed, device, log) if settings.mode == "head"
              else full_inputs(plan, model, cache, seed, device))
    samples = inputs.samples

    index = _split_indices(samples, split, cache, split_path)
    fingerprint = json_sha256({"plan": plan.as_dict(), "replicate": replicate, "split": split,
                               "inputs": inputs.provenance, "cache": cache.meta})
    log(f"{plan.name} rep-{replicate}: {settings.mode} training on {device}; "
        + ", ".join(f"{p} {len(index[p])} samples" for p in index))
    checkpoint = paths["metrics"].parent / CHECKPOINT_NAME
    biased = settings.checkpoint_selection == "test"
    result = fit(model, inputs.module, inputs.fetch, samples.label, samples.patient, index["train"], index["val"],
                 settings, seed, checkpoint=checkpoint, fingerprint=fingerprint, log=log,
                 test_index=index["test"] if biased else None, train_fetch=inputs.train_fetch)
    inputs.module.load_state_dict(result.best_state)
    predictions, decision, calibration, metrics, test_logits = evaluate(plan, model, inputs, cache, index)
    cost = run_cost(plan, replicate, inputs, result, device)
    report = {"model": plan.name, "replicate": int(replicate), "best_epoch": int(result.best_epoch),
              "class_imbalance": settings.class_imbalance, "decision": decision,
              "calibration": {**calibration,
                              "test": {"before": calibration_summary(predictions[UNCALIBRATED], predictions.label),
                                       "after": calibration_summary(predictions.probability, predictions.label)}},
              "metrics": metrics}
    if biased:  # only then, so that runs of the default protocol keep their outputs as they were
        cost["checkpoint_selection"] = report["checkpoint_selection"] = "test"

    # The model's own sample probabilities (the patient ones are calibrated, in predictions.csv).
    write_csv_atomic(sample_predictions_table(samples, cache, model.kind, index["test"], expit(test_logits)),
                     paths["sample_predictions"])
    write_csv_atomic(predictions[[*PREDICTION_COLUMNS, UNCALIBRATED]], paths["predictions"])
    write_csv_atomic(result.history, paths["history"])
    write_json_atomic(paths["cost"], cost)
    ood = _ood_reference(model, plan, cache, split, samples, *inputs.ood_inputs, device, log)
    _save_model_dir(paths["model"], model, settings.mode,
                    model_info(plan, replicate, result.best_epoch, decision, calibration, cache, split, ood, inputs,
                               features_path), ood=ood)
    write_json_atomic(paths["metrics"], report)  # last: its presence means the run is complete
    checkpoint.unlink(missing_ok=True)
    shown = {k: (None if v is None else round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
    chosen = " (chosen on the TEST patients: biased)" if biased else ""
    log(f"{plan.name} rep-{replicate}: best epoch {result.best_epoch}{chosen}; test {shown}")
    return report
