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

from . import register
from .video import (
    VideoClassifier,
    check_token_grid,
    interpolate_spatial_position_embeddings,
    interpolate_temporal_position_embeddings,
    square,
)

SPATIAL_KEY = "timesformer.embeddings.position_embeddings"
TIME_KEY = "timesformer.embeddings.time_embeddings"
#: Seed of the spatial table drawn by ``position_embeddings: reset`` for another image size.
RESET_SEED = 0


def _patch(config: TimesformerConfig, name: str) -> int:
    return square(config.patch_size, name)


def _check_geometry(config: TimesformerConfig, num_frames: int, image_size: int, name: str) -> None:
    p = _patch(config, name)
    check_token_grid(name, num_frames, image_size, 1, (p, p))  # patches per frame: any num_frames fits


def _resize_position_embeddings(hf: TimesformerForVideoClassification, num_frames: int, image_size: int, name: str,
                                how: str) -> TimesformerForVideoClassification:
    """A copy of ``hf`` for ``num_frames`` frames of ``image_size`` pixels, every weight but the
    position and time embeddings unchanged (see the module docstring for ``how``)."""
    config = hf.config
    p = _patch(config, name)
    old_grid = (square(config.image_size, name) // p,) * 2
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
class TimeSformer(VideoClassifier):
    """TimeSformer over a scan's ``num_frames`` slices; features = the last layer's CLS token
    (``pooling: cls``, transformers') or the mean / maximum over its patch tokens."""

    kind = "sequence"
    title = "TimeSformer"
    hf_class = TimesformerForVideoClassification
    config_class = TimesformerConfig
    backbone_attr = "timesformer"
    # TimesformerVideoProcessor's defaults (IMAGENET_DEFAULT_MEAN / _STD) after its 1/255 rescale.
    default_mean = (0.485, 0.456, 0.406)
    default_std = (0.229, 0.224, 0.225)
    check_geometry = staticmethod(_check_geometry)
    regeometry = staticmethod(_resize_position_embeddings)

    def forward_batch(self, batch):
        if self.aux_mask_head is None or batch.pixels is None or not self.training:
            return super().forward_batch(batch)
        last = self.hf_model.timesformer(batch.pixels).last_hidden_state
        side = self.image_size // _patch(self.hf_model.config, self.entry)
        # Patch tokens are space-major (TimesformerEmbeddings: (H'·W', T) flattened):
        # (B, H', W', T) -> (B, T, H', W'), the layout the base mask_loss pools the masks to.
        logits = self.aux_mask_head(last[:, 1:])[..., 0].reshape(-1, side, side, self.num_frames)
        return self.classifier(self._pool(last)), logits.permute(0, 3, 1, 2)
