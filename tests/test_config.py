"""Configuration validation: defaults, one-line errors naming the key, docs == defaults."""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ichseq.config import load_schema, resolve_ref, validate_config
from ichseq.data.cache import WindowSpec
from ichseq.data.splits import patient_split
from ichseq.data.synthetic import SyntheticSpec
from ichseq.errors import ConfigError
from ichseq.training.settings import TrainSettings
from ichseq.models import BUILTIN

# Every built-in model, as the unknown-model message lists them.
AVAILABLE = ", ".join(sorted(BUILTIN))

REPO = Path(__file__).resolve().parents[1]
CONFIG_YAML = REPO / "config.yaml"


@pytest.fixture(scope="module")
def repo_config() -> dict:
    return yaml.safe_load(CONFIG_YAML.read_text())


def _error(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert "\n" not in message, f"error message is not one line: {message!r}"
    return message


# --------------------------------------------------------------------------- valid configs


def test_repo_config_validates_unchanged_but_for_the_sections_it_leaves_to_the_schema(repo_config):
    from ichseq.config import section_defaults

    validated = validate_config(repo_config)
    # config.yaml uses their defaults: written in the schema only.
    left = ("training", "frames", "aggregation", "pretrain")
    assert not set(left) & set(repo_config)
    # The models' input size is written once, under preprocess: the entries take it (model_plan).
    assert [name for name, entry in repo_config["models"].items() if "image_size" in entry] == []
    assert {k: v for k, v in validated.items() if k not in left} == repo_config
    assert all(validated[name] == section_defaults(name) for name in left[:3])
    assert validated["pretrain"] == validate_config({})["pretrain"]


def test_code_defaults_are_the_schemas():
    import dataclasses

    from ichseq.config import section_defaults
    from ichseq.data.frames import PADDINGS, POLICIES
    from ichseq.training.settings import MONITORS, TrainSettings
    from ichseq.training.plan import ModelPlan
    from ichseq.training.votes import RULES

    schema = load_schema()["$defs"]
    assert [f.name for f in dataclasses.fields(TrainSettings)] == list(schema["training"]["properties"])
    assert dataclasses.asdict(TrainSettings()) == section_defaults("training")
    plan = ModelPlan("m", "convnext", {}, TrainSettings())
    assert plan.frames == section_defaults("frames") and plan.aggregation == section_defaults("aggregation")
    # The algorithms' vocabularies are the schema's allowed values.
    assert set(schema["frames"]["properties"]["policy"]["enum"]) == set(POLICIES)
    assert set(schema["frames"]["properties"]["padding"]["enum"]) == set(PADDINGS)
    assert set(schema["aggregation"]["properties"]["rule"]["enum"]) == set(RULES)
    assert set(schema["training"]["properties"]["monitor"]["enum"]) == set(MONITORS)


def test_validate_config_does_not_mutate_its_input():
    config = {"splits": {"replicates": 3}}
    validate_config(config)
    assert config == {"splits": {"replicates": 3}}


def test_empty_config_gets_the_documented_defaults():
    config = validate_config({})
    assert config["dataset"]["source"] == "synthetic"
    assert config["splits"]["replicates"] == 10
    assert config["splits"]["test_fraction"] == 0.3
    assert config["preprocess"]["window"] == {"level": 40, "width": 120}
    assert config["dataset"]["synthetic"]["n_patients"] == 75
    assert config["dataset"]["local"]["path"] is None


def test_partial_section_keeps_given_values_and_fills_the_rest():
    config = validate_config({"splits": {"replicates": 3}, "preprocess": {"window": {"width": 150}}})
    assert config["splits"] == {"replicates": 3, "test_fraction": 0.3, "val_fraction": 0.2, "seed": 0, "stratify": True}
    assert config["preprocess"]["window"] == {"level": 40, "width": 150}
    assert config["preprocess"]["image_size"] == 128


def test_local_source_with_path_is_accepted(tmp_path):
    config = validate_config({"dataset": {"source": "local", "local": {"path": str(tmp_path)}}})
    assert config["dataset"]["local"]["path"] == str(tmp_path)


# --------------------------------------------------------------------------- errors


def test_unknown_top_level_key_is_named():
    message = _error({"splitz": {}})
    assert "splitz" in message
    assert "unknown key" in message
    assert "splits" in message  # the allowed keys are listed


def test_unknown_nested_key_is_named_with_its_dotted_path():
    message = _error({"splits": {"replicats": 3}})
    assert "splits.replicats" in message
    assert "replicates" in message  # allowed here


def test_unknown_deeply_nested_key_is_named():
    message = _error({"preprocess": {"window": {"levle": 40}}})
    assert "preprocess.window.levle" in message


def test_wrong_type_names_the_key_and_the_value():
    message = _error({"splits": {"replicates": "10"}})
    assert "splits.replicates" in message
    assert "integer" in message
    assert "'10'" in message


def test_float_where_an_integer_is_required_is_rejected():
    message = _error({"dataset": {"synthetic": {"n_patients": 7.5}}})
    assert "dataset.synthetic.n_patients" in message


def test_section_that_is_not_a_mapping_is_named():
    message = _error({"dataset": None})
    assert message.count("dataset") >= 1
    assert "mapping" in message


def test_bad_enum_lists_the_allowed_values():
    message = _error({"dataset": {"source": "ftp"}})
    assert "dataset.source" in message
    for allowed in ("synthetic", "physionet", "local"):
        assert allowed in message
    assert "ftp" in message


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"splits": {"replicates": 0}}, "splits.replicates"),
        ({"splits": {"test_fraction": 1.0}}, "splits.test_fraction"),
        ({"splits": {"val_fraction": 0}}, "splits.val_fraction"),
        ({"preprocess": {"window": {"width": 0}}}, "preprocess.window.width"),
        ({"preprocess": {"image_size": 8}}, "preprocess.image_size"),
        ({"dataset": {"synthetic": {"image_size": 16}}}, "dataset.synthetic.image_size"),
        ({"dataset": {"physionet": {"url": "ftp://example.org/"}}}, "dataset.physionet.url"),
    ],
)
def test_out_of_range_values_name_the_key(config, key):
    assert key in _error(config)


