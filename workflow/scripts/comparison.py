"""Rule comparison: leaderboard, and with 3+ models the Friedman test, post-hoc table and CD diagram."""

import pandas as pd

from ichseq.analysis.ranking import write_comparison
from ichseq.analysis.stats import read_runs
from ichseq.runlog import run_step


def main(log):
    p = snakemake.params
    # Exactly the rule's declared outputs (their names are write_comparison's output keys).
    paths = write_comparison(read_runs(snakemake.input.runs), dict(snakemake.output.items()),
                             cost=pd.read_csv(snakemake.input.cost), pretrained=dict(p.pretrained), alpha=p.alpha,
                             undefined=p.undefined, seed=p.seed, n_resamples=p.bootstrap_resamples)
    log("wrote " + ", ".join(str(v) for v in paths.values()))


run_step(snakemake.log[0], main, name="comparison")
