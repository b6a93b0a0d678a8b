"""Rule brain_window: read every scan once, brain-window it and write the slice cache."""

from ichseq.data.cache import WindowSpec, build_cache
from ichseq.runlog import run_step

p = snakemake.params
run_step(
    snakemake.log[0],
    lambda log: build_cache(
        p.root, snakemake.output[0], WindowSpec(p.image_size, p.level, p.width, p.prewindowed), workers=snakemake.threads, log=log,
        source=p.source,
    ),
    name="brain_window",
)
