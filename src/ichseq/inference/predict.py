"""``ichseq predict``: the trained runs of one model applied to new scans.

A *run* is one (model, replicate) training's folder (``results/runs/convnext/rep-3``); a *model
folder* (``results/runs/convnext``) holds one run per replicate, and predicting with it applies
every complete replicate: the result is their ensemble, the mean probability with its spread
across replicates, which is the honest uncertainty of a many-replicate study.

Each scan (a NIfTI file in HU or a folder holding one DICOM series, read by
:mod:`ichseq.data.volumes`) goes through exactly the preprocessing the run recorded in its
``model/ichseq.json`` (``preprocess``: the HU window, the slice size; then the model's own input
windows and normalisation, and for a sequence model its frame policy), and each replicate decides
by its own rule and threshold (``decision``: e.g. ``any`` slice >= 0.5, or ``max_prob`` with the
patient threshold chosen on its validation patients). Each replicate's probability is calibrated
by the map its run fitted on its validation patients (``calibration`` in ichseq.json,
:mod:`ichseq.training.calibration`; runs trained before have none and give the softmax as it
is). The ensemble's decision is the majority of the replicates' decisions, a tie counting as
hemorrhage (triage errs on the side of review); its probability is the mean of theirs.

Per scan it writes (``PREDICT_OUTPUTS``, by these names, so a rule can declare them):

* ``slices``  ``slices.csv``: one row per slice in scan order: slice number, position_mm,
  ``read`` (1 when a model read it: every slice for slice models, the clip's frames for a
  sequence model), the calibrated probability of each replicate (``rep-N``: the scan's probability
  were that slice its highest, so the scan's is their maximum; empty for models that score a
  whole scan), ``ensemble`` (their mean) and ``ensemble_sd``; for models that score a whole
  scan, ``occlusion`` instead: the mean drop of the scan's probability when that slice is
  blanked (how much the decision rests on it; the figure's "highest-scoring" slices);
* ``decision``  ``decision.json``: probability (mean, sd, min, max), decision, votes, rule,
  threshold, ``calibrated`` and ``probability_threshold`` (the rule's threshold on the calibrated
  scale, the replicates' median), model, replicates used and their own probabilities, decisions,
  thresholds and calibration maps; written last,
  so its presence means the scan's outputs are complete;
* ``figure_png``, ``figure_svg``: the slice-score curve along the scan with the threshold, and
  the highest-scoring slices windowed, with a Grad-CAM overlay for slice models.

Before any model sees a scan, :func:`check_scan` refuses what is not a head CT the runs can read
(:mod:`ichseq.data.headcheck`: field of view, skull around brain, and the fewest slices and
shortest extent the runs recorded as ``input_requirements``; ``allow_partial`` scores a too-short
scan, marked ``partial``). Nothing :func:`predict` did not write is ever replaced or removed.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_dir, check_replaceable, output_errors, write_csv_atomic, write_json_atomic
from ..data.cache import SliceCache
from ..data.frames import BLANK
from ..data.headcheck import check_coverage, check_head
from ..data.reformat import Geometry, gap_warnings, reformat_volume
from ..data.volumes import CTVolume, read_volume
from ..data.windowing import BRAIN_WINDOW_LEVEL, BRAIN_WINDOW_WIDTH, brain_window, resize_slices, to_uint8
from ..errors import DataError
from ..models.base import PREPROCESSOR_FILE, CTClassifier
from ..paths import refuse_overlap
from ..rule_outputs import output_paths
from ..training.feature_store import extract_features
from ..training.loop import predict_logits, select_device
from ..training.plan import ModelPlan
from ..training.runs import RUN_MODEL_INFO, load_run_model
from ..training.samples import SLICE_LEVEL, build_samples
from ..training.calibration import calibrated, decide, decision_cut
from ..training.ood import bounds, load_reference, scan_score
from . import figure
from .card import training_notice
from .run_folders import find_runs
from .saliency import saliency_maps
from .targets import scan_sources

#: What ``predict_scan`` writes, by the names of the predict rule's outputs.
PREDICT_OUTPUTS = ("slices", "decision", "figure_png", "figure_svg")
#: File names of the outputs in a scan's folder (``ichseq predict --out``).
PREDICT_FILES = {"slices": "slices.csv", "decision": "decision.json", "figure_png": "figure.png",
                 "figure_svg": "figure.svg"}
#: How many of the highest-scoring slices the figure shows (with their saliency).
TOP_SLICES = 4
PARTIAL_NOTE = ("scored with --allow-partial although it covers less of the head than the model needs; the answer "
                "is about the slices given only, not the patient")
ENSEMBLE_RULE = "majority of the replicates' decisions; a tie counts as hemorrhage"


class OutOfDistribution(DataError):
    """A scan refused by ``--strict`` for lying outside the runs' training distribution."""


