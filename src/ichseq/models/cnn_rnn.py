"""cnn_rnn: a recurrent network over a whole scan's slice features (one sample = one scan).

The design of RADnet (Grewal et al. 2018), ViPTT-Net and the strongest RSNA-2019 solutions: a
2D CNN encodes every slice, a bidirectional GRU or LSTM reads the slice features in scan order,
and attention (or a max) over the slices pools them to the scan's score. Here the CNN is a
slice model of the config (``backbone``, ConvNeXt by default); two-stage by default, so the
recurrent head trains on that model's cached slice features (see
:mod:`ichseq.models.slice_features`). A scan of any length is one sample: shorter scans are
padded and the frame mask keeps padding out of the recurrence and the pooling.

Demo size (workflow/presets/zoo.yaml): over the demo convnext (64-d features), a GRU of 64 per
direction, 50 k parameters in the head. Full size: the same entry over paper.yaml's convnext
(``facebook/convnext-tiny-224``, 768-d features), a 0.32 M-parameter head on 27.8 M::

    cnn_rnn: {backbone: convnext, head: {rnn: gru, hidden_size: 64, pooling: attention}}

Tiny (tests): ``head: {hidden_size: 8}`` over a 2-stage, 16-wide convnext.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import register
from .slice_features import SliceFeatureClassifier, choice, masked_max, positive_int, probability

RNNS = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
POOLINGS = ("attention", "max")


class RecurrentHead(torch.nn.Module):
    """LayerNorm -> dropout -> bidirectional GRU/LSTM -> attention or max over the real slices
    -> linear to 2 logits."""

    def __init__(self, feature_dim: int, rnn: str, hidden_size: int, layers: int, pooling: str, dropout: float):
        super().__init__()
        self.norm = torch.nn.LayerNorm(feature_dim)
        self.dropout = torch.nn.Dropout(dropout)
        self.rnn = RNNS[rnn](feature_dim, hidden_size, num_layers=layers, batch_first=True, bidirectional=True,
                             dropout=dropout if layers > 1 else 0.0)
        self.pooling = pooling
        # Attention pooling: one learned score per slice, a softmax over the scan's real slices.
        self.score = torch.nn.Linear(2 * hidden_size, 1) if pooling == "attention" else None
        self.out = torch.nn.Linear(2 * hidden_size, 2)

    def forward(self, features: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        lengths = frame_mask.sum(dim=1)
        if not bool((frame_mask == (torch.arange(frame_mask.shape[1], device=frame_mask.device) < lengths[:, None])).all()):
            raise ValueError("cnn_rnn: a scan's slices must come first in its frame mask, padding after")
        x = self.dropout(self.norm(features))
        # Packed: the backward direction starts at each scan's own last slice, not at the padding.
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        hidden, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=x.shape[1])
        if self.pooling == "max":
            pooled = masked_max(hidden, frame_mask)
        else:
            scores = self.score(hidden).squeeze(-1).masked_fill(~frame_mask, float("-inf"))
            pooled = (torch.softmax(scores, dim=1)[..., None] * hidden).sum(dim=1)
        return self.out(self.dropout(pooled))


@register("cnn_rnn")
class CnnRnn(SliceFeatureClassifier):
    """Whole scan -> backbone features per slice -> bidirectional RNN -> pooled -> 2 logits."""

    kind = "scan"
    HEAD_DEFAULTS = {"rnn": "gru", "hidden_size": 64, "layers": 1, "pooling": "attention", "dropout": 0.1}

    @classmethod
    def make_head(cls, feature_dim: int, head: dict, name: str) -> torch.nn.Module:
        return RecurrentHead(feature_dim, choice(head, "rnn", tuple(RNNS), name), positive_int(head, "hidden_size", name),
                             positive_int(head, "layers", name), choice(head, "pooling", POOLINGS, name),
                             probability(head, "dropout", name))
