"""The training loop: one replicate of one model, resumable and deterministic.

The same loop trains a classifier head on cached backbone features (``head`` mode) and a
whole model end to end (``full`` mode); it sees the model only through its interface
(:class:`~ichseq.models.base.CTClassifier`: ``forward_batch``, ``loss``, ``logits``), a
``module`` to optimise (the classifier or the whole model) and a ``fetch`` (sample indices ->
:class:`~ichseq.models.base.Batch` of features or pixels). Because the head, its
initialisation, the batches and the optimiser are the same either way, head training on cached
features follows exactly the path of training through the frozen backbone.

Determinism and resuming: every random draw of epoch ``e`` (the batch order, and dropout in
``full`` mode) comes from a seed derived from (run seed, e), not from a generator carried
across epochs. After each epoch the loop saves a checkpoint (weights, optimiser, scheduler,
best weights, history) atomically; a killed job restarted with the same inputs continues from
the last completed epoch and ends with the same weights as an uninterrupted run.

Optimisation follows the study's Hugging Face ``Trainer`` set-up: AdamW, weight decay on
weight matrices only (not on biases and normalisation weights), a linear schedule with
warm-up steps, one scheduler step per batch. Early stopping and the choice of the kept
epoch use the validation patients only -- unless ``checkpoint_selection: test``, the study's
flawed protocol kept as a switch to measure its bias: then they use the replicate's test
patients, the log warns on every run, and the history gains ``test_*`` columns.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                          get_linear_schedule_with_warmup)

from ..columns import HISTORY_COLUMNS, TEST_HISTORY_COLUMNS
from ..errors import ConfigError, DataError
from .metrics import binary_metrics
from .settings import MONITORS, TEST_SELECTION_WARNING, TrainSettings, derive_seed

if TYPE_CHECKING:
    from ..models.base import Batch, CTClassifier

CHECKPOINT_FORMAT = 1


def select_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device: cuda requested but no CUDA device is visible to this job")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


# -- optimisation -----------------------------------------------------------------------------


def make_optimizer(module: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("training: nothing to train (every parameter is frozen)")
    # As HF Trainer: no weight decay on biases and normalisation weights (1-D parameters).
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": settings.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.lr)


def make_scheduler(optimizer, settings: TrainSettings, total_steps: int):
    if settings.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, settings.warmup_steps)
    make = get_linear_schedule_with_warmup if settings.schedule == "linear" else get_cosine_schedule_with_warmup
    return make(optimizer, settings.warmup_steps, total_steps)


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """n / (2 n_c) per class: each class contributes equally to the weighted loss."""
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    if (counts == 0).any():
        raise DataError("training: the training samples hold a single class; cannot train a classifier")
    return torch.tensor(len(labels) / (2.0 * counts), dtype=torch.float32)


def epoch_order(labels: np.ndarray, settings: TrainSettings, seed: int) -> np.ndarray:
    """Positions (into the training samples) in the order one epoch visits them."""
    generator = torch.Generator().manual_seed(seed)
    n = settings.samples_per_epoch or len(labels)
    if settings.class_imbalance == "balanced":
        # Draw n samples with replacement, each class with total probability 1/2.
        counts = np.bincount(labels, minlength=2)
        weights = torch.tensor(1.0 / counts[labels], dtype=torch.float64)
        return torch.multinomial(weights, n, replacement=True, generator=generator).numpy()
    # Every sample once per pass, as many passes (the last one cut short) as n asks for.
    passes = [torch.randperm(len(labels), generator=generator).numpy() for _ in range(-(-n // len(labels)))]
    return np.concatenate(passes)[:n]


# -- evaluation -------------------------------------------------------------------------------


def autocast(device: torch.device):
    """bf16 autocast on CUDA (features and logits are returned as float32); none on CPU,
    where float32 keeps reruns bit-identical."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def model_outputs(model: "CTClassifier", batch: "Batch"):
    """``model.forward_batch(batch)``, under autocast when the batch runs the backbone (pixels)."""
    if batch.pixels is None:
        return model.forward_batch(batch)
    with autocast(model.device):
        return model.forward_batch(batch)


