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

# VideoMAEImageProcessor's defaults (IMAGENET_STANDARD_MEAN / _STD) after its 1/255 rescale.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
#: ``pooling`` entry option.
POOLINGS = ("cls", "mean", "max")
#: HF config attribute: [num_frames, image_size] of the sinusoid table the embeddings resample.
SOURCE_KEY = "position_embeddings_source"


def _patch(config: VideoMAEConfig, name: str) -> int:
    return _square(config.patch_size, name)


def _check_geometry(config: VideoMAEConfig, num_frames: int, image_size: int, name: str) -> None:
    # Conv3d silently drops frames/pixels that do not fill a whole tubelet: refuse instead.
    t, p = int(config.tubelet_size), _patch(config, name)
    if num_frames % t:
        raise ModelError(f"models.{name}.num_frames: {num_frames} is not a multiple of the tubelet length {t}")
    if image_size % p:
        raise ModelError(f"models.{name}.image_size: {image_size} is not a multiple of the patch size {p}x{p}")


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
    geometry = (int(hf.config.num_frames), _square(hf.config.image_size, name))
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
        source = getattr(config, SOURCE_KEY, None) or [int(config.num_frames), _square(config.image_size, name)]
        setattr(config, SOURCE_KEY, [int(source[0]), int(source[1])])
    else:
        setattr(config, SOURCE_KEY, None)
    config.num_frames, config.image_size = num_frames, image_size
    resized = VideoMAEForVideoClassification(config)
    resized.load_state_dict(hf.state_dict(), strict=True)  # strict: any shape change is an error
    return _apply_position_source(resized, name)


@register("videomae")
class VideoMAE(HFClassifier):
    """VideoMAE over a scan's ``num_frames`` slices; features = what transformers' classifier reads
    (``fc_norm`` of the token mean, or the first token), or the tokens' maximum."""

    kind = "sequence"

    def __init__(self, hf_model: VideoMAEForVideoClassification, mean, std, name: str = "videomae",
                 pooling: str | None = None):
        super().__init__(hf_model, _square(hf_model.config.image_size, name), mean, std, name=name)
        self.num_frames = int(hf_model.config.num_frames)
        self.pooling = pooling or ("mean" if hf_model.fc_norm is not None else "cls")

    @classmethod
    def from_settings(cls, settings: dict, name: str = "videomae") -> "VideoMAE":
        pooling = settings.get("pooling")
        if pooling is not None and pooling not in POOLINGS:
            raise ModelError(f"models.{name}.pooling: must be one of {', '.join(POOLINGS)} for VideoMAE, got {pooling!r}")
        num_frames = check_int(settings, "num_frames", name)
        image_size = check_int(settings, "image_size", name)
        position_embeddings = settings.get("position_embeddings") or "interpolate"
        if position_embeddings not in POSITION_EMBEDDINGS:
            raise ModelError(f"models.{name}.position_embeddings: must be one of {', '.join(POSITION_EMBEDDINGS)}, "
                             f"got {position_embeddings!r}")
        refuse_mean_filters_with_checkpoint(settings, name)
        pretrained = settings.get("pretrained")
        if pretrained is None:
            # Random init: transformers' table for this geometry (nothing to adapt).
            config = random_config(VideoMAEConfig, settings, name, num_frames=num_frames, image_size=image_size)
            _check_geometry(config, config.num_frames, _square(config.image_size, name), name)
            mean, std = mean_std(None, DEFAULT_MEAN, DEFAULT_STD, name)
            model = cls(VideoMAEForVideoClassification(config), mean, std, name=name, pooling=pooling)
            model.set_input_windows(*input_settings(settings, None))
            if settings.get("mean_filters"):
                model.init_mean_filters_(**settings["mean_filters"])
            return model

        # Load with the checkpoint's own geometry, then adapt it.
        hf, preprocessor = load_pretrained(VideoMAEForVideoClassification, pretrained, name)
        pooling = saved_pooling(settings, preprocessor, pooling)
        hf = _apply_position_source(hf, name)  # a folder saved after adaptation
        num_frames = num_frames or hf.config.num_frames
        image_size = image_size or _square(hf.config.image_size, name)
        _check_geometry(hf.config, num_frames, image_size, name)
        if (num_frames, image_size) != (hf.config.num_frames, _square(hf.config.image_size, name)):
            hf = _regeometry(hf, num_frames, image_size, name, position_embeddings)
        mean, std = mean_std(preprocessor, DEFAULT_MEAN, DEFAULT_STD, name)
        model = cls(hf, mean, std, name=name, pooling=pooling)
        return model.set_input_windows(*input_settings(settings, preprocessor))

    def prepare(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        if batch_uint8.ndim == 4 and batch_uint8.shape[1] != self.num_frames:
            raise ModelError(
                f"models.{self.entry}: VideoMAE expects {self.num_frames} frames per scan, got {batch_uint8.shape[1]}; "
                f"sample or pad scans to models.{self.entry}.num_frames"
            )
        return super().prepare(batch_uint8)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._pool(self.hf_model.videomae(pixel_values).last_hidden_state)

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

    def init_mean_filters_(self, channel: int, count: int, scale: float = 20.0) -> "VideoMAE":
        """The first ``count`` filters of the tubelet embedding (a Conv3d over 2-frame tubelets) start as ``scale`` times the mean of input
        channel ``channel`` over the patch: ViViT's ``mean_filters`` (see ``ViViT.init_mean_filters_``
        for why), so the tokens know from the first step how much of each patch lies in the
        blood band."""
        embed = self.hf_model.videomae.embeddings.patch_embeddings.projection
        return self._set_mean_filters(embed, channel, count, scale)

    def use_mask_loss(self, weight: float, seed: int) -> "VideoMAE":
        # Each tubelet token of the last layer predicts whether its block holds hemorrhage.
        return self._enable_mask_loss(torch.nn.Linear(self.hf_model.config.hidden_size, 1), weight, seed)

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
