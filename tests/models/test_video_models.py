"""VideoMAE and TimeSformer behind the registry: building, the head/backbone split, pooling,
saving and reloading, another geometry than the checkpoint's (position embeddings), preprocessing,
errors, and two epochs of full training -- on tiny randomly initialised models (seconds on CPU)."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    TimesformerConfig,
    TimesformerForVideoClassification,
    VideoMAEConfig,
    VideoMAEForVideoClassification,
    VideoMAEImageProcessorPil,
)
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

from ichseq.errors import ModelError
from ichseq.models import available_models, build_model
from ichseq.models.base import Batch
from ichseq.training.runs import train_run
from ichseq.training.plan import model_plan
from tests.conftest import run_outputs
from tests.training.conftest import cohort_dir  # noqa: F401  (the fixture, for the training test)

# 32x32 images, 8x8 patches -> a 4x4 grid; VideoMAE tubelets of 2 frames.
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=8)
VIDEOMAE = {"config": {**TINY, "tubelet_size": 2}, "num_frames": 4, "image_size": 32}
TIMESFORMER = {"config": TINY, "num_frames": 4, "image_size": 32}
SETTINGS = {"videomae": VIDEOMAE, "timesformer": TIMESFORMER}
HF = {"videomae": (VideoMAEConfig, VideoMAEForVideoClassification, "videomae"),
      "timesformer": (TimesformerConfig, TimesformerForVideoClassification, "timesformer")}
NAMES = ["videomae", "timesformer"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny(name: str, **extra) -> torch.nn.Module:
    return build_model(name, {**SETTINGS[name], **extra}).eval()


def uint8_batch(*shape: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8)


def save_checkpoint(name, path, num_frames=8, **config):
    """A 'checkpoint' folder as save_pretrained writes it, with a 5-class head; TimeSformer's
    learnt embeddings are made non-zero so that copying, interpolating and resetting differ."""
    config_cls, model_cls, _ = HF[name]
    extra = {"tubelet_size": 2} if name == "videomae" else {}
    model = model_cls(config_cls(**TINY, **extra, **config, num_frames=num_frames, image_size=32, num_labels=5))
    if name == "timesformer":
        with torch.no_grad():
            model.timesformer.embeddings.time_embeddings.normal_()
            model.timesformer.embeddings.position_embeddings.normal_()
    model.save_pretrained(path)
    return model.eval()


def videomae_table(model) -> torch.Tensor:
    return model.hf_model.videomae.embeddings.position_embeddings


# -- building, features, head ------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_builds_by_name_and_head_of_features_is_the_hf_forward(name):
    assert name in available_models()
    model = tiny(name)
    _, model_cls, _ = HF[name]
    assert model.kind == "sequence" and model.num_frames == 4 and isinstance(model.hf_model, model_cls)
    assert model.hf_model.config.num_labels == 2 and model.hf_model.config.hidden_size == 32
    assert model.classifier is model.hf_model.classifier
    x = model.prepare(uint8_batch(2, 4, 32, 32))
    assert x.shape == (2, 4, 3, 32, 32)
    with torch.no_grad():
        feats = model.features(x)
        reference = model.hf_model(pixel_values=x).logits
        assert feats.shape == (2, 32)
        assert torch.equal(model.head(feats), reference)
        assert torch.equal(model(x), reference)


def test_videomae_pooling_follows_use_mean_pooling_and_offers_max():
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        mean_model = tiny("videomae")  # use_mean_pooling: true (VideoMAEConfig's default)
        assert mean_model.pooling == "mean"
        tokens = mean_model.hf_model.videomae(x).last_hidden_state  # (2, 2*4*4, 32), no CLS token
        fc_norm = mean_model.hf_model.fc_norm
        torch.testing.assert_close(mean_model.features(x), fc_norm(tokens.mean(1)))
        max_model = tiny("videomae", pooling="max")
        max_model.load_state_dict(mean_model.state_dict())
        torch.testing.assert_close(max_model.features(x), fc_norm(tokens.amax(1)))
        torch.testing.assert_close(max_model(x), max_model.classifier(fc_norm(tokens.amax(1))))

        first = tiny("videomae", config={**VIDEOMAE["config"], "use_mean_pooling": False})
        assert first.pooling == "cls" and first.hf_model.fc_norm is None
        normed = first.hf_model.videomae(x).last_hidden_state  # after the encoder's LayerNorm
        torch.testing.assert_close(first.features(x), normed[:, 0])
        assert torch.equal(first(x), first.hf_model(pixel_values=x).logits)
    with pytest.raises(ModelError, match=r"models\.videomae\.pooling: must be one of cls, mean, max for VideoMAE"):
        tiny("videomae", pooling="sum")


def test_timesformer_pooling_reads_cls_or_pools_the_patch_tokens():
    x = torch.randn(2, 4, 3, 32, 32)
    cls_model = tiny("timesformer")
    with torch.no_grad():
        last = cls_model.hf_model.timesformer(x).last_hidden_state  # (2, 1 + 16*4, 32)
        torch.testing.assert_close(cls_model.features(x), last[:, 0])
        for pooling, expected in (("max", last[:, 1:].amax(1)), ("mean", last[:, 1:].mean(1))):
            model = tiny("timesformer", pooling=pooling)
            model.load_state_dict(cls_model.state_dict())
            torch.testing.assert_close(model.features(x), expected)
            torch.testing.assert_close(model(x), model.classifier(expected))
    with pytest.raises(ModelError, match=r"models\.timesformer\.pooling: must be one of cls, mean, max for TimeSformer"):
        tiny("timesformer", pooling="sum")


# -- saving and loading --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("adapted", [False, True])
def test_save_then_pretrained_folder_gives_identical_outputs(name, adapted, tmp_path):
    if adapted:  # a model adapted to another geometry, then saved (e.g. by the pretrain stage)
        save_checkpoint(name, tmp_path / "ckpt", num_frames=8)
        model = build_model(name, {"pretrained": str(tmp_path / "ckpt"), "num_frames": 6, "image_size": 48}).eval()
    else:
        model = tiny(name, pooling="max")
    model.save(tmp_path / "saved")
    # No pooling given: the folder's (max, not the family's default) comes back with it.
    loaded = build_model(name, {"pretrained": str(tmp_path / "saved")}).eval()
    assert (loaded.num_frames, loaded.image_size, loaded.pooling) == (model.num_frames, model.image_size, model.pooling)
    x = model.prepare(uint8_batch(2, model.num_frames, model.image_size, model.image_size))
    torch.testing.assert_close(loaded.prepare(uint8_batch(1, model.num_frames, 16, 16)).shape[1:], x.shape[1:])
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    if name == "videomae":  # the resampled table is not a weight: it is rebuilt from the saved config
        assert torch.equal(videomae_table(loaded), videomae_table(model))


# -- another geometry than the checkpoint's ------------------------------------------------------


def test_videomae_other_num_frames_resamples_the_checkpoint_table(tmp_path):
    save_checkpoint("videomae", tmp_path, num_frames=8)  # 4 temporal tokens x 16 spatial
    old = get_sinusoid_encoding_table(4 * 16, 32)[0].reshape(4, 16, 32)
    model = build_model("videomae", {"pretrained": str(tmp_path), "num_frames": 14})  # 7 temporal tokens
    assert model.num_frames == 14 and model.hf_model.config.position_embeddings_source == [8, 32]
    new = videomae_table(model)[0].reshape(7, 16, 32)
    # The scan's ends on the checkpoint's ends; row 1 of 7 sits at t = 0.5 (align_corners).
    torch.testing.assert_close(new[0], old[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(new[-1], old[-1], rtol=0, atol=1e-6)
    torch.testing.assert_close(new[1], (old[0] + old[1]) / 2)

    # reset: the table transformers builds for the new geometry (the flat-index sinusoid).
    reset = build_model("videomae", {"pretrained": str(tmp_path), "num_frames": 14, "position_embeddings": "reset"})
    reference = VideoMAEForVideoClassification.from_pretrained(tmp_path, num_frames=14, num_labels=2,
                                                               ignore_mismatched_sizes=True)
    assert torch.equal(videomae_table(reset), reference.videomae.embeddings.position_embeddings)
    assert torch.equal(videomae_table(reset), get_sinusoid_encoding_table(7 * 16, 32))
    assert reset.hf_model.config.position_embeddings_source is None
    assert not torch.allclose(videomae_table(reset), videomae_table(model))
    # No weight depends on the geometry: every one is the checkpoint's either way.
    for built in (model, reset):
        loaded = built.hf_model.state_dict()
        for key, value in reference.state_dict().items():
            if not key.startswith("classifier."):
                assert torch.equal(loaded[key], value), key
    # The checkpoint's own geometry: transformers' table, whatever the option.
    same = build_model("videomae", {"pretrained": str(tmp_path)})
    assert torch.equal(videomae_table(same), get_sinusoid_encoding_table(4 * 16, 32))


def test_videomae_other_image_size_keeps_the_spatial_layout(tmp_path):
    save_checkpoint("videomae", tmp_path, num_frames=4)  # 2 x 4x4 tokens
    model = build_model("videomae", {"pretrained": str(tmp_path), "image_size": 64})  # 2 x 8x8
    new = videomae_table(model)[0].reshape(2, 8, 8, 32)
    old = get_sinusoid_encoding_table(2 * 16, 32)[0].reshape(2, 4, 4, 32)
    # Bicubic over the grid: the mean of each frame's table is kept closely, corners come from corners.
    torch.testing.assert_close(new.mean(dim=(1, 2)), old.mean(dim=(1, 2)), rtol=0, atol=0.05)
    assert (new[:, 0, 0] - old[:, 0, 0]).abs().max() < (new[:, 0, 0] - old[:, -1, -1]).abs().max()
    with torch.no_grad():
        assert model(model.prepare(uint8_batch(1, 4, 64, 64))).shape == (1, 2)


def test_timesformer_other_geometry_interpolates_time_and_space(tmp_path):
    saved = save_checkpoint("timesformer", tmp_path, num_frames=4)
    model = build_model("timesformer", {"pretrained": str(tmp_path), "num_frames": 7, "image_size": 48}).eval()
    emb, old = model.hf_model.timesformer.embeddings, saved.timesformer.embeddings
    assert model.num_frames == 7 and emb.time_embeddings.shape == (1, 7, 32)
    new_t, old_t = emb.time_embeddings[0].detach(), old.time_embeddings[0].detach()
    torch.testing.assert_close(new_t[0], old_t[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(new_t[-1], old_t[-1], rtol=0, atol=1e-6)
    torch.testing.assert_close(new_t[1], (old_t[0] + old_t[1]) / 2)  # 1/6 * 3 = 0.5
    assert emb.position_embeddings.shape == (1, 1 + 36, 32)
    assert torch.equal(emb.position_embeddings[:, 0], old.position_embeddings[:, 0])  # CLS slot
    loaded = model.hf_model.state_dict()
    for key, value in saved.state_dict().items():
        if not key.startswith("classifier.") and not key.endswith(("position_embeddings", "time_embeddings")):
            assert torch.equal(loaded[key], value), key
    with torch.no_grad():
        assert model(model.prepare(uint8_batch(1, 7, 48, 48))).shape == (1, 2)


def test_timesformer_reset_starts_the_resized_tables_as_a_fresh_model(tmp_path):
    saved = save_checkpoint("timesformer", tmp_path, num_frames=4)
    settings = {"pretrained": str(tmp_path), "num_frames": 6, "image_size": 48, "position_embeddings": "reset"}
    first, second = build_model("timesformer", settings), build_model("timesformer", settings)
    emb = first.hf_model.timesformer.embeddings
    assert emb.time_embeddings.shape == (1, 6, 32) and not emb.time_embeddings.any()
    spatial = emb.position_embeddings.detach()
    assert spatial.shape == (1, 37, 32) and abs(spatial.std().item() - 0.02) < 0.005
    assert torch.equal(spatial, second.hf_model.timesformer.embeddings.position_embeddings)  # seeded
    assert torch.equal(emb.cls_token, saved.timesformer.embeddings.cls_token)
    # Only num_frames changes: the spatial table is the checkpoint's.
    frames_only = build_model("timesformer", {**settings, "image_size": None})
    assert torch.equal(frames_only.hf_model.timesformer.embeddings.position_embeddings,
                       saved.timesformer.embeddings.position_embeddings)
    with pytest.raises(ModelError, match="models.timesformer.position_embeddings: must be one of interpolate, reset"):
        build_model("timesformer", {**settings, "position_embeddings": "zeros"})


# -- preprocessing ------------------------------------------------------------------------------


def test_prepare_equals_the_checkpoint_families_processors():
    batch = uint8_batch(2, 4, 32, 32)
    rgb = batch.unsqueeze(-1).expand(*batch.shape, 3).numpy()
    processor = VideoMAEImageProcessorPil(do_resize=False, do_center_crop=False)
    reference = processor([list(clip) for clip in rgb], return_tensors="np", input_data_format="channels_last")
    torch.testing.assert_close(tiny("videomae").prepare(batch), torch.from_numpy(reference["pixel_values"]).float(),
                               rtol=0, atol=1e-5)
    # TimesformerVideoProcessor needs torchvision (not installed): its defaults, applied by hand.
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    expected = (batch.float().div(255).unsqueeze(2).expand(-1, -1, 3, -1, -1) - mean) / std
    torch.testing.assert_close(tiny("timesformer").prepare(batch), expected, rtol=0, atol=1e-5)


def test_checkpoint_preprocessor_config_overrides_the_defaults(tmp_path):
    for name in NAMES:
        save_checkpoint(name, tmp_path / name, num_frames=4)
        (tmp_path / name / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.2] * 3,
                                                                              "image_std": [0.4] * 3}))
        x = build_model(name, {"pretrained": str(tmp_path / name)}).prepare(torch.zeros((1, 4, 32, 32), dtype=torch.uint8))
        torch.testing.assert_close(x.unique(), torch.tensor([-0.5]))


# -- errors ---------------------------------------------------------------------------------------


def test_bad_geometry_is_a_one_line_model_error_naming_the_entry(tmp_path):
    for name in NAMES:
        save_checkpoint(name, tmp_path / name, num_frames=4)
    failures = [
        (lambda: build_model("videomae", {**VIDEOMAE, "num_frames": 5}, entry="mae"),
         r"models\.mae\.num_frames: 5 is not a multiple of the tubelet length 2"),
        (lambda: build_model("videomae", {"pretrained": str(tmp_path / "videomae"), "num_frames": 7}, entry="mae"),
         r"models\.mae\.num_frames"),
        (lambda: build_model("videomae", {"pretrained": str(tmp_path / "videomae"), "image_size": 36}, entry="mae"),
         r"models\.mae\.image_size: 36 is not a multiple of the patch size 8x8"),
        (lambda: build_model("timesformer", {**TIMESFORMER, "image_size": 36}, entry="tsf"),
         r"models\.tsf\.image_size: 36 is not a multiple of the patch size 8x8"),
        (lambda: build_model("timesformer", {"pretrained": str(tmp_path / "timesformer"), "image_size": 20}, entry="tsf"),
         r"models\.tsf\.image_size"),
        (lambda: build_model("videomae", VIDEOMAE, entry="mae").prepare(uint8_batch(1, 6, 32, 32)),
         r"expects 4 frames per scan, got 6; sample or pad scans to models\.mae\.num_frames"),
        (lambda: build_model("timesformer", TIMESFORMER, entry="tsf").prepare(uint8_batch(1, 6, 32, 32)),
         r"expects 4 frames per scan, got 6; sample or pad scans to models\.tsf\.num_frames"),
    ]
    for failure, pattern in failures:
        with pytest.raises(ModelError, match=pattern) as err:
            failure()
        assert "\n" not in str(err.value)


# -- mean filters ---------------------------------------------------------------------------------

WINDOWS = [{"level": 40, "width": 120}, {"level": 74, "width": 48, "band": True}, {"level": 98, "width": 4}]
CACHE_WINDOW = {"level": 40, "width": 400}


def embedding(model, name):
    return getattr(model.hf_model, HF[name][2]).embeddings.patch_embeddings.projection


@pytest.mark.parametrize("name", NAMES)
def test_mean_filters_start_as_the_channel_mean_over_each_patch(name):
    settings = {**SETTINGS[name], "input_windows": WINDOWS, "cache_window": CACHE_WINDOW}
    torch.manual_seed(0)
    plain = build_model(name, settings).eval()
    torch.manual_seed(0)
    model = build_model(name, {**settings, "mean_filters": {"channel": 1, "count": 3, "scale": 5.0}}).eval()
    embed, plain_embed = embedding(model, name), embedding(plain, name)
    # Only the first 3 filters change; every other weight is the same random start.
    torch.testing.assert_close(embed.weight[3:], plain_embed.weight[3:], rtol=0, atol=0)
    assert not torch.equal(embed.weight[:3], plain_embed.weight[:3])

    batch = uint8_batch(2, 4, 32, 32)
    batch[0, :2, :8, :8] = 255  # one whole patch above the band: black in channel 1 (its mean is 0)
    x = model.prepare(batch)  # (B, T, 3, S, S), normalised
    band = x[:, :, 1] * model.pixel_std[1] + model.pixel_mean[1]  # the band window's value in [0, 1]
    with torch.no_grad():
        if name == "videomae":  # a Conv3d over (B, C, T, H, W): 2-frame tubelets of 8x8 pixels
            out = embed(x.permute(0, 2, 1, 3, 4))[:, :3]
            expected = 5.0 * F.avg_pool3d(band.unsqueeze(1), (2, 8, 8))
        else:  # a Conv2d over each frame: 8x8 patches
            out = embed(x.reshape(-1, 3, 32, 32))[:, :3]
            expected = 5.0 * F.avg_pool2d(band.reshape(-1, 1, 32, 32), 8)
    torch.testing.assert_close(out, expected.expand_as(out), rtol=1e-4, atol=1e-4)
    # The black patch gives 0, a patch inside the band up to the scale.
    assert float(out.flatten(2)[0, 0, 0]) == pytest.approx(0.0, abs=1e-4) and float(expected.max()) > 0.5


@pytest.mark.parametrize("name", NAMES)
def test_mean_filters_are_refused_with_a_checkpoint_or_out_of_range(name, tmp_path):
    save_checkpoint(name, tmp_path / name, num_frames=4)
    with pytest.raises(ModelError, match=r"models\.x\.mean_filters: shapes a random initialisation only; "
                                         r"remove it or set models\.x\.pretrained: null") as err:
        build_model(name, {"pretrained": str(tmp_path / name), "mean_filters": {"channel": 1, "count": 2}}, entry="x")
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match=r"models\.x\.mean_filters: channel must be 0-2 and count 1-32, "
                                         r"got channel 1, count 33"):
        build_model(name, {**SETTINGS[name], "mean_filters": {"channel": 1, "count": 33}}, entry="x")


# -- mask head and training ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_mask_head_predicts_one_cell_per_tubelet_or_frame_patch(name):
    model = tiny(name).train().use_mask_loss(1.0, seed=0)
    assert "masks" in model.needs
    masks = torch.zeros(2, 4, 32, 32)
    masks[0, 2, 3, 20] = 1  # one bleed pixel: frame 2, patch row 0, patch column 2
    batch = Batch(labels=torch.tensor([1, 0]), pixels=model.prepare(uint8_batch(2, 4, 32, 32)), masks=masks)
    logits, mask_logits = model.forward_batch(batch)
    frames = 2 if name == "videomae" else 4  # VideoMAE: tubelets of 2 frames; TimeSformer: every frame
    assert logits.shape == (2, 2) and mask_logits.shape == (2, frames, 4, 4)
    loss = model.loss((logits, mask_logits), batch)
    loss.backward()
    assert torch.isfinite(loss) and model.aux_mask_head.weight.grad.abs().sum() > 0
    # The only positive cell is where the bleed pixel is: raising its logit alone lowers the loss.
    target_cell = (0, 1 if name == "videomae" else 2, 0, 2)
    with torch.no_grad():
        zeros = torch.zeros_like(mask_logits)
        raised = zeros.clone()
        raised[target_cell] = 3.0
        assert model.mask_loss(raised, masks) < model.mask_loss(zeros, masks)


@pytest.mark.parametrize("name", NAMES)
def test_two_epochs_of_full_training(cohort_dir, tmp_path, name):  # noqa: F811
    cfg = {
        "models": {name: SETTINGS[name]},
        "training": {"mode": "full", "epochs": 2, "batch_size": 4, "lr": 0.001, "patience": None,
                     "class_imbalance": "none", "feature_batch_size": 8, "mask_loss_weight": 0.5},
        "frames": {"policy": "uniform", "padding": "edge"},
        "aggregation": {"rule": "any", "threshold": 0.5, "k": 2},
    }
    plan = model_plan(cfg, name)
    report = train_run(plan, 0, cohort_dir / "rep-0.json", cohort_dir / "cache", run_outputs(tmp_path / "out"), None,
                       log=lambda _m: None)
    assert report["metrics"]["n_test"] > 0
    history = pd.read_csv(tmp_path / "out" / "history.csv")
    assert len(history) == 2 and np.isfinite(history[["train_loss", "val_loss"]].to_numpy()).all()
    # The saved model is a checkpoint folder of its own kind, loadable as `pretrained: <folder>`.
    loaded = build_model(name, {"pretrained": str(tmp_path / "out" / "model")}).eval()
    assert isinstance(loaded.hf_model, HF[name][1]) and loaded.num_frames == 4
    with torch.no_grad():
        assert torch.isfinite(loaded(loaded.prepare(uint8_batch(2, 4, 32, 32)))).all()
