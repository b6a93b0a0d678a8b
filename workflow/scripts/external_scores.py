"""Rule external_scores: every replicate of one model scores every patient of the external cohort."""

from pathlib import Path

from ichseq.inference.external import score_cohort
from ichseq.runlog import run_step

run_step(
    snakemake.log[0],
    lambda log: score_cohort([Path(p).parent for p in snakemake.input.runs], snakemake.input.cache,
                             snakemake.output.scores, log=log),
    name="external_scores",
)
