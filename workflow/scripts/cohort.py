"""Rule cohort: one row per patient from the slice manifest; logs the cohort counts."""

from pathlib import Path

import pandas as pd

from ichseq.atomic import write_csv_atomic
from ichseq.data.cohort import cohort_from_manifest, describe_cohort, read_patient_ids
from ichseq.runlog import run_step


def main(log):
    cache = Path(snakemake.input[0])
    # RSNA 2019: a cached patient is a scan; patient_id (its PatientID) keeps a person's scans in one split part.
    cohort = cohort_from_manifest(pd.read_csv(cache / "manifest.csv"), read_patient_ids(cache))
    write_csv_atomic(cohort, snakemake.output[0])
    log(describe_cohort(cohort))
    if "patient_id" in cohort:
        log(f"{cohort.patient_id.nunique()} persons (PatientID) among the {len(cohort)} scans: the splits keep "
            f"each person's scans in one part")


run_step(snakemake.log[0], main, name="cohort")
