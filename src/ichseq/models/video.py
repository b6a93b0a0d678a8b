"""What the video transformers (ViViT, VideoMAE, TimeSformer) share: one sample = a scan's
``num_frames`` slices.

:class:`VideoClassifier` is their contract with the rest of the package and the plumbing they
have in common: building from a config entry (a random initialisation from ``config``, or a
checkpoint loaded with its own geometry and then adapted to the entry's ``num_frames`` and
``image_size``), the frame-count check, pooling the last layer's tokens, the ``mean_filters``
initialisation and the auxiliary mask head. A model module sets the class attributes (its
transformers classes, normalisation defaults, the attribute of its backbone) and supplies what
is its own: the geometry check, the adaptation of its position embeddings, and how its tokens
lie on the (frame, row, column) grid for the mask loss.

The position-embedding resampling functions here are ViViT's (joint space-time tokens with a
CLS slot first); VideoMAE and TimeSformer reuse them with a dummy CLS slot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ModelError
from .hf import HFClassifier, load_pretrained
from .loading import (check_declared_choice, check_int, input_settings, mean_std, random_config,
                      refuse_mean_filters_with_checkpoint, saved_pooling)

#: ``position_embeddings`` entry option: what a checkpoint's embeddings become for another geometry.
POSITION_EMBEDDINGS = ("interpolate", "reset")


def square(image_size, name: str) -> int:
    """An HF config's ``image_size`` or ``patch_size`` (an int or a pair) as one side; a
    non-square pair is refused."""
    if isinstance(image_size, int):
        return image_size
    h, w = image_size
    if h != w:
        raise ModelError(f"models.{name}: only square images are supported, the checkpoint has {h}x{w}")
    return int(h)


def check_token_grid(name: str, num_frames: int, image_size: int, frames_per_token: int,
                     patch: tuple[int, int]) -> None:
    """Refuse a geometry the patch embedding would crop: its convolution silently drops the
    frames or pixels that do not fill a whole token (``frames_per_token`` 1 fits any
    ``num_frames``: patches per frame)."""
    if num_frames % frames_per_token:
        raise ModelError(
            f"models.{name}.num_frames: {num_frames} is not a multiple of the tubelet length {frames_per_token}")
    if image_size % patch[0] or image_size % patch[1]:
        raise ModelError(
            f"models.{name}.image_size: {image_size} is not a multiple of the patch size {patch[0]}x{patch[1]}")


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


class VideoClassifier(HFClassifier):
    """A transformers video classifier over a scan's ``num_frames`` slices; features = the
    last layer's tokens pooled (``pooling``: the CLS token, or their mean or maximum)."""

    kind = "sequence"
    entry_keys = {"pretrained": None, "config": None, "num_frames": None, "image_size": None,
                  "position_embeddings": None, "pooling": {"enum": ["cls", "mean", "max"]}, "input_windows": None,
                  "mean_filters": None}
    #: Set by each model: its name in messages, its transformers classes, the attribute of the
    #: backbone inside the classification model, and its image processor's normalisation.
    title: str
    hf_class: type
    config_class: type
    backbone_attr: str
    default_mean: tuple[float, float, float]
    default_std: tuple[float, float, float]
    #: ``mean_std`` keywords of the image processor's rescaling (ViViT's maps to [-1, 1]).
    default_rescale: dict = {}

    def __init__(self, hf_model, mean, std, name: str, pooling: str | None = None):
        super().__init__(hf_model, square(hf_model.config.image_size, name), mean, std, name=name)
        self.num_frames = int(hf_model.config.num_frames)
        self.pooling = pooling or self.default_pooling(hf_model)

    @classmethod
    def default_pooling(cls, hf_model) -> str:
        """The pooling when neither the entry nor a saved folder names one: transformers' head input."""
        return "cls"

    # -- building -------------------------------------------------------------------------------

    @staticmethod
    def check_geometry(config, num_frames: int, image_size: int, name: str) -> None:
        """Refuse a geometry the embedding layer would silently crop (frames or pixels that
        do not fill a whole tubelet or patch): a module calls :func:`check_token_grid` with its
        token size."""
        raise NotImplementedError

    @staticmethod
    def regeometry(hf, num_frames: int, image_size: int, name: str, how: str):
        """A copy of ``hf`` for ``num_frames`` frames of ``image_size`` pixels, its position
        embeddings interpolated (``how="interpolate"``) or reset as transformers would."""
        raise NotImplementedError

    @staticmethod
    def loaded(hf, name: str):
        """``hf`` as loaded from a checkpoint, with anything its config describes but its state
        dict does not hold put back (VideoMAE's resampled sinusoid table)."""
        return hf

    @classmethod
    def from_settings(cls, settings: dict, name: str) -> "VideoClassifier":
        pooling = settings.get("pooling")
        check_declared_choice(cls, "pooling", pooling, name, cls.title)
        num_frames = check_int(settings, "num_frames", name)
        image_size = check_int(settings, "image_size", name)
        position_embeddings = settings.get("position_embeddings") or "interpolate"
        if position_embeddings not in POSITION_EMBEDDINGS:
            raise ModelError(f"models.{name}.position_embeddings: must be one of {', '.join(POSITION_EMBEDDINGS)}, "
                             f"got {position_embeddings!r}")
        refuse_mean_filters_with_checkpoint(settings, name)
        pretrained = settings.get("pretrained")
        if pretrained is None:
            # Random init: the embeddings are the new geometry's from the start (nothing to adapt).
            config = random_config(cls.config_class, settings, name, num_frames=num_frames, image_size=image_size)
            cls.check_geometry(config, config.num_frames, square(config.image_size, name), name)
            mean, std = mean_std(None, cls.default_mean, cls.default_std, name, **cls.default_rescale)
            model = cls(cls.hf_class(config), mean, std, name=name, pooling=pooling)
            model.set_input_windows(*input_settings(settings, None))
            if settings.get("mean_filters"):
                model.init_mean_filters_(**settings["mean_filters"])
            return model

        # Load with the checkpoint's own geometry (so nothing is re-initialised), then adapt it.
        hf, preprocessor = load_pretrained(cls.hf_class, pretrained, name)
        pooling = saved_pooling(settings, preprocessor, pooling)
        hf = cls.loaded(hf, name)
        num_frames = num_frames or hf.config.num_frames
        image_size = image_size or square(hf.config.image_size, name)
        cls.check_geometry(hf.config, num_frames, image_size, name)
        if (num_frames, image_size) != (hf.config.num_frames, square(hf.config.image_size, name)):
            hf = cls.regeometry(hf, num_frames, image_size, name, position_embeddings)
        mean, std = mean_std(preprocessor, cls.default_mean, cls.default_std, name, **cls.default_rescale)
        model = cls(hf, mean, std, name=name, pooling=pooling)
        return model.set_input_windows(*input_settings(settings, preprocessor))

    # -- running --------------------------------------------------------------------------------

    @property
    def backbone(self) -> torch.nn.Module:
        return getattr(self.hf_model, self.backbone_attr)

    def prepare(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        # The position (or time) embeddings fix the clip length: fail here with a readable
        # message rather than with a shape mismatch deep inside them, or transformers' silent
        # resampling (TimeSformer).
        if batch_uint8.ndim == 4 and batch_uint8.shape[1] != self.num_frames:
            raise ModelError(
                f"models.{self.entry}: {self.title} expects {self.num_frames} frames per scan, got "
                f"{batch_uint8.shape[1]}; sample or pad scans to models.{self.entry}.num_frames"
            )
        return super().prepare(batch_uint8)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._pool(self.backbone(pixel_values).last_hidden_state)

    def _pool(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return last_hidden_state[:, 0]
        tokens = last_hidden_state[:, 1:]  # the patch or tubelet tokens, after the final LayerNorm
        # max: a bleed filling a few tubelets of 512 is the whole feature, not 1/100 of a mean.
        return tokens.amax(dim=1) if self.pooling == "max" else tokens.mean(dim=1)

    def init_mean_filters_(self, channel: int, count: int, scale: float = 20.0) -> "VideoClassifier":
        """Make the first ``count`` filters of the patch or tubelet embedding box filters:
        ``scale`` times the mean of input channel ``channel`` (its window's value in [0, 1])
        over the patch, 0 for a patch where that window is black.

        Why: the embedding is linear and followed by a LayerNorm over each token, and from a
        random start ViViT's did not learn, within the pretraining budget, the one thing a bleed
        changes in a 2x16x16 block: how much of it lies in the blood window. Started as that
        average (with the blood band as ``channel``) the tokens know it from the first step,
        and pretraining learnt (issue-13 experiments: held-out scan AUC 0.95 instead of 0.64).
        The other filters stay random; all of them train."""
        embed = self.backbone.embeddings.patch_embeddings.projection
        return self.set_mean_filters_(embed, channel, count, scale)

    def use_mask_loss(self, weight: float, seed: int) -> "VideoClassifier":
        # Each token of the last layer predicts whether its patch (of its frames) holds hemorrhage.
        return self.enable_mask_loss(torch.nn.Linear(self.hf_model.config.hidden_size, 1), weight, seed)
