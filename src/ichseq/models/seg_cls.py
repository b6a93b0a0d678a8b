"""seg_cls: segmentation-dependent classification (BloodNet): one sample = one slice.

A small U-Net-like encoder-decoder predicts a hemorrhage logit per pixel, trained on the
dataset's masks (a slice without a mask is all background: no mask = no blood). The classifier
reads the deepest encoder map pooled over the slice (``pooling``: max by default, so a bleed a
few pixels wide is not averaged away) plus what the predicted mask says: the log of its blood
area (``log1p`` of the summed probabilities of the pixels called blood, p >= 0.5) and its
highest probability. ``features`` returns exactly that vector, so head-only training on cached
features is the same classifier as the whole model (``head(features(x)) == forward(x)``).

Training follows BloodNet's three steps (the entry's ``phases``, see
:mod:`ichseq.models.phases`): the segmentation alone (BCE + soft Dice on the masks), then the
classifier alone (cross-entropy; the segmentation network frozen), then both (the sum of the
two losses). The loop tells the model which epoch starts (``start_epoch``); an epoch of the
segmentation phase has an untrained classifier, so it is never kept as the best one. A
segmentation network frozen for the classifier phase simply gets no gradient, so the
optimiser leaves it alone (AdamW skips a parameter without one, weight decay included).

Not a Hugging Face model: ``save`` writes the weights (safetensors), the network's build
settings (model_settings.json) and the preprocessing (preprocessor_config.json), and such a
folder loads back as ``pretrained: <folder>``. Its own test metrics (``extra_test_metrics``):
the segmentation Dice and the blood-volume correlation on the test patients.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr
from torch import nn

from ..errors import ModelError
from . import register
from .base import PREPROCESSOR_FILE, SETTINGS_FILE, WEIGHTS_FILE, CTClassifier
from .loading import check_declared_choice, check_int, input_settings, mean_std
from .phases import phase_epochs, phase_of, phase_settings

#: ``config`` of a randomly initialised seg_cls: the U-Net's channels per level (fine to coarse;
#: at least 2 levels) and the stride of its stem (1, 2 or 4: the network, and its mask logits,
#: work at image_size / stem_stride; the mask is upsampled to image_size).
DEFAULT_CONFIG = {"channels": [16, 32, 64], "stem_stride": 2}
STEM_STRIDES = (1, 2, 4)
DEFAULT_IMAGE_SIZE = 128
# Pixels in [0, 1] to [-1, 1]: the network is trained from scratch, no checkpoint family to follow.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
#: A pixel is called blood when its probability is at least this (area feature, Dice, volume).
BLOOD_THRESHOLD = 0.5
#: Prior probability of blood in a pixel that the mask head starts from: a slice is mostly
#: background, and starting at p = 0.5 everywhere would make the first steps only learn that.
BLOOD_PRIOR = 0.01
#: Number of area features after the pooled encoder map (log1p area, highest probability).
AREA_FEATURES = 2


def _config(config, name: str) -> dict:
    """The network settings: ``config`` (the entry's, or a saved folder's) over DEFAULT_CONFIG."""
    key = f"models.{name}.config"
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ModelError(f"{key}: expected a mapping (channels, stem_stride), got {config!r}")
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise ModelError(f"{key}.{unknown[0]}: unknown key for seg_cls (allowed: {', '.join(DEFAULT_CONFIG)})")
    out = {**DEFAULT_CONFIG, **config}
    channels = out["channels"]
    if (not isinstance(channels, (list, tuple)) or len(channels) < 2
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels)):
        raise ModelError(f"{key}.channels: expected a list of 2 or more positive integers (fine to coarse), "
                         f"got {channels!r}")
    if out["stem_stride"] not in STEM_STRIDES or isinstance(out["stem_stride"], bool):
        raise ModelError(f"{key}.stem_stride: must be one of {', '.join(map(str, STEM_STRIDES))}, "
                         f"got {out['stem_stride']!r}")
    return {"channels": [int(c) for c in channels], "stem_stride": int(out["stem_stride"])}


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: no running statistics, so training and evaluation compute the
    # same function and a slice's features do not depend on the other slices of its batch.
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), _norm(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), _norm(cout), nn.ReLU(inplace=True))


class SegmentationNet(nn.Module):
    """The U-Net: a stem (stride ``stem_stride``), one block per level (2x max pooling between
    levels), a decoder of transposed convolutions and skip connections back to the first level,
    and a 1x1 convolution to one logit per cell of that level."""

    def __init__(self, channels: list[int], stem_stride: int):
        super().__init__()
        c0 = channels[0]
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 3, stride=stem_stride, padding=1), _norm(c0), nn.ReLU(inplace=True))
        self.encoder = nn.ModuleList(_block(cin, cout) for cin, cout in zip([c0, *channels[:-1]], channels))
        self.up = nn.ModuleList(nn.ConvTranspose2d(channels[i], channels[i - 1], 2, stride=2)
                                for i in range(len(channels) - 1, 0, -1))
        self.decoder = nn.ModuleList(_block(2 * channels[i - 1], channels[i - 1]) for i in range(len(channels) - 1, 0, -1))
        self.mask_head = nn.Conv2d(c0, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the deepest encoder map (B, C, h, w), mask logits (B, 1, H', W') at the first level)."""
        x = self.stem(x)
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        deepest = x
        for up, block, skip in zip(self.up, self.decoder, reversed(skips[:-1])):
            x = block(torch.cat([up(x), skip], dim=1))
        return deepest, self.mask_head(x)


