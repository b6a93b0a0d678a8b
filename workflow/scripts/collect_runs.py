"""Rule collect_runs: every run folder -> results/metrics/{runs,predictions,history,cost}.csv."""

import os

from ichseq.analysis.collect import collect
from ichseq.runlog import run_step


def main(log):
    run_dirs = [os.path.dirname(p) for p in snakemake.input.metrics]
    paths = collect(run_dirs, os.path.dirname(snakemake.output.runs))
    log(f"collected {len(run_dirs)} runs into " + ", ".join(str(p) for p in paths.values()))


run_step(snakemake.log[0], main, name="collect_runs")
