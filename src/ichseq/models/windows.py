"""HU input windows (a model entry's ``input_windows``) as linear maps of a cached pixel.

Free of torch, so that the config check (read on every Snakemake start) and the models share
one definition of a valid window.
"""

from __future__ import annotations

from ..errors import ModelError


def window_channels(windows, cache_window, name: str) -> tuple[list[float], list[float]]:
    """Per-channel (scale, offset) that map a cached pixel scaled to [0, 1] (spanning the HU
    window ``cache_window``) to its value in each of ``windows`` (before clipping to [0, 1]).
    One-line ModelError naming ``models.<name>.input_windows`` for a bad window."""
    key = f"models.{name}.input_windows"
    if not isinstance(windows, (list, tuple)) or len(windows) not in (1, 3):
        raise ModelError(f"{key}: expected 1 or 3 HU windows ({{level, width}}, one per input channel), got {windows!r}")
    if not isinstance(cache_window, dict) or not {"level", "width"} <= set(cache_window):
        raise ModelError(f"{key}: needs the cached slices' window (preprocess.window {{level, width}}), got {cache_window!r}")
    cache_low, cache_width = float(cache_window["level"]) - float(cache_window["width"]) / 2, float(cache_window["width"])
    scale, offset = [], []
    for i, window in enumerate(windows):
        try:
            level, width = float(window["level"]), float(window["width"])
            if not isinstance(window.get("band", False), bool):
                raise ValueError
        except (TypeError, KeyError, ValueError, AttributeError):
            raise ModelError(f"{key}[{i}]: expected {{level, width[, band: true]}} in HU, got {window!r}") from None
        low = level - width / 2
        # Inside the cached window only: beyond it the cache holds no information (clipped).
        if not width > 0 or low < cache_low - 1e-9 or low + width > cache_low + cache_width + 1e-9:
            raise ModelError(
                f"{key}[{i}]: the window {level:g}/{width:g} HU (level/width) is not inside the cached slices' "
                f"{cache_low:g} to {cache_low + cache_width:g} HU (preprocess.window): choose one inside it"
            )
        # hu = cache_low + x * cache_width; channel = (hu - low) / width
        scale.append(cache_width / width)
        offset.append((cache_low - low) / width)
    if len(windows) == 1:
        scale, offset = scale * 3, offset * 3
    return scale, offset
