"""Brain window, uint8 quantisation and the slice / mask resizers."""

from __future__ import annotations

import numpy as np
import pytest

from ichseq.data.windowing import brain_window, resize_masks, resize_slices, to_uint8

# --------------------------------------------------------------------------- brain_window


@pytest.mark.parametrize(
    ("hu", "expected"),
    [
        (-20.0, 0.0),  # level - width/2
        (100.0, 1.0),  # level + width/2
        (40.0, 0.5),  # the level itself
        (10.0, 0.25),
        (70.0, 0.75),
    ],
)
def test_brain_window_maps_the_official_window_linearly(hu, expected):
    out = brain_window(np.array([hu]))
    assert out[0] == pytest.approx(expected, abs=1e-6)


def test_brain_window_clips_outside_the_window():
    hu = np.array([-1024.0, -1000.0, -20.5, -21.0, 100.5, 101.0, 400.0, 1000.0, 3000.0, 3071.0])
    out = brain_window(hu)
    np.testing.assert_array_equal(out, [0, 0, 0, 0, 1, 1, 1, 1, 1, 1])


def test_brain_window_edges_are_exact_and_just_inside_is_not_clipped():
    # 40 +- 60 land exactly on 0 and 1; 40 +- 59.5 are strictly inside.
    out = brain_window(np.array([40 - 60, 40 + 60, 40 - 59.5, 40 + 59.5, 40 - 60.5, 40 + 60.5]))
    assert out[0] == 0.0 and out[1] == 1.0
    assert 0.0 < out[2] < 0.01 and 0.99 < out[3] < 1.0
    assert out[4] == 0.0 and out[5] == 1.0


def test_brain_window_is_monotonic_and_bounded():
    hu = np.linspace(-1100, 3100, 8401)
    out = brain_window(hu)
    assert np.all(np.diff(out) >= 0)
    assert out.min() == 0.0 and out.max() == 1.0
    inside = (hu > -20) & (hu < 100)
    assert np.all(np.diff(out[inside]) > 0)  # strictly increasing inside the window


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float64, np.float32])
def test_brain_window_returns_float32_of_the_same_shape(dtype):
    hu = np.arange(-60, 140, dtype=dtype).reshape(2, 10, 10)
    out = brain_window(hu)
    assert out.dtype == np.float32
    assert out.shape == hu.shape


def test_brain_window_does_not_modify_its_input():
    hu = np.array([-1000.0, 40.0, 3000.0], dtype=np.float32)
    before = hu.copy()
    brain_window(hu)
    np.testing.assert_array_equal(hu, before)


def test_brain_window_custom_level_and_width():
    # Bone window (level 600, width 2800): [-800, 2000] -> [0, 1].
    out = brain_window(np.array([-1000.0, -800.0, 600.0, 2000.0, 2500.0]), level=600, width=2800)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    # A narrow window around 0: [-1, 1].
    out = brain_window(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0]), level=0, width=2)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 0.75, 1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("width", [0, 0.0, -1, -120])
def test_brain_window_rejects_non_positive_width(width):
    with pytest.raises(ValueError, match="width"):
        brain_window(np.zeros(3), level=40, width=width)


# --------------------------------------------------------------------------- to_uint8


def test_to_uint8_rounds_to_nearest_around_the_half_steps():
    eps = 1e-3
    unit = np.array(
        [0.5 / 255 - eps / 255, 0.5 / 255 + eps / 255, 1.5 / 255 - eps / 255, 1.5 / 255 + eps / 255,
         254.5 / 255 - eps / 255, 254.5 / 255 + eps / 255],
        dtype=np.float64,
    )
    np.testing.assert_array_equal(to_uint8(unit), [0, 1, 1, 2, 254, 255])


def test_to_uint8_endpoints_clipping_and_dtype():
    out = to_uint8(np.array([-0.5, 0.0, 1.0, 1.5, np.float32(0.5)]))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 0, 255, 255, 128])


def test_to_uint8_round_trips_every_grey_level():
    levels = np.arange(256)
    assert np.array_equal(to_uint8((levels / 255).astype(np.float32)), levels)
    assert np.array_equal(to_uint8(levels / 255), levels)


def test_window_then_quantise_hits_expected_grey_levels():
    out = to_uint8(brain_window(np.array([-1000, -20, 40, 100, 1000])))
    np.testing.assert_array_equal(out, [0, 0, 128, 255, 255])


