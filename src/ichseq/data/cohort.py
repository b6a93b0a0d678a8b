"""Patient-level cohort table derived from the per-slice manifest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import DataError
from .cache_files import SCANS_FILE
from .layout import SUBTYPES

COHORT_COLUMNS = ("patient", "label", "n_slices", "n_positive_slices", "subtypes", "fracture")


def cohort_from_manifest(manifest: pd.DataFrame, patient_ids: dict | None = None) -> pd.DataFrame:
    """One row per patient; ``label`` is 1 when any slice shows hemorrhage. ``patient_ids``
    (``{patient: person}``, :func:`read_patient_ids`): a ``patient_id`` column is added, the
    person each cached scan belongs to, which the splits keep in one part (RSNA 2019: a
    patient of the cache is a scan, and one person may have several)."""
    rows = []
    for patient, g in manifest.groupby("patient", sort=True):
        present = [s for s in SUBTYPES if g[s].any()]
        rows.append(
            {
                "patient": int(patient),
                "label": int(g.label.any()),
                "n_slices": len(g),
                "n_positive_slices": int(g.label.sum()),
                "subtypes": ";".join(present),
                "fracture": int(g.fracture.any()),
            }
        )
    cohort = pd.DataFrame(rows, columns=list(COHORT_COLUMNS))
    if patient_ids is not None:
        missing = [p for p in cohort.patient if p not in patient_ids]
        if missing:
            raise DataError(f"patient ids: no person recorded for patient(s) {', '.join(map(str, missing[:5]))}; "
                            f"rerun the brain_window rule")
        cohort["patient_id"] = [str(patient_ids[p]) for p in cohort.patient]
    return cohort


def read_patient_ids(cache_folder: str | Path) -> dict[int, str] | None:
    """``{patient: person}`` of a cache whose patients are scans (RSNA 2019: its ``scans.csv``'s
    ``patient_id``, the DICOM PatientID), or None for a cache without such a table."""
    path = Path(cache_folder) / SCANS_FILE
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"patient_id": str}, keep_default_na=False)
    if not {"patient", "patient_id"} <= set(table.columns):
        raise DataError(f"{path}: no patient and patient_id columns; rerun the brain_window rule")
    return dict(zip(table.patient.astype(int), table.patient_id))


def describe_cohort(cohort: pd.DataFrame) -> str:
    """One line with the counts the run log prints."""
    n, pos = len(cohort), int(cohort.label.sum())
    slices, pos_slices = int(cohort.n_slices.sum()), int(cohort.n_positive_slices.sum())
    return (
        f"cohort: {n} patients ({pos} with hemorrhage, {n - pos} without); {slices} slices "
        f"({pos_slices} positive, {100 * pos_slices / max(slices, 1):.1f}%); "
        f"{int(cohort.n_slices.min())}-{int(cohort.n_slices.max())} slices per scan"
    )
