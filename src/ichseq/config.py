"""Validate a workflow configuration against its JSON schema and fill in defaults.

Errors are one line naming the key (``splits.replicates: expected integer, got '10'``),
not jsonschema's multi-line dump, so a typo in ``config.yaml`` is fixed in seconds.

The schema is the one place where defaults are written: ``validate_config`` fills them in, and
the code that takes a section without the workflow (``TrainSettings``, ``model_plan``) reads
them with ``section_defaults``. It is the schema rather than the dataclasses because the schema
is what Snakemake validates against and what error messages and the docs point users to (their
configuration reference is generated from it); it also carries each key's allowed values and
description, which a dataclass default does not. The keys of a model entry come partly from the
model classes (``CTClassifier.entry_keys``): :func:`load_schema` adds them.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path

import yaml

from .errors import ConfigError, ModelError
from .models import available_models, entry_keys, key_readers, refused_key, unknown_model_message
from .models.phases import phase_epochs, phase_settings
from .models.windows import window_channels
from .schema import check_node, check_values, fill_defaults, first_error, resolve_ref

#: The configuration schema, shipped inside the package (``workflow/schemas/`` links to it): the
#: Snakefile, ``ichseq`` commands and any installed copy validate against this one file.
SCHEMA_RESOURCE = resources.files(__package__) / "schemas" / "config.schema.yaml"

def load_schema(path: str | Path | None = None) -> dict:
    """The schema at ``path``, by default the package's own, with the entry keys each model
    class declares added to a model entry's (:func:`with_model_keys`)."""
    raw = yaml.safe_load(Path(path).read_text() if path else SCHEMA_RESOURCE.read_text(encoding="utf-8"))
    return with_model_keys(raw)


def declared_key_schema(key: str, shared: dict) -> dict:
    """The definition of model entry key ``key`` over every architecture that reads it: the
    shared one (``$defs.model_keys``), or the one schema its readers declare as their own."""
    if key in shared:
        return copy.deepcopy(shared[key])
    owners = {name: entry_keys(name)[key] for name in key_readers(key)}
    schemas = [s for s in owners.values() if s is not None]
    if not schemas or any(s != schemas[0] for s in schemas):
        raise ConfigError(f"models entry key {key!r}: declared by {', '.join(owners)} with different schemas (or "
                          f"none); define it once under $defs.model_keys of the package schema")
    return copy.deepcopy(schemas[0])


def with_model_keys(schema: dict) -> dict:
    """``schema`` with ``$defs.model`` taking every entry key an architecture declares
    (``CTClassifier.entry_keys``): the shared ones in ``$defs.model_keys`` order, then each
    model's own; each description says which architectures read the key. So the schema
    check and the refusal of a key of another model come from one declaration, in the class."""
    schema = copy.deepcopy(schema)
    defs = schema["$defs"]
    shared = defs["model_keys"]["properties"]
    declared = {key: None for name in available_models() for key in entry_keys(name)}
    order = [key for key in shared if key in declared] + [key for key in declared if key not in shared]
    common = defs["model"]["properties"]
    keys = {}
    for key in order:
        node = declared_key_schema(key, shared)
        readers = ", ".join(key_readers(key))
        text = node.get("description", "").strip()
        node["description"] = f"{text}{'' if not text or text.endswith('.') else '.'} Read by: {readers}.".strip()
        keys[key] = node
    defs["model"]["properties"] = {"architecture": common["architecture"], **keys,
                                   **{k: v for k, v in common.items() if k != "architecture"}}
    return schema


def model_entry_keys(architecture: str) -> list[str]:
    """The entry keys architecture ``architecture`` reads, in the schema's order (the order a
    plan's build settings keep)."""
    own = entry_keys(architecture)
    shared = _schema()["$defs"]["model_keys"]["properties"]
    return [key for key in shared if key in own] + [key for key in own if key not in shared]


def architecture_schema(architecture: str, schema: dict) -> dict:
    """A model entry's schema as architecture ``architecture`` reads it: each declared key's
    definition with the architecture's own narrowing merged over it (e.g. its pooling choices)."""
    node = {**copy.deepcopy(schema["$defs"]["model"]), "$defs": schema["$defs"]}  # its $refs resolve
    for key, narrowed in entry_keys(architecture).items():
        if narrowed and key in schema["$defs"]["model_keys"]["properties"]:
            node["properties"][key] = {**node["properties"][key], **narrowed}
    return node


