"""Seeded, stratified, patient-level splits shared by every model of a replicate.

Replicate ``r`` draws its split from ``SeedSequence([seed, r])``: ``test`` (default 30% of
the patients, as in the study) is taken per class so both classes keep the cohort's
proportion, then ``val`` is carved from the remaining training patients the same way.
``val`` is what later stages use for early stopping and checkpoint choice; ``test`` is
touched only for the final evaluation. A patient is never in two parts, and the same
inputs give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError

PARTS = ("train", "val", "test")


def _take(rng: np.random.Generator, patients: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    shuffled = rng.permutation(patients)
    k = int(round(len(shuffled) * fraction))
    return np.sort(shuffled[:k]), np.sort(shuffled[k:])


def cohort_fingerprint(cohort: pd.DataFrame) -> str:
    """sha256 of the (patient, label) pairs: a split is only valid for this cohort."""
    cohort = cohort.sort_values("patient")
    text = "\n".join(f"{int(p)},{int(l)}" for p, l in zip(cohort.patient, cohort.label))
    return hashlib.sha256(text.encode()).hexdigest()


def patient_split(
    cohort: pd.DataFrame, replicate: int, seed: int = 0, test_fraction: float = 0.3, val_fraction: float = 0.2
) -> dict:
    """Split the cohort's patients into train/val/test, stratified by patient label."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"splits.test_fraction: must be between 0 and 1, got {test_fraction}")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"splits.val_fraction: must be between 0 and 1, got {val_fraction}")
    # Row order must not matter: the same patients give the same split.
    cohort = cohort.sort_values("patient", ignore_index=True)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(replicate)]))
    parts: dict[str, list[int]] = {p: [] for p in PARTS}
    for label in (0, 1):
        # A writable copy: Generator.permutation fails on pandas 3's read-only views.
        patients = np.array(cohort.loc[cohort.label == label, "patient"], dtype=int)
        test, rest = _take(rng, patients, test_fraction)
        val, train = _take(rng, rest, val_fraction)
        for name, members in zip(PARTS, (train, val, test)):
            if len(members) == 0:
                what = "without" if label == 0 else "with"
                raise ConfigError(
                    f"splits: the {name} part gets no patient {what} hemorrhage ({len(patients)} in the cohort); "
                    f"use more patients or change splits.test_fraction / splits.val_fraction"
                )
            parts[name].extend(int(p) for p in members)
    labels = dict(zip(cohort.patient.astype(int), cohort.label.astype(int)))
    return {
        "replicate": int(replicate),
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "val_fraction": float(val_fraction),
        "cohort_sha256": cohort_fingerprint(cohort),
        **{name: sorted(members) for name, members in parts.items()},
        "counts": {
            name: {"patients": len(members), "positive": int(sum(labels[p] for p in members))}
            for name, members in parts.items()
        },
    }


def read_split(path: str | Path, cohort: pd.DataFrame | None = None) -> dict:
    """Load a split file and check its invariants (and, given the cohort, that it matches)."""
    path = Path(path)
    try:
        split = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable split file ({exc}); rerun the split rule") from None
    missing = [p for p in PARTS if p not in split]
    if missing:
        raise DataError(f"{path}: missing part(s) {', '.join(missing)}")
    seen: dict[int, str] = {}
    for part in PARTS:
        for p in split[part]:
            if p in seen:
                raise DataError(f"{path}: patient {p} is in both {seen[p]} and {part}")
            seen[p] = part
    if cohort is not None and split.get("cohort_sha256") != cohort_fingerprint(cohort):
        raise DataError(f"{path}: made for a different cohort; rerun the split rule")
    return split