@dataclass
class TrainedRun:
    """One replicate's trained model, ready to apply."""

    replicate: int
    path: Path  # the run folder
    model: CTClassifier
    info: dict  # its model/ichseq.json
    plan: ModelPlan
    ood: dict | None = None  # its out-of-distribution reference (ichseq.training.ood), None for older runs

    @property
    def preprocess(self) -> dict:
        return self.info["preprocess"]

    @property
    def calibration(self) -> dict | None:
        """Its calibration map (None for a run trained before ichseq calibrated: the softmax as it is)."""
        return self.info.get("calibration")


def _workflow_root(run: Path) -> Path | None:
    """The folder a run's relative paths (``results/pretrained/convnext``) are relative to: the
    one holding its ``results`` folder."""
    for parent in run.resolve().parents:
        if parent.name == "results":
            return parent.parent
    return None


def _anchor_weights(plan: dict, root: Path | None) -> dict:
    """``plan`` with a relative ``pretrained`` folder (the pretrain stage's output, recorded as
    the workflow saw it) made absolute at ``root`` when it is not found from here; a hub id
    stays as it is."""
    plan = json.loads(json.dumps(plan))
    for p in (plan, plan.get("backbone") or {}):
        source = (p.get("model") or {}).get("pretrained")
        if root is not None and source and not Path(source).is_absolute() and not Path(source).exists() \
                and (root / source).exists():
            p["model"]["pretrained"] = str(root / source)
    return plan


def load_runs(run, device: str | None = None, log=print) -> list[TrainedRun]:
    """The trained models of ``run`` (a run or model folder, see :func:`find_runs`; or a list of
    run folders, as the predict rule gives them), on ``device`` (None: each run's
    ``training.device``), checked to be one model trained on one preprocessing."""
    folders = [p for r in run for p in find_runs(r)] if isinstance(run, (list, tuple)) else find_runs(run)
    runs = []
    for path in folders:
        model_dir = path / "model"
        try:
            info = json.loads((model_dir / RUN_MODEL_INFO).read_text())
            info["plan"] = _anchor_weights(info["plan"], _workflow_root(path))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{model_dir / RUN_MODEL_INFO}: unreadable ({exc}); rerun the run's train job") from None
        if not isinstance(info.get("preprocess"), dict) or "image_size" not in info["preprocess"]:
            raise DataError(f"{model_dir / RUN_MODEL_INFO}: does not say how its slices were preprocessed (trained by "
                            f"an older ichseq); rerun the run's train job")
        plan = ModelPlan.from_dict(info["plan"])
        _check_image_size(plan, info, model_dir)
        model, _ = load_run_model(model_dir, info=info)
        model.to(select_device(device or plan.training.device))
        replicate = int(info.get("replicate", -1))
        runs.append(TrainedRun(replicate, path, model, info, plan, load_reference(model_dir)))
    first = runs[0]
    for other in runs[1:]:
        if (other.plan.name, other.plan.architecture) != (first.plan.name, first.plan.architecture):
            raise DataError(f"{other.path}: is a run of {other.plan.name}, not {first.plan.name} like {first.path}; "
                            f"predict with one model's runs at a time")
        if other.preprocess != first.preprocess:
            raise DataError(f"{other.path}: its slices were preprocessed otherwise ({other.preprocess}) than "
                            f"{first.path}'s ({first.preprocess}); predict with runs of one configuration")
    log(f"{first.plan.name}: {len(runs)} trained run(s), replicate(s) {', '.join(str(r.replicate) for r in runs)}; "
        f"{first.model.kind} model on {first.model.device}")
    return runs


