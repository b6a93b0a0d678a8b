"""Choosing which slices of a scan a fixed-length video model sees.

A video transformer such as ViViT accepts exactly ``num_frames`` frames, while CT-ICH scans
have a variable number of axial slices. Indices refer to slices ordered by position from
the inferior end (index 0) upwards; ``-1`` stands for a blank (all-zero) frame.

Policies:

* ``first`` -- the study's choice: the first ``num_frames`` slices from the inferior end.
  A longer scan loses its superior slices; a shorter one is padded (see below).
* ``uniform`` -- ``num_frames`` slices spread over the whole scan, both ends included, so
  no anatomy is dropped wholesale; a shorter scan repeats slices (nearest neighbour) in
  order and therefore never needs padding.

Padding (only ``first`` on a scan shorter than ``num_frames``):

* ``edge`` -- repeat the last (most superior) slice;
* ``zeros`` -- append blank frames (``-1``).
"""

from __future__ import annotations

import numpy as np

from ichseq.errors import ConfigError

POLICIES = ("first", "uniform")
PADDINGS = ("edge", "zeros")

#: Index meaning "blank frame" in the output of :func:`select_frames`.
BLANK = -1


def _positive_int(name: str, value: int) -> int:
    # bool is an int subclass; True as a frame count is a bug, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def _uniform(n_slices: int, num_frames: int) -> np.ndarray:
    """Spread ``num_frames`` indices over ``0 .. n_slices - 1``, both ends included."""
    idx = np.round(np.linspace(0, n_slices - 1, num_frames)).astype(np.int64)
    if n_slices >= num_frames:
        # With a step >= 1 rounding cannot map two points to one index except through
        # floating-point noise; repair any such collision so every frame is a distinct
        # slice. Forward pass: each index at least one past its predecessor; backward
        # pass: leave room for the remaining frames below n_slices. Both ends survive.
        for i in range(1, num_frames):
            idx[i] = max(idx[i], idx[i - 1] + 1)
        for i in range(num_frames - 1, -1, -1):
            idx[i] = min(idx[i], n_slices - num_frames + i)
    return idx


def select_frames(
    n_slices: int, num_frames: int, policy: str, padding: str = "edge"
) -> np.ndarray:
    """Indices (int64, length ``num_frames``) of the slices to feed a video model.

    Real indices are always non-decreasing; blank frames (``-1``) only ever trail them.
    """
    if policy not in POLICIES:
        raise ConfigError(f"frames.policy must be one of {', '.join(POLICIES)}; got {policy!r}")
    if padding not in PADDINGS:
        raise ConfigError(
            f"frames.padding must be one of {', '.join(PADDINGS)}; got {padding!r}"
        )
    n_slices = _positive_int("n_slices", n_slices)
    num_frames = _positive_int("num_frames", num_frames)

    if policy == "uniform":
        return _uniform(n_slices, num_frames)

    # policy == "first"
    taken = np.arange(min(n_slices, num_frames), dtype=np.int64)
    missing = num_frames - taken.size
    fill = n_slices - 1 if padding == "edge" else BLANK
    return np.concatenate([taken, np.full(missing, fill, dtype=np.int64)])
