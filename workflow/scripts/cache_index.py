"""Rule cache_index: open the dataset once (RSNA: its header index), plan the cache's shards."""

from ichseq.data.cache import WindowSpec
from ichseq.data.shards import index_cache
from ichseq.runlog import run_step

p = snakemake.params
options = {**(p.rsna or {}), "workers": snakemake.threads} if p.source == "rsna" else p.cq500
run_step(
    snakemake.log[0],
    lambda log: index_cache(
        p.root, snakemake.output[0], WindowSpec(p.image_size, p.level, p.width, p.prewindowed, p.slab_mm),
        shards=p.shards, log=log, source=p.source, dataset_options=options,
    ),
    name="cache_index",
)
