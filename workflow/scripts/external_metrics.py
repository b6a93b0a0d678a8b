"""Rule external_metrics: external metrics with bootstrap CIs, internal vs external, ROC figure."""

from ichseq.analysis.external import write_external
from ichseq.runlog import run_step

p = snakemake.params
run_step(
    snakemake.log[0],
    lambda log: write_external(dict(zip(p.models, snakemake.input.scores)), snakemake.input.runs, snakemake.output,
                               name=p.name, n_resamples=p.n_resamples, seed=p.seed, log=log),
    name="external_metrics",
)
