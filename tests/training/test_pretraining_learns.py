"""At tiny size, the pretrain stage must make the study's head-only protocol learn: the patient
ROC AUC on unseen synthetic patients, over a few replicates, clearly above the same protocol on
the randomly initialised backbone (issue 13). The two-stage models (cnn_rnn, slice_context) then
learn from the same feature store, without running the backbone (issue 14). Fixed seeds
throughout; the margins are the test."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest

from ichseq.atomic import write_json_atomic
from ichseq.config import validate_config
from ichseq.data.cache import WindowSpec, build_cache
from ichseq.data.cohort import cohort_from_manifest
from ichseq.data.splits import patient_split
from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
from ichseq.training.pretrain import pretrain_model
from ichseq.training.plan import model_plan, pretrain_settings
from ichseq.training.runs import compute_features, train_run
from tests.conftest import run_outputs

QUIET = lambda _msg: None  # noqa: E731
SIZE = 64
REPLICATES = 5
WINDOWS = [{"level": 40, "width": 120}, {"level": 70, "width": 40}, {"level": 98, "width": 4}]
CONVNEXT = {"config": {"patch_size": 2, "num_stages": 2, "hidden_sizes": [12, 24], "depths": [1, 1],
                       "layer_scale_init_value": 1.0},
            "pooling": "max", "input_windows": WINDOWS, "image_size": SIZE}
CONFIG = {
    "preprocess": {"image_size": SIZE},
    "models": {"convnext": {**CONVNEXT, "pretrained": "pretrain"}},
    "training": {"epochs": 15, "batch_size": 16, "lr": 0.01, "patience": None, "feature_batch_size": 64},
    "pretrain": {"training": {"epochs": 4, "samples_per_epoch": 480, "batch_size": 16}},
}


def cohort(root, seed: int, n: int):
    spec = SyntheticSpec(n_patients=n, n_positive=n // 2, image_size=SIZE, min_slices=12, max_slices=16, seed=seed,
                         generator="cartoon")
    generate_synthetic(root / f"ds-{seed}", spec, log=QUIET)
    build_cache(root / f"ds-{seed}", root / f"cache-{seed}", WindowSpec(SIZE), log=QUIET)
    return root / f"cache-{seed}"


def replicate_aucs(plan, cache, splits, work, features) -> list[float]:
    """A classifier per replicate on the feature store ``features``; test patient ROC AUCs."""
    return [train_run(plan, rep, split, cache, run_outputs(work / f"rep-{rep}"), features_path=features,
                      log=QUIET)["metrics"]["roc_auc"] for rep, split in enumerate(splits)]


def head_only_aucs(plan, cache, splits, work) -> list[float]:
    """The study protocol: features once, then a classifier per replicate; test patient ROC AUCs."""
    compute_features(plan, cache, work / "features", log=QUIET)
    return replicate_aucs(plan, cache, splits, work, work / "features")


@pytest.fixture(scope="module")
def pretrained_backbone(tmp_path_factory):
    """The tiny convnext pretrained on one synthetic cohort, a study cohort of unseen patients
    and its replicate splits: (validated config, study cache, splits, the pretrained folder)."""
    tmp_path = tmp_path_factory.mktemp("pretrained")
    pretrain_cache = cohort(tmp_path, seed=11, n=40)
    study_cache = cohort(tmp_path, seed=12, n=30)  # unseen patients: another seed
    study = cohort_from_manifest(pd.read_csv(study_cache / "manifest.csv"))
    splits = []
    for rep in range(REPLICATES):
        splits.append(tmp_path / f"split-{rep}.json")
        write_json_atomic(splits[-1], patient_split(study, rep, 0, 0.4, 0.25))
    config = validate_config(copy.deepcopy(CONFIG))
    pretrain_model(model_plan(config, "convnext"), pretrain_settings(config, "convnext"), pretrain_cache,
                   study_cache, {"model": tmp_path / "pre/model", "history": tmp_path / "pre/h.csv",
                                 "metrics": tmp_path / "pre/m.json"}, log=QUIET)
    return config, study_cache, splits, tmp_path / "pre/model"


@pytest.mark.slow
def test_pretraining_makes_the_head_only_protocol_learn(pretrained_backbone, tmp_path):
    config, study_cache, splits, folder = pretrained_backbone
    plan = model_plan(config, "convnext")
    pretrained = head_only_aucs(plan.with_weights(folder), study_cache, splits, tmp_path / "p")

    random_config = copy.deepcopy(CONFIG)
    random_config["models"]["convnext"]["pretrained"] = None
    random = head_only_aucs(model_plan(validate_config(random_config), "convnext"), study_cache, splits,
                            tmp_path / "r")
    print(f"pretrained {pretrained}, random {random}")
    assert np.mean(pretrained) >= 0.85
    assert np.mean(pretrained) >= np.mean(random) + 0.2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn_rnn", "slice_context"])
def test_two_stage_models_learn_from_the_slice_models_feature_store(pretrained_backbone, tmp_path, monkeypatch, name):
    """Each two-stage head trains on the pretrained convnext's stored slice features: above
    chance on unseen patients, and no slice goes through the backbone again (its features
    method raises if called)."""
    config, study_cache, splits, folder = pretrained_backbone
    config = validate_config({**copy.deepcopy(config), "models": {**config["models"], name: {}}})
    compute_features(model_plan(config, "convnext").with_weights(folder), study_cache, tmp_path / "features",
                     log=QUIET)
    plan = model_plan(config, name)
    # Its weights are the backbone entry's pretraining; its store is the backbone's.
    assert plan.store_of == "convnext" and plan.weights_from == "convnext" and not plan.pretrain
    plan = plan.with_weights(folder)

    from ichseq.models.convnext import ConvNeXt

    def no_backbone_pass(self, pixel_values):
        raise AssertionError("the backbone ran: the two-stage head must read the feature store")

    monkeypatch.setattr(ConvNeXt, "features", no_backbone_pass)
    aucs = replicate_aucs(plan, study_cache, splits, tmp_path, tmp_path / "features")
    print(f"{name}: {aucs}")
    assert np.mean(aucs) >= 0.85