def test_n_positive_larger_than_n_patients_is_rejected():
    message = _error({"dataset": {"synthetic": {"n_patients": 10, "n_positive": 11}}})
    assert "dataset.synthetic.n_positive" in message
    # Against the default n_patients too.
    assert "n_positive" in _error({"dataset": {"synthetic": {"n_positive": 76}}})


def test_min_slices_larger_than_max_slices_is_rejected():
    message = _error({"dataset": {"synthetic": {"min_slices": 30, "max_slices": 20}}})
    assert "min_slices" in message


def test_pretraining_cohorts_cross_field_rules_are_checked_when_a_model_pretrains():
    message = _error({"pretrain": {"dataset": {"synthetic": {"n_patients": 50}}}})  # n_positive's default: 75
    assert message.startswith("invalid configuration: pretrain.dataset.synthetic.n_positive: 75 is larger than")
    message = _error({"pretrain": {"dataset": {"synthetic": {"min_slices": 30, "max_slices": 20}}}})
    assert "pretrain.dataset.synthetic.min_slices" in message
    # Not used without a model that pretrains, nor with a local pretraining cohort: not checked.
    validate_config({"models": {"convnext": {}}, "pretrain": {"dataset": {"synthetic": {"n_patients": 50}}}})
    validate_config({"pretrain": {"dataset": {"source": "local", "local": {"path": "elsewhere"},
                                              "synthetic": {"n_patients": 50}}}})


# --------------------------------------------------------------------------- synthetic generator


def test_synthetic_generator_defaults_are_the_anatomical_twin_in_config_yaml_and_schema(repo_config):
    expected = {"generator": "anatomical", "difficulty": "easy", "slice_thickness_mm": 5.0, "kernel": "standard"}
    assert {key: repo_config["dataset"]["synthetic"][key] for key in expected} == expected
    validated = validate_config({})
    for syn in (validated["dataset"]["synthetic"], validated["pretrain"]["dataset"]["synthetic"]):
        assert {key: syn[key] for key in expected} == expected


