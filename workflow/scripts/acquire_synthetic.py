"""Rule acquire_synthetic: write the synthetic CT-ICH twin (v1.3.1 layout)."""

from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
from ichseq.errors import ConfigError
from ichseq.runlog import run_step

# The config section the spec comes from: every key of it but dir (validated when the Snakefile
# was read; a value SyntheticSpec still refuses is said in one line naming the section).
SECTION = "pretrain.dataset.synthetic" if snakemake.rule == "acquire_pretrain_synthetic" else "dataset.synthetic"


def acquire(log):
    try:
        spec = SyntheticSpec(**snakemake.params.spec)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{SECTION}: {exc}") from None
    return generate_synthetic(snakemake.output[0], spec, log=log, workers=snakemake.threads)


run_step(snakemake.log[0], acquire, name="acquire_synthetic")
