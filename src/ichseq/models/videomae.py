"""VideoMAE (transformers' ``VideoMAEForVideoClassification``): one sample = a scan's frames.

Like ViViT it reads exactly ``num_frames`` frames cut into ``tubelet_size`` x ``patch_size``²
tubelets (a Conv3d), and the data loader gives it that many slices per scan by ``frames.policy``.

Position embeddings. VideoMAE adds *fixed* sinusoidal embeddings (transformers'
``get_sinusoid_encoding_table``), indexed by the flat token number ``t·H·W + h·W + w``. They are a
plain tensor attribute, not a weight: they are not in the state dict, and building the model for
another geometry (what ``from_pretrained(..., num_frames=...)`` does) simply computes the table
for the new token count. That table keeps each token's flat index, not its place in the scan:
more frames get indices the checkpoint never saw, and for another ``image_size`` the index of a
grid position changes (offset W was "one row down", now it is not), so the spatial layout the
checkpoint learnt is scrambled. Hence, as for ViViT:

- ``position_embeddings: interpolate`` (default): the checkpoint geometry's table, seen as a
  (T, H, W) grid, resampled to the new one (linear over time with the ends aligned, bicubic over
  space: ViViT's functions), so a token sits at the same relative place in the scan as in the
  checkpoint. The table is not saved by ``save_pretrained``, so the source geometry is: the HF
  config gets ``position_embeddings_source: [num_frames, image_size]`` and the table is recomputed
  from it on every load (it is a fixed function of that geometry).
- ``position_embeddings: reset``: the table transformers builds for the new geometry (what the
  VideoMAE authors' fine-tuning code and a plain ``from_pretrained`` give); nothing is zeroed,
  since nothing was learnt.

Pooling (``pooling``): VideoMAE has no CLS token. transformers' classifier reads
``fc_norm(mean of the tokens)`` when ``config.use_mean_pooling`` (the default, ``pooling: mean``)
and otherwise the first tubelet's token after the encoder's LayerNorm (``pooling: cls``, the
default then). ``max`` is the maximum over the tokens. The pooled vector goes through ``fc_norm``
whenever the model has one, so the default pooling is exactly transformers' head input.

Normalisation: transformers' ``VideoMAEImageProcessor`` defaults, rescale 1/255 then mean/std
0.5 (IMAGENET_STANDARD); a checkpoint's own preprocessor_config.json (MCG-NJU/videomae-base ships
one) overrides them.

Full size (MCG-NJU/videomae-base, ViT-B: 86 M parameters, 16 frames of 224² in 2x16x16 tubelets),
e.g. for 16 slices of 224 pixels::

    videomae: {pretrained: MCG-NJU/videomae-base, num_frames: 16, image_size: 224}

or a random-init base model: ``config: {}`` (VideoMAEConfig's defaults are ViT-B).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from transformers import VideoMAEConfig, VideoMAEForVideoClassification
from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

from . import register
from .video import (
    VideoClassifier,
    check_token_grid,
    interpolate_spatial_position_embeddings,
    interpolate_temporal_position_embeddings,
    square,
)

#: HF config attribute: [num_frames, image_size] of the sinusoid table the embeddings resample.
SOURCE_KEY = "position_embeddings_source"


def _patch(config: VideoMAEConfig, name: str) -> int:
    return square(config.patch_size, name)


def _check_geometry(config: VideoMAEConfig, num_frames: int, image_size: int, name: str) -> None:
    p = _patch(config, name)
    check_token_grid(name, num_frames, image_size, int(config.tubelet_size), (p, p))


def resampled_sinusoid_table(config: VideoMAEConfig, source: tuple[int, int], num_frames: int, image_size: int,
                             name: str = "videomae") -> torch.Tensor:
    """The sinusoid table of the ``source`` geometry (num_frames, image_size), resampled as a
    (T, H, W) grid of tokens to ``num_frames`` frames of ``image_size`` pixels: (1, T'·H'·W', D)."""
    t, p = int(config.tubelet_size), _patch(config, name)
    old_t, new_t = source[0] // t, num_frames // t
    old_grid, new_grid = (source[1] // p,) * 2, (image_size // p,) * 2
    pos = get_sinusoid_encoding_table(old_t * old_grid[0] * old_grid[1], config.hidden_size)
    # ViViT's functions expect a CLS slot first: a zero row, dropped afterwards.
    pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    if new_grid != old_grid:
        pos = interpolate_spatial_position_embeddings(pos, old_t, old_grid, new_grid)
    pos = interpolate_temporal_position_embeddings(pos, old_t, new_t, new_grid[0] * new_grid[1])
    return pos[:, 1:].contiguous()


def _apply_position_source(hf: VideoMAEForVideoClassification, name: str) -> VideoMAEForVideoClassification:
    """Set the embeddings the config's ``position_embeddings_source`` describes (none: keep
    transformers' table for the model's own geometry)."""
    source = getattr(hf.config, SOURCE_KEY, None)
    if source is None:
        return hf
    geometry = (int(hf.config.num_frames), square(hf.config.image_size, name))
    source = (int(source[0]), int(source[1]))
    if source != geometry:
        hf.videomae.embeddings.position_embeddings = resampled_sinusoid_table(hf.config, source, *geometry, name)
    return hf


def _regeometry(hf: VideoMAEForVideoClassification, num_frames: int, image_size: int, name: str,
                how: str) -> VideoMAEForVideoClassification:
    """A copy of ``hf`` for another geometry, every weight unchanged (none depends on it)."""
    config = copy.deepcopy(hf.config)
    if how == "interpolate":
        # Always from the original checkpoint's table, so a saved folder reproduces it exactly.
        source = getattr(config, SOURCE_KEY, None) or [int(config.num_frames), square(config.image_size, name)]
        setattr(config, SOURCE_KEY, [int(source[0]), int(source[1])])
    else:
        setattr(config, SOURCE_KEY, None)
    config.num_frames, config.image_size = num_frames, image_size
    resized = VideoMAEForVideoClassification(config)
    resized.load_state_dict(hf.state_dict(), strict=True)  # strict: any shape change is an error
    return _apply_position_source(resized, name)


@register("videomae")
class VideoMAE(VideoClassifier):
    """VideoMAE over a scan's ``num_frames`` slices; features = what transformers' classifier reads
    (``fc_norm`` of the token mean, or the first token), or the tokens' maximum."""

    kind = "sequence"
    title = "VideoMAE"
    hf_class = VideoMAEForVideoClassification
    config_class = VideoMAEConfig
    backbone_attr = "videomae"
    # VideoMAEImageProcessor's defaults (IMAGENET_STANDARD_MEAN / _STD) after its 1/255 rescale.
    default_mean = (0.5, 0.5, 0.5)
    default_std = (0.5, 0.5, 0.5)
    check_geometry = staticmethod(_check_geometry)
    regeometry = staticmethod(_regeometry)
    loaded = staticmethod(_apply_position_source)  # a folder saved after adaptation

    @classmethod
    def default_pooling(cls, hf_model) -> str:
        return "mean" if hf_model.fc_norm is not None else "cls"

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            pooled = tokens[:, 0]  # no CLS token: the first tubelet's, as transformers reads it
        else:
            pooled = tokens.amax(dim=1) if self.pooling == "max" else tokens.mean(dim=1)
        fc_norm = self.hf_model.fc_norm
        return pooled if fc_norm is None else fc_norm(pooled)

    def _grid(self) -> tuple[int, int, int]:
        t, p = int(self.hf_model.config.tubelet_size), _patch(self.hf_model.config, self.entry)
        return self.num_frames // t, self.image_size // p, self.image_size // p

    def forward_batch(self, batch):
        if self.aux_mask_head is None or batch.pixels is None or not self.training:
            return super().forward_batch(batch)
        tokens = self.hf_model.videomae(batch.pixels).last_hidden_state
        # Tokens are time-major (the Conv3d's output flattened): (B, T', H', W').
        return self.classifier(self._pool(tokens)), self.aux_mask_head(tokens)[..., 0].reshape(-1, *self._grid())

    def mask_loss(self, mask_logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """A tubelet is positive when any pixel of any of its frames is."""
        t, p = int(self.hf_model.config.tubelet_size), _patch(self.hf_model.config, self.entry)
        b, frames, h, w = masks.shape
        target = masks.reshape(b, frames // t, t, h // p, p, w // p, p).amax(dim=(2, 4, 6)).float()
        return F.binary_cross_entropy_with_logits(
            mask_logits, target, pos_weight=torch.tensor(self.MASK_POS_WEIGHT, device=mask_logits.device))