# --------------------------------------------------------------------------- resize_slices


def test_resize_slices_shape_dtype_and_constant_image():
    stack = np.full((3, 128, 128), 0.7, dtype=np.float32)
    out = resize_slices(stack, 32)
    assert out.shape == (3, 32, 32)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 0.7, atol=1e-5)


@pytest.mark.parametrize(("src", "dst"), [(128, 32), (512, 128), (64, 128), (100, 64)])
def test_resize_slices_preserves_a_smooth_image(src, dst):
    yy, xx = np.meshgrid(np.linspace(0, 1, src), np.linspace(0, 1, src), indexing="ij")
    plane = (0.2 + 0.5 * xx + 0.2 * np.sin(np.pi * yy)).astype(np.float32)
    stack = np.stack([plane, 1.0 - plane])
    out = resize_slices(stack, dst)
    assert out.shape == (2, dst, dst)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), stack.mean(axis=(1, 2)), atol=0.01)
    # Structure is kept: the left-to-right gradient is still there, the right way round.
    assert out[0, :, -4:].mean() > out[0, :, :4].mean() + 0.3
    # Same function sampled on the target grid: close everywhere away from the border.
    yy2, xx2 = np.meshgrid(np.linspace(0, 1, dst), np.linspace(0, 1, dst), indexing="ij")
    ref = 0.2 + 0.5 * xx2 + 0.2 * np.sin(np.pi * yy2)
    np.testing.assert_allclose(out[0, 2:-2, 2:-2], ref[2:-2, 2:-2], atol=0.03)


def test_resize_slices_keeps_slices_separate():
    stack = np.stack([np.full((64, 64), v, np.float32) for v in (0.0, 0.25, 1.0)])
    out = resize_slices(stack, 16)
    np.testing.assert_allclose(out.reshape(3, -1).mean(axis=1), [0.0, 0.25, 1.0], atol=1e-5)


def test_resize_slices_same_size_returns_an_equal_copy():
    stack = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    out = resize_slices(stack, 32)
    np.testing.assert_array_equal(out, stack)
    out[0, 0, 0] = 5.0
    assert stack[0, 0, 0] != 5.0


# --------------------------------------------------------------------------- resize_masks


@pytest.mark.parametrize("pos", [(0, 0), (0, 127), (127, 0), (127, 127), (63, 64), (1, 2), (66, 3)])
def test_resize_masks_keeps_a_single_pixel_lesion(pos):
    masks = np.zeros((2, 128, 128), dtype=bool)
    masks[1][pos] = True
    out = resize_masks(masks, 32)
    assert out.shape == (2, 32, 32)
    assert out.dtype == bool
    assert not out[0].any()
    assert out[1].any()  # has_mask stays true
    # ... and the foreground lands in the target pixel that covers it.
    assert out[1][pos[0] // 4, pos[1] // 4]
    assert out[1].sum() <= 4


@pytest.mark.parametrize(("src", "dst"), [(128, 32), (512, 128), (100, 32), (512, 100)])
def test_resize_masks_never_loses_a_pixel_anywhere(src, dst):
    rng = np.random.default_rng(src * 1000 + dst)
    positions = rng.integers(0, src, size=(40, 2))
    masks = np.zeros((len(positions), src, src), dtype=bool)
    for k, (i, j) in enumerate(positions):
        masks[k, i, j] = True
    out = resize_masks(masks, dst)
    assert out.reshape(len(out), -1).any(axis=1).all()


def test_resize_masks_keeps_empty_masks_empty_and_full_masks_full():
    masks = np.zeros((3, 128, 128), dtype=bool)
    masks[2] = True
    out = resize_masks(masks, 32)
    assert not out[0].any() and not out[1].any()
    assert out[2].all()


def test_resize_masks_accepts_0_255_uint8():
    masks = np.zeros((1, 64, 64), dtype=np.uint8)
    masks[0, 10:20, 30:40] = 255
    out = resize_masks(masks, 16)
    assert out.dtype == bool
    # The box 10..19 x 30..39 touches target rows 2..4 and columns 7..9.
    expected = np.zeros((16, 16), dtype=bool)
    expected[2:5, 7:10] = True
    np.testing.assert_array_equal(out[0], expected)
