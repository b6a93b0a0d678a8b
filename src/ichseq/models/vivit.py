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
import torch.nn.functional as F
from transformers import VivitConfig, VivitForVideoClassification

from ..errors import ModelError
from . import register
from .base import (
    HFClassifier,
    check_int,
    input_settings,
    load_pretrained,
    mean_std,
    random_config,
    refuse_mean_filters_with_checkpoint,
    saved_pooling,
)

# google/vivit-b-16x2-kinetics400 normalises with mean 0.5 / std 0.5 per channel: [0, 1] -> [-1, 1].
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
# VivitImageProcessor rescales by 1/127.5 with offset (pixels in [-1, 1]) before normalising.
DEFAULT_RESCALE = {"rescale_factor": 1 / 127.5, "offset": True}
POSITION_KEY = "vivit.embeddings.position_embeddings"
#: ``pooling`` entry option: what of the last layer feeds the classifier.
POOLINGS = ("cls", "mean", "max")
#: ``position_embeddings`` entry option: what a checkpoint's embeddings become for another geometry.
POSITION_EMBEDDINGS = ("interpolate", "reset")


def interpolate_temporal_position_embeddings(
    pos: torch.Tensor, old_frames_tokens: int, new_frames_tokens: int, spatial_tokens: int
) -> torch.Tensor:
    """Resample ViViT position embeddings along time.

    ``pos`` is (1, 1 + T·S, D): the CLS slot first, then tubelet tokens time-major (the Conv3d
    output (B, D, T, H, W) flattened: t, then h, then w), T = ``old_frames_tokens``,
    S = ``spatial_tokens`` = H·W. Returns (1, 1 + T_new·S, D) with the CLS slot unchanged and each
    spatial position's T embeddings linearly interpolated to T_new; ``align_corners=True`` keeps the
    first and last temporal rows exactly, so the scan's ends map onto the clip's ends.
    """
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[1] != 1 + old_frames_tokens * spatial_tokens:
        raise ValueError(
            f"position embeddings of shape {tuple(pos.shape)} do not hold 1 + {old_frames_tokens}x{spatial_tokens} tokens"
        )
    if new_frames_tokens == old_frames_tokens:
        return pos.clone()
    dim = pos.shape[-1]
    cls, patches = pos[:, :1], pos[:, 1:]
    # (T, S, D) -> (S, D, T): interpolate treats the last axis as the signal, S as the batch.
    grid = patches.reshape(old_frames_tokens, spatial_tokens, dim).permute(1, 2, 0)
    grid = F.interpolate(grid, size=new_frames_tokens, mode="linear", align_corners=True)
    patches = grid.permute(2, 0, 1).reshape(1, new_frames_tokens * spatial_tokens, dim)
    return torch.cat([cls, patches], dim=1)