def test_synthetic_generator_vocabularies_are_the_codes():
    from ichseq.data.synthetic import GENERATORS
    from ichseq.data.twin import DIFFICULTIES, KERNELS

    keys = load_schema()["$defs"]["synthetic"]["properties"]
    assert keys["generator"]["enum"] == list(GENERATORS)
    assert keys["difficulty"]["enum"] == list(DIFFICULTIES)
    assert keys["kernel"]["enum"] == list(KERNELS)
    # Every key but dir is a SyntheticSpec field: the acquire rules pass them as SyntheticSpec(**spec).
    assert set(keys) - {"dir"} <= {f.name for f in dataclasses.fields(SyntheticSpec)}


@pytest.mark.parametrize("section", ["dataset", "pretrain.dataset"])
def test_every_allowed_synthetic_setting_validates_and_builds_its_spec(section):
    chosen = {"generator": "cartoon", "difficulty": "hard", "slice_thickness_mm": 0.625, "kernel": "bone",
              "min_slices": 200, "max_slices": 260}
    config = {"dataset": {"synthetic": {}}, "pretrain": {"dataset": {"synthetic": {}}}}
    (config["dataset"] if section == "dataset" else config["pretrain"]["dataset"])["synthetic"].update(chosen)
    validated = validate_config(config)
    syn = validated["dataset"] if section == "dataset" else validated["pretrain"]["dataset"]
    spec = SyntheticSpec(**{key: value for key, value in syn["synthetic"].items() if key != "dir"})
    assert {key: getattr(spec, key) for key in chosen} == chosen
    for difficulty in ("easy", "moderate", "hard"):
        validate_config({"dataset": {"synthetic": {"difficulty": difficulty}}})
    for thickness in (0.5, 10, 2):
        validate_config({"dataset": {"synthetic": {"slice_thickness_mm": thickness}}})


@pytest.mark.parametrize(
    ("synthetic", "key", "said"),
    [
        ({"difficulty": "extreme"}, "difficulty", "must be one of easy, moderate, hard, got 'extreme'"),
        ({"generator": "voxel"}, "generator", "must be one of anatomical, cartoon, got 'voxel'"),
        ({"kernel": "sharp"}, "kernel", "must be one of standard, bone, got 'sharp'"),
        ({"slice_thickness_mm": 0.4}, "slice_thickness_mm", "0.4 is less than the minimum of 0.5"),
        ({"slice_thickness_mm": 12}, "slice_thickness_mm", "12 is greater than the maximum of 10"),
        ({"slice_thickness_mm": "thin"}, "slice_thickness_mm", "expected a number, got 'thin'"),
    ],
)
@pytest.mark.parametrize("section", ["dataset", "pretrain.dataset"])
def test_bad_synthetic_generator_settings_name_the_key(section, synthetic, key, said):
    config = {"dataset": {"synthetic": synthetic}} if section == "dataset" else {
        "pretrain": {"dataset": {"synthetic": synthetic}}}
    assert _error(config) == f"invalid configuration: {section}.synthetic.{key}: {said}"


