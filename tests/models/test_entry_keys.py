"""Each model class declares the entry keys it reads (``entry_keys``), once; the config schema,
the config check, the refusal of another model's key and a plan's build settings all come
from that declaration. Adding a model with a key of its own is one module and one entry."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import yaml

from ichseq.config import load_schema, validate_config
from ichseq.errors import ConfigError, ModelError
from ichseq.models import REGISTRY, build_model, entry_keys, key_readers
from ichseq.models.catalogue import inherited, read_package
from ichseq.training.plan import model_plan

ARCH = "dilated"
ARCHITECTURE_MD = Path(__file__).resolve().parents[2] / "ARCHITECTURE.md"


def worked_example() -> tuple[str, dict]:
    """The model module and config entry of ARCHITECTURE.md's worked example."""
    text = ARCHITECTURE_MD.read_text(encoding="utf-8")
    section = text[text.index("## Adding a model"):]
    module = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    entry = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    return module, entry


@pytest.fixture
def dilated(tmp_path):
    """The worked example's module, as the package would hold it, registered."""
    module, _ = worked_example()
    source = module.replace("from . import", "from ichseq.models import").replace("from .base", "from ichseq.models.base")
    path = tmp_path / "dilated.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("dilated_example", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    yield
    REGISTRY.pop(ARCH)


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_the_worked_example_declares_its_keys_in_source(tmp_path):
    module, _ = worked_example()
    (tmp_path / "dilated.py").write_text(module)
    classes, registered = read_package(tmp_path, "ichseq.models")  # read, not imported
    assert registered == {ARCH: "DilatedNet"} and inherited(classes, "DilatedNet", "kind") == "slice"
    assert set(inherited(classes, "DilatedNet", "entry_keys")) == {"image_size", "dilation"}


def test_a_new_key_is_declared_once_in_its_class(dilated):
    # The schema takes it, with the architectures that read it, and checks it there.
    node = load_schema()["$defs"]["model"]["properties"]["dilation"]
    assert node["minimum"] == 1 and node["description"] == "the convolution's dilation. Read by: dilated."
    _, example = worked_example()
    config = validate_config(example)
    with pytest.raises(ConfigError) as info:
        validate_config({"models": {"dilated_2": {"architecture": ARCH, "dilation": 0}}})
    assert one_line(info) == "invalid configuration: models.dilated_2.dilation: 0 is less than the minimum of 1"
    # The plan hands it to the model, which reads it.
    plan = model_plan(config, "dilated_2")
    assert plan.model == {"image_size": 128, "dilation": 2, "cache_window": {"level": 40, "width": 120}}
    assert plan.build().conv.dilation == (2, 2)


def test_another_models_key_is_refused_by_the_config_check_the_plan_and_the_builder(dilated):
    assert key_readers("dilation") == [ARCH]
    expected = "models.convnext.dilation: applies only to architecture dilated, not convnext; remove it"
    with pytest.raises(ConfigError) as info:
        validate_config({"models": {"convnext": {"dilation": 2}}})
    assert one_line(info) == f"invalid configuration: {expected}"
    with pytest.raises(ConfigError) as info:
        model_plan({"models": {"convnext": {"dilation": 2}}}, "convnext")
    assert one_line(info) == expected
    with pytest.raises(ModelError) as info:
        build_model("convnext", {"dilation": 2})
    assert one_line(info) == expected


def test_without_the_class_the_key_is_unknown():
    assert "dilation" not in load_schema()["$defs"]["model"]["properties"]
    with pytest.raises(ConfigError, match=r"models\.convnext\.dilation: unknown key \(allowed here: "):
        validate_config({"models": {"convnext": {"dilation": 2}}})


@pytest.mark.parametrize(("entry", "message"), [
    # A key a model does not read was silently ignored before it declared what it reads.
    ({"convnext": {"mean_filters": {"channel": 0, "count": 1}}},
     "models.convnext.mean_filters: applies only to architectures timesformer, videomae, vivit, not convnext; "
     "remove it"),
    ({"seg_cls": {"position_embeddings": "reset"}},
     "models.seg_cls.position_embeddings: applies only to architectures timesformer, videomae, vivit, not seg_cls; "
     "remove it"),
    # A model narrows a shared key: its own pooling choices.
    ({"convnext": {"pooling": "cls"}}, "models.convnext.pooling: must be one of mean, max, got 'cls'"),
    ({"vivit": {"pooling": "cls"}}, None),
    # A two-stage model says where the key belongs.
    ({"convnext": {}, "slice_context": {"input_windows": [{"level": 40, "width": 80}]}},
     "models.slice_context.input_windows: applies only to architectures convnext, seg_cls, timesformer, videomae, "
     "vivit, not slice_context; a two-stage model takes its backbone's weights and input: set it on the backbone's "
     "own entry (its own settings are under head)"),
])
def test_builtin_declarations_check_each_entry(entry, message):
    if message is None:
        validate_config({"models": entry})
        return
    with pytest.raises(ConfigError) as info:
        validate_config({"models": entry})
    assert one_line(info) == f"invalid configuration: {message}"


def test_every_declared_key_is_in_the_schema_and_every_model_key_is_read():
    schema = load_schema()
    properties = schema["$defs"]["model"]["properties"]
    shared = schema["$defs"]["model_keys"]["properties"]
    declared = {key for name in ("convnext", "vivit", "seg_cls", "cnn_rnn") for key in entry_keys(name)}
    assert declared <= set(properties)
    assert all(key_readers(key) for key in shared), "a shared key no model reads"
    assert "phases" in properties and "phases" not in shared  # seg_cls's own, defined in its class
