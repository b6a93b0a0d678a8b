"""ConvNeXt: one sample = one slice; scan-level scores are aggregated from slice scores downstream."""

from __future__ import annotations

from transformers import ConvNextConfig, ConvNextForImageClassification

from . import register
from .base import SequenceClassifier, check_int, load_pretrained, mean_std, random_config

# ImageNet statistics, which the facebook/convnext-* checkpoints were trained with.
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)


@register("convnext")
class ConvNeXt(SequenceClassifier):
    """ConvNeXt on single slices; features = the pooled, layer-normed last stage."""

    kind = "slice"

    @classmethod
    def from_settings(cls, settings: dict, name: str = "convnext") -> "ConvNeXt":
        image_size = check_int(settings, "image_size", name)
        pretrained = settings.get("pretrained")
        if pretrained is None:
            config = random_config(ConvNextConfig, settings, name, image_size=image_size)
            hf, mean, std = ConvNextForImageClassification(config), DEFAULT_MEAN, DEFAULT_STD
        else:
            hf, preprocessor = load_pretrained(ConvNextForImageClassification, pretrained, name)
            mean, std = mean_std(preprocessor, DEFAULT_MEAN, DEFAULT_STD, name)
        # A CNN takes any size, so no weights depend on it: it only sets what prepare() resizes to
        # (default: the checkpoint's training size).
        return cls(hf, image_size or int(hf.config.image_size), mean, std)

    def features(self, pixel_values):
        return self.hf_model.convnext(pixel_values).pooler_output
