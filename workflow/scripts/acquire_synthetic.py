"""Rule acquire_synthetic: write the synthetic CT-ICH twin (v1.3.1 layout)."""

from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
from ichseq.runlog import run_step

run_step(
    snakemake.log[0],
    lambda log: generate_synthetic(snakemake.output[0], SyntheticSpec(**snakemake.params.spec), log=log),
    name="acquire_synthetic",
)
