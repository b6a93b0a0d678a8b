"""Frame selection for fixed-length video models, and gathering the chosen slices."""

from __future__ import annotations

import numpy as np
import pytest

from ichseq.data.frames import select_frames
from ichseq.errors import ConfigError

# --------------------------------------------------------------------------- first


def test_first_takes_the_inferior_slices_of_a_long_scan():
    assert select_frames(10, 4, "first").tolist() == [0, 1, 2, 3]


def test_first_on_exact_length_is_every_slice():
    assert select_frames(4, 4, "first").tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("n", [8, 9, 20, 57])
def test_first_equals_range_for_scans_at_least_as_long(n):
    assert select_frames(n, 8, "first", padding="zeros").tolist() == list(range(8))


def test_first_short_scan_edge_padding_repeats_the_last_slice():
    assert select_frames(3, 6, "first", padding="edge").tolist() == [0, 1, 2, 2, 2, 2]


def test_first_short_scan_default_padding_is_edge():
    assert select_frames(2, 4, "first").tolist() == [0, 1, 1, 1]


def test_first_short_scan_zero_padding_appends_blank_frames():
    assert select_frames(3, 6, "first", padding="zeros").tolist() == [0, 1, 2, -1, -1, -1]


def test_single_slice_scan():
    assert select_frames(1, 3, "first").tolist() == [0, 0, 0]
    assert select_frames(1, 3, "first", padding="zeros").tolist() == [0, -1, -1]
    assert select_frames(1, 3, "uniform").tolist() == [0, 0, 0]


# --------------------------------------------------------------------------- uniform


def test_uniform_long_scan_hand_computed():
    # linspace(0, 9, 4) = 0, 3, 6, 9
    assert select_frames(10, 4, "uniform").tolist() == [0, 3, 6, 9]
    # linspace(0, 10, 3) = 0, 5, 10
    assert select_frames(11, 3, "uniform").tolist() == [0, 5, 10]


def test_uniform_on_exact_length_is_every_slice():
    assert select_frames(5, 5, "uniform").tolist() == [0, 1, 2, 3, 4]


def test_uniform_short_scan_repeats_nearest_slices_in_order():
    # linspace(0, 2, 6) = 0, .4, .8, 1.2, 1.6, 2 -> nearest 0, 0, 1, 1, 2, 2
    assert select_frames(3, 6, "uniform").tolist() == [0, 0, 1, 1, 2, 2]


def test_uniform_short_scan_ignores_zero_padding():
    # Uniform never runs out of slices, so no blank frame appears whatever the padding.
    assert select_frames(3, 6, "uniform", padding="zeros").tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("num_frames", [1, 2, 3, 7, 8, 16, 32])
@pytest.mark.parametrize("n", range(1, 80))
def test_uniform_invariants(n, num_frames):
    idx = select_frames(n, num_frames, "uniform")
    assert idx.shape == (num_frames,)
    assert idx.min() >= 0 and idx.max() <= n - 1
    assert np.all(np.diff(idx) >= 0)
    assert idx[0] == 0
    if num_frames > 1:
        assert idx[-1] == n - 1  # both ends of the scan are always seen
    if n >= num_frames:
        assert np.all(np.diff(idx) > 0), "distinct slices expected when the scan is long enough"
    else:
        assert set(idx.tolist()) == set(range(n)), "a short scan must use every slice"


@pytest.mark.parametrize("policy", ["first", "uniform"])
@pytest.mark.parametrize("padding", ["edge", "zeros"])
@pytest.mark.parametrize("n", [1, 5, 8, 13])
def test_real_indices_non_decreasing_and_blanks_trail(policy, padding, n):
    idx = select_frames(n, 8, policy, padding=padding)
    real = idx[idx != -1]
    assert np.all(np.diff(real) >= 0)
    assert idx.tolist() == real.tolist() + [-1] * (idx.size - real.size)
    assert real.size > 0 and real[0] == 0


# --------------------------------------------------------------------------- errors


def test_unknown_policy_names_the_key_and_choices():
    with pytest.raises(ConfigError, match=r"frames\.policy.*first.*uniform.*'middle'"):
        select_frames(10, 4, "middle")


def test_unknown_padding_names_the_key_and_choices():
    with pytest.raises(ConfigError, match=r"frames\.padding.*edge.*zeros.*'reflect'"):
        select_frames(10, 4, "first", padding="reflect")


@pytest.mark.parametrize(("n", "num_frames"), [(0, 4), (10, 0), (-3, 4), (10, -1)])
def test_non_positive_sizes_raise_value_error(n, num_frames):
    with pytest.raises(ValueError, match="at least 1"):
        select_frames(n, num_frames, "first")
