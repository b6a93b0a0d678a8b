"""The pretrain stage: cohort checks, the saved folder as a checkpoint, resuming, config checks."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from ichseq.config import validate_config
from ichseq.data.cache import SliceCache, WindowSpec, build_cache
from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
from ichseq.errors import ConfigError, DataError
from ichseq.training.pretrain import check_disjoint, holdout_split, pretrain_model, scan_digests
from ichseq.training.plan import model_plan, pretrain_settings
from ichseq.training.runs import compute_features
from ichseq.training.feature_store import read_feature_store

QUIET = lambda _msg: None  # noqa: E731
CONVNEXT = {"pretrained": "pretrain", "config": {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2},
            "image_size": 32}
CONFIG = {
    "preprocess": {"image_size": 32},
    "models": {"convnext": CONVNEXT},
    "training": {"epochs": 2, "batch_size": 8, "patience": None, "feature_batch_size": 16},
    "pretrain": {"training": {"epochs": 2, "batch_size": 16, "lr": 0.003}},
}


def outputs(folder) -> dict:
    return {"model": folder / "model", "history": folder / "history.csv", "metrics": folder / "metrics.json"}


@pytest.fixture(scope="module")
def pretrain_cache(tmp_path_factory):
    """A pretraining cohort of its own (another seed than the conftest dataset), cached at 32 px."""
    root = tmp_path_factory.mktemp("pretrain")
    spec = SyntheticSpec(n_patients=10, n_positive=5, image_size=64, min_slices=12, max_slices=16, seed=11,
                         generator="cartoon")
    generate_synthetic(root / "ds", spec, log=QUIET)
    build_cache(root / "ds", root / "cache", WindowSpec(32), log=QUIET)
    return root / "cache"


def test_a_disjoint_cohort_passes_and_a_shared_scan_is_refused_in_one_line(pretrain_cache, cohort_dir):
    check_disjoint(SliceCache(pretrain_cache), SliceCache(cohort_dir / "cache"), log=QUIET)
    with pytest.raises(DataError) as err:
        check_disjoint(SliceCache(cohort_dir / "cache"), SliceCache(cohort_dir / "cache"), log=QUIET)
    message = str(err.value)
    assert "\n" not in message and message.startswith("pretrain.dataset:") and "leaks test patients" in message
    study = SliceCache(cohort_dir / "cache")
    first = study.patients[0]
    assert f"patient {first} = study {first}" in message
    # The digest is of the windowed volume: equal volumes, equal digests; one changed pixel, another.
    digests = scan_digests(study)
    assert len(set(digests.values())) == len(study.patients)


def test_holdout_is_stratified_disjoint_and_seeded():
    patients, labels = np.arange(20), np.array([0] * 12 + [1] * 8)
    train, held = holdout_split(patients, labels, 0.25, seed=3)
    assert not set(train) & set(held) and sorted(train + held) == list(range(20))
    assert sum(labels[held]) == 2 and len(held) == 5  # a quarter of each class
    assert holdout_split(patients, labels, 0.25, seed=3) == (train, held)
    assert holdout_split(patients, labels, 0.25, seed=4) != (train, held)
    with pytest.raises(DataError, match="at least 2 patients of each class"):
        holdout_split(np.arange(5), np.array([0, 0, 0, 0, 1]), 0.2, 0)


def test_the_saved_folder_loads_as_a_checkpoint_and_its_features_differ_from_random(pretrain_cache, cohort_dir,
                                                                                      tmp_path):
    config = validate_config(CONFIG)
    plan = model_plan(config, "convnext")
    assert plan.pretrain and "pretrained" not in plan.model and "config" in plan.model
    report = pretrain_model(plan, pretrain_settings(config, "convnext"), pretrain_cache, cohort_dir / "cache",
                            outputs(tmp_path / "pre"), log=QUIET)
    assert report["patients"] == {"train": 8, "holdout": 2, "holdout_positive": 1}
    saved = sorted(p.name for p in (tmp_path / "pre/model").iterdir())
    assert saved == ["config.json", "model.safetensors", "preprocessor_config.json", "pretrain.json"]
    assert json.loads((tmp_path / "pre/metrics.json").read_text())["best_epoch"] == report["best_epoch"]

    # The features job's path: the plan with the folder as its checkpoint, loaded like any local one.
    loaded = plan.with_weights(tmp_path / "pre/model")
    assert loaded.model["pretrained"] == str(tmp_path / "pre/model") and "config" not in loaded.model
    compute_features(loaded, cohort_dir / "cache", tmp_path / "features", log=QUIET)
    compute_features(model_plan(validate_config({**CONFIG, "models": {"convnext": {**CONVNEXT, "pretrained": None}}}),
                                "convnext"), cohort_dir / "cache", tmp_path / "random", log=QUIET)
    pretrained, _, meta = read_feature_store(tmp_path / "features")
    random, _, _ = read_feature_store(tmp_path / "random")
    assert meta["settings"]["pretrained"] == str(tmp_path / "pre/model")
    assert pretrained.shape == random.shape and not np.allclose(pretrained, random)
    # Same weights, same normalisation: the loaded model's features are the saved model's.
    model = loaded.build().eval()
    x = torch.randint(0, 256, (2, 32, 32), dtype=torch.uint8)
    reference = plan.build()
    from safetensors.torch import load_file

    reference.hf_model.load_state_dict(load_file(str(tmp_path / "pre/model/model.safetensors")))
    with torch.no_grad():
        torch.testing.assert_close(model.features(model.prepare(x)), reference.eval().features(reference.prepare(x)))


def test_a_killed_pretraining_resumes_to_identical_files(pretrain_cache, cohort_dir, tmp_path):
    config = validate_config(CONFIG)
    plan, settings = model_plan(config, "convnext"), pretrain_settings(config, "convnext")

    class Killed(Exception):
        pass

    def kill_after_epoch_1(message):
        if message.startswith("epoch 2/"):
            raise Killed

    with pytest.raises(Killed):
        pretrain_model(plan, settings, pretrain_cache, cohort_dir / "cache", outputs(tmp_path / "a"),
                       log=kill_after_epoch_1)
    assert not (tmp_path / "a/metrics.json").exists() and not (tmp_path / "a/model").exists()
    messages = []
    pretrain_model(plan, settings, pretrain_cache, cohort_dir / "cache", outputs(tmp_path / "a"), log=messages.append)
    assert any("resuming from the checkpoint after epoch" in m for m in messages)
    pretrain_model(plan, settings, pretrain_cache, cohort_dir / "cache", outputs(tmp_path / "b"), log=QUIET)
    for name in ("model/model.safetensors", "model/config.json", "history.csv"):
        a, b = (tmp_path / "a" / name), (tmp_path / "b" / name)
        if name == "history.csv":  # seconds differ
            import pandas as pd

            assert pd.read_csv(a).drop(columns="seconds").equals(pd.read_csv(b).drop(columns="seconds"))
        else:
            assert a.read_bytes() == b.read_bytes(), name
    assert not (tmp_path / "a/resume-checkpoint.pt").exists()


def test_config_checks_of_the_pretrain_stage():
    with pytest.raises(ConfigError, match=r"pretrain\.dataset\.synthetic\.dir: .* the study cohort's folder"):
        validate_config({**CONFIG, "pretrain": {"dataset": {"synthetic": {"dir": "resources/ct-ich-synthetic"}}}})
    with pytest.raises(ConfigError, match=r"models\.convnext\.pretrain: applies only with"):
        validate_config({"models": {"convnext": {"pretrain": {"epochs": 3}}}})
    with pytest.raises(ConfigError, match=r"pretrain\.dataset\.local\.path: required"):
        validate_config({**CONFIG, "pretrain": {"dataset": {"source": "local"}}})
    config = validate_config({**CONFIG, "models": {"convnext": {**CONVNEXT, "pretrain": {"epochs": 5}}}})
    assert pretrain_settings(config, "convnext").epochs == 5 and pretrain_settings(config, "convnext").mode == "full"
    with pytest.raises(ConfigError, match=r"models\.convnext\.pretrain\.mode"):
        pretrain_settings(validate_config({**CONFIG, "models": {"convnext": {**CONVNEXT, "pretrain": {"mode": "head"}}}}),
                          "convnext")


def test_pretraining_runs_where_the_model_trains_unless_told_otherwise():
    config = validate_config({**CONFIG, "training": {**CONFIG["training"], "device": "cpu"}})
    assert pretrain_settings(config, "convnext").device == "cpu"  # e.g. a cluster without GPUs
    config["models"]["convnext"]["pretrain"] = {"device": "cuda"}
    assert pretrain_settings(config, "convnext").device == "cuda"
    assert pretrain_settings(validate_config(CONFIG), "convnext").device == "auto"
