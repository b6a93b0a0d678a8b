"""Seeded, patient-level splits shared by every model of a replicate.

Replicate ``r`` draws its split from ``SeedSequence([seed, r])``: ``test`` (default 30% of
the patients, as in the study) is taken per class so both classes keep the cohort's
proportion, then ``val`` is carved from the remaining training patients the same way.
With ``stratify=False`` (the study's plain random split) both draws ignore the labels; a
part that then gets no patient of one class is refused, as it is when stratified.
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

from ..errors import ConfigError, DataError

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
    cohort: pd.DataFrame,
    replicate: int,
    seed: int = 0,
    test_fraction: float = 0.3,
    val_fraction: float = 0.2,
    stratify: bool = True,
) -> dict:
    """Split the cohort's patients into train/val/test, stratified by patient label unless
    ``stratify`` is false (then a plain random draw of patients, as the study did). With a
    ``patient_id`` column (a cohort of scans: RSNA 2019) persons are drawn, never split."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"splits.test_fraction: must be between 0 and 1, got {test_fraction}")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"splits.val_fraction: must be between 0 and 1, got {val_fraction}")
    # Row order must not matter: the same patients give the same split.
    cohort = cohort.sort_values("patient", ignore_index=True)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(replicate)]))
    parts: dict[str, list[int]] = {p: [] for p in PARTS}
    # A cohort whose patients are scans (RSNA 2019) names each scan's person (patient_id): the
    # draws are of persons, so one person's scans all land in one part. Each person is drawn
    # under its first scan's number and, when stratified, in the class of any of its scans; a
    # cohort of one scan per person gives the same split as without the column.
    grouped = "patient_id" in cohort.columns
    person = cohort.patient_id.astype(str) if grouped else cohort.patient.astype(str)
    first = cohort.groupby(person, sort=False).patient.transform("min").astype(int)
    person_label = cohort.groupby(person, sort=False).label.transform("max").astype(int)
    members_of = cohort.groupby(first).patient.apply(lambda s: sorted(int(p) for p in s)).to_dict()
    # Stratified: one draw per class; unstratified: one draw over all patients.
    groups = (0, 1) if stratify else (None,)
    for label in groups:
        selected = first if label is None else first[person_label == label]
        # A writable copy: Generator.permutation fails on pandas 3's read-only views.
        patients = np.array(sorted(set(selected)), dtype=int)
        test, rest = _take(rng, patients, test_fraction)
        val, train = _take(rng, rest, val_fraction)
        for name, members in zip(PARTS, (train, val, test)):
            parts[name].extend(p for m in members for p in members_of[int(m)])
    labels = dict(zip(cohort.patient.astype(int), cohort.label.astype(int)))
    _check_both_classes(parts, labels, cohort, replicate, stratify)
    split = {
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
    if grouped:
        # Recorded only for a cohort of scans, so the other split files stay as they were.
        split["grouped_by"] = "patient_id"
        split["persons"] = int(person.nunique())
    if not stratify:
        # Recorded only when unstratified, so the default config's split files stay as they were.
        split["stratify"] = False
    return split


def _check_both_classes(parts: dict[str, list[int]], labels: dict[int, int], cohort: pd.DataFrame, replicate: int,
                        stratify: bool) -> None:
    """Refuse, in one line, a split with a part that has no patient of one class (``labels``:
    patient -> 0/1)."""
    for label in (0, 1):
        for name in PARTS:
            if any(labels[p] == label for p in parts[name]):
                continue
            what = "without" if label == 0 else "with"
            n_class = int((cohort.label == label).sum())
            if stratify:
                raise ConfigError(
                    f"splits: the {name} part gets no patient {what} hemorrhage ({n_class} in the cohort); "
                    f"use more patients or change splits.test_fraction / splits.val_fraction"
                )
            raise ConfigError(
                f"splits: replicate {replicate}: the unstratified {name} part drew no patient {what} hemorrhage "
                f"({len(parts[name])} patients; {n_class} in the cohort); set splits.stratify: true, or change "
                f"splits.seed / splits.test_fraction / splits.val_fraction"
            )


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
