"""Rule cohort: one row per patient from the slice manifest; logs the cohort counts."""

from pathlib import Path

import pandas as pd

from ichseq.atomic import write_csv_atomic
from ichseq.data.cohort import cohort_from_manifest, describe_cohort
from ichseq.runlog import run_step


def main(log):
    cohort = cohort_from_manifest(pd.read_csv(Path(snakemake.input[0]) / "manifest.csv"))
    write_csv_atomic(cohort, snakemake.output[0])
    log(describe_cohort(cohort))


run_step(snakemake.log[0], main, name="cohort")
