"""Brain-window filtering: Hounsfield units to the [0, 1] intensities the models read.

The CT-ICH authors publish every scan with an official brain window of level 40 HU and
width 120 HU, i.e. HU in [-20, 100] is mapped linearly to [0, 1] and everything outside is
clipped. Bone windows and hemorrhage masks never pass through here: the classification
input is the brain window only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

BRAIN_WINDOW_LEVEL = 40.0
BRAIN_WINDOW_WIDTH = 120.0


def brain_window(
    hu: np.ndarray, level: float = BRAIN_WINDOW_LEVEL, width: float = BRAIN_WINDOW_WIDTH
) -> np.ndarray:
    """Clip ``hu`` to ``[level - width/2, level + width/2]`` and scale to float32 ``[0, 1]``."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = level - width / 2.0
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(width)
    return np.clip(out, 0.0, 1.0, out=out)


def to_uint8(unit: np.ndarray) -> np.ndarray:
    """Quantise ``[0, 1]`` intensities to uint8 (round to nearest), the cache's storage type."""
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def resize_slices(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a float stack ``(S, H, W)`` to ``(S, size, size)``.

    Uses PIL's antialiased bilinear filter so that down-sampling 512² scans averages
    neighbouring pixels instead of aliasing thin structures (subarachnoid blood, skull).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.shape[1:] == (size, size):
        return images.copy()
    out = np.empty((images.shape[0], size, size), dtype=np.float32)
    for k, plane in enumerate(images):
        out[k] = np.asarray(
            Image.fromarray(plane).resize((size, size), Image.Resampling.BILINEAR)
        )
    return out


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """Resize a boolean mask stack ``(S, H, W)`` to ``(S, size, size)``.

    A target pixel is foreground when any part of it was (box filter, then > 0), so a
    small bleed never disappears when a 512² mask is reduced: ``has_mask`` stays true.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[1:] == (size, size):
        return masks.copy()
    out = np.empty((masks.shape[0], size, size), dtype=bool)
    for k, plane in enumerate(masks):
        img = Image.fromarray(plane.astype(np.float32))
        out[k] = np.asarray(img.resize((size, size), Image.Resampling.BOX)) > 0
    return out
