"""Validate a workflow configuration against its JSON schema and fill in defaults.

Errors are one line naming the key (``splits.replicates: expected integer, got '10'``),
not jsonschema's multi-line dump, so a typo in ``config.yaml`` is fixed in seconds.

The schema is the one place where defaults are written: ``validate_config`` fills them in, and
the code that takes a section without the workflow (``TrainSettings``, ``model_plan``) reads
them with ``section_defaults``. It is the schema rather than the dataclasses because the schema
is what Snakemake validates against and what the README and error messages point users to;
it also carries each key's allowed values and description, which a dataclass default does not.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from .errors import ConfigError, ModelError
from .models import available_models, unknown_model_message
from .models.phases import foreign_key, phase_epochs, phase_settings
from .models.windows import window_channels

#: The configuration schema, shipped inside the package (``workflow/schemas/`` links to it): the
#: Snakefile, ``ichseq`` commands and any installed copy validate against this one file.
SCHEMA_RESOURCE = resources.files(__package__) / "schemas" / "config.schema.yaml"

_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string", "object": "a mapping",
               "boolean": "true or false", "array": "a list", "null": "null"}


def load_schema(path: str | Path | None = None) -> dict:
    """The schema at ``path``, by default the package's own."""
    return yaml.safe_load(Path(path).read_text() if path else SCHEMA_RESOURCE.read_text(encoding="utf-8"))


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
    _fill_defaults(defaults, _schema())
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
    validator = jsonschema.Draft202012Validator(section_schema(name))
    errors = sorted(validator.iter_errors(values), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        message = _describe(errors[0])
        raise ConfigError(f"{where}.{message}" if not message.startswith("(top level)") else f"{where}{message[11:]}")
    return {**section_defaults(name), **copy.deepcopy(values)}


def resolve_ref(node: dict, root: dict) -> dict:
    """``node`` with a local ``$ref`` ("#/$defs/name") merged in (the node's own keys win).

    ``properties`` merge key by key, so a node can give a referenced section other defaults
    (``pretrain.dataset.synthetic`` is the study's synthetic spec with its own dir and seed)."""
    ref = node.get("$ref")
    if not ref:
        return node
    target = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    merged = {**resolve_ref(target, root), **{k: v for k, v in node.items() if k not in ("$ref", "properties")}}
    if "properties" in node:
        base = merged.get("properties", {})
        merged["properties"] = {**base, **{k: {**base.get(k, {}), **v} for k, v in node["properties"].items()}}
    return merged


def _fill_defaults(instance: dict, schema: dict, root: dict | None = None) -> None:
    # Only named properties get defaults: the entries of an open mapping (``models``) keep
    # exactly what the user wrote, so their overrides stay partial.
    root = root or schema
    for key, sub in schema.get("properties", {}).items():
        sub = resolve_ref(sub, root)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(instance[key], sub, root)


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "anyOf" and error.instance is not None and error.context:
        # "null or a section": say what is wrong inside the section, not "no schema matched".
        inner = [e for e in error.context if e.validator != "type" or e.validator_value != "null"]
        if inner:
            return _describe(jsonschema.exceptions.best_match(inner))
    path = ".".join(str(p) for p in error.absolute_path)
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = f"{path}.{extra[0]}" if path else extra[0]
        return f"{key}: unknown key (allowed here: {', '.join(allowed)})"
    where = path or "(top level)"
    if v == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        want = " or ".join(_TYPE_NAMES.get(t, t) for t in types)
        return f"{where}: expected {want}, got {error.instance!r}"
    if v == "enum":
        return f"{where}: must be one of {', '.join(map(str, error.validator_value))}, got {error.instance!r}"
    return f"{where}: {error.message}"


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of ``config`` with defaults filled in, or raise ConfigError."""
    schema = schema or load_schema()
    config = copy.deepcopy(dict(config))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise ConfigError(f"invalid configuration: {_describe(errors[0])}")
    _fill_defaults(config, schema)
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
        _check_model_entry(name, entry or {}, config["preprocess"]["image_size"])
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
    _fill_defaults(dataset, node, schema)
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
        if training.get("mode", "head") == "full":
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


def _check_model_entry(name: str, entry: dict, cache_size: int) -> None:
    # Found here, when the Snakefile is read, rather than in the first job that builds the
    # model after the data steps have run. The names come from the lazy registry: no import
    # of transformers.
    architecture = entry.get("architecture") or name
    if architecture not in available_models():
        raise ConfigError(f"invalid configuration: {unknown_model_message(architecture, name)}")
    foreign = foreign_key(architecture, entry, name)
    if foreign:
        raise ConfigError(f"invalid configuration: {foreign}")
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
