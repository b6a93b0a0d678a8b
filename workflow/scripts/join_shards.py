"""Rule brain_window (sharded): join the index and its shards into the slice cache."""

from ichseq.data.shards import join_shards
from ichseq.runlog import run_step

run_step(
    snakemake.log[0],
    lambda log: join_shards(snakemake.input.index, list(snakemake.input.shards), snakemake.output[0], log=log),
    name="brain_window",
)