@torch.no_grad()
def predict_logits(model: "CTClassifier", fetch, index: np.ndarray, batch_size: int) -> torch.Tensor:
    """float32 logits (N, 2) of samples ``index``, the model in eval mode."""
    model.eval()
    out = [model.logits(model_outputs(model, fetch(index[i : i + batch_size]))).float().cpu()
           for i in range(0, len(index), batch_size)]
    return torch.cat(out) if out else torch.empty(0, 2)


def patient_probabilities(patients: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Per-patient label (any positive sample) and probability (the highest sample's)."""
    df = pd.DataFrame({"patient": patients, "label": labels, "probability": probs})
    return df.groupby("patient", sort=True).agg(label=("label", "max"), probability=("probability", "max")).reset_index()


def validation_scores(logits: torch.Tensor, labels: np.ndarray, patients: np.ndarray, prefix: str = "val") -> dict:
    loss = float(F.cross_entropy(logits, torch.as_tensor(labels)).item())
    probs = torch.softmax(logits, dim=1)[:, 1].double().numpy()
    per_patient = patient_probabilities(patients, labels, probs)
    m = binary_metrics(per_patient.label, (per_patient.probability >= 0.5).astype(int), per_patient.probability)
    return {f"{prefix}_loss": loss, f"{prefix}_roc_auc": m["roc_auc"],
            f"{prefix}_balanced_accuracy": m["balanced_accuracy"]}


# -- the loop ---------------------------------------------------------------------------------


@dataclass
class FitResult:
    history: pd.DataFrame
    best_state: dict  # the kept epoch's state dict of the module
    best_epoch: int
    seconds: float  # training time, summed over resumed attempts
    samples_seen: int
    resumed_from: int  # last completed epoch found in the checkpoint (0: fresh start)


def _improved(score, best, direction: str) -> bool:
    if score is None:
        return False
    if best is None:
        return True
    return score < best if direction == "min" else score > best


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path | None, fingerprint: str, log) -> dict | None:
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: start over rather than fail
        log(f"ignoring unreadable checkpoint {path} ({type(exc).__name__}); starting from epoch 1")
        return None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != fingerprint:
        log(f"ignoring checkpoint {path}: made for other inputs or settings; starting from epoch 1")
        return None
    return state


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


@dataclass
class _Progress:
    """What a training has reached: the kept epoch so far and the counters, as checkpointed
    after every epoch (the module, optimiser and scheduler states are saved beside it)."""

    best_state: dict | None = None
    best_epoch: int = 0
    best_score: float | None = None
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    seconds: float = 0.0
    samples_seen: int = 0
    finished: bool = False

    @classmethod
    def from_checkpoint(cls, state: dict) -> "_Progress":
        return cls(state["best_state"], state["best_epoch"], state["best_score"], state["bad_epochs"],
                   list(state["history"]), state["seconds"], state["samples_seen"], state["finished"])

    def record(self, row: dict, keepable: bool, module, settings: TrainSettings) -> bool:
        """Take the epoch's history ``row`` (with ``samples``): keep ``module``'s state when the
        monitored score improved on a keepable epoch, count the others for early stopping, and
        say whether the training is finished. Returns whether the epoch is the best so far."""
        epoch, score = row["epoch"], row[settings.monitored]
        self.samples_seen += row.pop("samples")
        self.seconds += row["seconds"]
        improved = keepable and _improved(score, self.best_score, MONITORS[settings.monitor])
        if improved:
            self.best_state, self.best_epoch, self.best_score, self.bad_epochs = _cpu_state(module), epoch, score, 0
        elif keepable:
            self.bad_epochs += 1
        self.history.append({**row, "seconds": round(row["seconds"], 4), "best": 0})
        self.finished = epoch == settings.epochs or (settings.patience is not None
                                                     and self.bad_epochs >= settings.patience)
        return improved

    def result(self, module, settings: TrainSettings, resumed_from: int, log) -> FitResult:
        if self.best_state is None:  # the monitored value was never defined: keep the last epoch
            self.best_state, self.best_epoch = _cpu_state(module), len(self.history)
            log(f"{settings.monitored} was undefined on every epoch; keeping the last epoch ({self.best_epoch})")
        history = _history_frame(self.history, self.best_epoch, settings.checkpoint_selection == "test")
        return FitResult(history, copy.deepcopy(self.best_state), self.best_epoch, self.seconds, self.samples_seen,
                         resumed_from)

    def checkpoint(self, fingerprint: str, epoch: int, module, optimizer, scheduler) -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "epoch": epoch,
            "module": _cpu_state(module), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "best_state": self.best_state, "best_epoch": self.best_epoch, "best_score": self.best_score,
            "bad_epochs": self.bad_epochs, "history": self.history, "seconds": self.seconds,
            "samples_seen": self.samples_seen, "finished": self.finished,
        }


