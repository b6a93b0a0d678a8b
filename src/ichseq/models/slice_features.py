"""Two-stage models: a head over the per-slice features of a slice model's backbone.

A model of this family (``cnn_rnn``, ``slice_context``) has two parts:

* the *backbone*: a slice model (ConvNeXt by default) built exactly as that model's own entry
  under ``models:`` builds it (same weights, same input windows, same seed), named by the
  entry's ``backbone`` key;
* the *head* (``classifier``): a small network over a stack of slice features, (B, T, D) with a
  frame mask (B, T) -- a whole scan of any length (kind ``scan``) or one slice with its
  neighbours (kind ``context``).

Two-stage by default (``training.mode: head``): the backbone is frozen, so the head trains on
the backbone model's *feature store* (results/features/<backbone>), which the slice model's own
runs already use: no slice goes through the backbone a second time. ``training.mode: full``
trains backbone and head end to end on pixels (every slice of a sample through the backbone).

The backbone's weights are its entry's: a hub id, a folder, or the pretrain stage
(``pretrained: pretrain`` on the backbone's entry). A saved model (``save``) is one folder: the
backbone's own saved folder in ``backbone/``, the head's weights and the head settings, so it
loads without the config it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import ModelError
from . import build_model, load_model, model_kind
from .base import PREPROCESSOR_FILE, SETTINGS_FILE, WEIGHTS_FILE, Batch, CTClassifier

#: The saved backbone's subfolder in a saved two-stage model.
BACKBONE_DIR = "backbone"


def backbone_spec(settings: dict, name: str) -> dict:
    """The entry's ``backbone`` build spec ({name, architecture, settings, seed}), checked."""
    spec = settings.get("backbone")
    if not isinstance(spec, dict) or not {"name", "architecture", "settings"} <= set(spec):
        raise ModelError(f"models.{name}.backbone: expected the slice model's build spec "
                         f"(name, architecture, settings[, seed]), got {spec!r}")
    return spec


