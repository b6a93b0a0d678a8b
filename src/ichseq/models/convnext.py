"""ConvNeXt: one sample = one slice; scan-level scores are aggregated from slice scores downstream.

Every slice of a scan is a sample, unless the entry sets ``num_frames``: then only that many
slices per scan, chosen by ``frames.policy`` (``first``: the first N from the inferior end,
as the study's ConvNeXt loop did with N = 19), for training and test alike.
"""

from __future__ import annotations

import torch
from transformers import ConvNextConfig, ConvNextForImageClassification

from . import register
from .hf import HFClassifier, load_pretrained
from .loading import check_declared_choice, check_int, input_settings, mean_std, random_config, saved_pooling

# ImageNet statistics, which the facebook/convnext-* checkpoints were trained with.
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)


@register("convnext")
class ConvNeXt(HFClassifier):
    """ConvNeXt on single slices; features = the pooled (``pooling``: mean, as transformers, or
    max), layer-normed last stage."""

    kind = "slice"
    entry_keys = {"pretrained": None, "config": None, "num_frames": None, "image_size": None,
                  "pooling": {"enum": ["mean", "max"]}, "input_windows": None}

    def __init__(self, hf_model, image_size: int, mean, std, name: str = "convnext", num_frames: int | None = None,
                 pooling: str = "mean"):
        super().__init__(hf_model, image_size, mean, std, name=name)
        # Slices taken per scan (None: all of them); the data loader reads it, the network does not.
        self.num_frames = num_frames
        self.pooling = pooling

    @classmethod
    def from_settings(cls, settings: dict, name: str = "convnext") -> "ConvNeXt":
        image_size = check_int(settings, "image_size", name)
        num_frames = check_int(settings, "num_frames", name)
        pooling = settings.get("pooling") or "mean"
        check_declared_choice(cls, "pooling", pooling, name, "ConvNeXt")
        pretrained = settings.get("pretrained")
        if pretrained is None:
            config = random_config(ConvNextConfig, settings, name, image_size=image_size)
            hf, mean, std, preprocessor = ConvNextForImageClassification(config), DEFAULT_MEAN, DEFAULT_STD, None
        else:
            hf, preprocessor = load_pretrained(ConvNextForImageClassification, pretrained, name)
            pooling = saved_pooling(settings, preprocessor, pooling)
            mean, std = mean_std(preprocessor, DEFAULT_MEAN, DEFAULT_STD, name)
        # A CNN takes any size, so no weights depend on it: it only sets what prepare() resizes to
        # (default: the checkpoint's training size).
        model = cls(hf, image_size or int(hf.config.image_size), mean, std, name=name, num_frames=num_frames,
                    pooling=pooling)
        return model.set_input_windows(*input_settings(settings, preprocessor))

    @property
    def feature_size(self) -> int:
        """Length of ``features``: the last stage's width."""
        return int(self.hf_model.config.hidden_sizes[-1])

    def features(self, pixel_values):
        return self._pool(self.hf_model.convnext(pixel_values))

    def _pool(self, out):
        if self.pooling == "mean":
            return out.pooler_output  # layernorm(mean over the last stage's grid), as transformers pools
        # The same final LayerNorm over the grid's maximum: a finding a few pixels wide is not
        # averaged away over the whole slice.
        return self.hf_model.convnext.layernorm(out.last_hidden_state.amax(dim=(-2, -1)))

    def saliency_layer(self) -> torch.nn.Module:
        """The last stage (image / 32 on a side at the standard patch size 4: 7x7 at 224 px),
        whose grid the pooled features are read from."""
        return self.hf_model.convnext.encoder.stages[-1]

    def use_mask_loss(self, weight: float, seed: int) -> "ConvNeXt":
        # A 1x1 conv reads the first stage's map, the finest: a bleed a few pixels wide is still
        # a few cells there, so the stem and first blocks learn to find it.
        head = torch.nn.Conv2d(self.hf_model.config.hidden_sizes[0], 1, kernel_size=1)
        return self.enable_mask_loss(head, weight, seed)

    def forward_batch(self, batch):
        if self.aux_mask_head is None or batch.pixels is None or not self.training:
            return super().forward_batch(batch)
        out = self.hf_model.convnext(batch.pixels, output_hidden_states=True)
        # hidden_states[0] is the stem's output, [1] the first stage's.
        return self.classifier(self._pool(out)), self.aux_mask_head(out.hidden_states[1])[:, 0]