def test_the_acquire_script_says_a_spec_it_cannot_build_in_one_line(tmp_path):
    # What the schema and validate_config did not refuse (here handed over directly) ends the job
    # with one line naming the config section, not a traceback.
    script = REPO / "workflow" / "scripts" / "acquire_synthetic.py"
    code = f"""
import runpy, types
spec = {{"n_patients": 4, "n_positive": 5, "generator": "cartoon"}}
snakemake = types.SimpleNamespace(rule="acquire_pretrain_synthetic", params=types.SimpleNamespace(spec=spec),
                                  output=[{str(tmp_path / "ds")!r}], log=[{str(tmp_path / "job.log")!r}])
runpy.run_path({str(script)!r}, init_globals={{"snakemake": snakemake}})
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    (line,) = (tmp_path / "job.log").read_text().splitlines()
    assert line.endswith(" ERROR acquire_synthetic failed: pretrain.dataset.synthetic: n_positive must be between 0 "
                         "and n_patients"), line
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("local", [{}, {"path": None}, {"path": ""}])
def test_local_source_without_a_path_is_rejected(local):
    message = _error({"dataset": {"source": "local", "local": local}})
    assert "dataset.local.path" in message


# --------------------------------------------------------------------------- models


TINY_VIVIT = {"config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 32, "tubelet_size": [2, 8, 8]}, "num_frames": 4}


def test_unknown_model_name_fails_at_validation_listing_the_models():
    message = _error({"models": {"resnet": {}}})
    assert message == f"invalid configuration: models.resnet: unknown model 'resnet'; available: {AVAILABLE}"
    message = _error({"models": {"vivit": {}, "cnn": {"architecture": "resnet"}}})
    assert f"models.cnn.architecture: unknown model 'resnet'; available: {AVAILABLE}" in message


def test_a_registered_architecture_under_another_entry_name_is_accepted():
    config = validate_config({"models": {"vivit_first": {"architecture": "vivit", **TINY_VIVIT}}})
    assert list(config["models"]) == ["vivit_first"]
    from ichseq.models import REGISTRY, register

    @register("tiny_test_model")
    class Tiny:  # a model defined outside the package registers itself, and validates
        pass

    try:
        assert validate_config({"models": {"mine": {"architecture": "tiny_test_model"}}})
        assert "tiny_test_model" in _error({"models": {"resnet": {}}})
    finally:
        REGISTRY.pop("tiny_test_model")


def test_validation_does_not_import_the_models():
    # The Snakefile validates on every invocation: transformers (seconds) must stay unimported.
    code = (
        "import sys\n"
        "from ichseq.config import validate_config\n"
        "from ichseq.errors import ConfigError\n"
        "validate_config({})\n"
        "try:\n"
        "    validate_config({'models': {'resnet': {}}})\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
        "print(sorted(m for m in ('transformers', 'torch', 'ichseq.models.vivit', 'ichseq.models.convnext')"
        " if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines() == [f"invalid configuration: models.resnet: unknown model 'resnet'; available: {AVAILABLE}",
                                "[]"]


def test_model_image_size_other_than_the_cache_is_refused_naming_both_keys():
    message = _error({"preprocess": {"image_size": 128}, "models": {"vivit": {**TINY_VIVIT, "image_size": 224}}})
    assert message.startswith("invalid configuration: models.vivit.image_size: 224 differs from preprocess.image_size 128")
    assert "set both to the same value" in message
    message = _error({"models": {"convnext": {"config": {"image_size": 64}}}})
    assert "models.convnext.config.image_size: 64 differs from preprocess.image_size 128" in message
    # A checkpoint's config is not ours to shape: only the entry's image_size counts then.
    validate_config({"models": {"convnext": {"pretrained": "facebook/convnext-tiny-224", "config": {"image_size": 64}}}})


def test_model_without_image_size_takes_the_cache_size():
    from ichseq.training.plan import model_plan

    # A 224-px checkpoint with image_size left out reads the 160-px cache at 160 (its
    # embeddings adapted), rather than every batch being upsampled to 224.
    config = validate_config({"preprocess": {"image_size": 160},
                              "models": {"vivit": {"pretrained": "google/vivit-b-16x2-kinetics400", "num_frames": 18},
                                         "convnext": {"image_size": 160}}})
    assert model_plan(config, "vivit").model["image_size"] == 160
    assert model_plan(config, "convnext").model["image_size"] == 160


def test_error_message_newlines_are_collapsed():
    assert "\n" not in str(ConfigError("line one\nline two"))


# --------------------------------------------------------------------------- docs == defaults


# Open mappings (one entry per user-chosen name): compared as a whole with the schema default.
OPAQUE = {"models"}


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in OPAQUE:
            yield from _leaves(value, dotted + ".")
        else:
            yield dotted, value


def _schema_node(schema: dict, dotted: str) -> dict | None:
    node = schema
    for part in dotted.split("."):
        node = resolve_ref(node, schema).get("properties", {}).get(part)
        if node is None:
            return None
    return resolve_ref(node, schema)


def test_every_config_yaml_key_is_in_the_schema_with_the_same_default(repo_config):
    schema = load_schema()
    problems = []
    for dotted, value in _leaves(repo_config):
        node = _schema_node(schema, dotted)
        if node is None:
            problems.append(f"{dotted}: not in the schema")
        elif "default" not in node:
            problems.append(f"{dotted}: no default in the schema")
        elif node["default"] != value or type(node["default"]) is not type(value):
            problems.append(f"{dotted}: schema default {node['default']!r} != config.yaml {value!r}")
    assert not problems, problems


def test_defaults_alone_reproduce_config_yaml(repo_config):
    # The other direction: no schema default is missing from (or differs from) config.yaml,
    # which leaves training, frames and aggregation to the schema.
    assert validate_config({}) == validate_config(repo_config)


def test_code_defaults_agree_with_the_schema():
    defaults = validate_config({})
    syn = defaults["dataset"]["synthetic"]
    spec = SyntheticSpec()
    for field in dataclasses.fields(SyntheticSpec):
        if field.name in syn:
            assert getattr(spec, field.name) == syn[field.name], field.name
    window = WindowSpec()
    assert (window.level, window.width) == (
        defaults["preprocess"]["window"]["level"],
        defaults["preprocess"]["window"]["width"],
    )
    assert window.image_size == defaults["preprocess"]["image_size"]
    assert window.prewindowed == defaults["dataset"]["prewindowed"]
    assert window.slab_mm == defaults["preprocess"]["slab_mm"]
    training = TrainSettings()
    for field in dataclasses.fields(TrainSettings):
        assert getattr(training, field.name) == defaults["training"][field.name], field.name
    params = inspect.signature(patient_split).parameters
    for key in ("seed", "test_fraction", "val_fraction", "stratify"):
        assert params[key].default == defaults["splits"][key], key


def test_library_and_cli_defaults_are_the_schemas():
    # The functions the rules call with a config value default to that value's schema default,
    # and so do the matching `ichseq` options: called without it, they do what a config without it does.
    from ichseq.analysis import ranking, stats
    from ichseq.cli import build_parser
    from ichseq.data import cq500, rsna
    from ichseq.training import pretrain

    defaults = validate_config({})
    statistics = defaults["statistics"]
    checked = 0
    for module in (stats, ranking):
        functions = [f for _, f in inspect.getmembers(module, inspect.isfunction) if f.__module__ == module.__name__]
        for function in functions + [ranking.Friedman.__init__]:
            name = function.__qualname__
            params = inspect.signature(function).parameters
            for param, key in (("alpha", "alpha"), ("undefined", "undefined"), ("n_resamples", "bootstrap_resamples")):
                if param in params and params[param].default is not inspect.Parameter.empty:
                    assert params[param].default == statistics[key], f"{module.__name__}.{name}({param})"
                    checked += 1
    assert checked >= 10
    cq = defaults["dataset"]["cq500"]
    for function in (cq500.cq500_labels, cq500.cq500_inventory, cq500.Cq500Dataset.__init__):
        params = inspect.signature(function).parameters
        assert params["rule"].default == cq["label_rule"]
        assert "prefer_mm" not in params or params["prefer_mm"].default == cq["slab_mm"]
    for function in (rsna.group_scans, rsna.RsnaDataset.__init__):
        assert inspect.signature(function).parameters["min_slices"].default == defaults["dataset"]["rsna"]["min_slices"]
    holdout = inspect.signature(pretrain.pretrain_model).parameters["holdout_fraction"].default
    assert holdout == defaults["pretrain"]["holdout_fraction"]
    parser = build_parser()
    stats_args = parser.parse_args(["stats", "metrics.csv", "--out", "out"])
    assert (stats_args.alpha, stats_args.undefined, stats_args.seed, stats_args.resamples) == (
        statistics["alpha"], statistics["undefined"], statistics["seed"], statistics["bootstrap_resamples"])
    assert parser.parse_args(["predict", "run", "scan.nii"]).threads == defaults["threads"]["predict"]


# --------------------------------------------------------------------------- presets


def _layered(*names: str) -> dict:
    from snakemake.utils import update_config  # merges --configfile files as Snakemake does

    config = yaml.safe_load(CONFIG_YAML.read_text())
    for name in names:
        update_config(config, yaml.safe_load((REPO / "workflow/presets" / name).read_text()))
    return validate_config(config)


def test_paper_preset_is_the_study_protocol():
    from ichseq.training.plan import model_plan

    config = _layered("paper.yaml")
    vivit, convnext = model_plan(config, "vivit"), model_plan(config, "convnext")
    brain = {"cache_window": {"level": 40, "width": 120}}  # what the cached slices hold, for any input windows
    assert vivit.model == {"pretrained": "google/vivit-b-16x2-kinetics400", "num_frames": 18, "image_size": 224,
                           "pooling": "cls", **brain}
    # pooling: mean and no input windows: the study's, whatever the demo entry sets
    assert convnext.model == {"pretrained": "facebook/convnext-tiny-224", "image_size": 224, "pooling": "mean", **brain}
    for plan in (vivit, convnext):
        t = plan.training
        assert (t.mode, t.lr, t.weight_decay, t.schedule, t.warmup_steps, t.epochs, t.batch_size) == (
            "head", 5e-6, 0.01, "linear", 2, 20, 10)
        assert t.class_imbalance == "none"
    assert vivit.frames["policy"] == "first" and convnext.aggregation["rule"] == "any"
    assert config["splits"]["replicates"] == 10 and config["splits"]["test_fraction"] == 0.3
    assert config["preprocess"]["image_size"] == 224


def test_random_init_preset_builds_the_base_architectures_without_the_hub():
    from ichseq.training.plan import model_plan

    config = _layered("paper.yaml", "paper-random-init.yaml")
    vivit, convnext = model_plan(config, "vivit"), model_plan(config, "convnext")
    assert "pretrained" not in vivit.model and "pretrained" not in convnext.model  # random init
    assert vivit.model["config"]["hidden_size"] == 768 and vivit.model["num_frames"] == 18
    # Merged over the demo entries: none of the demo's shape or recipe may leak into the base architectures.
    assert convnext.model["config"] == {"patch_size": 4, "num_stages": 4, "hidden_sizes": [96, 192, 384, 768],
                                        "depths": [3, 3, 9, 3], "layer_scale_init_value": 1e-6}
    assert "mean_filters" not in vivit.model and "input_windows" not in vivit.model
    assert "input_windows" not in convnext.model and (vivit.model["pooling"], convnext.model["pooling"]) == ("cls", "mean")


def _flat(tree: dict, prefix: str = "") -> dict:
    """Every leaf of a nested config as ``{"a.b.c": value}``."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_as_published_preset_restores_exactly_the_studys_choices():
    from ichseq.training.plan import model_plan

    fixed, published = _layered("paper.yaml"), _layered("paper.yaml", "paper-as-published.yaml")
    a, b = _flat(fixed), _flat(published)
    changed = {key: (a.get(key), b.get(key)) for key in a.keys() | b.keys() if a.get(key) != b.get(key)}
    assert changed == {
        "splits.stratify": (True, False),
        "models.vivit.position_embeddings": (None, "reset"),
        "models.convnext.num_frames": (None, 19),
        "training.mode": ("head", "full"),
        "training.checkpoint_selection": ("val", "test"),
        "training.monitor": ("val_loss", "val_balanced_accuracy"),
        "statistics.undefined": ("drop", "zero"),
        "statistics.power_alpha": (None, 0.5),
    }
    convnext = model_plan(published, "convnext")
    assert convnext.model["num_frames"] == 19 and convnext.frames["policy"] == "first"
    assert model_plan(published, "vivit").training.checkpoint_selection == "test"


def test_zoo_preset_plans_the_seven_models():
    """workflow/presets/zoo.yaml over config.yaml: the seven designs, each buildable from its
    entry; the two-stage ones read convnext's store and pretraining."""
    from ichseq.models import model_kind
    from ichseq.training.plan import model_plan

    config = _layered("zoo.yaml")
    assert set(config["models"]) == {"vivit", "convnext", "cnn_rnn", "slice_context", "seg_cls", "videomae",
                                     "timesformer"}
    plans = {name: model_plan(config, name) for name in config["models"]}
    kinds = {name: model_kind(plan.architecture) for name, plan in plans.items()}
    assert kinds == {"vivit": "sequence", "convnext": "slice", "cnn_rnn": "scan", "slice_context": "context",
                     "seg_cls": "slice", "videomae": "sequence", "timesformer": "sequence"}
    assert {n for n, p in plans.items() if p.pretrain} == {"vivit", "convnext", "seg_cls", "videomae", "timesformer"}
    for name in ("cnn_rnn", "slice_context"):
        assert plans[name].store_of == "convnext" and plans[name].weights_from == "convnext"
    # The demo entries are untouched by the preset.
    assert config["models"]["convnext"] == _layered()["models"]["convnext"]
