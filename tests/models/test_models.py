"""Model registry, preprocessing, head/backbone split, pretrained loading and ViViT's
position-embedding interpolation, all on tiny randomly initialised models (seconds on CPU)."""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # also set by conftest; never reach for the hub

import pytest
import torch
from transformers import ConvNextImageProcessorPil, VivitImageProcessor
from transformers import ConvNextConfig, ConvNextForImageClassification, VivitConfig, VivitForVideoClassification

from ichseq.errors import ModelError
from ichseq.models import ID2LABEL, REGISTRY, available_models, build_model, register
from ichseq.models.base import CTClassifier
from ichseq.models.video import interpolate_temporal_position_embeddings

# 32x32 images, 8x8 patches -> a 4x4 grid; tubelet length 2.
VIVIT_CONFIG = dict(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
    tubelet_size=[2, 8, 8],
)
CONVNEXT_CONFIG = dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
VIVIT = {"pretrained": None, "config": VIVIT_CONFIG, "num_frames": 4, "image_size": 32}
CONVNEXT = {"pretrained": None, "config": CONVNEXT_CONFIG, "image_size": 32}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny(name: str) -> CTClassifier:
    return build_model(name, VIVIT if name == "vivit" else CONVNEXT).eval()


def uint8_batch(*shape: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8)


def save_tiny_vivit(path, num_frames=8, mean=None, std=None):
    """A 'checkpoint' folder as save_pretrained writes it, with a 5-class head."""
    config = VivitConfig(**VIVIT_CONFIG, num_frames=num_frames, image_size=32, num_labels=5)
    model = VivitForVideoClassification(config)
    # Random, non-zero position embeddings (HF initialises them to zeros) so that copying,
    # interpolation and resetting are told apart.
    with torch.no_grad():
        model.vivit.embeddings.position_embeddings.normal_()
    model.save_pretrained(path)
    if mean is not None:
        (path / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
    return model


# -- registry ---------------------------------------------------------------------------------


def test_registry_builds_both_models_by_name():
    assert {"convnext", "vivit"} <= set(available_models()) and available_models() == sorted(available_models())
    vivit, convnext = tiny("vivit"), tiny("convnext")
    assert vivit.kind == "sequence" and convnext.kind == "slice"
    assert isinstance(vivit.hf_model, VivitForVideoClassification)
    assert isinstance(convnext.hf_model, ConvNextForImageClassification)
    for model in (vivit, convnext):
        assert model.hf_model.config.num_labels == 2
        assert model.hf_model.config.id2label == ID2LABEL
        assert model.hf_model.config.id2label[1] == "hemorrhage"
    # The entry's settings reach the HF config.
    assert vivit.hf_model.config.hidden_size == 32 and vivit.num_frames == 4
    assert convnext.hf_model.config.hidden_sizes == [8, 16]


def test_unknown_model_lists_registered_names():
    with pytest.raises(ModelError) as err:
        build_model("resnet", {})
    message = str(err.value)
    assert "resnet" in message and "convnext" in message and "vivit" in message
    assert "\n" not in message


def test_register_adds_a_model_and_rejects_a_clashing_name():
    @register("dummy-test-model")
    class Dummy(CTClassifier):
        kind = "slice"

        @classmethod
        def from_settings(cls, settings, name):
            return "built"

        def features(self, pixel_values):
            return pixel_values

    try:
        assert build_model("dummy-test-model", {}) == "built"
        with pytest.raises(ModelError, match="registered twice"):
            register("dummy-test-model")(type("Other", (Dummy,), {}))
    finally:
        REGISTRY.pop("dummy-test-model")


def test_bad_settings_are_model_errors():
    with pytest.raises(ModelError, match="models.vivit.num_frames"):
        build_model("vivit", {**VIVIT, "num_frames": 5})  # not a multiple of the tubelet length 2
    with pytest.raises(ModelError, match="models.vivit.config"):
        build_model("vivit", {**VIVIT, "config": ["hidden_size", 32]})
    with pytest.raises(ModelError, match="models.convnext.image_size"):
        build_model("convnext", {**CONVNEXT, "image_size": 0})


# -- prepare ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, shape, expected",
    [("vivit", (2, 4, 32, 32), (2, 4, 3, 32, 32)), ("convnext", (3, 32, 32), (3, 3, 32, 32))],
)
def test_prepare_shapes_channels_and_normalisation(name, shape, expected):
    model = tiny(name)
    batch = uint8_batch(*shape)
    batch.view(-1)[0] = 255  # first pixel white
    batch.view(-1)[1] = 0  # second black
    x = model.prepare(batch)
    assert x.shape == expected and x.dtype == torch.float32
    # Reference: the checkpoint family's own HF image processor (no resizing), so that our
    # tensor preprocessing is what from_pretrained users get (ViViT: [-3, 1] after its
    # 1/127.5-with-offset rescale and 0.5/0.5 normalisation; ConvNeXt: ImageNet stats).
    rgb = batch.unsqueeze(-1).expand(*batch.shape, 3).numpy()
    if name == "vivit":
        processor = VivitImageProcessor(do_resize=False, do_center_crop=False)
        reference = processor([list(clip) for clip in rgb], return_tensors="np", input_data_format="channels_last")["pixel_values"]
    else:
        # facebook/convnext-tiny-224's preprocessor_config.json carries the ImageNet
        # statistics (the class default in transformers 5 is 0.5/0.5).
        processor = ConvNextImageProcessorPil(
            do_resize=False, image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225)
        )
        reference = processor(list(rgb), return_tensors="np", input_data_format="channels_last")["pixel_values"]
    torch.testing.assert_close(x, torch.from_numpy(reference).float(), rtol=0, atol=1e-5)
    # Grayscale -> 3 channels carrying the same image (up to the per-channel statistics).
    first = x.reshape(-1, 3, 32 * 32)[0, :, 0]
    second = x.reshape(-1, 3, 32 * 32)[0, :, 1]
    assert (first > second).all()


