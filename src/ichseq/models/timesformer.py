"""TimeSformer (transformers' ``TimesformerForVideoClassification``, divided space-time attention):
one sample = a scan's frames.

Each frame is cut into ``patch_size``² patches (a Conv2d per frame, no tubelets), so any
``num_frames`` fits the network; the data loader gives it that many slices per scan by
``frames.policy``.

Position embeddings. TimeSformer learns two tables: ``position_embeddings`` (1, 1 + H·W, D), the
CLS slot and one row per spatial patch, shared by all frames; and ``time_embeddings`` (1, T, D),
one row per frame (absent with ``attention_type: space_only``). A checkpoint's tables are sized
for its geometry (8 frames of 224² for facebook/timesformer-base-finetuned-k400). transformers
resizes them at run time by *nearest* interpolation when the input differs, while a
``from_pretrained`` with another ``num_frames`` / ``image_size`` and ``ignore_mismatched_sizes``
re-initialises them (transformers 5.23 leaves the re-initialised ``time_embeddings``
uninitialised: NaN was seen). Here, as for ViViT:

- ``position_embeddings: interpolate`` (default): ``time_embeddings`` linearly along time with
  the ends aligned (the scan's first and last slices map onto the clip's), the spatial grid
  bicubically (ViViT's functions; the CLS slot unchanged); the resized tables are weights of
  the saved model, so a saved folder reloads them as they are.
- ``position_embeddings: reset``: the resized tables start as a fresh model's: the time
  embeddings at zeros (TimesformerEmbeddings' initial value) and a resized spatial table drawn
  as transformers' ``_init_weights`` does (truncated normal, std ``initializer_range``), from a
  fixed seed (``RESET_SEED``).

Pooling (``pooling``): the CLS token after the final LayerNorm (default, what transformers'
classifier reads), or the mean or maximum over the patch tokens.

Normalisation: transformers' ``TimesformerVideoProcessor`` defaults, rescale 1/255 then the
ImageNet mean/std (IMAGENET_DEFAULT); a checkpoint's own preprocessor_config.json overrides them.

Full size (facebook/timesformer-base-finetuned-k400, ViT-B: 121 M parameters, 8 frames of 224² in
16x16 patches), e.g. for 16 slices of 224 pixels::

    timesformer: {pretrained: facebook/timesformer-base-finetuned-k400, num_frames: 16, image_size: 224}

or a random-init base model: ``config: {}`` (TimesformerConfig's defaults are ViT-B).
"""

from __future__ import annotations

import copy

import torch
from transformers import TimesformerConfig, TimesformerForVideoClassification

from ..errors import ModelError
from . import register
from .base import (
    HFClassifier,
    check_int,
    input_settings,
    load_pretrained,
    saved_pooling,
    mean_std,
    random_config,
    refuse_mean_filters_with_checkpoint,
)
from .vivit import (
    POSITION_EMBEDDINGS,
    _square,
    interpolate_spatial_position_embeddings,
    interpolate_temporal_position_embeddings,
)

# TimesformerVideoProcessor's defaults (IMAGENET_DEFAULT_MEAN / _STD) after its 1/255 rescale.
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)
POOLINGS = ("cls", "mean", "max")
SPATIAL_KEY = "timesformer.embeddings.position_embeddings"
TIME_KEY = "timesformer.embeddings.time_embeddings"
#: Seed of the spatial table drawn by ``position_embeddings: reset`` for another image size.
RESET_SEED = 0


def _patch(config: TimesformerConfig, name: str) -> int:
    return _square(config.patch_size, name)


def _check_geometry(config: TimesformerConfig, image_size: int, name: str) -> None:
    # The Conv2d silently drops pixels that do not fill a whole patch: refuse instead.
    p = _patch(config, name)
    if image_size % p:
        raise ModelError(f"models.{name}.image_size: {image_size} is not a multiple of the patch size {p}x{p}")


