"""Rule predict_scan: one model's trained replicates on one new scan -> the rule's declared outputs."""

from pathlib import Path

import torch

from ichseq.inference.predict import load_runs, predict_scan, read_scan
from ichseq.runlog import run_step


def predict(log):
    torch.set_num_threads(snakemake.threads)
    runs = load_runs([str(Path(m).parent) for m in snakemake.input.runs], log=log)
    volume, reformatted = read_scan(runs, snakemake.input.scan, series=snakemake.params.series,
                                    reformat=snakemake.params.reformat, log=log)
    return predict_scan(runs, volume, snakemake.output, log=log, allow_partial=snakemake.params.allow_partial,
                        reformat=reformatted)


run_step(snakemake.log[0], predict, name=f"predict {snakemake.wildcards.model} {snakemake.wildcards.scan}")