def test_prepare_resizes_to_the_model_image_size():
    model = tiny("convnext")
    flat = torch.full((2, 64, 64), 255, dtype=torch.uint8)
    x = model.prepare(flat)
    assert x.shape == (2, 3, 32, 32)
    # A uniform image stays uniform through (antialiased) resizing.
    torch.testing.assert_close(x[:, 0], torch.full((2, 32, 32), (1 - 0.485) / 0.229))
    # Downsampling is antialiased: thin lines every 4th column (1/4 of the pixels) keep their
    # mean brightness instead of vanishing between the bilinear sample points.
    lines = torch.zeros((1, 128, 128), dtype=torch.uint8)
    lines[..., ::4] = 255
    pixels = model.prepare(lines)[:, 0] * 0.229 + 0.485
    assert abs(pixels.mean().item() - 0.25) < 0.02
    # Upsampling too; and a left/right split image keeps dark left and bright right.
    half = torch.zeros((1, 4, 16, 16), dtype=torch.uint8)
    half[..., 8:] = 255
    v = tiny("vivit").prepare(half)
    assert v.shape == (1, 4, 3, 32, 32)
    assert v[0, 0, 0, :, :4].max() == -3 and v[0, 0, 0, :, -4:].min() == 1  # ViViT maps black to -3, white to 1


def test_prepare_rejects_wrong_input():
    with pytest.raises(ModelError, match="uint8"):
        tiny("convnext").prepare(torch.zeros(2, 32, 32))
    with pytest.raises(ModelError, match="uint8"):
        tiny("convnext").prepare(uint8_batch(2, 4, 32, 32))  # a sequence given to a slice model
    with pytest.raises(ModelError, match="expects 4 frames"):
        tiny("vivit").prepare(uint8_batch(1, 6, 32, 32))


# -- head(features(x)) is the HF forward -------------------------------------------------------


@pytest.mark.parametrize("name, shape", [("vivit", (2, 4, 32, 32)), ("convnext", (3, 32, 32))])
def test_head_of_features_equals_hf_logits(name, shape):
    model = tiny(name)
    x = model.prepare(uint8_batch(*shape))
    with torch.no_grad():
        feats = model.features(x)
        logits = model.head(feats)
        reference = model.hf_model(pixel_values=x).logits
    width = 32 if name == "vivit" else 16
    assert feats.shape == (shape[0], width)
    assert logits.shape == (shape[0], 2)
    assert torch.equal(logits, reference)
    assert torch.equal(model(x), reference)


# -- freezing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vivit", "convnext"])
def test_model_exposes_its_head_and_head_init_std(name):
    # runs.py reaches the head only through this interface, never through hf_model.
    model = tiny(name)
    assert model.classifier is model.hf_model.classifier
    assert model.head_init_std == model.hf_model.config.initializer_range