def build_backbone(spec: dict, name: str) -> CTClassifier:
    """The slice model of ``spec``, its random parts drawn from ``spec['seed']`` (as its own entry
    draws them, so a random backbone here is the one whose features were cached)."""
    if model_kind(spec["architecture"]) != "slice":
        raise ModelError(f"models.{name}.backbone: {spec['name']} ({spec['architecture']}) is not a slice model; "
                         f"a two-stage model reads per-slice features (e.g. convnext)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec.get("seed", 0)))
        return build_model(spec["architecture"], dict(spec["settings"]), entry=spec["name"])


def head_settings(settings: dict, defaults: dict, name: str) -> dict:
    """The entry's ``head`` mapping over ``defaults``; an unknown key is a one-line error."""
    given = settings.get("head") or {}
    if not isinstance(given, dict):
        raise ModelError(f"models.{name}.head: expected a mapping of {', '.join(defaults)}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ModelError(f"models.{name}.head.{unknown[0]}: unknown key; known: {', '.join(defaults)}")
    return {**defaults, **given}


def choice(head: dict, key: str, options: tuple, name: str) -> str:
    if head[key] not in options:
        raise ModelError(f"models.{name}.head.{key}: must be one of {', '.join(options)}, got {head[key]!r}")
    return head[key]


def positive_int(head: dict, key: str, name: str, minimum: int = 1) -> int:
    value = head[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelError(f"models.{name}.head.{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def probability(head: dict, key: str, name: str) -> float:
    value = head[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ModelError(f"models.{name}.head.{key}: expected a number in [0, 1), got {value!r}")
    return float(value)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over axis 1 of (B, T, C) ``x`` where ``mask`` (B, T) is True."""
    return x.masked_fill(~mask[..., None], torch.finfo(x.dtype).min).amax(dim=1)


class SliceFeatureClassifier(CTClassifier):
    """Base of the two-stage models (see the module docstring). A subclass sets ``kind``
    (``scan`` or ``context``), ``HEAD_DEFAULTS``, and builds its head in ``make_head``; the head
    is a module called as ``head(features (B, T, D), frame_mask (B, T)) -> logits (B, 2)``."""

    HEAD_DEFAULTS: dict = {}
    entry_keys = {"backbone": None, "head": None}
    refusal_hint = ("a two-stage model takes its backbone's weights and input: set it on the backbone's own entry "
                    "(its own settings are under head)")

    def __init__(self, backbone: CTClassifier, head: torch.nn.Module, settings: dict, name: str):
        spec_mean = backbone.pixel_mean.flatten().tolist()
        spec_std = backbone.pixel_std.flatten().tolist()
        super().__init__(backbone.image_size, spec_mean, spec_std, name=name)
        self.backbone = backbone
        self.sequence_head = head
        self.head_config = settings  # the resolved ``head`` mapping (saved with the model)

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def make_head(cls, feature_dim: int, head: dict, name: str) -> torch.nn.Module:
        raise NotImplementedError

    @classmethod
    def from_backbone(cls, backbone: CTClassifier, settings: dict, name: str) -> "SliceFeatureClassifier":
        head = head_settings(settings, cls.HEAD_DEFAULTS, name)
        return cls(backbone, cls.make_head(feature_dim(backbone), head, name), head, name)

    @classmethod
    def from_settings(cls, settings: dict, name: str) -> "SliceFeatureClassifier":
        backbone = build_backbone(backbone_spec(settings, name), name)
        return cls.from_backbone(backbone, settings, name)

    # -- the interface ---------------------------------------------------------------------------

    @property
    def classifier(self) -> torch.nn.Module:
        return self.sequence_head

    def init_classifier_(self, seed: int) -> "SliceFeatureClassifier":
        """Every layer of the head reset to PyTorch's default initialisation, drawn from ``seed``
        (a recurrent layer's weights are not Linear ones, so the base class's rule does not fit)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in self.sequence_head.modules():
                if module is not self.sequence_head and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return self

    def prepare(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, H, W) -> the backbone's pixel_values per frame, (B, T, 3, S, S)."""
        if batch_uint8.dtype != torch.uint8 or batch_uint8.ndim != 4:
            raise ModelError(f"models.{self.entry}: {type(self).__name__}.prepare expects uint8 (B, T, H, W), "
                             f"got {batch_uint8.dtype} with shape {tuple(batch_uint8.shape)}")
        b, t = batch_uint8.shape[:2]
        x = self.backbone.prepare(batch_uint8.reshape(b * t, *batch_uint8.shape[2:]))
        return x.reshape(b, t, *x.shape[1:])

    def features(self, pixel_values: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) backbone features of every frame of (B, T, 3, S, S) pixels; frames outside
        ``frame_mask`` do not go through the backbone and are 0."""
        b, t = pixel_values.shape[:2]
        if frame_mask is None:
            frame_mask = torch.ones(b, t, dtype=torch.bool, device=pixel_values.device)
        real = self.backbone.features(pixel_values[frame_mask])
        out = real.new_zeros(b, t, real.shape[-1])
        out[frame_mask] = real
        return out

    def head(self, features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        if frame_mask is None:
            frame_mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        return self.sequence_head(features, frame_mask)

    def forward(self, pixel_values: torch.Tensor, frame_mask: torch.Tensor | None = None) -> Any:
        return self.head(self.features(pixel_values, frame_mask), frame_mask)

    def forward_batch(self, batch: Batch) -> Any:
        if batch.features is not None:
            return self.head(batch.features, batch.frame_mask)
        return self(batch.pixels, batch.frame_mask)

    # -- saliency (ichseq.inference.saliency) -----------------------------------------------------

    def saliency_layer(self) -> torch.nn.Module | None:
        """Kind ``context``: the backbone's own saliency layer (every frame of a sample goes
        through it, and ``saliency_rows`` picks the sample's own slice, its centre frame). Kind
        ``scan``: None, a scan's score explains no one slice."""
        return self.backbone.saliency_layer() if self.kind == "context" else None

    def saliency_rows(self, batch: Batch) -> torch.Tensor:
        """The centre frame (index T // 2: the sample's own slice) of each sample, as a row of the
        backbone's output, which holds only the frames of ``frame_mask``, flattened in order."""
        b, t = batch.pixels.shape[:2]
        frame_mask = batch.frame_mask
        if frame_mask is None:
            frame_mask = torch.ones(b, t, dtype=torch.bool, device=batch.pixels.device)
        row_of_frame = torch.cumsum(frame_mask.flatten().long(), 0) - 1
        return row_of_frame.view(b, t)[:, t // 2]

    # -- saving ---------------------------------------------------------------------------------

    def save(self, directory: str | Path, settings: dict | None = None) -> None:
        """The backbone's own saved folder in ``backbone/``, the head's weights, and the settings
        that rebuild the head; loadable with ``load``, without the config."""
        directory = Path(directory)
        spec = (settings or {}).get("backbone") or {}
        (directory / BACKBONE_DIR).mkdir(exist_ok=True)
        self.backbone.save(directory / BACKBONE_DIR, settings=spec.get("settings"))
        state = {k: v.detach().contiguous().cpu() for k, v in self.sequence_head.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        saved = {"head": self.head_config, "backbone": {"name": spec.get("name", self.backbone.entry),
                                                        "architecture": spec.get("architecture")}}
        (directory / SETTINGS_FILE).write_text(json.dumps(saved, indent=2) + "\n")
        (directory / PREPROCESSOR_FILE).write_text(json.dumps(self.preprocessor_settings(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, name: str, settings: dict | None = None) -> "SliceFeatureClassifier":
        directory = Path(directory)
        try:
            saved = json.loads((directory / SETTINGS_FILE).read_text())
            state = load_file(str(directory / WEIGHTS_FILE))
            architecture, backbone_name = saved["backbone"]["architecture"], saved["backbone"]["name"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{directory}: not a saved {cls.__name__} ({exc})") from None
        spec = (settings or {}).get("backbone") or {}
        backbone = load_model(architecture, directory / BACKBONE_DIR, spec.get("settings"), entry=backbone_name)
        model = cls.from_backbone(backbone, {"head": saved["head"]}, name)
        model.sequence_head.load_state_dict(state, strict=True)
        return model


def feature_dim(backbone: CTClassifier) -> int:
    """Size of the backbone's feature vector: its ``feature_size`` when it states one, else one
    forward of a blank slice (no gradients)."""
    size = getattr(backbone, "feature_size", None)
    if size:
        return int(size)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        blank = backbone.prepare(torch.zeros(1, backbone.image_size, backbone.image_size, dtype=torch.uint8))
        dim = int(backbone.features(blank).shape[-1])
    backbone.train(was_training)
    return dim
