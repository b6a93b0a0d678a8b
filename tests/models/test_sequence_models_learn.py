"""At tiny size, each video model (vivit, videomae, timesformer) learns on unseen synthetic
patients: patient ROC AUC over 5 replicates, head-only protocol on a frozen random backbone
with the demo's input (three HU windows, the blood band's mean filters, max pooling over the
tokens). The same protocol without the mean filters stays at chance: the margin is the test.
(convnext: tests/training/test_pretraining_learns.py; seg_cls: tests/models/test_seg_cls.py.)"""

from __future__ import annotations

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
from ichseq.training.runs import compute_features, train_run
from ichseq.training.plan import model_plan
from tests.conftest import run_outputs

QUIET = lambda _msg: None  # noqa: E731
SIZE = 64
REPLICATES = 5
WINDOWS = [{"level": 40, "width": 120}, {"level": 74, "width": 48, "band": True}, {"level": 98, "width": 4}]
SHAPE = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
CONFIGS = {
    "vivit": {**SHAPE, "tubelet_size": [2, 8, 8]},
    "videomae": {**SHAPE, "patch_size": 8, "tubelet_size": 2},
    "timesformer": {**SHAPE, "patch_size": 8},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """30 unseen synthetic patients at 64 px and 5 replicate splits."""
    root = tmp_path_factory.mktemp("study")
    spec = SyntheticSpec(n_patients=30, n_positive=15, image_size=SIZE, min_slices=12, max_slices=16, seed=12,
                         generator="cartoon")
    generate_synthetic(root / "ds", spec, log=QUIET)
    build_cache(root / "ds", root / "cache", WindowSpec(SIZE), log=QUIET)
    cohort = cohort_from_manifest(pd.read_csv(root / "cache" / "manifest.csv"))
    splits = []
    for rep in range(REPLICATES):
        splits.append(root / f"rep-{rep}.json")
        write_json_atomic(splits[-1], patient_split(cohort, rep, 0, 0.4, 0.25))
    return root / "cache", splits


def aucs(name, mean_filters, cache, splits, work) -> list[float]:
    entry = {"config": CONFIGS[name], "pooling": "max", "input_windows": WINDOWS, "num_frames": 8, "image_size": SIZE,
             "mean_filters": mean_filters}
    config = validate_config({"preprocess": {"image_size": SIZE}, "models": {name: entry},
                              "training": {"epochs": 15, "batch_size": 8, "lr": 0.01, "patience": None}})
    plan = model_plan(config, name)
    compute_features(plan, cache, work / "features", log=QUIET)
    out = []
    for rep, split in enumerate(splits):
        out.append(train_run(plan, rep, split, cache, run_outputs(work / f"rep-{rep}"), features_path=work / "features",
                             log=QUIET)
                   ["metrics"]["roc_auc"])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_video_model_learns_on_unseen_patients(study, tmp_path, name):
    cache, splits = study
    learned = aucs(name, {"channel": 1, "count": 4}, cache, splits, tmp_path / "mean-filters")
    plain = aucs(name, None, cache, splits, tmp_path / "plain")
    print(f"{name}: with mean filters {np.round(learned, 3)}, without {np.round(plain, 3)}")
    assert np.mean(learned) >= 0.8
    assert np.mean(learned) >= np.mean(plain) + 0.2
