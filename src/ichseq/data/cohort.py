"""Patient-level cohort table derived from the per-slice manifest."""

from __future__ import annotations

import pandas as pd

from .layout import SUBTYPES

COHORT_COLUMNS = ("patient", "label", "n_slices", "n_positive_slices", "subtypes", "fracture")


def cohort_from_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per patient; ``label`` is 1 when any slice shows hemorrhage."""
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
    return pd.DataFrame(rows, columns=list(COHORT_COLUMNS))


def describe_cohort(cohort: pd.DataFrame) -> str:
    """One line with the counts the run log prints."""
    n, pos = len(cohort), int(cohort.label.sum())
    slices, pos_slices = int(cohort.n_slices.sum()), int(cohort.n_positive_slices.sum())
    return (
        f"cohort: {n} patients ({pos} with hemorrhage, {n - pos} without); {slices} slices "
        f"({pos_slices} positive, {100 * pos_slices / max(slices, 1):.1f}%); "
        f"{int(cohort.n_slices.min())}-{int(cohort.n_slices.max())} slices per scan"
    )