@functools.lru_cache(maxsize=None)
def _schema() -> dict:
    return load_schema()


def section_schema(name: str) -> dict:
    """The schema of a shared section (``training``, ``frames``, ``aggregation``: under ``$defs``)."""
    return copy.deepcopy(_schema()["$defs"][name])


def section_defaults(name: str) -> dict:
    """The schema's default of every key of a shared section, e.g. ``section_defaults("frames")``."""
    return {key: copy.deepcopy(sub["default"]) for key, sub in _schema()["$defs"][name]["properties"].items()
            if "default" in sub}


@functools.lru_cache(maxsize=None)
def _config_defaults() -> dict:
    defaults: dict = {}
    fill_defaults(defaults, _schema())
    return defaults


def config_default(*keys: str):
    """The schema's default at a path of the configuration, its nested defaults filled in, e.g.
    ``config_default("preprocess")`` or ``config_default("dataset", "prewindowed")``: for code
    outside the Snakefile (dataclasses, scripts) that must agree with a config left unset."""
    value = _config_defaults()
    for key in keys:
        value = value[key]
    return copy.deepcopy(value)


def validate_section(values: dict, name: str, where: str) -> dict:
    """``values`` checked against section ``name`` (one-line ConfigError naming ``where.<key>``),
    with the section's defaults filled in."""
    check_node(values, section_schema(name), where)
    return {**section_defaults(name), **copy.deepcopy(values)}


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of ``config`` with defaults filled in, or raise ConfigError."""
    schema = schema or load_schema()
    config = copy.deepcopy(dict(config))
    message = first_error(config, schema)
    if message:
        raise ConfigError(f"invalid configuration: {message}")
    fill_defaults(config, schema)
    # Cross-field rules the schema cannot express.
    _check_synthetic(config["dataset"]["synthetic"], "dataset.synthetic")
    if config["dataset"]["source"] == "local" and not config["dataset"]["local"]["path"]:
        raise ConfigError("invalid configuration: dataset.local.path: required when dataset.source is local")
    if config["dataset"]["source"] == "cq500" and not config["dataset"]["cq500"]["path"]:
        raise ConfigError("invalid configuration: dataset.cq500.path: required when dataset.source is cq500 (the "
                          "folder of the CQ500-CT-<n>.zip files and reads.csv)")
    if config["dataset"]["source"] == "rsna" and not config["dataset"]["rsna"]["path"]:
        raise ConfigError("invalid configuration: dataset.rsna.path: required when dataset.source is rsna (the "
                          "folder of stage_2_train/ and stage_2_train.csv)")
    for name, entry in config["models"].items():
        _check_model_entry(name, entry or {}, config["preprocess"]["image_size"], schema)
        _check_input_windows(name, entry or {}, config["preprocess"]["window"])
        _check_phases(name, entry or {}, config)
    _check_pretrain(config)
    _check_external(config, schema)
    return config


def _check_synthetic(syn: dict, where: str) -> None:
    """A synthetic section's cross-field rules, which SyntheticSpec would otherwise refuse only in
    the job that generates the data (the schema checks each key alone: ranges, generator,
    difficulty, kernel)."""
    if syn["n_positive"] > syn["n_patients"]:
        raise ConfigError(f"invalid configuration: {where}.n_positive: {syn['n_positive']} is larger than "
                          f"n_patients {syn['n_patients']}")
    if syn["min_slices"] > syn["max_slices"]:
        raise ConfigError(f"invalid configuration: {where}.min_slices: {syn['min_slices']} is larger than "
                          f"max_slices {syn['max_slices']}")


def _check_pretrain(config: dict) -> None:
    users = [name for name, entry in config["models"].items() if (entry or {}).get("pretrained") == "pretrain"]
    for name, entry in config["models"].items():
        if (entry or {}).get("pretrain") and name not in users:
            raise ConfigError(f"invalid configuration: models.{name}.pretrain: applies only with "
                              f"models.{name}.pretrained: pretrain")
    if not users:
        return
    dataset = config["pretrain"]["dataset"]
    if dataset["source"] == "synthetic":
        _check_synthetic(dataset["synthetic"], "pretrain.dataset.synthetic")
    if dataset["source"] == "local" and not dataset["local"]["path"]:
        raise ConfigError("invalid configuration: pretrain.dataset.local.path: required when pretrain.dataset.source "
                          f"is local (models {', '.join(users)} use pretrained: pretrain)")
    if (dataset["source"] == "synthetic" and config["dataset"]["source"] == "synthetic"
            and Path(dataset["synthetic"]["dir"]) == Path(config["dataset"]["synthetic"]["dir"])):
        raise ConfigError(f"invalid configuration: pretrain.dataset.synthetic.dir: {dataset['synthetic']['dir']} is "
                          "the study cohort's folder (dataset.synthetic.dir); the pretraining cohort needs its own")


def _check_external(config: dict, schema: dict) -> None:
    """external.dataset (null: off) with its defaults filled in (the schema allows null, which
    the generic filling skips), its cross-field rules, and external.name (default: the source)."""
    external = config["external"]
    dataset = external["dataset"]
    if dataset is None:
        return
    node = resolve_ref(schema["properties"]["external"], schema)["properties"]["dataset"]
    fill_defaults(dataset, node, schema)
    source = dataset["source"]
    if source == "synthetic":
        _check_synthetic(dataset["synthetic"], "external.dataset.synthetic")
        taken = {"dataset.synthetic.dir": config["dataset"]["synthetic"]["dir"],
                 "pretrain.dataset.synthetic.dir": config["pretrain"]["dataset"]["synthetic"]["dir"]}
        for key, folder in taken.items():
            if Path(dataset["synthetic"]["dir"]) == Path(folder):
                raise ConfigError(f"invalid configuration: external.dataset.synthetic.dir: {folder} is {key}; the "
                                  f"external cohort needs a folder of its own")
    if source in ("local", "cq500", "rsna") and not dataset[source]["path"]:
        raise ConfigError(f"invalid configuration: external.dataset.{source}.path: required when "
                          f"external.dataset.source is {source}")
    if external["name"] is None:
        external["name"] = source


def _check_phases(name: str, entry: dict, config: dict) -> None:
    """seg_cls's phases must fit in the epochs of each training that runs them: full mode
    (training.epochs) and the pretrain stage (pretrain.training.epochs)."""
    if entry.get("phases") is None:
        return
    try:
        phases = phase_settings(entry["phases"], name)
        training = {**config["training"], **(entry.get("training") or {})}
        if training["mode"] == "full":
            key = f"models.{name}.training.epochs" if "epochs" in (entry.get("training") or {}) else "training.epochs"
            phase_epochs(phases, training["epochs"], name, key)
        if entry.get("pretrained") == "pretrain":
            own = "epochs" in (entry.get("pretrain") or {})
            pretrain = {**config["pretrain"]["training"], **(entry.get("pretrain") or {})}
            phase_epochs(phases, pretrain["epochs"], name,
                         f"models.{name}.pretrain.epochs" if own else "pretrain.training.epochs")
    except ModelError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def _check_input_windows(name: str, entry: dict, cache_window: dict) -> None:
    """Found when the config is read rather than when a job builds the model: the models' own
    check (1 or 3 windows, each inside the window the slices are cached with)."""
    if entry.get("input_windows"):
        try:
            window_channels(entry["input_windows"], cache_window, name)
        except ModelError as exc:
            raise ConfigError(f"invalid configuration: {exc}") from None


def _check_model_entry(name: str, entry: dict, cache_size: int, schema: dict) -> None:
    # Found here, when the Snakefile is read, rather than in the first job that builds the
    # model after the data steps have run. The names come from the lazy registry: no import
    # of transformers.
    architecture = entry.get("architecture") or name
    if architecture not in available_models():
        raise ConfigError(f"invalid configuration: {unknown_model_message(architecture, name)}")
    refusal = refused_key(architecture, entry, name)
    if refusal:
        raise ConfigError(f"invalid configuration: {refusal}")
    # The architecture's own narrowing of a shared key (its pooling choices, say).
    try:
        check_values(entry, architecture_schema(architecture, schema), f"models.{name}")
    except ConfigError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    # The slices are cached at preprocess.image_size; a model of another size would resize
    # every batch, silently (an entry without image_size takes the cache's: see model_plan).
    sizes = {f"models.{name}.image_size": entry.get("image_size")}
    if entry.get("pretrained") is None:  # ``config`` only shapes a randomly initialised model
        sizes[f"models.{name}.config.image_size"] = (entry.get("config") or {}).get("image_size")
    for key, size in sizes.items():
        if size is not None and size != cache_size:
            raise ConfigError(
                f"invalid configuration: {key}: {size} differs from preprocess.image_size {cache_size}, the size the "
                f"slices are cached at; set both to the same value, or leave {key} out to use preprocess.image_size"
            )
