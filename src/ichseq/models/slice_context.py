"""slice_context: each slice classified from its own and its neighbours' features (one sample =
one slice with ``context`` slices on each side).

Adjacent-slice descriptors, as in the RSNA-2019 solutions that stacked the neighbouring slices'
CNN embeddings: a bleed seen faintly on one slice is clearer with the slices above and below
it, and a one-slice mimic is not repeated on its neighbours. The head is a 1D convolution
along the slice axis whose kernel spans the whole window (or a small self-attention over it),
read at the centre slice; beyond the scan's ends the frame mask marks the missing neighbours
(their features are 0, and the mask is an input channel). The patient's score is the highest
slice score (``aggregation.rule``, as for every slice model). Two-stage by default: the head
trains on the backbone model's cached slice features (see :mod:`ichseq.models.slice_features`).

Demo size (workflow/presets/zoo.yaml): 2 neighbours each side, 64 filters, 21 k parameters in
the head over the demo convnext. Full size: the same entry over paper.yaml's convnext
(``facebook/convnext-tiny-224``), a 0.25 M-parameter head on 27.8 M::

    slice_context: {backbone: convnext, head: {context: 2, layer: conv, hidden_size: 64}}

Tiny (tests): ``head: {hidden_size: 8, context: 1}``.
"""

from __future__ import annotations

import torch

from . import register
from .slice_features import SliceFeatureClassifier, choice, positive_int, probability

HEADS = ("conv", "attention")


class ContextHead(torch.nn.Module):
    """(B, 2k+1, D) features and their mask -> 2 logits of the centre slice."""

    def __init__(self, feature_dim: int, window: int, kind: str, hidden_size: int, dropout: float):
        super().__init__()
        self.norm = torch.nn.LayerNorm(feature_dim)
        self.dropout = torch.nn.Dropout(dropout)
        self.kind = kind
        self.window = window
        if kind == "conv":
            # One kernel over the whole window (the mask as an extra channel): the centre
            # slice's output sees exactly its k neighbours on each side.
            self.conv = torch.nn.Conv1d(feature_dim + 1, hidden_size, kernel_size=window)
        else:
            self.project = torch.nn.Linear(feature_dim, hidden_size)
            self.position = torch.nn.Embedding(window, hidden_size)
            self.attention = torch.nn.TransformerEncoderLayer(hidden_size, nhead=4 if hidden_size % 4 == 0 else 1,
                                                              dim_feedforward=2 * hidden_size, dropout=dropout,
                                                              batch_first=True)
        self.out = torch.nn.Linear(hidden_size, 2)

    def forward(self, features: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        if features.shape[1] != self.window:
            raise ValueError(f"slice_context: expected windows of {self.window} slices, got {features.shape[1]}")
        x = self.dropout(self.norm(features)) * frame_mask[..., None]
        if self.kind == "conv":
            x = torch.cat([x, frame_mask[..., None].to(x.dtype)], dim=-1)
            hidden = torch.nn.functional.gelu(self.conv(x.transpose(1, 2)).squeeze(-1))
        else:
            tokens = self.project(x) + self.position.weight
            hidden = self.attention(tokens, src_key_padding_mask=~frame_mask)[:, self.window // 2]
        return self.out(self.dropout(hidden))


@register("slice_context")
class SliceContext(SliceFeatureClassifier):
    """A slice and its ``context`` neighbours on each side -> backbone features -> context head."""

    kind = "context"
    HEAD_DEFAULTS = {"context": 2, "layer": "conv", "hidden_size": 64, "dropout": 0.1}

    def __init__(self, backbone, head, settings, name):
        super().__init__(backbone, head, settings, name)
        # Neighbours on each side of a sample's slice; the data loader reads it.
        self.context = int(settings["context"])

    @classmethod
    def make_head(cls, feature_dim: int, head: dict, name: str) -> torch.nn.Module:
        context = positive_int(head, "context", name, minimum=0)
        return ContextHead(feature_dim, 2 * context + 1, choice(head, "layer", HEADS, name),
                           positive_int(head, "hidden_size", name), probability(head, "dropout", name))
