"""What a model does to its input before the network (:class:`InputPipeline`, a part of
:class:`~ichseq.models.base.CTClassifier`): windowed uint8 slices resized to the model's
size, shown through its HU input windows, and normalised as its checkpoint expects; and the
record of it saved with the model (``preprocessor_config.json``).

Plain tensor ops instead of the HF image processors: without torchvision those fall back to
slow PIL code, and the input is already a windowed uint8 array.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ModelError
from .windows import window_channels


class InputPipeline(torch.nn.Module):
    """The preprocessing half of the model contract. Expects ``image_size``, ``kind`` and
    ``entry`` on the model; ``init_input_pipeline`` registers its buffers."""

    def init_input_pipeline(self, mean, std) -> None:
        """Register the normalisation (per-channel ``mean``/``std`` of pixels in [0, 1]) and the
        input windows' buffers (none set: the cached slice in all three channels)."""
        # Non-persistent buffers: they follow .to(device) but stay out of the state dict,
        # which then holds exactly the network's weights.
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)
        # Input windows (``set_input_windows``): None = the cached slice in all three channels.
        self.input_windows: list[dict] | None = None
        self.cache_window: dict | None = None
        self.register_buffer("window_scale", torch.ones(3, 1, 1), persistent=False)
        self.register_buffer("window_offset", torch.zeros(3, 1, 1), persistent=False)
        self.register_buffer("window_band", torch.zeros(3, 1, 1, dtype=torch.bool), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def prepare(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 grayscale (B, H, W) [slice] or (B, T, H, W) [every other kind] -> normalised float
        pixel_values (B, 3, S, S) or (B, T, 3, S, S), S = ``self.image_size``, on the model's device."""
        expected_ndim = 3 if self.kind == "slice" else 4
        if batch_uint8.dtype != torch.uint8 or batch_uint8.ndim != expected_ndim:
            shape = "(B, H, W)" if self.kind == "slice" else "(B, T, H, W)"
            raise ModelError(
                f"models.{self.entry}: {type(self).__name__}.prepare expects uint8 {shape}, got {batch_uint8.dtype} "
                f"with shape {tuple(batch_uint8.shape)}"
            )
        lead = batch_uint8.shape[:-2]
        h, w = batch_uint8.shape[-2:]
        # Move while still uint8 (4x less to copy than float), then scale to [0, 1].
        x = batch_uint8.to(self.pixel_mean.device).float().div_(255.0)
        x = x.reshape(-1, 1, h, w)  # resize one channel before repeating: 3x cheaper
        if (h, w) != (self.image_size, self.image_size):
            downsampling = h > self.image_size or w > self.image_size
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear",
                align_corners=False, antialias=downsampling,
            )
        # Pretrained backbones expect RGB: the grayscale slice goes to all three channels, or each
        # channel shows the slice through its own HU window (``input_windows``).
        x = x.expand(-1, 3, -1, -1)
        if self.input_windows is not None:
            x = x * self.window_scale + self.window_offset
            # A band window shows only its range: what lies above it is black, not white.
            x = torch.where(self.window_band & (x > 1.0), 0.0, x).clamp_(0.0, 1.0)
        x = (x - self.pixel_mean) / self.pixel_std
        return x.reshape(*lead, 3, self.image_size, self.image_size)

    def prepare_masks(self, masks_uint8: torch.Tensor) -> torch.Tensor:
        """0/1 uint8 masks (B, [T,] H, W) -> float (B, [T,] S, S) on the model's device; resized by
        nearest neighbour, so a mask stays 0/1."""
        lead = masks_uint8.shape[:-2]
        h, w = masks_uint8.shape[-2:]
        m = masks_uint8.to(self.pixel_mean.device).float().reshape(-1, 1, h, w)
        if (h, w) != (self.image_size, self.image_size):
            m = F.interpolate(m, size=(self.image_size, self.image_size), mode="nearest")
        return m.reshape(*lead, self.image_size, self.image_size)

    def set_input_windows(self, windows: list[dict] | None, cache_window: dict | None) -> "InputPipeline":
        """Show the cached slice, whose pixels 0-255 span the HU window ``cache_window``
        ({level, width}), through ``windows`` (1 or 3 HU windows, one per input channel; one is
        repeated) instead of as it is. A window is a linear map of a cached pixel clipped to
        [0, 1], so it adds no resampling and any window inside the cached one is exact.

        Why: a randomly initialised network's first layer normalises each position over its
        channels (ConvNeXt's stem LayerNorm, ViViT's pre-LayerNorm), which divides out the
        brightness of a flat region when the three channels are equal: a bleed's 50-90 HU
        interior then looks like the brain's. Three windows (brain, blood, calcification)
        make brightness a pattern across channels, which survives the normalisation. The
        multi-window input is a standard trick of CT hemorrhage models (RSNA 2019). A window
        with ``band: true`` shows only its range (above it black, as below): a blood band that
        bone does not light up."""
        if windows is None:
            self.input_windows = self.cache_window = None
            self.window_scale.fill_(1.0)
            self.window_offset.fill_(0.0)
            self.window_band.fill_(False)
            return self
        scale, offset = window_channels(windows, cache_window, self.entry)
        self.input_windows = [{"level": float(w["level"]), "width": float(w["width"]),
                               **({"band": True} if w.get("band") else {})} for w in windows]
        band = [bool(w.get("band")) for w in windows]
        self.window_band.copy_(torch.tensor(band * 3 if len(band) == 1 else band).view(3, 1, 1))
        self.cache_window = {"level": float(cache_window["level"]), "width": float(cache_window["width"])}
        self.window_scale.copy_(torch.tensor(scale, dtype=torch.float32).view(3, 1, 1))
        self.window_offset.copy_(torch.tensor(offset, dtype=torch.float32).view(3, 1, 1))
        return self

    def preprocessor_settings(self) -> dict:
        """What ``prepare`` applies, in the keys ``mean_std`` reads back: pixels scaled to [0, 1],
        then normalised per channel."""
        settings = {"image_mean": self.pixel_mean.flatten().tolist(), "image_std": self.pixel_std.flatten().tolist(),
                    "rescale_factor": 1 / 255, "offset": False, "size": {"height": self.image_size,
                                                                          "width": self.image_size}}
        if self.input_windows is not None:  # read back by ``input_settings``
            settings.update(input_windows=self.input_windows, cache_window=self.cache_window)
        if getattr(self, "pooling", None):  # read back by ``saved_pooling``
            settings["pooling"] = self.pooling
        return settings