@register("seg_cls")
class SegCls(CTClassifier):
    """BloodNet-style segmentation-dependent classifier of single slices (module docstring)."""

    kind = "slice"
    entry_keys = {
        "pretrained": None, "config": None, "num_frames": None, "image_size": None,
        "pooling": {"enum": ["max", "mean"]}, "input_windows": None,
        # Its own key: the three-step schedule (ichseq.models.phases).
        "phases": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {
                "segmentation": {"type": "integer", "minimum": 0, "default": 1, "description":
                                 "epochs that train the segmentation network alone (its mask loss), first"},
                "classifier": {"type": "integer", "minimum": 0, "default": 1, "description":
                               "epochs that then train the classifier alone, the segmentation network frozen"},
            },
            "description": (
                "seg_cls's three-step schedule whenever the whole model trains (training.mode full, and the "
                "pretrain stage): the first segmentation epochs train the segmentation alone, the next classifier "
                "epochs the classifier alone (segmentation frozen), and the epochs left of that training's epochs "
                "train both; segmentation + classifier must not exceed them, and at least one epoch must train the "
                "classifier. Epochs of the segmentation phase are never kept as the best epoch nor counted by "
                "patience. Head mode trains only the classifier. null = the defaults (1 and 1)."),
        },
    }
    needs = frozenset({"masks"})

    def __init__(self, config: dict, image_size: int, mean, std, name: str = "seg_cls", pooling: str = "max",
                 phases: dict | None = None, num_frames: int | None = None):
        super().__init__(image_size, mean, std, name=name)
        self.config = _config(config, self.entry)
        self.pooling = pooling
        self.phases = phase_settings(phases, self.entry)
        # Slices taken per scan (None: all of them); the data loader reads it, the network does not.
        self.num_frames = num_frames
        channels, stride = self.config["channels"], self.config["stem_stride"]
        grid = stride * 2 ** (len(channels) - 1)
        if self.image_size % grid:
            raise ModelError(f"models.{self.entry}.image_size: {self.image_size} is not a multiple of {grid} "
                             f"(stem_stride {stride} x 2 per level after the first of config.channels)")
        self.segmentation = SegmentationNet(channels, stride)
        with torch.no_grad():
            self.segmentation.mask_head.bias.fill_(math.log(BLOOD_PRIOR / (1 - BLOOD_PRIOR)))
        self._classifier = nn.Linear(channels[-1] + AREA_FEATURES, 2)
        # What the current epoch trains (``start_epoch``); outside the training loop: both.
        self.phase = "joint"

    @classmethod
    def from_settings(cls, settings: dict, name: str = "seg_cls") -> "SegCls":
        image_size = check_int(settings, "image_size", name, minimum=16)
        num_frames = check_int(settings, "num_frames", name)
        pretrained = settings.get("pretrained")
        saved, state, preprocessor = {}, None, None
        if pretrained is not None:
            saved, state, preprocessor = _read_folder(pretrained, name)
        pooling = settings.get("pooling") or saved.get("pooling") or "max"
        check_declared_choice(cls, "pooling", pooling, name, "seg_cls")
        config = saved.get("config") if pretrained is not None else settings.get("config")
        mean, std = mean_std(preprocessor, DEFAULT_MEAN, DEFAULT_STD, name)
        model = cls(config, image_size or saved.get("image_size") or DEFAULT_IMAGE_SIZE, mean, std, name=name,
                    pooling=pooling, phases=settings.get("phases"), num_frames=num_frames)
        if state is not None:
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise ModelError(f"models.{name}.pretrained: {pretrained}: weights do not fit its settings ({first})") from None
        return model.set_input_windows(*input_settings(settings, preprocessor))

    # -- the network ---------------------------------------------------------------------

    @property
    def classifier(self) -> nn.Module:
        return self._classifier

    def _run(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (B, D), mask logits (B, S, S) at the model's image size)."""
        # The classifier phase trains the classifier alone: the segmentation network runs
        # without a graph, so it gets no gradient and its weights stay as they are.
        frozen = self.phase == "classifier" and self.training and torch.is_grad_enabled()
        with torch.no_grad() if frozen else nullcontext():
            deepest, logits = self.segmentation(pixel_values)
            if logits.shape[-1] != self.image_size:
                logits = F.interpolate(logits, size=(self.image_size, self.image_size), mode="bilinear",
                                       align_corners=False)
            logits = logits[:, 0]
            pooled = deepest.amax(dim=(-2, -1)) if self.pooling == "max" else deepest.mean(dim=(-2, -1))
            features = torch.cat([pooled, self.area_features(logits)], dim=1)
        return features, logits

    @staticmethod
    def area_features(mask_logits: torch.Tensor) -> torch.Tensor:
        """(B, 2): log1p of the predicted blood area (the summed probability of the pixels called
        blood: a sum over every pixel would add up the background's small probabilities) and
        the highest probability of the slice."""
        p = torch.sigmoid(mask_logits.float()).flatten(1)
        area = (p * (p >= BLOOD_THRESHOLD)).sum(dim=1)
        return torch.stack([torch.log1p(area), p.amax(dim=1)], dim=1).to(mask_logits.dtype)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._run(pixel_values)[0]

    def segment(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Mask logits (B, S, S) of prepared pixels."""
        return self._run(pixel_values)[1]

    def saliency_layer(self) -> nn.Module:
        """The deepest encoder block: the classifier reads it twice, pooled directly and through
        the decoder's predicted mask (area, highest probability), so its Grad-CAM weighs both
        routes; the decoder's last block would miss the pooled one. Its grid is
        image_size / (stem_stride x 2 per further level): 16x16 at the defaults. The predicted
        mask itself (``segment``) is a segmentation, not an explanation of the class score."""
        return self.segmentation.encoder[-1]

    def forward_batch(self, batch):
        """Cached features: the logits; pixels: ``(logits, mask_logits)``."""
        if batch.features is not None:
            return self.head(batch.features)
        features, mask_logits = self._run(batch.pixels)
        return self.head(features), mask_logits

    # -- losses and the three-step schedule ------------------------------------------------

    @staticmethod
    def segmentation_loss(mask_logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Per-pixel BCE plus the soft Dice loss over the whole batch (a slice without blood has
        no Dice of its own; over the batch, the predicted area it has counts against it)."""
        masks = masks.float()
        bce = F.binary_cross_entropy_with_logits(mask_logits, masks)
        p = torch.sigmoid(mask_logits)
        dice = (2 * (p * masks).sum() + 1.0) / (p.sum() + masks.sum() + 1.0)
        return bce + 1.0 - dice

    def loss(self, outputs, batch, class_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of the slice label (each class weighted by ``class_weight`` when
        given) and the segmentation loss on the masks, as the phase asks: segmentation alone,
        classifier alone, or their sum (joint, and outside the loop). Cached features (head
        mode) have no mask: cross-entropy alone."""
        if not isinstance(outputs, tuple):
            return F.cross_entropy(outputs.float(), batch.labels, weight=class_weight)
        logits, mask_logits = outputs
        if batch.masks is None:
            raise ModelError(f"models.{self.entry}: seg_cls trains on the hemorrhage masks, but the batch has none")
        if self.phase == "classifier":
            return F.cross_entropy(logits.float(), batch.labels, weight=class_weight)
        segmentation = self.segmentation_loss(mask_logits.float(), batch.masks)
        if self.phase == "segmentation":
            return segmentation
        return F.cross_entropy(logits.float(), batch.labels, weight=class_weight) + segmentation

    def start_epoch(self, epoch: int, epochs: int) -> bool:
        """Set the phase of ``epoch`` (``phases``); an epoch of the segmentation phase may not be
        kept. Head mode (backbone frozen) trains the classifier alone: no phases then."""
        if self.backbone_frozen:
            self.phase = "classifier"
            return True
        segmentation, classifier, _ = phase_epochs(self.phases, epochs, self.entry,
                                                 "training.epochs (pretrain.training.epochs when pretraining)")
        self.phase = phase_of(epoch, segmentation, classifier)
        return self.phase != "segmentation"

    def use_mask_loss(self, weight: float, seed: int) -> "SegCls":
        raise ModelError(
            f"models.{self.entry}: seg_cls trains its segmentation with its own mask loss, scheduled by "
            f"models.{self.entry}.phases; set training.mask_loss_weight to 0 (for its pretraining: "
            f"models.{self.entry}.pretrain.mask_loss_weight: 0)"
        )

    # -- test metrics --------------------------------------------------------------------

    @torch.no_grad()
    def extra_test_metrics(self, fetch, index, patients, batch_size) -> dict[str, float | None]:
        """On the test slices, a pixel called blood when its probability is >= 0.5:

        * ``dice``: the segmentation Dice over every test slice's pixels pooled, 2|P ∩ T| /
          (|P| + |T|) (slices without blood count through their false positives); undefined
          when neither the prediction nor the masks hold any blood;
        * ``volume_spearman``: Spearman's correlation over the test patients between the
          predicted and the true blood volume (pixels called blood / mask pixels summed over the
          patient's slices, at the model's image size); undefined when either is constant.
        """
        self.eval()
        index = np.asarray(index)
        both = called = true = 0.0
        predicted_volume, true_volume = np.zeros(len(index)), np.zeros(len(index))
        for start in range(0, len(index), batch_size):
            batch = fetch(index[start : start + batch_size])
            blood = (torch.sigmoid(self.segment(batch.pixels).float()) >= BLOOD_THRESHOLD).float()
            masks = batch.masks.float()
            both += float((blood * masks).sum())
            called += float(blood.sum())
            true += float(masks.sum())
            predicted_volume[start : start + len(batch)] = blood.flatten(1).sum(1).cpu().numpy()
            true_volume[start : start + len(batch)] = masks.flatten(1).sum(1).cpu().numpy()
        dice = 2 * both / (called + true) if called + true > 0 else None
        per_patient = (np.bincount(np.unique(patients[index], return_inverse=True)[1], weights=v)
                       for v in (predicted_volume, true_volume))
        predicted, truth = per_patient
        rho = None
        if len(truth) > 1 and np.ptp(predicted) > 0 and np.ptp(truth) > 0:
            rho = float(spearmanr(predicted, truth).statistic)
        return {"dice": None if dice is None else float(dice), "volume_spearman": rho}

    # -- saving and loading --------------------------------------------------------------

    def build_settings(self) -> dict:
        """What model_settings.json holds: the network's shape (``load`` rebuilds it from this)."""
        return {"architecture": "seg_cls", "config": self.config, "image_size": self.image_size,
                "pooling": self.pooling}

    def save(self, directory: str | Path, settings: dict | None = None) -> None:
        """Weights (safetensors), the network's build settings and the preprocessing; the folder
        loads back as ``pretrained: <folder>``. ``settings`` (the config entry) is not needed:
        what builds the network is written from the model itself."""
        directory = Path(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        (directory / SETTINGS_FILE).write_text(json.dumps(self.build_settings(), indent=2) + "\n")
        (directory / PREPROCESSOR_FILE).write_text(json.dumps(self.preprocessor_settings(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, name: str, settings: dict | None = None) -> "SegCls":
        """A folder written by ``save``; the entry's input and training settings (``settings``)
        still apply, its network comes from the folder."""
        keep = {k: v for k, v in (settings or {}).items()
                if k in ("num_frames", "image_size", "phases", "pooling", "input_windows", "cache_window")}
        return cls.from_settings({**keep, "pretrained": str(directory)}, name=name)


def _read_folder(pretrained, name: str) -> tuple[dict, dict, dict | None]:
    """(build settings, weights, preprocessor settings or None) of a folder ``save`` wrote."""
    key = f"models.{name}.pretrained"
    folder = Path(str(pretrained)).expanduser()
    if not folder.is_dir():
        raise ModelError(f"{key}: {str(pretrained)!r} is not a folder; seg_cls loads only a folder it saved "
                         f"(a run's model folder or the pretrain stage's), there is no hub checkpoint of it")
    try:
        saved = json.loads((folder / SETTINGS_FILE).read_text())
        state = load_file(str(folder / WEIGHTS_FILE))
        pre_path = folder / PREPROCESSOR_FILE
        preprocessor = json.loads(pre_path.read_text()) if pre_path.is_file() else None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{key}: {folder} is not a saved seg_cls model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(saved, dict) or saved.get("architecture") != "seg_cls":
        raise ModelError(f"{key}: {folder / SETTINGS_FILE} is not a seg_cls model's settings")
    return saved, state, preprocessor
