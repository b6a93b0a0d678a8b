"""The contract every model implements (:class:`CTClassifier`, :class:`Batch`) and the names
of a saved model's files.

A model splits into a backbone (``features``) and a classifier (``head``), so head-only
training on cached features and a full forward pass go through exactly the same modules:
``head(features(x))`` is ``forward(x)``. The training code sees only this interface: it builds a
:class:`Batch`, calls ``forward_batch``, ``loss`` and ``logits`` (and ``start_epoch`` before each
epoch, ``extra_test_metrics`` after training: hooks that do nothing unless a model needs them),
initialises, saves and loads the classifier or the whole model through the methods below. A
model that is not a Hugging Face ``*ForXxxClassification``, or that has its own loss or needs
masks, subclasses :class:`CTClassifier` directly in its own module.

Its two other parts live beside it: the input pipeline (``prepare``, input windows:
:mod:`ichseq.models.preprocessing`) and the auxiliary mask loss (:mod:`ichseq.models.mask_loss`).
The Hugging Face implementation is :class:`ichseq.models.hf.HFClassifier`; the helpers that
build models from an entry are in :mod:`ichseq.models.loading`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..errors import ModelError
from .mask_loss import MaskSupervision
from .preprocessing import InputPipeline

# Binary task: index 1 is the positive class so that softmax(logits)[:, 1] is P(hemorrhage).
ID2LABEL = {0: "no_hemorrhage", 1: "hemorrhage"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}
NUM_LABELS = 2

#: What a model may ask the data loader for besides pixels and labels (``CTClassifier.needs``).
OPTIONAL_INPUTS = ("masks", "positions")
#: Files of a saved model / classifier (``save``, ``save_classifier``).
CLASSIFIER_FILE = "head.safetensors"
WEIGHTS_FILE = "model.safetensors"
SETTINGS_FILE = "model_settings.json"  # a non-HF model's build settings (HF models: config.json)
PREPROCESSOR_FILE = "preprocessor_config.json"
#: Build settings that describe the input rather than the network: kept when a saved folder is
#: reloaded, and written to its preprocessor_config.json (``input_windows``).
INPUT_KEYS = ("input_windows", "cache_window")


@dataclass
class Batch:
    """One batch of samples as a model consumes it; tensors on the model's device.

    Exactly one of ``pixels`` (normalised ``pixel_values`` from :meth:`CTClassifier.prepare`:
    end-to-end training) and ``features`` (cached backbone features: head-only training) is
    set. ``masks`` and ``positions`` are filled only for a model whose ``needs`` names them.
    """

    labels: torch.Tensor  # int64 (B,): 1 = hemorrhage
    pixels: torch.Tensor | None = None  # float (B, 3, S, S) slices or (B, T, 3, S, S) clips
    features: torch.Tensor | None = None  # float (B, D), or (B, T, D) slice features of a scan / a slice's context
    masks: torch.Tensor | None = None  # float 0/1 (B, S, S) or (B, T, S, S), at the model's image size
    positions: torch.Tensor | None = None  # float (B,) or (B, T): slice position in mm, NaN for a blank frame
    # bool (B, T), samples of several slices of a model reading a slice backbone's features
    # (kinds scan and context): True where a frame is a slice, False for padding / beyond the scan.
    frame_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


class CTClassifier(InputPipeline, MaskSupervision, ABC):
    """A binary ICH classifier over a scan's frames (``kind="sequence"``) or one slice (``"slice"``)."""

    kind: ClassVar[str]  # what one sample is, for the data loader: one of ichseq.models.KINDS
    #: Which of OPTIONAL_INPUTS the model's ``forward_batch`` / ``loss`` read from the Batch.
    needs: ClassVar[frozenset[str]] = frozenset()
    #: Frames per sample the data loader gives it (sequence models; a slice model: slices per
    #: scan, None = all).
    num_frames: int | None = None
    #: The keys of its ``models:`` entry the model reads (besides architecture, training,
    #: frames, aggregation and pretrain, which every entry takes), each with its JSON schema:
    #: None for the definition several models share (``$defs.model_keys`` of the package
    #: schema), a mapping for a key of its own, or narrowing a shared one (merged over it). The
    #: config check and the refusal of another model's key are derived from it. A literal: it
    #: is read from the source without importing the module (:mod:`ichseq.models.catalogue`).
    entry_keys: ClassVar[dict[str, dict | None]] = {}
    #: What the refusal of a key the model does not read tells the user (None: remove it).
    refusal_hint: ClassVar[str | None] = None

    def __init__(self, image_size: int, mean, std, name: str | None = None):
        super().__init__()
        # The entry's key under ``models:`` (e.g. vivit_first), which error messages name.
        self.entry = name or type(self).__name__.lower()
        self.image_size = int(image_size)
        self.backbone_frozen = False
        self.init_input_pipeline(mean, std)
        # The small head that predicts hemorrhage from an early feature map (``use_mask_loss``);
        # it serves training only and is never saved with the model.
        self.aux_mask_head: torch.nn.Module | None = None

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: dict, name: str) -> "CTClassifier":
        """Build from a config entry; ``name`` is the entry's key under ``models:`` (named by error messages)."""

    @abstractmethod
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The backbone output that feeds the classifier, shape (B, D)."""

    @property
    @abstractmethod
    def classifier(self) -> torch.nn.Module:
        """The head module: the only part trained in head mode."""

    @property
    def head_init_std(self) -> float:
        """Standard deviation of the classifier's initial weights (see ``init_classifier_``)."""
        return 0.02

    # -- forward and loss ----------------------------------------------------------------

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2) from features."""
        return self.classifier(features)

    def forward(self, pixel_values: torch.Tensor) -> Any:
        return self.head(self.features(pixel_values))

    def forward_batch(self, batch: Batch) -> Any:
        """The model's outputs for a batch: through the classifier alone when the batch holds
        cached features, through the whole model when it holds pixels."""
        if batch.features is not None:
            return self.head(batch.features)
        return self(batch.pixels)

    def logits(self, outputs: Any) -> torch.Tensor:
        """The (B, 2) classification logits in ``outputs`` (a model whose forward returns more,
        e.g. a mask too, overrides this and ``loss``; a training forward with the auxiliary
        mask loss returns ``(logits, mask_logits)``)."""
        return outputs[0] if isinstance(outputs, tuple) else outputs

    def loss(self, outputs: Any, batch: Batch, class_weight: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss of a batch: cross-entropy of the logits, each class weighted by
        ``class_weight`` (``training.class_imbalance: weighted``) when given; plus
        ``mask_loss_weight`` times the auxiliary mask loss when the outputs carry mask logits."""
        loss = F.cross_entropy(self.logits(outputs).float(), batch.labels, weight=class_weight)
        if isinstance(outputs, tuple) and self.mask_loss_weight:
            loss = loss + self.mask_loss_weight * self.mask_loss(outputs[1].float(), batch.masks)
        return loss

    # -- hooks of the training loop and the run ---------------------------------------------

    def start_epoch(self, epoch: int, epochs: int) -> bool:
        """Called by the training loop at the start of each epoch ``epoch`` (1-based) of a
        training of ``epochs``, before its first batch, also for the first epoch after resuming
        from a checkpoint (so a model that changes what it trains by epoch resumes identically).
        Returns whether this epoch may be kept as the best one and counts for early stopping:
        False for an epoch whose classifier is not trained yet (seg_cls's segmentation phase).
        Default: nothing to change, every epoch may be kept."""
        return True

    def saliency_layer(self) -> torch.nn.Module | None:
        """The convolutional layer whose activations Grad-CAM weighs by the gradient of the
        positive logit (``ichseq.inference.saliency``): a late one, coarse but class-specific.
        Default None: no saliency map (sequence / video and scan-level models, whose score
        explains no one slice)."""
        return None

    def saliency_rows(self, batch: Batch) -> torch.Tensor | None:
        """Which rows of the saliency layer's output are the samples' slices, one per sample
        (int64 (B,)); None: row i is sample i. A model that passes several frames of a sample
        through that layer (kind ``context``) says which one its map belongs to."""
        return None

    def extra_test_metrics(self, fetch: Callable[[np.ndarray], Batch], index: np.ndarray, patients: np.ndarray,
                           batch_size: int) -> dict[str, float | None]:
        """Test metrics only this model defines, written next to the classification metrics in
        a run's metrics.json (None: undefined), e.g. seg_cls's segmentation Dice. ``fetch``
        gives the Batch of pixels (and what ``needs`` names) of sample indices, ``index`` holds
        the test samples, ``patients`` every sample's patient; called in eval mode after
        training, batches of ``batch_size``. Default: none."""
        return {}

    # -- the classifier: initialisation, head-only training ------------------------------

    def init_classifier_(self, seed: int) -> "CTClassifier":
        """Initialise the classifier from ``seed`` as transformers does: every Linear's weights
        ~ N(0, ``head_init_std``) drawn in module order, biases 0."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.classifier.modules():
                if isinstance(layer, torch.nn.Linear):
                    weight = torch.empty(layer.weight.shape).normal_(0.0, self.head_init_std, generator=generator)
                    layer.weight.copy_(weight)
                    if layer.bias is not None:
                        layer.bias.zero_()
        return self

    def head_parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.classifier.parameters()

    def freeze_backbone(self) -> "CTClassifier":
        """Only the classifier stays trainable; the backbone is kept in eval mode from now on
        (see ``train``), so its features are deterministic and may be computed once and cached."""
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.head_parameters():
            p.requires_grad_(True)
        self.backbone_frozen = True
        return self.train(self.training)

    def train(self, mode: bool = True) -> "CTClassifier":
        super().train(mode)
        if self.backbone_frozen:
            # A frozen backbone must not run dropout / stochastic depth during head training.
            for module in self.children():
                module.eval()
            self.classifier.train(mode)
        return self

    def parameter_counts(self) -> dict[str, int]:
        return {
            "total": sum(p.numel() for p in self.parameters()),
            "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
        }

    # -- saving and loading --------------------------------------------------------------

    def save_classifier(self, directory: str | Path) -> None:
        """The classifier's weights alone (a head-mode run): ``head.safetensors`` in ``directory``."""
        state = {k: v.detach().contiguous().cpu() for k, v in self.classifier.state_dict().items()}
        save_file(state, str(Path(directory) / CLASSIFIER_FILE))

    def load_classifier(self, directory: str | Path) -> "CTClassifier":
        """Load what ``save_classifier`` wrote (the backbone is the one this model was built with)."""
        self.classifier.load_state_dict(load_file(str(Path(directory) / CLASSIFIER_FILE)), strict=True)
        return self

    def save(self, directory: str | Path, settings: dict | None = None) -> None:
        """The whole model into ``directory`` (existing), loadable with ``load``. This default, for
        a model that is not a Hugging Face one: its build ``settings`` (the config entry; None:
        none) and its weights as safetensors."""
        directory = Path(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()
                 if not k.startswith("aux_mask_head.")}  # a training aid, not part of the model
        save_file(state, str(directory / WEIGHTS_FILE))
        (directory / SETTINGS_FILE).write_text(json.dumps(settings or {}, indent=2, default=str) + "\n")
        (directory / PREPROCESSOR_FILE).write_text(json.dumps(self.preprocessor_settings(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, name: str, settings: dict | None = None) -> "CTClassifier":
        """A model written by ``save``: built from the settings saved with it (``settings``, the
        config entry, is not needed here), then its weights loaded."""
        directory = Path(directory)
        try:
            settings = json.loads((directory / SETTINGS_FILE).read_text())
            state = load_file(str(directory / WEIGHTS_FILE))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{directory}: not a saved {cls.__name__} ({exc})") from None
        model = cls.from_settings({k: v for k, v in settings.items() if k != "pretrained"}, name=name)
        model.load_state_dict(state, strict=True)
        return model
