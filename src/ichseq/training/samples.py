"""Training samples of a model: what it reads at once, and the cache rows of its frames.

A *sample* is what the model reads at once, by the model's kind (``ichseq.models.KINDS``):

* ``sequence`` (ViViT): one scan's ``num_frames`` selected slices, labelled with the patient's label;
* ``slice`` (ConvNeXt): one slice, labelled with that slice's label (every slice, or
  ``num_frames`` per scan chosen by the frames policy when the model entry sets it);
* ``scan`` (cnn_rnn): every slice of one scan in order, padded to the cohort's longest scan
  (padding is BLANK, and a batch's frame mask says which frames are slices), labelled with the
  patient's label;
* ``context`` (slice_context): one slice with ``context`` neighbours on each side (BLANK beyond
  the scan's ends), labelled with that slice's label.

:class:`Samples` holds, for every sample, the cache rows of its frames, so pixels are fetched
from the memory-mapped slice cache only when a batch needs them. Kinds ``scan`` and
``context`` are read by two-stage models, which may instead take the frames' features from a
slice model's feature store (``Samples.batch``'s ``feature_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..config import section_defaults
from ..data.cache import SliceCache
from ..data.frames import BLANK, select_frames
from ..errors import DataError
from ..models.base import Batch, CTClassifier
from .settings import TrainSettings

_FRAMES = section_defaults("frames")  # the defaults of the config's frames section
#: Kinds whose sample is one slice (patient scores come from the voting rule); the others'
#: sample is one scan (its score is the patient's).
SLICE_LEVEL = ("slice", "context")


@dataclass
class Samples:
    """Parallel arrays, one entry per sample (see the module docstring)."""

    kind: str  # one of ichseq.models.KINDS
    patient: np.ndarray  # int64 (N,)
    slice: np.ndarray  # int64 (N,): the slice number (slice-level samples), -1 for a scan's
    label: np.ndarray  # int64 (N,)
    rows: np.ndarray  # int64 (N, T): cache rows of the frames, BLANK (-1) for a blank frame

    def __len__(self) -> int:
        return len(self.label)

    def select(self, patients) -> np.ndarray:
        """Indices of the samples that belong to ``patients``."""
        return np.flatnonzero(np.isin(self.patient, np.asarray(list(patients), dtype=np.int64)))

    def pixels(self, cache: SliceCache, index: np.ndarray, rows: np.ndarray | None = None) -> torch.Tensor:
        """uint8 pixels of samples ``index``: (B, T, H, W) for clips, (B, H, W) for slices
        (``rows``: other cache rows of those samples' frames, e.g. random clips)."""
        rows = self.rows[np.asarray(index)] if rows is None else rows
        size = cache.slices.shape[1:]
        out = np.zeros((*rows.shape, *size), dtype=np.uint8)
        real = rows != BLANK
        out[real] = cache.slices[rows[real]]
        if self.kind == "slice":
            out = out[:, 0]
        return torch.from_numpy(out)

    def masks(self, cache: SliceCache, index: np.ndarray, rows: np.ndarray | None = None) -> torch.Tensor:
        """uint8 0/1 hemorrhage masks of samples ``index``, shaped as ``pixels`` (a blank frame
        and a slice without a mask: all 0)."""
        rows = self.rows[np.asarray(index)] if rows is None else rows
        out = np.zeros((*rows.shape, *cache.masks.shape[1:]), dtype=np.uint8)
        real = rows != BLANK
        out[real] = cache.masks[rows[real]]
        return torch.from_numpy(out[:, 0] if self.kind == "slice" else out)

    def positions(self, cache: SliceCache, index: np.ndarray, rows: np.ndarray | None = None) -> torch.Tensor:
        """float32 slice positions in mm of samples ``index``: (B,) for slices, (B, T) for clips,
        NaN for a blank frame."""
        rows = self.rows[np.asarray(index)] if rows is None else rows
        position = cache.manifest.position_mm.to_numpy(np.float32)
        out = np.where(rows == BLANK, np.float32("nan"), position[np.maximum(rows, 0)])
        return torch.from_numpy(out[:, 0] if self.kind == "slice" else out)

    def batch(self, model: CTClassifier, cache: SliceCache, index: np.ndarray,
              features: torch.Tensor | None = None, augment: "TrainSettings | None" = None,
              generator: torch.Generator | None = None, feature_rows: np.ndarray | None = None) -> Batch:
        """The :class:`~ichseq.models.base.Batch` of samples ``index`` for ``model``: its cached
        backbone ``features`` when given, else its prepared pixels; masks and positions when the
        model needs them; for kinds ``scan`` and ``context`` the frame mask.

        ``features`` rows are these samples, unless ``feature_rows`` is given: then they are a
        slice model's stored features, and ``feature_rows[cache row]`` is the stored row of a
        slice (-1: not stored), so each frame gets its slice's features: (B, T, D).

        ``augment`` (training settings; with ``generator``, which every random draw comes from)
        makes it a training batch: with ``random_clips`` each clip is a new random one of its
        scan, labelled by its own slices; then ``augment_flip`` / ``augment_shift`` move every
        sample's pixels and mask alike."""
        device = model.device
        index = np.asarray(index)
        rows, labels = self.rows[index], self.label[index]
        if self.kind == "scan":  # a scan's slices come first: drop the batch's all-padding tail
            rows = rows[:, : max(1, int((rows != BLANK).sum(axis=1).max()))]
        if augment is not None and augment.random_clips and self.kind == "sequence":
            rows = np.stack([random_clip(cache.patient_rows(p), rows.shape[1], generator) for p in self.patient[index]])
            # A random clip of a positive scan may miss its bleed: then it shows none.
            labels = cache.manifest.label.to_numpy(np.int64)[rows].max(axis=1)
        labels = torch.as_tensor(labels, device=device)
        if features is not None and feature_rows is not None:
            stored = np.where(rows == BLANK, 0, feature_rows[np.maximum(rows, 0)])
            if ((stored < 0) & (rows != BLANK)).any():
                raise DataError("the feature store lacks slices these samples need (a backbone entry limited to "
                                "num_frames slices per scan?); rerun its features rule with every slice")
            gathered = features[torch.as_tensor(stored, device=features.device)]
            batch = Batch(labels, features=gathered * torch.as_tensor(rows != BLANK, device=features.device)[..., None])
            pixels = masks = None
        elif features is not None:
            batch = Batch(labels, features=features[torch.as_tensor(index, device=features.device)])
            pixels = masks = None
        else:
            pixels = self.pixels(cache, index, rows)
            masks = self.masks(cache, index, rows) if "masks" in model.needs else None
            if augment is not None and (augment.augment_flip or augment.augment_shift):
                pixels, masks = flip_shift(pixels, masks, augment.augment_flip, augment.augment_shift, generator)
            batch = Batch(labels, pixels=model.prepare(pixels))
        if "masks" in model.needs:
            batch.masks = model.prepare_masks(masks if masks is not None else self.masks(cache, index, rows))
        if "positions" in model.needs:
            batch.positions = self.positions(cache, index, rows).to(device)
        if self.kind in ("scan", "context"):
            batch.frame_mask = torch.as_tensor(rows != BLANK, device=device)
        return batch

    def table(self, cache: SliceCache) -> pd.DataFrame:
        """One row per sample: patient, slice, label and the slice numbers of its frames."""
        slice_numbers = cache.manifest.slice.to_numpy()
        frames = [" ".join("blank" if r == BLANK else str(int(slice_numbers[r])) for r in rows) for rows in self.rows]
        return pd.DataFrame(
            {"patient": self.patient, "slice": self.slice, "label": self.label, "frames": frames}
        )


def random_clip(patient_rows: np.ndarray, num_frames: int, generator: torch.Generator) -> np.ndarray:
    """``num_frames`` of a scan's cache rows in scan order, drawn at random: distinct slices when
    the scan has enough (spread like the uniform policy's on average, jittered), else every slice
    with random ones repeated."""
    n = len(patient_rows)
    if n >= num_frames:
        chosen = torch.randperm(n, generator=generator)[:num_frames].numpy()
    else:
        chosen = np.concatenate([np.arange(n), torch.randint(0, n, (num_frames - n,), generator=generator).numpy()])
    return patient_rows[np.sort(chosen)]


def flip_shift(pixels: torch.Tensor, masks: torch.Tensor | None, flip: bool, shift: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each sample (first axis) of ``pixels`` (uint8, (B, [T,] H, W)), and its mask alike,
    flipped left-right with probability 1/2 (``flip``) and rolled by up to ``shift`` pixels along
    each axis. A roll wraps round, which is harmless: a CT slice's border is air."""
    pixels = pixels.clone()
    masks = masks.clone() if masks is not None else None
    for i in range(len(pixels)):
        flipped = flip and bool(torch.rand((), generator=generator) < 0.5)
        dy, dx = torch.randint(-shift, shift + 1, (2,), generator=generator).tolist() if shift else (0, 0)
        for tensor in (pixels, masks):
            if tensor is None:
                continue
            if flipped:
                tensor[i] = tensor[i].flip(-1)
            if dy or dx:
                tensor[i] = tensor[i].roll((dy, dx), dims=(-2, -1))
    return pixels, masks


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


def build_samples(cache: SliceCache, kind: str, num_frames: int | None = None, policy: str = _FRAMES["policy"],
                  padding: str = _FRAMES["padding"], context: int = 0) -> Samples:
    """Every sample of the cohort in ``cache`` for a model of ``kind``.

    For a slice model ``num_frames`` (None: all) limits each scan to that many slices, chosen by
    ``policy``; ``padding`` does not apply (a missing slice is not a sample). ``context``: the
    neighbours on each side of a ``context`` sample's slice.
    """
    if kind in ("scan", "context"):
        return _scan_samples(cache, kind, context)
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


def _scan_samples(cache: SliceCache, kind: str, context: int) -> Samples:
    """Samples of kind ``scan`` (every slice of a scan, BLANK-padded to the longest scan) or
    ``context`` (each slice with ``context`` neighbours on each side, BLANK beyond the scan)."""
    patients, slices, labels, rows = [], [], [], []
    slice_numbers = cache.manifest.slice.to_numpy(np.int64)
    slice_labels = cache.manifest.label.to_numpy(np.int64)
    longest = max((len(cache.patient_rows(p)) for p in cache.patients), default=1)
    for patient in cache.patients:
        scan = cache.patient_rows(patient)  # in scan order
        if kind == "scan":
            patients.append(patient)
            slices.append(-1)
            labels.append(int(slice_labels[scan].max()))
            rows.append(np.concatenate([scan, np.full(longest - len(scan), BLANK, np.int64)]))
            continue
        padded = np.concatenate([np.full(context, BLANK, np.int64), scan, np.full(context, BLANK, np.int64)])
        for i, row in enumerate(scan):
            patients.append(patient)
            slices.append(int(slice_numbers[row]))
            labels.append(int(slice_labels[row]))
            rows.append(padded[i : i + 2 * context + 1])
    width = longest if kind == "scan" else 2 * context + 1
    return Samples(kind, np.array(patients, np.int64), np.array(slices, np.int64), np.array(labels, np.int64),
                   np.array(rows, np.int64).reshape(len(patients), width))
