"""Training samples of a model: what it reads at once, and the cache rows of its frames.

A *sample* is what the model reads at once: for a sequence model (ViViT) one scan's
``num_frames`` selected slices, labelled with the patient's label; for a slice model
(ConvNeXt) one slice, labelled with that slice's label (every slice, or ``num_frames`` per
scan chosen by the frames policy when the model entry sets it). :class:`Samples` holds, for every
sample, the cache rows of its frames, so pixels are fetched from the memory-mapped slice
cache only when a batch needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..data.cache import SliceCache
from ..data.frames import BLANK, select_frames


@dataclass
class Samples:
    """Parallel arrays, one entry per sample (see the module docstring)."""

    kind: str  # "sequence" or "slice"
    patient: np.ndarray  # int64 (N,)
    slice: np.ndarray  # int64 (N,): the slice number (slice samples), -1 for a scan clip
    label: np.ndarray  # int64 (N,)
    rows: np.ndarray  # int64 (N, T): cache rows of the frames, BLANK (-1) for a blank frame

    def __len__(self) -> int:
        return len(self.label)

    def select(self, patients) -> np.ndarray:
        """Indices of the samples that belong to ``patients``."""
        return np.flatnonzero(np.isin(self.patient, np.asarray(list(patients), dtype=np.int64)))

    def pixels(self, cache: SliceCache, index: np.ndarray) -> torch.Tensor:
        """uint8 pixels of samples ``index``: (B, T, H, W) for clips, (B, H, W) for slices."""
        rows = self.rows[np.asarray(index)]
        size = cache.slices.shape[1:]
        out = np.zeros((*rows.shape, *size), dtype=np.uint8)
        real = rows != BLANK
        out[real] = cache.slices[rows[real]]
        if self.kind == "slice":
            out = out[:, 0]
        return torch.from_numpy(out)

    def table(self, cache: SliceCache) -> pd.DataFrame:
        """One row per sample: patient, slice, label and the slice numbers of its frames."""
        slice_numbers = cache.manifest.slice.to_numpy()
        frames = [" ".join("blank" if r == BLANK else str(int(slice_numbers[r])) for r in rows) for rows in self.rows]
        return pd.DataFrame(
            {"patient": self.patient, "slice": self.slice, "label": self.label, "frames": frames}
        )


def _slice_rows(cache: SliceCache, num_frames: int, policy: str) -> np.ndarray:
    """Cache rows of the slices a slice model takes when limited to ``num_frames`` per scan:
    ``min(num_frames, n_slices)`` distinct slices of each scan, chosen by ``policy`` (``first``:
    the first ones by position)."""
    taken = []
    for patient in cache.patients:
        patient_rows = cache.patient_rows(patient)
        n = min(num_frames, len(patient_rows))
        # A slice is one sample: never repeat or pad one, so a short scan gives all its slices.
        taken.append(patient_rows[select_frames(len(patient_rows), n, policy)])
    return np.concatenate(taken) if taken else np.empty(0, np.int64)


def build_samples(cache: SliceCache, kind: str, num_frames: int | None = None, policy: str = "uniform",
                  padding: str = "edge") -> Samples:
    """Every sample of the cohort in ``cache`` for a model of ``kind``.

    For a slice model ``num_frames`` (None: all) limits each scan to that many slices, chosen by
    ``policy``; ``padding`` does not apply (a missing slice is not a sample).
    """
    if kind == "slice":
        m = cache.manifest
        if num_frames:
            m = m[m.row.isin(_slice_rows(cache, num_frames, policy))]
        return Samples(
            kind, m.patient.to_numpy(np.int64), m.slice.to_numpy(np.int64), m.label.to_numpy(np.int64),
            m.row.to_numpy(np.int64)[:, None],
        )
    if kind != "sequence":
        raise ValueError(f"unknown sample kind {kind!r}")
    if not num_frames:
        raise ValueError("a sequence model needs num_frames")
    patients, labels, rows = [], [], []
    for patient in cache.patients:
        patient_rows = cache.patient_rows(patient)
        index = select_frames(len(patient_rows), num_frames, policy, padding)
        rows.append(np.where(index == BLANK, BLANK, patient_rows[np.maximum(index, 0)]))
        patients.append(patient)
        # The scan's label, even when the selected frames miss the bleed (possible with the
        # study's "first" policy): that label noise is part of what the policy costs.
        labels.append(int(cache.patient_labels(patient).max()))
    n = len(patients)
    return Samples(
        kind, np.array(patients, np.int64), np.full(n, -1, np.int64), np.array(labels, np.int64),
        np.array(rows, np.int64).reshape(n, num_frames),
    )
