"""Rule brain_window: read every scan once, brain-window it and write the slice cache."""

from ichseq.data.cache import WindowSpec, build_cache
from ichseq.runlog import run_step

p = snakemake.params
# preprocess.slab_mm (both cache rules pass it); a rule without it caches slice for slice.
slab_mm = getattr(p, "slab_mm", None)
# The source's own section: dataset.cq500, or dataset.rsna (its header index read with the rule's threads).
if p.source == "rsna":
    options = {**(getattr(p, "rsna", None) or {}), "workers": snakemake.threads}
else:
    options = getattr(p, "cq500", None)
run_step(
    snakemake.log[0],
    lambda log: build_cache(
        p.root, snakemake.output[0], WindowSpec(p.image_size, p.level, p.width, p.prewindowed, slab_mm),
        workers=snakemake.threads, log=log, source=p.source, dataset_options=options,
    ),
    name="brain_window",
)
