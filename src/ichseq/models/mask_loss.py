"""Auxiliary mask supervision (``training.mask_loss_weight``), a part of
:class:`~ichseq.models.base.CTClassifier`: a small head predicts hemorrhage from an early
feature map and its loss against the dataset's masks joins the classification loss, so the
early layers learn where blood is, not only whether a slice holds some. A model opts in by
overriding ``use_mask_loss``; the head serves training only and is never saved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ModelError


class MaskSupervision(torch.nn.Module):
    """The mask-loss half of the model contract (expects ``entry``, ``device`` and
    ``aux_mask_head`` on the model)."""

    mask_loss_weight: float = 0.0
    #: A cell of the mask logits counts as positive when any of its pixels is; bleed cells are
    #: a few percent of a slice, so they weigh this much more than the others.
    MASK_POS_WEIGHT = 10.0

    def use_mask_loss(self, weight: float, seed: int) -> "MaskSupervision":
        """Train with the auxiliary mask loss of ``weight`` (full mode): the hemorrhage masks
        as dense extra supervision, so the early layers learn where blood is, not only whether
        a slice holds some. A model supports it by overriding this (build ``aux_mask_head`` from
        ``seed``, call ``enable_mask_loss``) and returning ``(logits, mask_logits)`` from a
        training ``forward_batch``; ``mask_loss`` then compares the logits' grid with the masks."""
        raise ModelError(f"models.{self.entry}: {type(self).__name__} has no auxiliary mask loss; "
                         f"set training.mask_loss_weight (or pretrain.training.mask_loss_weight) to 0")

    def enable_mask_loss(self, head: torch.nn.Module, weight: float, seed: int) -> "MaskSupervision":
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in head.parameters():
                if p.ndim > 1:
                    p.copy_(torch.empty(p.shape).normal_(0.0, 0.02, generator=generator))
                else:
                    p.zero_()
        self.aux_mask_head = head.to(self.device)
        self.mask_loss_weight = float(weight)
        self.needs = self.needs | {"masks"}  # the data loader then fetches masks for it
        return self

    def mask_loss(self, mask_logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of per-cell ``mask_logits`` against ``mask_targets``."""
        return F.binary_cross_entropy_with_logits(
            mask_logits, self.mask_targets(masks, mask_logits.shape),
            pos_weight=torch.tensor(self.MASK_POS_WEIGHT, device=mask_logits.device))

    def mask_targets(self, masks: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The 0/1 target of each cell of mask logits of ``shape`` (B, [T,] h, w): the masks
        (B, [T,] S, S) max-pooled to that grid, frame by frame (a model whose cells span several
        frames overrides this)."""
        target = F.adaptive_max_pool2d(masks.reshape(-1, 1, *masks.shape[-2:]).float(), shape[-2:])
        return target.reshape(shape)