def _scored(settings: TrainSettings, val_index: np.ndarray, test_index: np.ndarray | None, log) -> list:
    """(prefix, index) of the patients scored after every epoch: val, and test under the biased
    protocol (``checkpoint_selection: test``, which the log then warns of)."""
    if settings.checkpoint_selection != "test":
        return [("val", val_index)]
    if test_index is None:
        raise ValueError("checkpoint_selection test needs the test samples (test_index)")
    log(TEST_SELECTION_WARNING)
    return [("val", val_index), ("test", test_index)]


def _optimisation(module, settings: TrainSettings, train_labels: np.ndarray):
    """(optimizer, scheduler, class weight or None) of a training: AdamW, the schedule over every
    step of every epoch, the loss weights of ``class_imbalance: weighted`` on ``module``'s device."""
    weights = class_weights(train_labels)  # also refuses a single-class training set
    steps_per_epoch = math.ceil((settings.samples_per_epoch or len(train_labels)) / settings.batch_size)
    optimizer = make_optimizer(module, settings)
    scheduler = make_scheduler(optimizer, settings, settings.epochs * steps_per_epoch)
    weight = weights.to(next(module.parameters()).device) if settings.class_imbalance == "weighted" else None
    return optimizer, scheduler, weight


def _resume(checkpoint: Path | None, fingerprint: str, module, optimizer, scheduler, log) -> tuple[_Progress, int]:
    """(progress, first epoch to run): from ``checkpoint`` when it holds this training's state
    (module, optimiser and scheduler restored), else a fresh start at epoch 1."""
    state = _load_checkpoint(checkpoint, fingerprint, log)
    if state is None:
        return _Progress(), 1
    module.load_state_dict(state["module"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log(f"resuming from the checkpoint after epoch {state['epoch']} ({checkpoint})")
    return _Progress.from_checkpoint(state), state["epoch"] + 1


def _train_epoch(model, module, optimizer, scheduler, batches, weight) -> float:
    """One pass over ``batches`` (an iterable of Batch); the summed loss x batch size."""
    module.train()
    total = 0.0
    for batch in batches:
        loss = model.loss(model_outputs(model, batch), batch, class_weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(loss.item()) * len(batch)
    return total


def _epoch(epoch: int, model, module, optimizer, scheduler, fetch, train_fetch, labels: np.ndarray, patients,
           train_index: np.ndarray, scored: list, settings: TrainSettings, seed: int, weight) -> dict:
    """Train one epoch and score it: the history row (epoch, train_loss, the scores of each of
    ``scored``'s (prefix, index), lr, seconds unrounded) and ``samples``, how many it trained on.
    Everything random comes from (``seed``, ``epoch``), so a resumed run draws the same."""
    t0 = time.perf_counter()
    epoch_seed = derive_seed(seed, "epoch", epoch)
    torch.manual_seed(epoch_seed)  # dropout etc. in full mode
    order = train_index[epoch_order(labels[train_index], settings, epoch_seed)]
    augment_generator = torch.Generator().manual_seed(derive_seed(epoch_seed, "augment"))
    batches = (fetch(idx) if train_fetch is None else train_fetch(idx, augment_generator)
               for idx in (order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)))
    total = _train_epoch(model, module, optimizer, scheduler, batches, weight)
    scores = {}
    for prefix, index in scored:
        scores.update(validation_scores(predict_logits(model, fetch, index, settings.feature_batch_size),
                                        labels[index], np.asarray(patients)[index], prefix=prefix))
    return {"epoch": epoch, "train_loss": total / len(order), **scores, "lr": float(scheduler.get_last_lr()[0]),
            "seconds": time.perf_counter() - t0, "samples": len(order)}


def _epoch_line(epoch: int, settings: TrainSettings, row: dict, progress: _Progress, improved: bool,
                keepable: bool, remaining: float, on_test: bool) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    monitored = settings.monitored
    excluded = "" if keepable else " (not eligible as the kept epoch: the model's schedule)"
    return (
        f"epoch {epoch}/{settings.epochs} train_loss {row['train_loss']:.4f} "
        f"val_loss {fmt(row['val_loss'])} val_roc_auc {fmt(row['val_roc_auc'])} "
        f"val_balanced_accuracy {fmt(row['val_balanced_accuracy'])}"
        + (f" {monitored} {fmt(row[monitored])}" if on_test else "")
        + f"{' *best' if improved else ''}{excluded} "
        f"elapsed {progress.seconds:.1f} s remaining <= {remaining:.0f} s"
    )


def _history_frame(history: list[dict], best_epoch: int, on_test: bool) -> pd.DataFrame:
    columns = list(HISTORY_COLUMNS)
    if on_test:  # right after the val scores
        at = columns.index("lr")
        columns[at:at] = TEST_HISTORY_COLUMNS
    frame = pd.DataFrame(history, columns=columns)
    frame["best"] = (frame.epoch == best_epoch).astype(int)
    return frame


def fit(
    model: "CTClassifier",
    module: torch.nn.Module,
    fetch: Callable[[np.ndarray], "Batch"],
    labels: np.ndarray,
    patients: np.ndarray,
    train_index: np.ndarray,
    val_index: np.ndarray,
    settings: TrainSettings,
    seed: int,
    checkpoint: str | Path | None = None,
    fingerprint: str = "",
    log: Callable[[str], None] = print,
    test_index: np.ndarray | None = None,
    train_fetch: Callable[[np.ndarray, torch.Generator], "Batch"] | None = None,
) -> FitResult:
    """Train ``module`` (``model``'s classifier, or the whole ``model``) on samples
    ``train_index`` with ``model.loss``, choosing the epoch on ``val_index``.

    ``fetch`` gives the Batch of sample indices; ``labels`` and ``patients`` are per sample (all samples, indexed by the index arrays).
    ``checkpoint`` (a file path) enables resuming; ``fingerprint`` must change whenever the
    inputs or settings change, so a stale checkpoint is never resumed. Under
    ``settings.checkpoint_selection == "test"`` (biased, the study's protocol) the epoch is
    chosen, and training stopped, on ``test_index`` instead; it is unused otherwise.
    ``train_fetch`` (optional) gives training batches instead of ``fetch``, drawing what is
    random in them (augmentation, random clips) from the generator it is passed, which is
    seeded per epoch: a resumed run draws the same. ``model.start_epoch`` opens every epoch
    (a model's own schedule, e.g. seg_cls's phases); an epoch it excludes is never kept and not
    counted by ``patience``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    train_labels = labels[train_index]
    on_test = settings.checkpoint_selection == "test"
    scored = _scored(settings, val_index, test_index, log)
    monitored = settings.monitored
    optimizer, scheduler, weight = _optimisation(module, settings, train_labels)
    checkpoint = Path(checkpoint) if checkpoint else None
    progress, start_epoch = _resume(checkpoint, fingerprint, module, optimizer, scheduler, log)
    session_start, session_epochs = time.perf_counter(), 0
    for epoch in range(start_epoch, settings.epochs + 1):
        if progress.finished:
            break
        # The model's own schedule (seg_cls's phases), set again after resuming; an epoch it
        # says may not be kept is neither the best nor counted by early stopping.
        keepable = model.start_epoch(epoch, settings.epochs)
        row = _epoch(epoch, model, module, optimizer, scheduler, fetch, train_fetch, labels, patients, train_index,
                     scored, settings, seed, weight)
        improved = progress.record(row, keepable, module, settings)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, progress.checkpoint(fingerprint, epoch, module, optimizer, scheduler))
        session_epochs += 1
        remaining = (time.perf_counter() - session_start) / session_epochs * (settings.epochs - epoch)
        log(_epoch_line(epoch, settings, progress.history[-1], progress, improved, keepable, remaining, on_test))
        if progress.finished and epoch < settings.epochs:
            log(f"early stop: no {monitored} improvement for {progress.bad_epochs} epochs; keeping epoch "
                f"{progress.best_epoch}")

    return progress.result(module, settings, start_epoch - 1, log)