@pytest.mark.parametrize("name", ["vivit", "convnext"])
def test_freeze_backbone_leaves_only_the_classifier_trainable(name):
    model = tiny(name)
    counts = model.parameter_counts()
    assert counts["total"] == counts["trainable"] == sum(p.numel() for p in model.hf_model.parameters())
    model.freeze_backbone()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"hf_model.classifier.weight", "hf_model.classifier.bias"}
    head = sum(p.numel() for p in model.head_parameters())
    assert head == model.hf_model.classifier.in_features * 2 + 2
    assert model.parameter_counts() == {"total": counts["total"], "trainable": head}
    # train() keeps a frozen backbone in eval mode (no dropout in cached features).
    model.train()
    assert model.training and model.hf_model.classifier.training
    backbone = model.hf_model.vivit if name == "vivit" else model.hf_model.convnext
    assert not backbone.training


# -- pretrained from a local folder -----------------------------------------------------------


def test_convnext_from_local_folder(tmp_path):
    config = ConvNextConfig(**CONVNEXT_CONFIG, num_labels=7)
    saved = ConvNextForImageClassification(config)
    saved.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.25, 0.125]})
    )
    model = build_model("convnext", {"pretrained": str(tmp_path), "image_size": 32}).eval()
    expected = {k: v for k, v in saved.state_dict().items() if not k.startswith("classifier.")}
    loaded = model.hf_model.state_dict()
    assert expected and all(torch.equal(loaded[k], v) for k, v in expected.items())
    assert model.hf_model.classifier.out_features == 2
    assert model.hf_model.config.id2label == ID2LABEL
    x = model.prepare(torch.full((1, 32, 32), 255, dtype=torch.uint8))
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([(1 - 0.1) / 0.5, (1 - 0.2) / 0.25, (1 - 0.3) / 0.125]))


def test_convnext_saved_folder_loads_with_its_pooling(tmp_path):
    model = build_model("convnext", {"config": CONVNEXT_CONFIG, "image_size": 32, "pooling": "max"}).eval()
    model.save(tmp_path)
    loaded = build_model("convnext", {"pretrained": str(tmp_path)}).eval()
    assert loaded.pooling == "max"
    x = model.prepare(torch.randint(0, 255, (2, 32, 32), dtype=torch.uint8))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # The entry's own pooling still wins over the folder's.
    assert build_model("convnext", {"pretrained": str(tmp_path), "pooling": "mean"}).pooling == "mean"


def test_vivit_from_local_folder_same_geometry(tmp_path):
    saved = save_tiny_vivit(tmp_path, num_frames=4, mean=[0.2] * 3, std=[0.4] * 3)
    model = build_model("vivit", {"pretrained": str(tmp_path)}).eval()
    assert model.num_frames == 4 and model.image_size == 32  # the checkpoint's geometry by default
    expected = {k: v for k, v in saved.state_dict().items() if not k.startswith("classifier.")}
    loaded = model.hf_model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    assert model.hf_model.classifier.out_features == 2
    x = model.prepare(torch.zeros((1, 4, 32, 32), dtype=torch.uint8))
    # The saved mean/std (0.2/0.4) after ViViT's rescale to [-1, 1]: (-1 - 0.2) / 0.4.
    torch.testing.assert_close(x.unique(), torch.tensor([-3.0]))


