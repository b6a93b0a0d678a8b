# Configuration validation and input functions shared by all stages.

import os

from snakemake.exceptions import WorkflowError

from ichseq.config import load_schema, validate_config
from ichseq.errors import ConfigError

try:
    # The package validates (one-line errors naming the key) and fills in defaults.
    _validated = validate_config(config, load_schema(workflow.source_path("../schemas/config.schema.yaml")))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
config.clear()
config.update(_validated)

DATASET = config["dataset"]
SOURCE = DATASET["source"]
REPLICATES = list(range(config["splits"]["replicates"]))

if SOURCE == "local" and not os.path.exists(DATASET["local"]["path"]):
    raise WorkflowError(f"dataset.local.path: {DATASET['local']['path']} does not exist")


def raw_dataset():
    """What the brain_window rule reads: the acquired folder, or the user's folder/zip."""
    if SOURCE == "synthetic":
        return DATASET["synthetic"]["dir"]
    if SOURCE == "physionet":
        return os.path.join(DATASET["physionet"]["dir"], ".ichseq-download-complete")
    return DATASET["local"]["path"]


def dataset_root(path):
    """The dataset folder behind raw_dataset() (the download marker lives inside it)."""
    return os.path.dirname(path) if path.endswith(".ichseq-download-complete") else path


def split_files():
    return expand("results/splits/rep-{rep}.json", rep=REPLICATES)