def interpolate_spatial_position_embeddings(
    pos: torch.Tensor, frames_tokens: int, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Resample each time step's H×W grid of position embeddings (bicubic, as transformers does
    for images of another size); the CLS slot is unchanged."""
    dim = pos.shape[-1]
    cls, patches = pos[:, :1], pos[:, 1:]
    grid = patches.reshape(frames_tokens, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, frames_tokens * new_grid[0] * new_grid[1], dim)
    return torch.cat([cls, patches], dim=1)


def _square(image_size, name: str) -> int:
    if isinstance(image_size, int):
        return image_size
    h, w = image_size
    if h != w:
        raise ModelError(f"models.{name}: only square images are supported, the checkpoint has {h}x{w}")
    return int(h)


def _check_geometry(config: VivitConfig, num_frames: int, image_size: int, name: str) -> None:
    # Conv3d silently drops frames/pixels that do not fill a whole tubelet: refuse instead.
    t, ph, pw = config.tubelet_size
    if num_frames % t:
        raise ModelError(f"models.{name}.num_frames: {num_frames} is not a multiple of the tubelet length {t}")
    if image_size % ph or image_size % pw:
        raise ModelError(f"models.{name}.image_size: {image_size} is not a multiple of the patch size {ph}x{pw}")


def _resize_position_embeddings(
    hf: VivitForVideoClassification, num_frames: int, image_size: int, name: str, how: str = "interpolate"
) -> VivitForVideoClassification:
    """A copy of ``hf`` for ``num_frames`` frames of ``image_size`` pixels, every weight but the
    position embeddings unchanged. These are interpolated (``how="interpolate"``) or set to zeros
    (``"reset"``: what ``from_pretrained(..., ignore_mismatched_sizes=True)`` does, as
    ``VivitPreTrainedModel._init_weights`` zeroes the re-initialised embeddings)."""
    config = hf.config
    t, ph, pw = config.tubelet_size
    old_size = _square(config.image_size, name)
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
class ViViT(HFClassifier):
    """ViViT over a scan's ``num_frames`` slices; features = the last layer's CLS token
    (``pooling: cls``, transformers' and the study's) or the mean / maximum over its tubelet tokens."""

    kind = "sequence"

    def __init__(self, hf_model: VivitForVideoClassification, mean, std, name: str = "vivit", pooling: str = "cls"):
        super().__init__(hf_model, _square(hf_model.config.image_size, name), mean, std, name=name)
        self.num_frames = int(hf_model.config.num_frames)
        self.pooling = pooling

    @classmethod
    def from_settings(cls, settings: dict, name: str = "vivit") -> "ViViT":
        pooling = settings.get("pooling") or "cls"
        if pooling not in POOLINGS:
            raise ModelError(f"models.{name}.pooling: must be one of {', '.join(POOLINGS)} for ViViT, got {pooling!r}")
        num_frames = check_int(settings, "num_frames", name)
        image_size = check_int(settings, "image_size", name)
        position_embeddings = settings.get("position_embeddings") or "interpolate"
        if position_embeddings not in POSITION_EMBEDDINGS:
            raise ModelError(f"models.{name}.position_embeddings: must be one of {', '.join(POSITION_EMBEDDINGS)}, "
                             f"got {position_embeddings!r}")
        pretrained = settings.get("pretrained")
        if pretrained is None:
            # Random init: the embeddings start at zeros whatever the option (nothing to adapt).
            config = random_config(VivitConfig, settings, name, num_frames=num_frames, image_size=image_size)
            _check_geometry(config, config.num_frames, _square(config.image_size, name), name)
            mean, std = mean_std(None, DEFAULT_MEAN, DEFAULT_STD, name, **DEFAULT_RESCALE)
            model = cls(VivitForVideoClassification(config), mean, std, name=name, pooling=pooling)
            model.set_input_windows(*input_settings(settings, None))
            if settings.get("mean_filters"):
                model.init_mean_filters_(**settings["mean_filters"])
            return model
        refuse_mean_filters_with_checkpoint(settings, name)

        # Load with the checkpoint's own geometry (so nothing is reset), then adapt it.
        hf, preprocessor = load_pretrained(VivitForVideoClassification, pretrained, name)
        pooling = saved_pooling(settings, preprocessor, pooling)
        num_frames = num_frames or hf.config.num_frames
        image_size = image_size or _square(hf.config.image_size, name)
        _check_geometry(hf.config, num_frames, image_size, name)
        if (num_frames, image_size) != (hf.config.num_frames, _square(hf.config.image_size, name)):
            hf = _resize_position_embeddings(hf, num_frames, image_size, name, position_embeddings)
        mean, std = mean_std(preprocessor, DEFAULT_MEAN, DEFAULT_STD, name, **DEFAULT_RESCALE)
        model = cls(hf, mean, std, name=name, pooling=pooling)
        return model.set_input_windows(*input_settings(settings, preprocessor))

    def prepare(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        # ViViT's position embeddings fix the clip length: fail here with a readable message
        # rather than with a shape mismatch deep inside the embeddings.
        if batch_uint8.ndim == 4 and batch_uint8.shape[1] != self.num_frames:
            raise ModelError(
                f"models.{self.entry}: ViViT expects {self.num_frames} frames per scan, got {batch_uint8.shape[1]}; "
                f"sample or pad scans to models.{self.entry}.num_frames"
            )
        return super().prepare(batch_uint8)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._pool(self.hf_model.vivit(pixel_values).last_hidden_state)

    def _pool(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return last_hidden_state[:, 0]
        tokens = last_hidden_state[:, 1:]  # the tubelets, after the final LayerNorm
        # max: a bleed filling a few tubelets of 512 is the whole feature, not 1/100 of a mean.
        return tokens.amax(dim=1) if self.pooling == "max" else tokens.mean(dim=1)

    def init_mean_filters_(self, channel: int, count: int, scale: float = 20.0) -> "ViViT":
        """Make the first ``count`` filters of the tubelet embedding (a Conv3d) box filters:
        ``scale`` times the mean of input channel ``channel`` (its window's value in [0, 1])
        over the tubelet, 0 for a tubelet where that window is black.

        Why: the embedding is linear and followed by a LayerNorm over each token, and from a
        random start it did not learn, within the pretraining budget, the one thing a bleed
        changes in a 2x16x16 block: how much of it lies in the blood window. Started as that
        average (with the blood band as ``channel``) the tokens know it from the first step,
        and pretraining learnt (issue-13 experiments: held-out scan AUC 0.95 instead of 0.64).
        The other filters stay random; all of them train."""
        embed = self.hf_model.vivit.embeddings.patch_embeddings.projection
        return self._set_mean_filters(embed, channel, count, scale)

    def use_mask_loss(self, weight: float, seed: int) -> "ViViT":
        # Each tubelet token of the last layer predicts whether its block holds hemorrhage.
        head = torch.nn.Linear(self.hf_model.config.hidden_size, 1)
        return self._enable_mask_loss(head, weight, seed)

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
