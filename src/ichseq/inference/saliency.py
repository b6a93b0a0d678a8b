"""Grad-CAM saliency of the positive class (hemorrhage) for the slices a model scores.

Grad-CAM (Selvaraju et al., 2017) weighs each channel of a late convolutional layer by the mean
gradient of the class logit over its grid, sums the weighted channels and keeps the positive
part: where the layer sees evidence *for* hemorrhage. The layer is the model's own choice
(``CTClassifier.saliency_layer``); a model without one (sequence / video and scan-level
models) has no map. The computation is captum's ``LayerGradCam``; this module adapts the model
interface to it (a Batch in, logits out), picks one map per sample (``saliency_rows``: the
centre frame of a ``context`` sample), upsamples it to the requested size and scales each map
to [0, 1].

Gradients are taken with ``torch.autograd.grad`` on the layer's output only, so no parameter
gets a ``.grad`` and no weight changes; they are enabled here even when the caller scores
under ``torch.no_grad`` or ``torch.inference_mode``.
"""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import torch

from ..errors import ModelError
from ..models.base import LABEL2ID, Batch, CTClassifier

#: The logit whose evidence the maps show.
POSITIVE = LABEL2ID["hemorrhage"]


def saliency_maps(model: CTClassifier, batch: Batch, size: int) -> np.ndarray | None:
    """Grad-CAM maps of the positive class, float32 (B, size, size), one per sample of ``batch``
    (prepared pixels, as ``Samples.batch`` gives them), each scaled to [0, 1] by its maximum (a
    map without positive evidence stays all 0); None when the model has no saliency layer."""
    from captum.attr import LayerAttribution, LayerGradCam

    layer = model.saliency_layer()
    if layer is None:
        return None
    if batch.pixels is None:
        raise ModelError(f"models.{model.entry}: saliency needs the batch's pixels, not cached features")
    # Tensors made under inference_mode cannot enter an autograd graph: work on normal copies.
    with torch.inference_mode(False), torch.enable_grad():
        batch = _plain_copy(batch)

        def positive_logits(pixels: torch.Tensor) -> torch.Tensor:
            return model.logits(model.forward_batch(replace(batch, pixels=pixels)))

        # captum sums the target logit over the batch before differentiating; samples do not
        # interact in eval mode, so each sample's layer gradient is that of its own logit.
        cam = LayerGradCam(positive_logits, layer).attribute(batch.pixels, target=POSITIVE, relu_attributions=True)
    if isinstance(cam, tuple):
        cam = cam[0]
    cam = cam.detach()
    if cam.ndim != 4 or cam.shape[1] != 1:
        raise ModelError(f"models.{model.entry}: its saliency layer must give (N, C, h, w) maps, "
                         f"got Grad-CAM of shape {tuple(cam.shape)}")
    rows = model.saliency_rows(batch)
    if rows is not None:
        cam = cam[rows.to(cam.device)]
    if len(cam) != len(batch):
        raise ModelError(f"models.{model.entry}: {len(cam)} saliency maps for {len(batch)} samples; "
                         f"its saliency_rows must pick one row per sample")
    cam = LayerAttribution.interpolate(cam.float(), (int(size), int(size)), interpolate_mode="bilinear")[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    return (cam / peak[:, None, None]).clamp_(0.0, 1.0).cpu().numpy().astype(np.float32)


def _plain_copy(batch: Batch) -> Batch:
    """``batch`` with every tensor cloned outside inference mode and detached (the pixels are
    the input captum differentiates through)."""
    values = {}
    for field in fields(batch):
        value = getattr(batch, field.name)
        values[field.name] = value.detach().clone() if isinstance(value, torch.Tensor) else value
    return Batch(**values)