def _resize_position_embeddings(hf: TimesformerForVideoClassification, num_frames: int, image_size: int, name: str,
                                how: str) -> TimesformerForVideoClassification:
    """A copy of ``hf`` for ``num_frames`` frames of ``image_size`` pixels, every weight but the
    position and time embeddings unchanged (see the module docstring for ``how``)."""
    config = hf.config
    p = _patch(config, name)
    old_grid = (_square(config.image_size, name) // p,) * 2
    new_grid = (image_size // p,) * 2
    state = hf.state_dict()
    spatial = state[SPATIAL_KEY]
    if new_grid != old_grid:
        if how == "reset":
            generator = torch.Generator().manual_seed(RESET_SEED)
            fresh = torch.empty(1, 1 + new_grid[0] * new_grid[1], spatial.shape[-1])
            torch.nn.init.trunc_normal_(fresh, std=config.initializer_range, generator=generator)
            state[SPATIAL_KEY] = fresh
        else:
            state[SPATIAL_KEY] = interpolate_spatial_position_embeddings(spatial, 1, old_grid, new_grid)
    if TIME_KEY in state and num_frames != config.num_frames:
        time = state[TIME_KEY]
        if how == "reset":
            state[TIME_KEY] = torch.zeros(1, num_frames, time.shape[-1], dtype=time.dtype)
        else:
            # ViViT's temporal function with one spatial token and a dummy CLS slot.
            padded = torch.cat([torch.zeros_like(time[:, :1]), time], dim=1)
            state[TIME_KEY] = interpolate_temporal_position_embeddings(padded, config.num_frames, num_frames, 1)[:, 1:]
    new_config = copy.deepcopy(config)
    new_config.num_frames, new_config.image_size = num_frames, image_size
    resized = TimesformerForVideoClassification(new_config)
    resized.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True)
    return resized


@register("timesformer")
class TimeSformer(HFClassifier):
    """TimeSformer over a scan's ``num_frames`` slices; features = the last layer's CLS token
    (``pooling: cls``, transformers') or the mean / maximum over its patch tokens."""

    kind = "sequence"

    def __init__(self, hf_model: TimesformerForVideoClassification, mean, std, name: str = "timesformer",
                 pooling: str = "cls"):
        super().__init__(hf_model, _square(hf_model.config.image_size, name), mean, std, name=name)
        self.num_frames = int(hf_model.config.num_frames)
        self.pooling = pooling

    @classmethod
    def from_settings(cls, settings: dict, name: str = "timesformer") -> "TimeSformer":
        pooling = settings.get("pooling") or "cls"
        if pooling not in POOLINGS:
            raise ModelError(f"models.{name}.pooling: must be one of {', '.join(POOLINGS)} for TimeSformer, "
                             f"got {pooling!r}")
        num_frames = check_int(settings, "num_frames", name)
        image_size = check_int(settings, "image_size", name)
        position_embeddings = settings.get("position_embeddings") or "interpolate"
        if position_embeddings not in POSITION_EMBEDDINGS:
            raise ModelError(f"models.{name}.position_embeddings: must be one of {', '.join(POSITION_EMBEDDINGS)}, "
                             f"got {position_embeddings!r}")
        refuse_mean_filters_with_checkpoint(settings, name)
        pretrained = settings.get("pretrained")
        if pretrained is None:
            config = random_config(TimesformerConfig, settings, name, num_frames=num_frames, image_size=image_size)
            _check_geometry(config, _square(config.image_size, name), name)
            mean, std = mean_std(None, DEFAULT_MEAN, DEFAULT_STD, name)
            model = cls(TimesformerForVideoClassification(config), mean, std, name=name, pooling=pooling)
            model.set_input_windows(*input_settings(settings, None))
            if settings.get("mean_filters"):
                model.init_mean_filters_(**settings["mean_filters"])
            return model

        # Load with the checkpoint's own geometry (so nothing is re-initialised), then adapt it.
        hf, preprocessor = load_pretrained(TimesformerForVideoClassification, pretrained, name)
        pooling = saved_pooling(settings, preprocessor, pooling)
        num_frames = num_frames or hf.config.num_frames
        image_size = image_size or _square(hf.config.image_size, name)
        _check_geometry(hf.config, image_size, name)
        if (num_frames, image_size) != (hf.config.num_frames, _square(hf.config.image_size, name)):
            hf = _resize_position_embeddings(hf, num_frames, image_size, name, position_embeddings)
        mean, std = mean_std(preprocessor, DEFAULT_MEAN, DEFAULT_STD, name)
        model = cls(hf, mean, std, name=name, pooling=pooling)
        return model.set_input_windows(*input_settings(settings, preprocessor))

    def prepare(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        # transformers would silently resample the time embeddings (nearest) for another clip
        # length: fail with a readable message instead.
        if batch_uint8.ndim == 4 and batch_uint8.shape[1] != self.num_frames:
            raise ModelError(
                f"models.{self.entry}: TimeSformer expects {self.num_frames} frames per scan, got "
                f"{batch_uint8.shape[1]}; sample or pad scans to models.{self.entry}.num_frames"
            )
        return super().prepare(batch_uint8)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._pool(self.hf_model.timesformer(pixel_values).last_hidden_state)

    def _pool(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return last_hidden_state[:, 0]
        tokens = last_hidden_state[:, 1:]  # the patches of every frame, after the final LayerNorm
        return tokens.amax(dim=1) if self.pooling == "max" else tokens.mean(dim=1)

    def init_mean_filters_(self, channel: int, count: int, scale: float = 20.0) -> "TimeSformer":
        """The first ``count`` filters of the patch embedding (a Conv2d applied to each frame) start as ``scale`` times the mean of input
        channel ``channel`` over the patch: ViViT's ``mean_filters`` (see ``ViViT.init_mean_filters_``
        for why), so the tokens know from the first step how much of each patch lies in the
        blood band."""
        embed = self.hf_model.timesformer.embeddings.patch_embeddings.projection
        return self._set_mean_filters(embed, channel, count, scale)

    def use_mask_loss(self, weight: float, seed: int) -> "TimeSformer":
        # Each patch token of the last layer predicts whether its patch of its frame holds hemorrhage.
        return self._enable_mask_loss(torch.nn.Linear(self.hf_model.config.hidden_size, 1), weight, seed)

    def forward_batch(self, batch):
        if self.aux_mask_head is None or batch.pixels is None or not self.training:
            return super().forward_batch(batch)
        last = self.hf_model.timesformer(batch.pixels).last_hidden_state
        side = self.image_size // _patch(self.hf_model.config, self.entry)
        # Patch tokens are space-major (TimesformerEmbeddings: (H'·W', T) flattened):
        # (B, H', W', T) -> (B, T, H', W'), the layout the base mask_loss pools the masks to.
        logits = self.aux_mask_head(last[:, 1:])[..., 0].reshape(-1, side, side, self.num_frames)
        return self.classifier(self._pool(last)), logits.permute(0, 3, 1, 2)
