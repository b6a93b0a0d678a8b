# Configuration validation and input functions shared by all stages.

import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from ichseq.config import validate_config
from ichseq.data.download import MARKER_FILE
from ichseq.data.shard_names import shard_name
from ichseq.data.fingerprint import MANIFEST_NAME, dataset_fingerprint, sha256_file
from ichseq.errors import ConfigError, IchseqError

try:
    # The package validates against its schema (workflow/schemas/config.schema.yaml links to it),
    # with one-line errors naming the key, and fills in the defaults.
    _validated = validate_config(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
config.clear()
config.update(_validated)

DATASET = config["dataset"]
SOURCE = DATASET["source"]
REPLICATES = list(range(config["splits"]["replicates"]))
# preprocess.shards: the slice cache in this many jobs (data.smk); their folders, in order.
SHARDS = config["preprocess"]["shards"]
SHARD_DIRS = [f"results/data/shards/shard-{shard_name(k, SHARDS)}" for k in range(SHARDS)]

if SOURCE == "local" and not os.path.exists(DATASET["local"]["path"]):
    raise WorkflowError(f"dataset.local.path: {DATASET['local']['path']} does not exist")
if SOURCE == "cq500":
    # CQ500 is downloaded beforehand (free, CC BY-NC-SA): no acquire rule, the folder must be there.
    if not os.path.isdir(DATASET["cq500"]["path"]):
        raise WorkflowError(f"dataset.cq500.path: {DATASET['cq500']['path']} is not a folder; give the folder "
                            f"holding CQ500's CQ500-CT-<n>.zip files and reads.csv")
    if DATASET["cq500"]["reads"] and not os.path.isfile(DATASET["cq500"]["reads"]):
        raise WorkflowError(f"dataset.cq500.reads: {DATASET['cq500']['reads']} does not exist; give CQ500's "
                            f"reads.csv, or null for reads.csv in dataset.cq500.path")
if SOURCE == "rsna":
    # RSNA 2019 is downloaded beforehand (Kaggle): no acquire rule, the folder must be there.
    if not os.path.isdir(DATASET["rsna"]["path"]):
        raise WorkflowError(f"dataset.rsna.path: {DATASET['rsna']['path']} is not a folder; give the folder holding "
                            f"RSNA 2019's stage_2_train/ and stage_2_train.csv")
    if DATASET["rsna"]["labels"] and not os.path.isfile(DATASET["rsna"]["labels"]):
        raise WorkflowError(f"dataset.rsna.labels: {DATASET['rsna']['labels']} does not exist; give RSNA's "
                            f"stage_2_train.csv, or null for stage_2_train.csv in dataset.rsna.path")


def raw_dataset(dataset=None):
    """What a brain-window rule reads: the acquired folder, or the user's folder/zip
    (``dataset``: a validated dataset section; default the study's)."""
    dataset = dataset or DATASET
    if dataset["source"] == "synthetic":
        return dataset["synthetic"]["dir"]
    if dataset["source"] == "physionet":
        return os.path.join(dataset["physionet"]["dir"], MARKER_FILE)
    if dataset["source"] in ("cq500", "rsna"):
        return dataset[dataset["source"]]["path"]
    return dataset["local"]["path"]


def cq500_options(dataset=None):
    """A brain-window rule's ``cq500`` parameter: the dataset.cq500 section when the source is
    CQ500 (its label rule, slab thickness and series pins rerun the cache when changed), else None."""
    dataset = dataset or DATASET
    if dataset.get("source") != "cq500":
        return None
    return {key: dataset["cq500"][key] for key in ("reads", "label_rule", "slab_mm", "series")}


def rsna_options(dataset=None):
    """A brain-window rule's ``rsna`` parameter: the dataset.rsna section (labels, min_slices)
    when the source is RSNA 2019 (a change reruns the cache), else None."""
    dataset = dataset or DATASET
    if dataset.get("source") != "rsna":
        return None
    return {key: dataset["rsna"][key] for key in ("labels", "min_slices")}


def dataset_root(path):
    """The dataset folder behind raw_dataset() (the download marker lives inside it)."""
    return os.path.dirname(path) if os.path.basename(path) == MARKER_FILE else path


def dataset_content(dataset, cache):
    """A brain-window rule's ``dataset`` parameter (a function of the wildcards): the SHA-256 of
    the content manifest of ``dataset`` (a validated dataset section) whose cache is ``cache``.

    The rule's input alone cannot see a scan replaced inside a dataset folder (the folder's
    time stamp does not move), so a changed digest reruns the rule as any changed parameter
    does. Files whose size and modification time match the current cache's manifest keep
    their recorded hashes: an unchanged dataset costs one stat per file, not a re-read.

    A local dataset and CQ500 (local too) get a digest; CQ500's includes its reads file when
    dataset.cq500.reads lies outside the folder. RSNA 2019 (~750,000 files, ~450 GB) is not
    hashed file by file at every invocation: its digest is the label file's SHA-256 and a SHA-256
    over every .dcm file's name, size and modification time (one stat per file; a file rewritten
    in place with the same size and time stamp goes unseen). A synthetic or downloaded one is written by its
    acquire rule in this run, after this parameter was recorded (the main process plans, and
    under Slurm records, the parameter before any job runs): a digest would be "absent" at
    first and so rebuild the cache on the next invocation. Those folders are the acquire
    rule's outputs, which Snakemake already tracks.
    """

    def content(wildcards):
        if dataset["source"] not in ("local", "cq500", "rsna"):
            return f"dataset written by rule acquire_{dataset['source']}"
        root = dataset_root(raw_dataset(dataset))
        try:
            if dataset["source"] == "rsna":
                from ichseq.data.rsna import rsna_content_digest

                return f"dataset content (RSNA 2019) {rsna_content_digest(root, dataset['rsna']['labels'])}"
            digest = dataset_fingerprint(root, os.path.join(cache, MANIFEST_NAME))
            reads = dataset["cq500"]["reads"] if dataset["source"] == "cq500" else None
            if reads and os.path.commonpath([os.path.abspath(reads), os.path.abspath(root)]) != os.path.abspath(root):
                digest += f", reads sha256 {sha256_file(Path(reads))}"
        except IchseqError as exc:
            raise WorkflowError(str(exc)) from None
        except OSError as exc:
            raise WorkflowError(f"{exc.filename}: cannot read ({exc.strerror or exc})") from None
        # Labelled: Snakemake's "params have changed" reason prints the value before and now.
        return f"dataset content sha256 {digest}"

    return content


def split_files():
    return expand("results/splits/rep-{rep}.json", rep=REPLICATES)


# -- models ------------------------------------------------------------------------------------

from ichseq.training import plan as model_plans
from ichseq.training.plan import model_plan, pretrain_settings

MODELS = list(config["models"])
PLANS = {name: model_plan(config, name) for name in MODELS}
# Models whose weights come from the pretrain stage (pretrained: pretrain).
PRETRAINED = [name for name in MODELS if PLANS[name].pretrain]


def plan_of(wildcards):
    """The model's resolved plan as plain data (a params entry, so a change reruns its jobs)."""
    return PLANS[wildcards.model].as_dict()


def uses_gpu(name, job):
    """Whether a job of model ``name`` asks the scheduler for a GPU: feature extraction always
    (unless training.device is cpu), training only in full mode (a head on cached features is
    a few thousand parameters)."""
    training = PLANS[name].training
    if training.device == "cpu":
        return 0
    return int(job == "features" or training.mode == "full")


def protocol_caveats():
    """Sentences that must head the statistics (tables, findings) of this config."""
    return model_plans.protocol_caveats(PLANS.values())


def pretrained_input(wildcards):
    """The pretrain stage's folder, for a model whose weights come from it (a two-stage
    model's: its backbone's)."""
    source = PLANS[wildcards.model].weights_from
    return {"pretrained": f"results/pretrained/{source}"} if source else {}


def features_inputs(wildcards):
    return {"cache": "results/data/cache", **pretrained_input(wildcards)}


def train_inputs(wildcards):
    inputs = {
        "split": f"results/splits/rep-{wildcards.rep}.json",
        "cache": "results/data/cache",
        **pretrained_input(wildcards),
    }
    if PLANS[wildcards.model].training.mode == "head":
        # A two-stage model reads its backbone model's store: the slices are encoded once.
        inputs["features"] = f"results/features/{PLANS[wildcards.model].store_of}"
    return inputs


def run_files(name="metrics.json", models=None):
    return expand("results/runs/{model}/rep-{rep}/{name}", model=models or MODELS, rep=REPLICATES, name=name)


# -- external validation -----------------------------------------------------------------------

# external.dataset: a second cohort every trained run is tested on (None: no external validation).
EXTERNAL = config["external"]
EXTERNAL_DATASET = EXTERNAL["dataset"]
EXTERNAL_NAME = EXTERNAL["name"]

if EXTERNAL_DATASET:
    _source = EXTERNAL_DATASET["source"]
    if _source == "local" and not os.path.exists(EXTERNAL_DATASET["local"]["path"]):
        raise WorkflowError(f"external.dataset.local.path: {EXTERNAL_DATASET['local']['path']} does not exist")
    if _source == "cq500":
        if not os.path.isdir(EXTERNAL_DATASET["cq500"]["path"]):
            raise WorkflowError(f"external.dataset.cq500.path: {EXTERNAL_DATASET['cq500']['path']} is not a folder; "
                                f"give the folder holding CQ500's CQ500-CT-<n>.zip files and reads.csv")
        if EXTERNAL_DATASET["cq500"]["reads"] and not os.path.isfile(EXTERNAL_DATASET["cq500"]["reads"]):
            raise WorkflowError(f"external.dataset.cq500.reads: {EXTERNAL_DATASET['cq500']['reads']} does not exist")
    if _source == "rsna":
        if not os.path.isdir(EXTERNAL_DATASET["rsna"]["path"]):
            raise WorkflowError(f"external.dataset.rsna.path: {EXTERNAL_DATASET['rsna']['path']} is not a folder; "
                                f"give the folder holding RSNA 2019's stage_2_train/ and stage_2_train.csv")
        if EXTERNAL_DATASET["rsna"]["labels"] and not os.path.isfile(EXTERNAL_DATASET["rsna"]["labels"]):
            raise WorkflowError(f"external.dataset.rsna.labels: {EXTERNAL_DATASET['rsna']['labels']} does not exist")


def external_acquires(kind):
    """Whether the external stage needs an acquire rule of its own for ``kind`` (synthetic or
    physionet): not when the external cohort is another source, nor when its folder is the one
    the study's acquire rule writes already."""
    if not EXTERNAL_DATASET or EXTERNAL_DATASET["source"] != kind:
        return False
    return os.path.normpath(raw_dataset(EXTERNAL_DATASET)) != os.path.normpath(raw_dataset({**DATASET, "source": kind}))


def external_scores_inputs(wildcards):
    """What an external_scores job reads: the external cache and every replicate of its model
    (and, for a head-mode model, the weights its backbone is rebuilt from)."""
    return {
        "cache": "results/external/data/cache",
        "runs": expand("results/runs/{model}/rep-{rep}/metrics.json", model=wildcards.model, rep=REPLICATES),
        "models": expand("results/runs/{model}/rep-{rep}/model", model=wildcards.model, rep=REPLICATES),
        **pretrained_input(wildcards),
    }