def _check_image_size(plan: ModelPlan, info: dict, model_dir: Path) -> None:
    """A folder whose saved model was trained at another image size than its ichseq.json says
    (a full-mode model's ``preprocessor_config.json`` records the size it resized to; a
    two-stage model's under ``backbone/``) is refused: the folder was changed after training."""
    owner = plan.backbone or plan
    said = int(owner.model.get("image_size", info["preprocess"]["image_size"]))
    for saved in (model_dir / PREPROCESSOR_FILE, model_dir / "backbone" / PREPROCESSOR_FILE):
        if not saved.is_file():
            continue
        try:
            size = json.loads(saved.read_text())["size"]
            trained = int(size["height"]), int(size["width"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours (a hub preprocessor of another shape): nothing to compare
        if trained != (said, said):
            raise DataError(f"{saved}: the model was trained on {trained[0]}x{trained[1]} images but "
                            f"{model_dir / RUN_MODEL_INFO} says {said}x{said}; the folder was changed after training, "
                            f"rerun its train job")


def preprocess_volume(volume: CTVolume, preprocess: dict) -> tuple[np.ndarray, dict]:
    """uint8 (S, size, size) slices of ``volume`` made exactly as the training cache made its
    slices (HU window, antialiased resize, rounding to uint8), and the steps applied."""
    window = preprocess.get("window")
    if isinstance(window, dict):
        level, width = float(window["level"]), float(window["width"])
        applied = {"level": level, "width": width}
    else:
        # The run trained on images the dataset authors had windowed already (v1.0.0 JPGs or a
        # pre-windowed NIfTI): their brain window is the official one.
        level, width = BRAIN_WINDOW_LEVEL, BRAIN_WINDOW_WIDTH
        applied = {"level": level, "width": width, "note": f"the run trained on slices windowed {window}; "
                                                           f"a HU scan gets the official brain window"}
    size = int(preprocess["image_size"])
    slices = to_uint8(resize_slices(brain_window(volume.hu, level, width), size))
    return slices, {"window": applied, "image_size": size}


def scan_cache(volume: CTVolume, slices: np.ndarray, preprocess: dict) -> SliceCache:
    """The scan as a one-patient slice cache (patient 0, label unknown = 0), so the samples a
    model reads are built exactly as in training."""
    n = len(slices)
    manifest = pd.DataFrame({"row": np.arange(n), "patient": 0, "slice": np.asarray(volume.slice_numbers, np.int64),
                             "position_mm": np.round(np.asarray(volume.positions, np.float64), 3), "label": 0,
                             "has_mask": 0})
    return SliceCache.from_arrays(slices, manifest, {"source": str(volume.source), "window": preprocess["window"],
                                                     "image_size": preprocess["image_size"]})


def runs_geometry(runs: list[TrainedRun]):
    """The geometry the runs' models were trained on (:class:`ichseq.data.reformat.Geometry`):
    each value the median over the replicates (their train patients differ, their scanner
    geometry hardly); None when a run did not record it."""
    geometries = [Geometry.from_info(run.info.get("geometry"), int(run.preprocess["image_size"])) for run in runs]
    if any(g is None for g in geometries):
        return None

    def median(values):
        known = [v for v in values if v is not None]
        return float(np.median(known)) if len(known) == len(values) else None

    return Geometry(median([g.slice_spacing_mm for g in geometries]), median([g.field_of_view_mm for g in geometries]),
                    geometries[0].image_size)


def read_scan(runs: list[TrainedRun], source, series: str | None = None, reformat: bool = True, log=print):
    """``(volume, report)``: the scan at ``source`` read and, unless ``reformat`` is False,
    reformatted to the runs' training geometry (:func:`ichseq.data.reformat.reformat_volume`:
    gantry tilt, slabs of the training thickness with short gaps bridged, field of view in mm);
    ``report`` is what was done (decision.json's ``reformat``; None when not asked)."""
    volume = read_volume(source, series=series, allow_gaps=reformat)
    for line in volume.warnings:
        log(f"{volume.name}: WARNING {line}")
    if not reformat:
        return volume, None
    volume, report = reformat_volume(volume, runs_geometry(runs))
    for line in gap_warnings(report):
        log(f"{volume.name}: WARNING {line}")
    return volume, report


@dataclass
class ReplicateScore:
    replicate: int
    slice_probability: np.ndarray  # (S,) per slice in scan order, NaN where the model gives none
    read: np.ndarray  # bool (S,): slices the model read
    probability: float  # the scan's (patient) probability
    positive: bool
    decision: dict  # the run's rule and thresholds
    # Models that score whole scans: per slice read, how much the scan's probability drops when
    # that slice is blanked (occlusion); NaN for slices not read, and for slice models.
    occlusion: np.ndarray | None = None
    # The scan's out-of-distribution score over the run's threshold (<= 1: like its training
    # scans); None when the run has no reference.
    ood_ratio: float | None = None


class SharedFeatures:
    """The frozen backbone's features of one scan, computed once for all the head-mode
    replicates of a model: they share it (same plan, same weights; only their classifiers
    differ), so each replicate's classifier reads the stored features, as it did in training,
    instead of running the backbone again (ten replicates: one backbone pass, not ten)."""

    def __init__(self, cache: SliceCache):
        self.cache = cache
        self.store: dict = {}

    def fetch(self, run: TrainedRun, samples, key: str):
        """``fetch(index) -> Batch`` of ``samples`` (``key`` names them: the scan's samples, or
        its occluded variants) for ``run``'s model."""
        model, cache = run.model, self.cache
        if run.plan.training.mode != "head":  # fine-tuned backbones differ per replicate
            return lambda idx: samples.batch(model, cache, idx)
        batch_size = run.plan.training.feature_batch_size
        plan_key = json.dumps(run.plan.as_dict(), sort_keys=True, default=str)
        if run.plan.backbone is not None:  # a two-stage model: every slice's backbone features, any samples
            if plan_key not in self.store:
                slices = build_samples(cache, "slice")
                features = extract_features(model.backbone, cache, slices, batch_size, model.device, log=_quiet)
                rows = np.full(len(cache.slices), -1, np.int64)
                rows[slices.rows[:, 0]] = np.arange(len(slices))
                self.store[plan_key] = (torch.from_numpy(features).to(model.device), rows)
            features, rows = self.store[plan_key]
            return lambda idx: samples.batch(model, cache, idx, features=features, feature_rows=rows)
        if (plan_key, key) not in self.store:
            features = extract_features(model, cache, samples, batch_size, model.device, log=_quiet)
            self.store[plan_key, key] = torch.from_numpy(features).to(model.device)
        features = self.store[plan_key, key]
        return lambda idx: samples.batch(model, cache, idx, features=features)


def _quiet(_message: str) -> None:
    pass


def score_run(run: TrainedRun, cache: SliceCache, shared: SharedFeatures | None = None) -> ReplicateScore:
    """One replicate's scores of the scan in ``cache``, decided by its own rule (``shared``:
    the backbone features its head-mode siblings computed already)."""
    model, plan = run.model, run.plan
    shared = shared or SharedFeatures(cache)
    samples = build_samples(cache, model.kind, model.num_frames, plan.frames["policy"], plan.frames["padding"],
                            context=int(getattr(model, "context", 0)))
    index = np.arange(len(samples))
    with torch.no_grad():
        logits = predict_logits(model, shared.fetch(run, samples, "scan"), index, plan.training.feature_batch_size)
    z = (logits[:, 1] - logits[:, 0]).double().numpy()
    n = len(cache.slices)
    read = np.zeros(n, bool)
    read[samples.rows[samples.rows != BLANK]] = True
    slice_probability = np.full(n, np.nan)
    decision = dict(run.info.get("decision") or {"rule": "threshold", "threshold": plan.aggregation["threshold"]})
    if model.kind not in SLICE_LEVEL and decision["rule"] not in ("threshold", "max_prob"):
        decision["rule"] = "threshold"
    # On the run's calibrated scale (identity for a run trained before ichseq calibrated): a
    # slice's value is the scan's probability were it the highest slice, so the scan's is their maximum.
    probability, positive, probs = decide(z, decision, run.calibration)
    if model.kind in SLICE_LEVEL:
        centre = samples.rows[:, samples.rows.shape[1] // 2]  # a context sample's slice is its middle frame
        slice_probability[centre] = probs
    occlusion = None if model.kind in SLICE_LEVEL else _occlusion(run, shared, samples, z[0])
    return ReplicateScore(run.replicate, slice_probability, read, float(probability), bool(positive), decision,
                          occlusion, _ood_ratio(run, shared, samples))


def _ood_ratio(run: TrainedRun, shared: SharedFeatures, samples) -> float | None:
    """The scan's score against the run's reference, on the features its classifier read (the
    shared backbone features in head mode, computed once; the trained model's in full mode)."""
    if run.ood is None:
        return None
    plan_key = json.dumps(run.plan.as_dict(), sort_keys=True, default=str)
    if run.plan.training.mode == "head":
        stored = shared.store[plan_key][0] if run.plan.backbone is not None else shared.store[plan_key, "scan"]
        features = stored.float().cpu().numpy()
    else:
        features = extract_features(run.model, shared.cache, samples, run.plan.training.feature_batch_size,
                                    run.model.device, log=_quiet, pool=True)
    score = scan_score(run.ood, features)
    lower, upper = bounds(run.ood)
    # Below the typical range counts as out too: reported negative, -r for r times below the bound.
    return score / upper if score >= lower else -(lower / max(score, 1e-12))


def _occlusion(run: TrainedRun, shared: SharedFeatures, samples, logit: float) -> np.ndarray:
    """For a model that scores a whole scan: the drop of the scan's probability when each slice
    it reads is blanked, as its padding is (a sequence model sees a black frame, a scan model's
    frame mask drops the slice), one forward pass per read slice."""
    model, plan = run.model, run.plan
    rows = samples.rows[0]
    frames = np.flatnonzero(rows != BLANK)
    variants = np.repeat(rows[None], len(frames), axis=0)
    if model.kind == "scan":  # the slice leaves the sequence (its slices stay first, padding after)
        for i, frame in enumerate(frames):
            variants[i] = np.concatenate([np.delete(rows, frame), [BLANK]])
    else:
        variants[np.arange(len(frames)), frames] = BLANK
    occluded = replace(samples, patient=np.zeros(len(frames), np.int64), slice=np.full(len(frames), -1, np.int64),
                       label=np.zeros(len(frames), np.int64), rows=variants)
    with torch.no_grad():
        logits = predict_logits(model, shared.fetch(run, occluded, "occlusion"), np.arange(len(frames)),
                                plan.training.feature_batch_size)
    occluded_z = (logits[:, 1] - logits[:, 0]).double().numpy()
    drop = calibrated(run.calibration, logit) - calibrated(run.calibration, occluded_z)
    out = np.full(len(shared.cache.slices), np.nan)
    # A slice read twice (a short scan's repeated frame) keeps its largest effect.
    for row, d in zip(rows[frames], drop):
        out[row] = d if np.isnan(out[row]) else max(out[row], d)
    return out


def ensemble(scores: list[ReplicateScore]) -> dict:
    """Mean, spread and majority decision of the replicates' scan scores."""
    probs = np.array([s.probability for s in scores])
    votes = int(sum(s.positive for s in scores))
    positive = 2 * votes >= len(scores)
    return {"probability": float(probs.mean()),
            "probability_sd": float(probs.std(ddof=1)) if len(probs) > 1 else None,
            "probability_min": float(probs.min()), "probability_max": float(probs.max()),
            "decision": "hemorrhage" if positive else "no hemorrhage", "positive": bool(positive),
            "votes_positive": votes, "replicates_total": len(scores), "ensemble_rule": ENSEMBLE_RULE}


def distribution_check(scores: list[ReplicateScore]) -> dict:
    """decision.json's ``in_distribution`` and ``ood``: a scan is in distribution when most
    replicates' scores are within their thresholds (a tie counts as out: the guard errs towards
    saying so); None when no run has a reference (trained before ichseq recorded one)."""
    # A negative ratio is a scan atypically close to the training mean (-r: r times below the
    # lower bound); a positive one the score over the upper bound.
    ratios = [s.ood_ratio for s in scores if s.ood_ratio is not None]
    if not ratios:
        return {"in_distribution": None, "ood": {"note": "the runs have no out-of-distribution reference (trained "
                                                         "before ichseq recorded one): not checked"}}
    inside = sum(0 <= r <= 1.0 for r in ratios)
    ok = 2 * inside > len(ratios)
    below = sum(r < 0 for r in ratios)
    median = float(np.median(np.abs(ratios)))
    if ok:
        reasons = []
    elif 2 * below > len(ratios):
        reasons = [f"the features the model reads are {median:.2f}x closer to its training mean than its development "
                   f"scans' lower bound: an atypically bland input, unlike what it learnt from; its answer is not "
                   f"reliable"]
    else:
        reasons = [f"the features the model reads lie {median:.2f}x as far from its training scans' as the threshold "
                   f"(the development scans' 99th percentile, +10%): the scan is unlike what it learnt from; its "
                   f"answer is not reliable"]
    return {"in_distribution": bool(ok),
            "ood": {"score_ratio": round(median, 4), "replicates_within": int(inside), "replicates": len(ratios),
                    "per_replicate": [round(float(r), 4) for r in ratios],
                    "method": "median Mahalanobis distance of the scan's samples to the training samples' features "
                              "(Ledoit-Wolf covariance), over the run's threshold; in distribution at <= 1; a "
                              "negative per-replicate value -r: r times below the typical range's lower bound",
                    "reasons": reasons}}


def slice_table(cache: SliceCache, scores: list[ReplicateScore]) -> pd.DataFrame:
    """slices.csv: one row per slice in scan order (see the module docstring)."""
    m = cache.manifest
    table = pd.DataFrame({"slice": m.slice.to_numpy(), "position_mm": m.position_mm.to_numpy(),
                          "read": np.any([s.read for s in scores], axis=0).astype(int)})
    per = np.array([s.slice_probability for s in scores])  # (R, S)
    for score, column in zip(scores, per):
        table[f"rep-{score.replicate}"] = column
    with warnings.catch_warnings():  # a slice no replicate scores (every slice of a scan model): NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        table["ensemble"] = np.nanmean(per, axis=0)
        table["ensemble_sd"] = np.nanstd(per, axis=0, ddof=1) if len(scores) > 1 else np.nan
        if scores[0].occlusion is not None:
            table["occlusion"] = np.nanmean([s.occlusion for s in scores], axis=0)
    return table


def top_slices(table: pd.DataFrame, n: int = TOP_SLICES) -> list[int]:
    """Slice numbers of the ``n`` highest ensemble slice probabilities, best first (none for a
    model that scores whole scans)."""
    column = "occlusion" if "occlusion" in table else "ensemble"
    scored = table.dropna(subset=[column])
    if scored.empty:
        return []
    order = scored.sort_values([column, "position_mm"], ascending=[False, True], kind="stable")
    return [int(s) for s in order.slice.head(n)]


def saliency_of(runs: list[TrainedRun], cache: SliceCache, slice_numbers: list[int]) -> dict[int, np.ndarray] | None:
    """Grad-CAM of each of ``slice_numbers`` (the mean map over the replicates), or None when the
    model has no saliency layer (sequence models)."""
    if not slice_numbers:
        return None
    size = cache.slices.shape[1]
    maps = []
    for run in runs:
        model, plan = run.model, run.plan
        samples = build_samples(cache, model.kind, model.num_frames, plan.frames["policy"], plan.frames["padding"],
                                context=int(getattr(model, "context", 0)))
        index = np.array([int(np.flatnonzero(samples.slice == s)[0]) for s in slice_numbers])
        found = saliency_maps(model, samples.batch(model, cache, index), size)
        if found is None:
            return None
        maps.append(found)
    mean = np.mean(maps, axis=0)
    return {s: mean[i] for i, s in enumerate(slice_numbers)}


#: ``input_requirements`` for runs trained before ichseq recorded them: CT-ICH's shortest scan
#: (24 slices of 5 mm, 120 mm) times :data:`~ichseq.training.runs.COVERAGE_FRACTION`.
LEGACY_REQUIREMENTS = {"min_slices": 18, "min_extent_mm": 90.0}


def scan_requirements(runs: list[TrainedRun], log=print) -> dict:
    """The fewest slices and shortest extent a scan needs for a patient-level answer from
    ``runs``: the strictest of their saved ``input_requirements`` (each replicate was developed
    on other patients)."""
    saved = [r.info.get("input_requirements") for r in runs]
    if any(not isinstance(s, dict) for s in saved):
        log(f"{runs[0].path}: no input_requirements in model/{RUN_MODEL_INFO} (trained by an older ichseq); a scan "
            f"needs at least {LEGACY_REQUIREMENTS['min_slices']} slices and {LEGACY_REQUIREMENTS['min_extent_mm']:g} "
            f"mm (CT-ICH's shortest scan x 0.75); rerun the train jobs to record the model's own")
        saved = [s if isinstance(s, dict) else LEGACY_REQUIREMENTS for s in saved]
    return {"min_slices": max(int(s["min_slices"]) for s in saved),
            "min_extent_mm": max(float(s["min_extent_mm"]) for s in saved)}


def check_scan(runs: list[TrainedRun], volume: CTVolume, allow_partial: bool = False, log=print,
               need: dict | None = None) -> dict:
    """Refuse (one-line DataError) a scan that is not a head CT the models can read: not a head
    (field of view, no skull and brain), or too few slices or too short along the head for
    ``runs`` unless ``allow_partial`` (then the result is marked partial). Returns the
    measurements, for decision.json. ``need``: :func:`scan_requirements` of ``runs`` when the
    caller has it (a batch computes it, and says any note about it, once)."""
    head = check_head(volume)
    need = need if need is not None else scan_requirements(runs, log=log)
    coverage = check_coverage(volume, need["min_slices"], need["min_extent_mm"], allow_partial)
    return {"head": head, "coverage": coverage, "requirements": need, "partial": bool(coverage.get("partial")),
            "nan_voxels": int(getattr(volume, "nan_voxels", 0) or 0)}


def predict_scan(runs: list[TrainedRun], volume: CTVolume, outputs, log=print, allow_partial: bool = False,
                 checks: dict | None = None, reformat: dict | None = None, strict: bool = False) -> dict:
    """Score ``volume`` with every run of ``runs`` and write the outputs named by
    ``PREDICT_OUTPUTS`` (paths by name: the predict rule's ``snakemake.output``). Returns
    decision.json's content. ``checks``: :func:`check_scan`'s result when the caller ran it
    already; otherwise it runs here, before anything is written. ``reformat``: the report of
    :func:`read_scan` (None: the scan was read as it is, ``--no-reformat``). ``strict``: a scan
    out of the runs' training distribution is refused (DataError, nothing written)."""
    paths = output_paths(outputs, PREDICT_OUTPUTS, "predict_scan")
    checks = checks if checks is not None else check_scan(runs, volume, allow_partial=allow_partial, log=log)
    first = runs[0]
    t0 = time.perf_counter()
    slices, applied = preprocess_volume(volume, first.preprocess)
    cache = scan_cache(volume, slices, applied)
    shared = SharedFeatures(cache)
    scores = [score_run(run, cache, shared) for run in runs]
    distribution = distribution_check(scores)
    if strict and distribution["in_distribution"] is False:
        raise OutOfDistribution(f"{volume.name}: out of the model's training distribution (score "
                        f"{distribution['ood']['score_ratio']:.2f}x its threshold); not scored (--strict)")
    table = slice_table(cache, scores)
    top = top_slices(table)
    saliency = saliency_of(runs, cache, top) if first.model.kind in SLICE_LEVEL else None
    result = _decision_record(runs, volume, len(slices), scores, distribution, applied, reformat, table, top, saliency,
                              checks)
    write_csv_atomic(table, paths["slices"])
    figure.prediction_figure(table, slices, result, saliency, [paths["figure_png"], paths["figure_svg"]])
    result["seconds"] = round(time.perf_counter() - t0, 3)
    write_json_atomic(paths["decision"], result)  # last: its presence means the scan is complete
    _log_decision(volume, result, first, len(scores), checks["partial"], distribution, log)
    return result


def _decision_record(runs: list[TrainedRun], volume: CTVolume, n_slices: int, scores: list[ReplicateScore],
                     distribution: dict, applied: dict, reformat: dict | None, table: pd.DataFrame, top: list[int],
                     saliency: dict | None, checks: dict) -> dict:
    """decision.json's content (``seconds`` still None): the ensemble's answer, each
    replicate's, and how the scan was read, checked and preprocessed."""
    first = runs[0]
    decision_rule = scores[0].decision
    return {
        "scan": volume.name, "source": str(volume.source), "series_uid": getattr(volume, "series_uid", None),
        "slices": int(n_slices), "model": first.plan.name, "architecture": first.plan.architecture,
        "kind": first.model.kind, **ensemble(scores),
        "rule": decision_rule["rule"], "threshold": float(decision_rule["threshold"]),
        **({"k": decision_rule["k"]} if "k" in decision_rule else {}),
        **calibration_summary(runs, scores),
        "replicates": [s.replicate for s in scores],
        "runs": [{"replicate": s.replicate, "run": str(run.path), "probability": s.probability,
                  "positive": s.positive, **{k: v for k, v in s.decision.items() if k not in ("rule", "threshold")},
                  "probability_threshold": decision_cut(s.decision, run.calibration),
                  "calibration": _map_of(run.calibration)}
                 for run, s in zip(runs, scores)],
        **distribution,
        "trained_on": first.info.get("trained_on"),
        "notice": training_notice(first.info.get("trained_on")),
        "preprocess": applied,
        "reformat": reformat if reformat is not None else {"applied": False, "note": "--no-reformat: read as it is"},
        "warnings": [f"WARNING {line}" for line in [*getattr(volume, "warnings", ()), *gap_warnings(reformat or {})]],
        "top_slices": top,
        "top_slices_by": "occlusion" if "occlusion" in table else "ensemble slice probability",
        "saliency": ("Grad-CAM (captum LayerGradCam) of the hemorrhage class, mean over the replicates"
                     if saliency is not None else None),
        "partial": checks["partial"],
        **({"partial_note": PARTIAL_NOTE} if checks["partial"] else {}),
        "input_check": checks,
        "seconds": None,
    }


def _log_decision(volume: CTVolume, result: dict, first: TrainedRun, n_scores: int, partial: bool,
                  distribution: dict, log) -> None:
    """The scan's answer in one line, and the note of what its model was trained on."""
    sd = result["probability_sd"]
    log(f"{volume.name}: {result['decision']} (p = {result['probability']:.3f}"
        + (f" ± {sd:.3f}" if sd is not None else "")
        + (" calibrated" if result["calibrated"] else " uncalibrated")
        + f", {result['votes_positive']} of {n_scores} replicates positive; {first.plan.name}, rule "
          f"{result['rule']} at {result['probability_threshold']:.3f})" + (f"; PARTIAL scan: {PARTIAL_NOTE}" if partial else "")
        + f"; {_distribution_text(distribution)}")
    log(f"{volume.name}: NOTE {first.plan.name} was {result['notice']}")


def _map_of(calibration: dict | None) -> dict | None:
    if not calibration:
        return None
    return {k: calibration[k] for k in ("method", "slope", "intercept", "temperature") if k in calibration}


def calibration_summary(runs: list[TrainedRun], scores: list[ReplicateScore]) -> dict:
    """decision.json's ``calibrated`` (every replicate's probability went through its own map,
    fitted on its validation patients; False when none had one), ``calibration`` (in words) and
    ``probability_threshold``: the median over the replicates of the threshold each one's rule
    applies on that scale (the figure's dashed line)."""
    methods = sorted({(run.calibration or {}).get("method", "none") for run in runs})
    calibrated_runs = sum(bool(run.calibration) and run.calibration.get("method", "none") != "none" for run in runs)
    cuts = [decision_cut(s.decision, run.calibration) for run, s in zip(runs, scores)]
    if calibrated_runs == len(runs):
        words = (f"{'/'.join(methods)} calibrated: each replicate's probability through the map fitted on its own "
                 f"validation patients")
    elif calibrated_runs == 0:
        words = ("not calibrated: the softmax of the model's highest sample (runs trained before ichseq calibrated, "
                 "or aggregation.calibration: none)")
    else:
        words = f"{calibrated_runs} of {len(runs)} replicates calibrated ({'/'.join(methods)})"
    return {"calibrated": calibrated_runs == len(runs), "calibration": words,
            "probability_threshold": float(np.median(cuts))}


def _distribution_text(distribution: dict) -> str:
    inside = distribution["in_distribution"]
    if inside is None:
        return "in distribution: not checked (no reference)"
    ratio = distribution["ood"]["score_ratio"]
    if inside:
        return f"in distribution (score {ratio:.2f} of the threshold)"
    return f"OUT OF DISTRIBUTION (score {ratio:.2f}x the threshold): unlike the training scans, not reliable"


NOT_A_PREDICTION = f"no {PREDICT_FILES['decision']} in it"


def is_prediction(folder: Path) -> bool:
    """Whether ``folder`` is a scan's outputs that ``ichseq predict`` wrote (its decision.json,
    written last): the only kind of folder a rerun may replace."""
    return (Path(folder) / PREDICT_FILES["decision"]).is_file()


def _check_out(out: Path, inputs: list) -> None:
    """Refuse, before any work, an output folder that is, holds or lies inside an input (a
    scan or a run), or that is a file or not writable."""
    refuse_overlap(out, inputs, "--out")
    existing = next(p for p in (out, *out.parents) if p.exists())  # a relative path ends at '.', which exists
    if existing == out and not out.is_dir():
        raise DataError(f"--out {out}: is a file, not a folder; choose a folder for the predictions")
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"--out {out}: cannot write in {existing} (permission denied or read-only); choose another "
                        f"folder")


def predict(run, scans, out=None, series: str | None = None, device: str | None = None, allow_partial: bool = False,
            log=print, reformat: bool = True, strict: bool = False) -> list[dict]:
    """``ichseq predict``: every scan behind ``scans`` scored by ``run`` (a run or model
    folder); each scan's outputs in ``out``/NAME/ (default ``predictions/MODEL``), written to a
    temporary folder renamed when complete.

    A scan that cannot be scored (unreadable, not a head CT, too partial) does not stop the
    batch: the others are scored, and at the end one DataError lists the scans left unscored.
    Nothing this program did not write is replaced: an existing ``out``/NAME is replaced only
    when it is an earlier prediction (:func:`is_prediction`). ``reformat``: each scan is put in
    the runs' training geometry first (:func:`read_scan`)."""

    sources = scan_sources(scans)  # every path checked before any model loads
    # As given (a batch folder is named as the user gave it) and each scan found in it.
    inputs = [*scans, *sources.values(), *([run] if not isinstance(run, (list, tuple)) else run)]
    if out is not None:
        _check_out(Path(out), inputs)
    runs = load_runs(run, device=device, log=log)
    if out is None:
        out = Path("predictions") / runs[0].plan.name
        _check_out(out, inputs)
    out = Path(out)
    need = scan_requirements(runs, log=log)
    results, failed = [], []
    for name, source in sources.items():
        try:
            check_replaceable(out / name, owned=is_prediction, owned_by=NOT_A_PREDICTION)
            volume, reformatted = read_scan(runs, source, series=series, reformat=reformat, log=log)
            checks = check_scan(runs, volume, allow_partial=allow_partial, log=log, need=need)
        except DataError as exc:  # this scan's own problem: say so, score the rest
            failed.append(name)
            log(f"{name}: not scored: {exc}")
            continue
        try:
            with output_errors(out / name), atomic_dir(out / name, owned=is_prediction,
                                                       owned_by=NOT_A_PREDICTION) as tmp:
                result = predict_scan(runs, volume, {k: tmp / f for k, f in PREDICT_FILES.items()}, log=log,
                                      checks=checks, reformat=reformatted, strict=strict)
        except OutOfDistribution as exc:  # --strict; a full disk or the like still stops the batch
            failed.append(name)
            log(f"{name}: not scored: {exc}")
            continue
        results.append({**result, "output": str(out / name)})
        log(f"written {out / name}")
    if failed:
        raise DataError(f"{len(failed)} of {len(sources)} scan(s) not scored ({', '.join(failed)}; the reason of each "
                        f"is above); {len(results)} scored under {out}")
    return results
