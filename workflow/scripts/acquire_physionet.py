"""Rule acquire_physionet: download CT-ICH v1.3.1 (credentials from env or ~/.netrc only)."""

from pathlib import Path

from ichseq.data.download import download_dataset
from ichseq.runlog import run_step

run_step(
    snakemake.log[0],
    lambda log: download_dataset(Path(snakemake.output[0]).parent, snakemake.params.url, log=log),
    name="acquire_physionet",
)
