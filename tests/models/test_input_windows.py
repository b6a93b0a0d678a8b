"""``input_windows``: each input channel shows the cached slice through its own HU window.

The cached slices hold the brain window (level 40, width 120: -20 to 100 HU) as uint8 codes, so
code ``c`` is the HU value ``-20 + c / 255 * 120``; a channel's value (before the model's
normalisation) is that HU value's position in the channel's window, clipped to [0, 1]. The
expected values below are worked out by hand from that definition."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # also set by conftest; never reach for the hub

import pytest
import torch

from ichseq.config import validate_config
from ichseq.errors import ConfigError, ModelError
from ichseq.models import build_model
from ichseq.models.base import PREPROCESSOR_FILE
from ichseq.models.windows import window_channels
from ichseq.training.plan import model_plan

# 32x32 images, 8x8 patches, tubelet length 2 (as tests/models/test_models.py).
VIVIT_CONFIG = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    tubelet_size=[2, 8, 8])
CONVNEXT_CONFIG = dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
VIVIT = {"pretrained": None, "config": VIVIT_CONFIG, "num_frames": 4, "image_size": 32}
CONVNEXT = {"pretrained": None, "config": CONVNEXT_CONFIG, "image_size": 32}
ENTRIES = {"vivit": VIVIT, "convnext": CONVNEXT}

CACHE_WINDOW = {"level": 40, "width": 120}  # -20 to 100 HU
BRAIN, BLOOD, CALCIFICATION = {"level": 40, "width": 120}, {"level": 70, "width": 40}, {"level": 98, "width": 4}
# Cached code -> HU (-20 + c/255*120) -> each window's value, by hand:
#   code   HU   brain (-20..100)   blood (50..90)   calcification (96..100)
#      0  -20        0                 0                 0
#     51    4        0.2               0                 0
#    153   52        0.6               0.05              0
#    204   76        0.8               0.65              0
#    238   92  14/15 (0.9333)          1 (clipped)       0
#    255  100        1                 1 (clipped)       1
CODES = (0, 51, 153, 204, 238, 255)
EXPECTED = {
    "brain": (0.0, 0.2, 0.6, 0.8, 14 / 15, 1.0),
    "blood": (0.0, 0.0, 0.05, 0.65, 1.0, 1.0),
    "calcification": (0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    # band: what lies above the window is black, not white
    "blood_band": (0.0, 0.0, 0.05, 0.65, 0.0, 0.0),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def build(name: str, windows=None, cache_window=CACHE_WINDOW, **extra):
    entry = {**ENTRIES[name], **extra}
    if windows is not None:
        entry.update(input_windows=windows, cache_window=cache_window)
    return build_model(name, entry).eval()


def code_image(name: str) -> torch.Tensor:
    """A uint8 batch of one sample whose pixels cycle through CODES: (1, 32, 32) for a slice
    model, (1, 4, 32, 32) for ViViT (every frame alike)."""
    image = torch.tensor(CODES, dtype=torch.uint8).repeat(32 * 32 // len(CODES) + 1)[: 32 * 32].view(1, 32, 32)
    return image if name == "convnext" else image.unsqueeze(1).expand(1, 4, 32, 32).contiguous()


def channel_values(model, name: str) -> torch.Tensor:
    """(3, len(CODES)): what ``prepare`` shows in each channel for each code, with the model's
    normalisation undone."""
    x = model.prepare(code_image(name))
    if name == "vivit":
        x = x[:, 0]
    x = (x[0] * model.pixel_std + model.pixel_mean).reshape(3, -1)
    return x[:, : len(CODES)]


@pytest.mark.parametrize("name", ["convnext", "vivit"])
def test_each_channel_shows_the_cached_pixel_through_its_own_window(name):
    model = build(name, [BRAIN, BLOOD, CALCIFICATION])
    got = channel_values(model, name)
    expected = torch.tensor([EXPECTED["brain"], EXPECTED["blood"], EXPECTED["calcification"]])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # Every frame of a clip is rendered alike.
    if name == "vivit":
        x = model.prepare(code_image(name))
        assert all(torch.equal(x[:, t], x[:, 0]) for t in range(4))


@pytest.mark.parametrize("name", ["convnext", "vivit"])
def test_one_window_is_repeated_into_all_three_channels(name):
    got = channel_values(build(name, [BLOOD]), name)
    torch.testing.assert_close(got, torch.tensor([EXPECTED["blood"]] * 3), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["convnext", "vivit"])
def test_a_band_window_shows_what_lies_above_it_black(name):
    got = channel_values(build(name, [BRAIN, {**BLOOD, "band": True}, CALCIFICATION]), name)
    expected = torch.tensor([EXPECTED["brain"], EXPECTED["blood_band"], EXPECTED["calcification"]])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # A single band window is a band in every channel.
    got = channel_values(build(name, [{**BLOOD, "band": True}]), name)
    torch.testing.assert_close(got, torch.tensor([EXPECTED["blood_band"]] * 3), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["convnext", "vivit"])
def test_without_windows_the_slice_goes_unchanged_to_all_three_channels(name):
    plain = build(name)  # no input_windows key at all: the behaviour before windows existed
    batch = code_image(name)
    reference = plain.prepare(batch)
    assert plain.input_windows is None
    torch.testing.assert_close(channel_values(plain, name), torch.tensor([c / 255 for c in CODES]).expand(3, -1),
                               rtol=0, atol=1e-6)
    assert torch.equal(build_model(name, {**ENTRIES[name], "input_windows": None}).prepare(batch), reference)
    # A windowed model set back to no windows prepares exactly as the plain one.
    windowed = build(name, [BRAIN, {**BLOOD, "band": True}, CALCIFICATION])
    assert not torch.equal(windowed.prepare(batch), reference)
    assert torch.equal(windowed.set_input_windows(None, None).prepare(batch), reference)
    assert "input_windows" not in windowed.preprocessor_settings()


def test_the_brain_window_itself_is_the_plain_slice():
    # The cache's own window maps every code to itself: the same input as no windows at all.
    batch = code_image("convnext")
    torch.testing.assert_close(build("convnext", [BRAIN]).prepare(batch), build("convnext").prepare(batch),
                               rtol=0, atol=1e-5)


def test_model_plan_renders_windows_from_the_configured_cache_window():
    # A cache of 0 to 100 HU (level 50, width 100): code c is c/255*100 HU; the window 0-50 HU
    # shows code 51 (20 HU) as 0.4, code 102 (40 HU) as 0.8, code 153 (60 HU) clipped to 1.
    config = {"preprocess": {"window": {"level": 50, "width": 100}, "image_size": 32},
              "models": {"convnext": {"config": CONVNEXT_CONFIG, "input_windows": [{"level": 25, "width": 50}]}}}
    plan = model_plan(config, "convnext")
    assert plan.model["cache_window"] == {"level": 50, "width": 100}
    model = plan.build().eval()
    x = model.prepare(torch.tensor([0, 51, 102, 153], dtype=torch.uint8).repeat(256).view(1, 32, 32))
    got = (x[0] * model.pixel_std + model.pixel_mean).reshape(3, -1)[:, :4]
    torch.testing.assert_close(got, torch.tensor([0.0, 0.4, 0.8, 1.0]).expand(3, -1), rtol=0, atol=1e-5)


# -- the windows travel with the model ----------------------------------------------------------


@pytest.mark.parametrize("name", ["convnext", "vivit"])
def test_a_saved_model_brings_its_windows_back(name, tmp_path):
    windows = [BRAIN, {**BLOOD, "band": True}, CALCIFICATION]
    model = build(name, windows)
    batch = code_image(name)
    model.save(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / PREPROCESSOR_FILE).read_text())
    assert saved["input_windows"] == [{"level": 40.0, "width": 120.0}, {"level": 70.0, "width": 40.0, "band": True},
                                      {"level": 98.0, "width": 4.0}]
    assert saved["cache_window"] == {"level": 40.0, "width": 120.0}
    # Loaded as a checkpoint by an entry that says nothing about windows: the folder's apply.
    entry = {k: v for k, v in ENTRIES[name].items() if k != "config"}
    loaded = build_model(name, {**entry, "pretrained": str(tmp_path / "saved")}).eval()
    assert loaded.input_windows == model.input_windows and loaded.cache_window == model.cache_window
    assert torch.equal(loaded.prepare(batch), model.prepare(batch))
    # An entry's own windows win over the folder's.
    other = build_model(name, {**entry, "pretrained": str(tmp_path / "saved"), "input_windows": [BLOOD],
                               "cache_window": CACHE_WINDOW}).eval()
    assert torch.equal(other.prepare(batch), build(name, [BLOOD]).prepare(batch))
    # A model without windows saves none, and its folder loads without any.
    build(name).save(tmp_path / "plain")
    assert "input_windows" not in json.loads((tmp_path / "plain" / PREPROCESSOR_FILE).read_text())
    plain = build_model(name, {**entry, "pretrained": str(tmp_path / "plain")}).eval()
    assert plain.input_windows is None and torch.equal(plain.prepare(batch), build(name).prepare(batch))


def test_the_pretrain_plan_loads_its_folder_with_the_windows(tmp_path):
    config = {"preprocess": {"window": CACHE_WINDOW, "image_size": 32},
              "models": {"convnext": {"pretrained": "pretrain", "config": CONVNEXT_CONFIG,
                                      "input_windows": [BRAIN, BLOOD, CALCIFICATION]}}}
    plan = model_plan(config, "convnext")
    assert plan.pretrain
    model = plan.build().eval()
    model.save(tmp_path / "pretrained")
    loaded = plan.with_weights(tmp_path / "pretrained").build().eval()
    batch = code_image("convnext")
    assert torch.equal(loaded.prepare(batch), model.prepare(batch))
    with torch.no_grad():
        assert torch.equal(loaded(loaded.prepare(batch)), model(model.prepare(batch)))  # the same weights too


# -- bad windows --------------------------------------------------------------------------------


def _one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("name", ["convnext", "vivit"])
def test_a_window_outside_the_cached_one_names_its_index(name):
    for bad in ({"level": 300, "width": 100}, {"level": -100, "width": 40}):  # 250-350 HU, -120 to -80 HU
        with pytest.raises(ModelError) as info:
            build(name, [BRAIN, bad, CALCIFICATION])
        message = _one_line(info)
        assert message.startswith(f"models.{name}.input_windows[1]: ") and "preprocess.window" in message
    with pytest.raises(ModelError, match=rf"models\.{name}\.input_windows\[0\]"):
        build(name, [{"level": 40}])  # no width


def test_two_windows_are_refused():
    with pytest.raises(ModelError) as info:
        window_channels([BRAIN, BLOOD], CACHE_WINDOW, "convnext")
    assert _one_line(info).startswith("models.convnext.input_windows: expected 1 or 3")
    config = {"preprocess": {"window": CACHE_WINDOW, "image_size": 32},
              "models": {"convnext": {"config": CONVNEXT_CONFIG, "input_windows": [BRAIN, BLOOD]}}}
    with pytest.raises(ModelError, match=r"models\.convnext\.input_windows: expected 1 or 3"):
        model_plan(config, "convnext").build()


@pytest.mark.parametrize("windows, key", [
    ([{"level": 40}], "models.convnext.input_windows.0"),  # no width
    ([{"level": 40, "width": 0}], "models.convnext.input_windows.0.width"),
    ([BRAIN, BLOOD, CALCIFICATION, BRAIN], "models.convnext.input_windows"),  # 4 channels
    ([{**BLOOD, "gamma": 2}], "models.convnext.input_windows.0.gamma"),
    ([{**BLOOD, "band": "yes"}], "models.convnext.input_windows.0.band"),
    ("brain", "models.convnext.input_windows"),
])
def test_the_config_schema_refuses_a_malformed_window_list(windows, key):
    with pytest.raises(ConfigError) as info:
        validate_config({"models": {"convnext": {"input_windows": windows}}})
    assert f" {key}" in _one_line(info)


def test_windows_need_the_cached_slices_window():
    config = {"models": {"convnext": {"config": CONVNEXT_CONFIG, "input_windows": [BLOOD]}}}  # no preprocess
    with pytest.raises(ConfigError) as info:
        model_plan(config, "convnext")
    assert _one_line(info).startswith("models.convnext.input_windows: needs preprocess.window")
    # Without windows, no preprocess.window is needed.
    assert "cache_window" not in model_plan({"models": {"convnext": {"config": CONVNEXT_CONFIG}}}, "convnext").model
    with pytest.raises(ModelError, match=r"models\.convnext\.input_windows: needs the cached slices' window"):
        build_model("convnext", {**CONVNEXT, "input_windows": [BLOOD]})  # built directly, without one
