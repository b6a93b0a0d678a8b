"""Rule split: the patient-level split of one replicate, shared by all models."""

import pandas as pd

from ichseq.atomic import write_json_atomic
from ichseq.data.splits import patient_split
from ichseq.runlog import run_step


def main(log):
    p = snakemake.params
    split = patient_split(
        pd.read_csv(snakemake.input[0]),
        int(snakemake.wildcards.rep),
        p.seed,
        p.test_fraction,
        p.val_fraction,
        stratify=p.stratify,
    )
    write_json_atomic(snakemake.output[0], split)
    log(f"replicate {split['replicate']}: " + ", ".join(f"{k} {v['patients']} ({v['positive']} positive)" for k, v in split["counts"].items()))


run_step(snakemake.log[0], main, name=f"split rep-{snakemake.wildcards.rep}")
