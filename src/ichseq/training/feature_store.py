"""A model's frozen-backbone features, computed once: the *feature store*.

In ``head`` training mode the backbone is frozen and deterministic (eval mode, no
augmentation), so a sample's features (see :mod:`ichseq.training.samples`) do not depend on
the replicate: they are computed once per model for every patient (:func:`extract_features`),
written as a *feature store* (one folder: ``features.npy``, ``samples.csv``,
``features.json``) and every replicate's head is trained on them. That is exact, not an
approximation: see the cache-equivalence test.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_dir
from ..data.cache import SliceCache
from ..errors import DataError
from .loop import autocast
from .samples import Samples

FEATURES_FILE = "features.npy"
SAMPLES_FILE = "samples.csv"
META_FILE = "features.json"


@torch.no_grad()
def extract_features(model, cache: SliceCache, samples: Samples, batch_size: int, device: torch.device,
                     log=print, pool: bool = False) -> np.ndarray:
    """float32 (N, D) backbone features of every sample, the model in eval mode. ``pool``: a
    model whose features keep a frame axis ((N, T, D): a two-stage model trained whole) has them
    averaged over it (the out-of-distribution reference's one vector per sample)."""
    model.eval().to(device)
    out = None
    t0 = time.perf_counter()
    next_report = 0.1
    for start in range(0, len(samples), batch_size):
        index = np.arange(start, min(start + batch_size, len(samples)))
        with autocast(device):
            feats = model.features(model.prepare(samples.pixels(cache, index)))
        feats = feats.float().cpu().numpy()
        if pool and feats.ndim > 2:
            feats = feats.reshape(len(feats), -1, feats.shape[-1]).mean(axis=1)
        if out is None:
            out = np.empty((len(samples), feats.shape[1]), dtype=np.float32)
        out[index] = feats
        done = index[-1] + 1
        if done / len(samples) >= next_report or done == len(samples):
            elapsed = time.perf_counter() - t0
            log(f"features {done}/{len(samples)} samples, {done / elapsed:.1f} samples/s, "
                f"elapsed {elapsed:.0f} s, remaining ~{elapsed * (len(samples) - done) / done:.0f} s")
            next_report += 0.1
    return out


def write_feature_store(out: str | Path, features: np.ndarray, samples: Samples, meta: dict) -> None:
    """Write the store folder ``out`` (to a temporary sibling first, renamed when complete)."""
    with atomic_dir(out) as tmp:
        np.save(tmp / FEATURES_FILE, features.astype(np.float32, copy=False))
        pd.DataFrame({
            "patient": samples.patient, "slice": samples.slice, "label": samples.label,
            "rows": [" ".join(map(str, r)) for r in samples.rows],
        }).to_csv(tmp / SAMPLES_FILE, index=False)
        (tmp / META_FILE).write_text(json.dumps({"kind": samples.kind, **meta}, indent=2) + "\n")


def read_feature_store(path: str | Path) -> tuple[np.ndarray, Samples, dict]:
    """(features, samples, meta) of a store written by :func:`write_feature_store`."""
    path = Path(path)
    try:
        features = np.load(path / FEATURES_FILE)
        table = pd.read_csv(path / SAMPLES_FILE)
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a complete feature store ({exc}); rerun the features rule") from None
    if len(table) != len(features):
        raise DataError(f"{path}: {SAMPLES_FILE} has {len(table)} rows but {FEATURES_FILE} {len(features)}")
    rows = np.array([[int(v) for v in str(r).split()] for r in table.rows], dtype=np.int64)
    samples = Samples(
        meta["kind"], table.patient.to_numpy(np.int64), table.slice.to_numpy(np.int64),
        table.label.to_numpy(np.int64), rows.reshape(len(table), -1),
    )
    return features, samples, meta
