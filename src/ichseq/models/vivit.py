"""ViViT (joint space-time attention, as in transformers): one sample = a scan's frames.

transformers' ViViT only accepts exactly ``config.num_frames`` frames, and a checkpoint's
position embeddings are sized for its own frame count (32 for google/vivit-b-16x2-kinetics400).
Loading with another ``num_frames`` and ``ignore_mismatched_sizes=True`` silently resets them
to zeros, i.e. throws away where each tubelet is. Here they are interpolated instead: along
time (linear) for a different ``num_frames``, and over the spatial grid (bicubic) for a
different ``image_size``. The entry option ``position_embeddings: reset`` restores the
study's behaviour (zeros, exactly what transformers' re-initialisation of a mismatched
weight gives), to measure what it cost.
"""

from __future__ import annotations

import copy

import torch
from transformers import VivitConfig, VivitForVideoClassification

from . import register
from .video import (
    VideoClassifier,
    check_token_grid,
    interpolate_spatial_position_embeddings,
    interpolate_temporal_position_embeddings,
    square,
)

POSITION_KEY = "vivit.embeddings.position_embeddings"


def _check_geometry(config: VivitConfig, num_frames: int, image_size: int, name: str) -> None:
    t, ph, pw = config.tubelet_size
    check_token_grid(name, num_frames, image_size, t, (ph, pw))


def _resize_position_embeddings(
    hf: VivitForVideoClassification, num_frames: int, image_size: int, name: str, how: str = "interpolate"
) -> VivitForVideoClassification:
    """A copy of ``hf`` for ``num_frames`` frames of ``image_size`` pixels, every weight but the
    position embeddings unchanged. These are interpolated (``how="interpolate"``) or set to zeros
    (``"reset"``: what ``from_pretrained(..., ignore_mismatched_sizes=True)`` does, as
    ``VivitPreTrainedModel._init_weights`` zeroes the re-initialised embeddings)."""
    config = hf.config
    t, ph, pw = config.tubelet_size
    old_size = square(config.image_size, name)
    old_t, new_t = config.num_frames // t, num_frames // t
    old_grid, new_grid = (old_size // ph, old_size // pw), (image_size // ph, image_size // pw)

    pos = hf.vivit.embeddings.position_embeddings.detach()
    if how == "reset":
        pos = torch.zeros(1, 1 + new_t * new_grid[0] * new_grid[1], pos.shape[-1], dtype=pos.dtype)
    else:
        if new_grid != old_grid:
            pos = interpolate_spatial_position_embeddings(pos, old_t, old_grid, new_grid)
        pos = interpolate_temporal_position_embeddings(pos, old_t, new_t, new_grid[0] * new_grid[1])

    new_config = copy.deepcopy(config)
    new_config.num_frames = num_frames
    new_config.image_size = image_size
    resized = VivitForVideoClassification(new_config)
    state = hf.state_dict()
    state[POSITION_KEY] = pos
    # strict=True: any other shape change would be an error, not a silent re-initialisation.
    resized.load_state_dict(state, strict=True)
    return resized


@register("vivit")
class ViViT(VideoClassifier):
    """ViViT over a scan's ``num_frames`` slices; features = the last layer's CLS token
    (``pooling: cls``, transformers' and the study's) or the mean / maximum over its tubelet tokens."""

    kind = "sequence"
    title = "ViViT"
    hf_class = VivitForVideoClassification
    config_class = VivitConfig
    backbone_attr = "vivit"
    # google/vivit-b-16x2-kinetics400 normalises with mean 0.5 / std 0.5 per channel, after
    # VivitImageProcessor's rescale by 1/127.5 with offset (pixels in [-1, 1]).
    default_mean = (0.5, 0.5, 0.5)
    default_std = (0.5, 0.5, 0.5)
    default_rescale = {"rescale_factor": 1 / 127.5, "offset": True}
    check_geometry = staticmethod(_check_geometry)
    regeometry = staticmethod(_resize_position_embeddings)

    def forward_batch(self, batch):
        if self.aux_mask_head is None or batch.pixels is None or not self.training:
            return super().forward_batch(batch)
        last = self.hf_model.vivit(batch.pixels).last_hidden_state
        t, ph, pw = self.hf_model.config.tubelet_size
        grid = (self.num_frames // t, self.image_size // ph, self.image_size // pw)
        # Tubelet tokens are time-major (the Conv3d's output flattened): (B, T', H', W').
        return self.classifier(self._pool(last)), self.aux_mask_head(last[:, 1:])[..., 0].reshape(-1, *grid)

    def mask_targets(self, masks: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """A tubelet is positive when any pixel of any of its frames is: the masks (B, T, S, S)
        max-pooled over each tubelet's time and space, (B, T', H', W')."""
        t, ph, pw = self.hf_model.config.tubelet_size
        b, frames, h, w = masks.shape
        return masks.reshape(b, frames // t, t, h // ph, ph, w // pw, pw).amax(dim=(2, 4, 6)).float()