def test_missing_local_path_is_a_model_error(tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(ModelError, match="neither an existing folder") as err:
        build_model("convnext", {"pretrained": str(missing)})
    assert str(missing) in str(err.value)


# -- ViViT: another num_frames than the checkpoint --------------------------------------------


def test_temporal_interpolation_function():
    old_t, new_t, spatial, dim = 4, 7, 3, 5
    pos = torch.randn(1, 1 + old_t * spatial, dim)
    new = interpolate_temporal_position_embeddings(pos, old_t, new_t, spatial)
    assert new.shape == (1, 1 + new_t * spatial, dim)
    assert torch.equal(new[:, 0], pos[:, 0])
    old_rows = pos[0, 1:].reshape(old_t, spatial, dim)
    new_rows = new[0, 1:].reshape(new_t, spatial, dim)
    torch.testing.assert_close(new_rows[0], old_rows[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(new_rows[-1], old_rows[-1], rtol=0, atol=1e-6)
    # Row 1 of 7 sits at 1/6 * 3 = 0.5 between old rows 0 and 1.
    torch.testing.assert_close(new_rows[1], (old_rows[0] + old_rows[1]) / 2)
    with pytest.raises(ValueError):
        interpolate_temporal_position_embeddings(pos, old_t + 1, new_t, spatial)


def test_vivit_other_num_frames_interpolates_position_embeddings(tmp_path):
    saved = save_tiny_vivit(tmp_path, num_frames=8)  # 4 temporal tokens x 16 spatial
    model = build_model("vivit", {"pretrained": str(tmp_path), "num_frames": 14}).eval()  # 7 temporal tokens
    assert model.num_frames == 14 and model.hf_model.config.num_frames == 14

    old = saved.vivit.embeddings.position_embeddings.detach()
    new = model.hf_model.vivit.embeddings.position_embeddings.detach()
    assert new.shape == (1, 1 + 7 * 16, 32)
    assert new.abs().sum() > 0  # not reset to zeros as ignore_mismatched_sizes would
    assert torch.equal(new[:, 0], old[:, 0])  # CLS slot unchanged
    old_rows, new_rows = old[0, 1:].reshape(4, 16, 32), new[0, 1:].reshape(7, 16, 32)
    torch.testing.assert_close(new_rows[0], old_rows[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(new_rows[-1], old_rows[-1], rtol=0, atol=1e-6)
    # Row 1 of 7 sits at t = 1/6 * 3 = 0.5 (align_corners=True; it would be 0.36 otherwise).
    torch.testing.assert_close(new_rows[1], (old_rows[0] + old_rows[1]) / 2)

    # Every other weight is the checkpoint's.
    loaded = model.hf_model.state_dict()
    for key, value in saved.state_dict().items():
        if not key.startswith("classifier.") and key != "vivit.embeddings.position_embeddings":
            assert torch.equal(loaded[key], value), key

    with torch.no_grad():
        logits = model(model.prepare(uint8_batch(2, 14, 32, 32)))
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_vivit_other_image_size_interpolates_the_spatial_grid(tmp_path):
    saved = save_tiny_vivit(tmp_path, num_frames=4)
    model = build_model("vivit", {"pretrained": str(tmp_path), "image_size": 48}).eval()  # 4x4 -> 6x6 grid
    new = model.hf_model.vivit.embeddings.position_embeddings.detach()
    assert new.shape == (1, 1 + 2 * 36, 32)
    assert torch.equal(new[:, 0], saved.vivit.embeddings.position_embeddings[:, 0].detach())
    with torch.no_grad():
        assert model(model.prepare(uint8_batch(1, 4, 64, 64))).shape == (1, 2)
    with pytest.raises(ModelError, match="image_size"):
        build_model("vivit", {"pretrained": str(tmp_path), "image_size": 36})  # not a multiple of 8


def test_vivit_position_embeddings_reset_is_what_ignore_mismatched_sizes_gives(tmp_path):
    # The study loaded the 32-frame checkpoint for 18 frames with ignore_mismatched_sizes=True;
    # `reset` must give exactly transformers' result of that (zeros, every other weight loaded).
    saved = save_tiny_vivit(tmp_path, num_frames=8)
    for geometry in ({"num_frames": 14}, {"num_frames": 14, "image_size": 48}):
        model = build_model("vivit", {"pretrained": str(tmp_path), **geometry, "position_embeddings": "reset"})
        reference = VivitForVideoClassification.from_pretrained(
            tmp_path, **geometry, num_labels=2, ignore_mismatched_sizes=True)
        new, expected = model.hf_model.state_dict(), reference.state_dict()
        assert set(new) == set(expected)
        for key, value in expected.items():
            if not key.startswith("classifier."):  # a fresh random head either way
                assert torch.equal(new[key], value), key
        pos = new["vivit.embeddings.position_embeddings"]
        grid = (geometry.get("image_size", 32) // 8) ** 2
        assert pos.shape == (1, 1 + 7 * grid, 32) and not pos.any()
        assert torch.equal(new["vivit.embeddings.cls_token"], saved.vivit.embeddings.cls_token.detach())
    # Interpolation stays the default; with the checkpoint's own geometry nothing mismatches,
    # so, as in transformers, `reset` keeps the embeddings.
    default = build_model("vivit", {"pretrained": str(tmp_path), "num_frames": 14})
    assert default.hf_model.vivit.embeddings.position_embeddings.abs().sum() > 0
    same = build_model("vivit", {"pretrained": str(tmp_path), "position_embeddings": "reset"})
    assert torch.equal(same.hf_model.vivit.embeddings.position_embeddings, saved.vivit.embeddings.position_embeddings)
    with pytest.raises(ModelError, match="models.vivit.position_embeddings: must be one of interpolate, reset"):
        build_model("vivit", {"pretrained": str(tmp_path), "position_embeddings": "zeros"})
    with pytest.raises(ModelError, match="models.convnext.position_embeddings"):
        build_model("convnext", {**CONVNEXT, "position_embeddings": "reset"})


def test_vivit_errors_name_the_config_entry_not_the_architecture(tmp_path):
    save_tiny_vivit(tmp_path, num_frames=4)
    entry = {"pretrained": str(tmp_path)}
    failures = [
        lambda: build_model("vivit", {**VIVIT, "num_frames": 5}, entry="vivit_first"),
        lambda: build_model("vivit", {**VIVIT, "config": ["hidden_size", 32]}, entry="vivit_first"),
        lambda: build_model("vivit", {**entry, "image_size": 36}, entry="vivit_first"),
        lambda: build_model("vivit", {**entry, "position_embeddings": "zeros"}, entry="vivit_first"),
        lambda: build_model("vivit", {"pretrained": str(tmp_path / "missing")}, entry="vivit_first"),
        lambda: build_model("vivit", VIVIT, entry="vivit_first").prepare(uint8_batch(1, 6, 32, 32)),
        lambda: build_model("vivit", VIVIT, entry="vivit_first").prepare(torch.zeros(1, 4, 32, 32)),
    ]
    for failure in failures:
        with pytest.raises(ModelError) as err:
            failure()
        message = str(err.value)
        assert "models.vivit_first" in message and "models.vivit." not in message, message
    # The one that tells the user which key to change names the entry's key.
    with pytest.raises(ModelError, match=r"pad scans to models\.vivit_first\.num_frames"):
        build_model("vivit", VIVIT, entry="vivit_first").prepare(uint8_batch(1, 6, 32, 32))


# -- hub id while offline -----------------------------------------------------------------------


def test_offline_hub_id_without_cache_fails_fast_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    start = time.monotonic()
    with pytest.raises(ModelError) as err:
        build_model("vivit", {"pretrained": "google/vivit-b-16x2-kinetics400", "num_frames": 18})
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("models.vivit.pretrained: cannot load 'google/vivit-b-16x2-kinetics400'")
    assert "offline" in message
    assert "huggingface-cli download google/vivit-b-16x2-kinetics400" in message
    assert "HF_HOME" in message


def test_convnext_max_pooling_is_the_layernormed_grid_maximum():
    mean_model = tiny("convnext")
    max_model = build_model("convnext", {**CONVNEXT, "pooling": "max"}).eval()
    max_model.load_state_dict(mean_model.state_dict())  # same weights, only the pooling differs
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        grid = mean_model.hf_model.convnext(x).last_hidden_state
        expected = mean_model.hf_model.convnext.layernorm(grid.amax(dim=(-2, -1)))
        torch.testing.assert_close(max_model.features(x), expected)
        torch.testing.assert_close(mean_model.features(x), mean_model.hf_model.convnext.layernorm(grid.mean((-2, -1))))
        assert not torch.allclose(max_model.features(x), mean_model.features(x))
        # The logits go through the same classifier.
        torch.testing.assert_close(max_model(x), max_model.classifier(expected))


def test_pooling_is_refused_where_it_does_not_apply():
    with pytest.raises(ModelError, match=r"models\.convnext\.pooling: must be one of mean, max for ConvNeXt"):
        build_model("convnext", {**CONVNEXT, "pooling": "cls"})
    with pytest.raises(ModelError, match=r"models\.vivit\.pooling: must be one of cls, mean, max for ViViT"):
        build_model("vivit", {**VIVIT, "pooling": "sum"})


def test_vivit_pooling_reads_the_cls_token_or_pools_the_tubelet_tokens():
    cls_model = tiny("vivit")
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        last = cls_model.hf_model.vivit(x).last_hidden_state  # (2, 1 + 2*4*4, 32)
        torch.testing.assert_close(cls_model.features(x), last[:, 0])
        for pooling, expected in (("max", last[:, 1:].amax(1)), ("mean", last[:, 1:].mean(1))):
            model = build_model("vivit", {**VIVIT, "pooling": pooling}).eval()
            model.load_state_dict(cls_model.state_dict())
            torch.testing.assert_close(model.features(x), expected)
            torch.testing.assert_close(model(x), model.classifier(expected))
