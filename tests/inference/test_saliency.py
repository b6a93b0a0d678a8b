"""Grad-CAM saliency (ichseq.inference.saliency): where the maps point, one map per sample (the
centre frame of a context sample), None for models without a saliency layer, and no trace left
on the model (no .grad, same weights), also when called under no_grad / inference_mode."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from ichseq.data.cache import SliceCache, WindowSpec, build_cache
from ichseq.errors import ModelError
from ichseq.inference.saliency import POSITIVE, saliency_maps
from ichseq.models import build_model
from ichseq.models.base import Batch, CTClassifier
from ichseq.models.cnn_rnn import CnnRnn
from ichseq.models.slice_context import SliceContext
from ichseq.training.samples import build_samples

CONVNEXT = {"pretrained": None, "config": {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2},
            "image_size": 32}
VIVIT = {"pretrained": None, "num_frames": 4, "image_size": 32,
         "config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                    "tubelet_size": [2, 8, 8]}}
SEG_CLS = {"config": {"channels": [4, 8], "stem_stride": 2}, "image_size": 32}
SIZE = 48


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def cache(nifti_dataset, tmp_path_factory) -> SliceCache:
    """The tiny conftest dataset as a 32-px slice cache."""
    out = tmp_path_factory.mktemp("saliency") / "cache"
    build_cache(nifti_dataset, out, WindowSpec(32), log=lambda _m: None)
    return SliceCache(out)


def convnext() -> CTClassifier:
    return build_model("convnext", CONVNEXT).eval()


def slice_context(context: int = 1) -> SliceContext:
    return SliceContext.from_backbone(convnext(), {"head": {"context": context, "hidden_size": 8}}, "slice_context").eval()


class RegionModel(CTClassifier):
    """A slice model whose positive logit is the mean brightness of a fixed square REGION, read
    through a 1x1 convolution (the saliency layer) whose channel 0 sees the pixels inside the
    region and channel 1 those outside it. Grad-CAM should light up bright pixels inside the
    region only: the outside ones are as bright but do not change the score."""

    kind = "slice"
    REGION = (slice(4, 12), slice(20, 28))

    def __init__(self):
        super().__init__(32, [0.0] * 3, [1.0] * 3, name="region")
        inside = torch.zeros(1, 1, 32, 32)
        inside[..., self.REGION[0], self.REGION[1]] = 1.0
        self.register_buffer("inside", inside, persistent=False)
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self._classifier = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            self._classifier.weight.copy_(torch.tensor([[-1.0], [1.0]]))
            self._classifier.bias.zero_()

    @classmethod
    def from_settings(cls, settings, name):
        return cls()

    def features(self, pixel_values):
        grey = pixel_values[:, :1]
        split = self.conv(torch.cat([grey * self.inside, grey * (1 - self.inside)], dim=1))
        return split[:, :1].mean(dim=(-2, -1))

    @property
    def classifier(self):
        return self._classifier

    def saliency_layer(self):
        return self.conv


def blob_slices() -> torch.Tensor:
    """Two uint8 32x32 slices: [0] a bright blob inside RegionModel's region and an equally
    bright one outside it; [1] the outside blob alone."""
    pixels = torch.zeros(2, 32, 32, dtype=torch.uint8)
    pixels[:, 20:24, 4:8] = 255  # outside the region
    pixels[0, 6:10, 22:26] = 255  # inside
    return pixels


def test_grad_cam_peaks_where_the_score_comes_from_not_where_the_image_is_bright():
    model = RegionModel().eval()
    batch = Batch(torch.tensor([1, 0]), pixels=model.prepare(blob_slices()))
    maps = saliency_maps(model, batch, 2 * 32)  # upsampled 2x: the blobs' cells double
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    inside, outside = maps[0, 13:19, 45:51], maps[0, 41:47, 9:15]  # the blobs' interiors at 64 px
    assert inside.min() > 0.9 and maps[0].max() == pytest.approx(1.0)
    assert outside.max() < 0.05
    peak = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
    assert 8 <= peak[0] < 24 and 40 <= peak[1] < 56  # inside the region (rows 4-12, cols 20-28 at 32 px)
    # No evidence for the positive class anywhere: the map stays all zero (not NaN, not noise).
    assert np.array_equal(maps[1], np.zeros((64, 64), np.float32))


def test_maps_of_a_convnext_on_cached_slices_are_one_per_sample_in_0_1(cache):
    model = convnext()
    samples = build_samples(cache, "slice")
    index = np.arange(6)
    maps = saliency_maps(model, samples.batch(model, cache, index), SIZE)
    assert maps.shape == (6, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    for m in maps:  # each map scaled by its own peak, or all zero
        assert m.max() == pytest.approx(1.0) or not m.any()
        assert m.max() > m.min() or not m.any()  # a map, not a constant
    assert any(m.any() for m in maps)


def test_seg_cls_maps_weigh_its_deepest_encoder_block(cache):
    model = build_model("seg_cls", SEG_CLS).eval()
    assert model.saliency_layer() is model.segmentation.encoder[-1]
    samples = build_samples(cache, "slice")
    maps = saliency_maps(model, samples.batch(model, cache, np.arange(4)), SIZE)
    assert maps.shape == (4, SIZE, SIZE) and maps.min() >= 0.0 and maps.max() <= 1.0


def test_saliency_rows_are_the_centre_frames_among_the_real_frames():
    model = slice_context()
    # Three samples of three frames; a blank frame does not go through the backbone, so it has
    # no row: the real frames are numbered 0.. in order.
    frame_mask = torch.tensor([[False, True, True], [True, True, True], [True, True, False]])
    batch = Batch(torch.zeros(3, dtype=torch.long), pixels=torch.zeros(3, 3, 3, 32, 32), frame_mask=frame_mask)
    assert model.saliency_rows(batch).tolist() == [0, 3, 6]


def test_context_model_gives_each_samples_centre_frame_map(cache):
    model = slice_context(context=1)
    samples = build_samples(cache, "context", context=1)
    first = cache.patient_rows(cache.patients[0])
    index = np.array([0, 1, len(first) - 1])  # the scan's first slice (blank below), the next, its last
    batch = samples.batch(model, cache, index)
    assert batch.pixels.shape[:2] == (3, 3) and not batch.frame_mask.all()
    maps = saliency_maps(model, batch, SIZE)
    assert maps.shape == (3, SIZE, SIZE)  # B maps, not one per frame
    # The oracle: captum's Grad-CAM of every real frame through the backbone's last stage,
    # read at each sample's centre frame (counted by hand among the real frames).
    forward = lambda pixels: model.forward_batch(Batch(batch.labels, pixels=pixels, frame_mask=batch.frame_mask))
    every = LayerGradCam(forward, model.backbone.saliency_layer()).attribute(
        batch.pixels, target=POSITIVE, relu_attributions=True).detach()
    real = batch.frame_mask.tolist()
    centre_rows = [sum(sum(r) for r in real[:b]) + sum(real[b][:1]) for b in range(3)]
    assert len(every) == sum(map(sum, real)) and centre_rows == [0, 3, 6]
    expected = LayerAttribution.interpolate(every[centre_rows], (SIZE, SIZE), interpolate_mode="bilinear")[:, 0]
    peak = expected.flatten(1).amax(1).clamp_min(1e-30)
    assert np.allclose(maps, (expected / peak[:, None, None]).numpy(), atol=1e-5)
    # ... which is not the first frame's map (the row a one-map-per-sample reading would take).
    first_rows = [sum(sum(r) for r in real[:b]) for b in range(3)]
    assert first_rows != centre_rows


@pytest.mark.parametrize("kind", ["sequence", "scan"])
def test_models_without_a_slice_to_explain_give_none(cache, kind):
    if kind == "sequence":
        model = build_model("vivit", VIVIT).eval()
        samples = build_samples(cache, "sequence", num_frames=4)
    else:
        model = CnnRnn.from_backbone(convnext(), {"head": {"hidden_size": 8}}, "cnn_rnn").eval()
        samples = build_samples(cache, "scan")
    assert model.saliency_layer() is None
    assert saliency_maps(model, samples.batch(model, cache, np.arange(2)), SIZE) is None


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_no_gradient_is_left_and_no_weight_changes(cache, mode):
    model = convnext()
    before = copy.deepcopy(model.state_dict())
    samples = build_samples(cache, "slice")
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:  # as a predict loop scores
        batch = samples.batch(model, cache, np.arange(4))
        maps = saliency_maps(model, batch, SIZE)
        assert not torch.is_grad_enabled()  # the caller's mode is restored
    assert maps.shape == (4, SIZE, SIZE) and any(m.any() for m in maps)
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training


def test_cached_features_are_refused_in_one_line():
    model = convnext()
    batch = Batch(torch.zeros(2, dtype=torch.long), features=torch.zeros(2, 16))
    with pytest.raises(ModelError, match=r"models\.convnext: saliency needs the batch's pixels") as err:
        saliency_maps(model, batch, SIZE)
    assert "\n" not in str(err.value)


def test_a_model_with_every_weight_frozen_still_has_maps(cache):
    """A head-mode run's model, or a caller that turned every requires_grad off: the gradient
    is taken at the layer's output, which needs no trainable weight below it."""
    model = convnext()
    for p in model.parameters():
        p.requires_grad_(False)
    samples = build_samples(cache, "slice")
    maps = saliency_maps(model, samples.batch(model, cache, np.arange(3)), SIZE)
    assert maps.shape == (3, SIZE, SIZE) and any(m.any() for m in maps)
    assert not any(p.requires_grad for p in model.parameters())
