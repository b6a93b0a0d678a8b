"""A trained model's card (``ichseq card RUN``) and the notice every prediction carries.

Like a Hugging Face model card, read from what the runs recorded: what the model was trained on
(``trained_on`` in each replicate's ``model/ichseq.json``: the dataset's provenance, synthetic or
not, and the split sizes), its test metrics over the replicates with their spread
(``metrics.json``), the geometry and preprocessing it expects, its recipe (architecture,
weights, training settings) and decision rule, and what it is not for.

:func:`training_notice` is the one line ``ichseq predict`` prints with every answer, writes to
``decision.json`` and puts in the figure: a model trained on synthetic data says so, and that
it is not for clinical use, every time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..training.runs import RUN_MODEL_INFO
from .run_folders import find_runs

#: Test metrics shown on the card, in this order.
CARD_METRICS = ("roc_auc", "balanced_accuracy", "recall", "specificity", "precision", "f1", "accuracy")
NOT_CLINICAL = "research use only, not for clinical use (not a medical device)"


def training_notice(trained_on: dict | None) -> str:
    """One line: what the model was trained on, and that it is not for clinical use."""
    trained_on = trained_on or {}
    synthetic = trained_on.get("synthetic")
    description = trained_on.get("description") or "an unrecorded dataset"
    if synthetic:
        return (f"trained on SYNTHETIC data only ({description}), never on a real CT: a demonstration, NOT FOR "
                f"CLINICAL USE")
    if synthetic is None:
        return f"training data not recorded (a run older than ichseq's provenance record): {NOT_CLINICAL}"
    return f"trained on {description}: {NOT_CLINICAL}"


def _info(run: Path) -> dict:
    path = run / "model" / RUN_MODEL_INFO
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); rerun the run's train job") from None


def model_card(run) -> dict:
    """The card of ``run`` (a run folder or a model folder: every finished replicate)."""
    folders = find_runs(run)
    infos = [_info(folder) for folder in folders]
    reports = []
    for folder in folders:
        try:
            reports.append(json.loads((folder / "metrics.json").read_text()))
        except (OSError, ValueError):
            reports.append(None)
    first = infos[0]
    plan = first.get("plan") or {}
    metrics = {}
    for name in CARD_METRICS:
        values = np.array([r["metrics"].get(name) for r in reports if r and r["metrics"].get(name) is not None], float)
        values = values[np.isfinite(values)]
        if len(values):
            metrics[name] = {"mean": round(float(values.mean()), 4),
                             "sd": round(float(values.std(ddof=1)), 4) if len(values) > 1 else None,
                             "min": round(float(values.min()), 4), "max": round(float(values.max()), 4),
                             "n": int(len(values))}
    trained_on = first.get("trained_on")
    calibration = {}
    for when in ("before", "after"):
        for name in ("ece", "brier"):
            values = np.array([((r.get("calibration") or {}).get("test") or {}).get(when, {}).get(name)
                               for r in reports if r], dtype=float)
            values = values[np.isfinite(values)]
            if len(values):
                calibration[f"{name}_{when}"] = {"mean": round(float(values.mean()), 4),
                                                 "sd": round(float(values.std(ddof=1)), 4) if len(values) > 1 else None,
                                                 "n": int(len(values))}
    return {
        "model": plan.get("name"), "architecture": plan.get("architecture"),
        "replicates": [int(i.get("replicate", -1)) for i in infos],
        "runs": [str(f) for f in folders],
        "trained_on": trained_on,
        "notice": training_notice(trained_on),
        "test_metrics": metrics,
        "test_patients": [((i.get("trained_on") or {}).get("patients") or {}).get("test") for i in infos],
        "geometry": first.get("geometry"),
        "preprocess": first.get("preprocess"),
        "input_requirements": first.get("input_requirements"),
        "recipe": {"weights": (plan.get("model") or {}).get("pretrained"), "training": plan.get("training"),
                   "frames": plan.get("frames"), "model": {k: v for k, v in (plan.get("model") or {}).items()
                                                           if k != "pretrained"}},
        "decision": [i.get("decision") for i in infos],
        "calibration": {"maps": [i.get("calibration") for i in infos], "test": calibration},
    }


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def card_markdown(card: dict) -> str:
    """The card as Markdown (what ``ichseq card`` prints)."""
    trained = card.get("trained_on") or {}
    patients = trained.get("patients") or {}
    lines = [f"# Model card: {card['model']} ({card['architecture']})", "",
             f"**{card['notice']}**", "",
             "## Training data",
             f"- dataset: {trained.get('description', 'not recorded')}",
             f"- synthetic: {_fmt(trained.get('synthetic'))}; source: {_fmt(trained.get('source'))}; "
             f"content sha256: {_fmt(trained.get('dataset_sha256'))}",
             f"- split of each replicate (patients): train {_fmt(patients.get('train'))}, val "
             f"{_fmt(patients.get('val'))}, test {_fmt(patients.get('test'))}"]
    if trained.get("spec"):
        lines.append("- generator settings: " + ", ".join(f"{k} {v}" for k, v in trained["spec"].items()))
    n = len(card["replicates"])
    lines += ["", f"## Test metrics ({n} replicate{'s' if n != 1 else ''}: {', '.join(map(str, card['replicates']))})",
              "", "| metric | mean | sd | min | max | n |", "|---|---|---|---|---|---|"]
    for name, m in card["test_metrics"].items():
        lines.append(f"| {name} | {m['mean']:.3f} | {_fmt(m['sd'])} | {m['min']:.3f} | {m['max']:.3f} | {m['n']} |")
    if not card["test_metrics"]:
        lines.append("| (no finished replicate's metrics.json) | | | | | |")
    calibration = card.get("calibration") or {}
    maps = [m for m in calibration.get("maps") or [] if m]
    test = calibration.get("test") or {}
    lines += ["", "## Calibration"]
    if maps:
        methods = sorted({m.get("method", "none") for m in maps})
        lines.append(f"- each replicate's probability goes through a {'/'.join(methods)} map fitted on its own "
                     f"validation patients ({_fmt(maps[0].get('patients'))} in replicate {card['replicates'][0]}); "
                     f"ROC AUC and decisions are unchanged by it")
    else:
        lines.append("- none recorded (runs trained before ichseq calibrated): probabilities are the softmax as it is")
    for name, label in (("ece", "expected calibration error (10 bins)"), ("brier", "Brier score")):
        before, after = test.get(f"{name}_before"), test.get(f"{name}_after")
        if before and after:
            lines.append(f"- test {label}: {before['mean']:.3f} ± {_fmt(before['sd'])} before, "
                         f"{after['mean']:.3f} ± {_fmt(after['sd'])} after (mean ± sd over {after['n']} replicates)")
    geometry = card.get("geometry") or {}
    lines += ["", "## Expected input",
              f"- geometry it was trained on: slice spacing {_fmt(geometry.get('slice_spacing_mm'))} mm, field of "
              f"view {_fmt(geometry.get('field_of_view_mm'))} mm, {_fmt(geometry.get('image_size'))} px "
              f"({_fmt(geometry.get('model_pixel_mm'))} mm per model pixel); `ichseq predict` reformats scans to it",
              f"- preprocessing: {json.dumps(card.get('preprocess'))}",
              f"- at least: {json.dumps(card.get('input_requirements'))}",
              "", "## Recipe",
              f"- weights: {_fmt(card['recipe']['weights'])}",
              f"- model: {json.dumps(card['recipe']['model'])}",
              f"- training: {json.dumps(card['recipe']['training'])}",
              f"- frames: {json.dumps(card['recipe']['frames'])}",
              f"- decision rule per replicate: {json.dumps(card['decision'])}",
              "", "## Limitations",
              "- Research use only: not a medical device, never validated for clinical decisions.",
              "- The metrics are on held-out patients of the same dataset; a new hospital's scanners, protocols and "
              "patients may do worse; read the notes and warnings `ichseq predict` writes with each answer."]
    if trained.get("synthetic"):
        lines.append("- Trained on synthetic scans only: its answers on real CTs are not evidence of anything.")
    return "\n".join(lines) + "\n"
