"""Rule brain_window_shard: window one shard's scans (the index says which and how)."""

from ichseq.data.shards import build_shard
from ichseq.runlog import run_step

run_step(
    snakemake.log[0],
    lambda log: build_shard(snakemake.input.index, int(snakemake.wildcards.shard), snakemake.output[0],
                            workers=snakemake.threads, log=log),
    name="brain_window_shard",
)
