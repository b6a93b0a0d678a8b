"""Rule statistics: the study's tests and the paired analysis over results/metrics/runs.csv."""

import os
import shutil

from ichseq.runlog import run_step
from ichseq.stats import read_runs, run_stats


def main(log):
    p = snakemake.params
    out = snakemake.output
    paths = run_stats(read_runs(snakemake.input[0]), os.path.dirname(out.tests), alpha=p.alpha,
                      undefined=p.undefined, seed=p.seed, n_resamples=p.bootstrap_resamples)
    shutil.copyfile(paths["summary_md"], out.summary_md)
    log(f"alpha {p.alpha}, undefined values: {p.undefined}; wrote " + ", ".join(str(v) for v in paths.values()))


run_step(snakemake.log[0], main, name="statistics")
