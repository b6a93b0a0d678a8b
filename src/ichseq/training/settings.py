"""Training settings and seeds: what a run is configured with, importable without torch.

The Snakefile resolves every model's plan (:mod:`ichseq.training.plan`) on each invocation,
and under Slurm every job is such an invocation; so the settings, their validation against
the schema and the seed derivation live here, apart from the training loop and its torch.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import numpy as np

from ..config import section_defaults, validate_section
from ..errors import ConfigError

#: What early stopping watches, and whether lower or higher is better (the schema's
#: ``training.monitor`` values). Under ``checkpoint_selection: test`` the same score is read on
#: the test patients (``test_loss`` ...).
MONITORS = {"val_loss": "min", "val_roc_auc": "max", "val_balanced_accuracy": "max"}
TEST_SELECTION_WARNING = (
    "WARNING: training.checkpoint_selection is test: the kept epoch and early stopping are chosen on this "
    "replicate's TEST patients, so its test metrics are optimistically biased (the study's protocol; use only "
    "to measure that bias)"
)


_DEFAULTS = section_defaults("training")
#: Training settings that act on pixels or the backbone, hence only in full mode.
FULL_MODE_ONLY = ("augment_flip", "augment_shift", "random_clips", "mask_loss_weight")


@dataclass(frozen=True)
class TrainSettings:
    """The ``training`` section of the config. What each key means, its allowed values and its
    default are in the schema (``$defs.training``), the only place they are written."""

    mode: str = _DEFAULTS["mode"]
    epochs: int = _DEFAULTS["epochs"]
    batch_size: int = _DEFAULTS["batch_size"]
    lr: float = _DEFAULTS["lr"]
    weight_decay: float = _DEFAULTS["weight_decay"]
    schedule: str = _DEFAULTS["schedule"]
    warmup_steps: int = _DEFAULTS["warmup_steps"]
    patience: int | None = _DEFAULTS["patience"]
    monitor: str = _DEFAULTS["monitor"]
    # "test" is the study's biased protocol (the kept epoch chosen on the test patients).
    checkpoint_selection: str = _DEFAULTS["checkpoint_selection"]
    class_imbalance: str = _DEFAULTS["class_imbalance"]
    seed: int = _DEFAULTS["seed"]
    device: str = _DEFAULTS["device"]
    feature_batch_size: int = _DEFAULTS["feature_batch_size"]
    samples_per_epoch: int | None = _DEFAULTS["samples_per_epoch"]
    # Full mode only (they change what the backbone sees or learns from): see the schema.
    augment_flip: bool = _DEFAULTS["augment_flip"]
    augment_shift: int = _DEFAULTS["augment_shift"]
    random_clips: bool = _DEFAULTS["random_clips"]
    mask_loss_weight: float = _DEFAULTS["mask_loss_weight"]

    @classmethod
    def from_dict(cls, values: dict, where: str = "training") -> "TrainSettings":
        """Settings from a (partial) ``training`` mapping, checked against the schema; one-line
        ConfigError naming ``where.<key>``."""
        settings = cls(**validate_section(values, "training", where))
        if settings.mode == "head":
            for key in FULL_MODE_ONLY:
                if getattr(settings, key) != _DEFAULTS[key]:
                    raise ConfigError(f"{where}.{key}: applies to mode full only (head mode trains the classifier "
                                      f"on features cached once, before any augmentation); set {where}.mode: full "
                                      f"or remove it")
        return settings

    @property
    def augments(self) -> bool:
        """Whether training samples are drawn or transformed at random (``Samples.batch``'s ``augment``)."""
        return self.augment_flip or self.augment_shift > 0 or self.random_clips

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def monitored(self) -> str:
        """The history column that picks the kept epoch: ``monitor`` on the selection patients."""
        return self.monitor if self.checkpoint_selection == "val" else "test_" + self.monitor.removeprefix("val_")


# -- seeds ------------------------------------------------------------------------------------


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from integers and names (names hashed with CRC-32), via SeedSequence."""
    entropy = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def backbone_seed(seed: int, model: str) -> int:
    """Random initialisation of a model's backbone: per model, not per replicate, so a frozen
    random backbone (and its cached features) is shared by all replicates."""
    return derive_seed(seed, "backbone", model)


def run_seed(seed: int, model: str, replicate: int) -> int:
    """Everything random in one (model, replicate) run: head initialisation, batch order, dropout."""
    return derive_seed(seed, "run", model, replicate)
