"""Two-stage models (cnn_rnn, slice_context) over a slice model's feature store: their samples,
the exactness of head training on stored features, config errors, saving and loading.
Whether they learn is tested in test_pretraining_learns.py (on a pretrained backbone)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from ichseq.config import validate_config
from ichseq.data.cache import SliceCache
from ichseq.data.frames import BLANK
from ichseq.errors import ConfigError, DataError, ModelError
from ichseq.models import load_model
from ichseq.training.feature_store import read_feature_store
from ichseq.training.runs import compute_features, load_run_model, train_run
from ichseq.training.plan import model_plan
from tests.conftest import run_outputs
from ichseq.training.samples import build_samples

QUIET = lambda _msg: None  # noqa: E731
CONVNEXT = {"config": {"patch_size": 2, "num_stages": 2, "hidden_sizes": [8, 16], "depths": [1, 1]}, "pooling": "max",
            "input_windows": [{"level": 40, "width": 120}, {"level": 70, "width": 40}, {"level": 98, "width": 4}]}
CONFIG = {
    "preprocess": {"image_size": 32},
    "training": {"epochs": 2, "batch_size": 4, "lr": 0.003},
    "models": {"convnext": CONVNEXT, "cnn_rnn": {"head": {"hidden_size": 8}},
               "slice_context": {"head": {"hidden_size": 8, "context": 1}},
               "rnn_lstm_max": {"architecture": "cnn_rnn", "head": {"rnn": "lstm", "pooling": "max", "hidden_size": 8}},
               "context_attention": {"architecture": "slice_context",
                                     "head": {"layer": "attention", "hidden_size": 8, "context": 2}}},
}
TWO_STAGE = ["cnn_rnn", "slice_context", "rnn_lstm_max", "context_attention"]


def config(**models):
    c = copy.deepcopy(CONFIG)
    c["models"].update(models)
    return validate_config(c)


@pytest.fixture(scope="module")
def store(cohort_dir, tmp_path_factory):
    """The convnext entry's feature store of the tiny cohort."""
    out = tmp_path_factory.mktemp("store") / "convnext"
    compute_features(model_plan(config(), "convnext"), cohort_dir / "cache", out, log=QUIET)
    return out


def test_scan_samples_are_whole_scans_in_order_padded(cohort_dir):
    cache = SliceCache(cohort_dir / "cache")
    samples = build_samples(cache, "scan")
    longest = max(len(cache.patient_rows(p)) for p in cache.patients)
    assert list(samples.patient) == list(cache.patients) and samples.rows.shape == (len(cache.patients), longest)
    for patient, rows, label in zip(samples.patient, samples.rows, samples.label):
        scan = cache.patient_rows(patient)
        assert list(rows[: len(scan)]) == list(scan) and (rows[len(scan):] == BLANK).all()
        assert label == cache.patient_labels(patient).max()
    assert (samples.slice == -1).all()


def test_context_samples_are_each_slice_with_its_neighbours(cohort_dir):
    cache = SliceCache(cohort_dir / "cache")
    samples = build_samples(cache, "context", context=2)
    assert len(samples) == len(cache.manifest) and samples.rows.shape[1] == 5
    labels = cache.manifest.label.to_numpy()
    for patient in cache.patients[:2]:
        scan = cache.patient_rows(patient)
        mine = samples.rows[samples.select([patient])]
        assert list(mine[:, 2]) == list(scan)  # the centre is the sample's own slice, in scan order
        assert list(mine[0]) == [BLANK, BLANK, scan[0], scan[1], scan[2]]
        assert list(mine[-1]) == [scan[-3], scan[-2], scan[-1], BLANK, BLANK]
        assert list(samples.label[samples.select([patient])]) == list(labels[scan])


@pytest.mark.parametrize("name", TWO_STAGE)
def test_head_on_stored_features_is_the_full_forward(cohort_dir, store, name):
    """A batch of stored slice features gives the same logits as the same samples' pixels
    through the backbone: head-mode training is exact, not an approximation."""
    cache = SliceCache(cohort_dir / "cache")
    plan = model_plan(config(), name)
    model = plan.build().eval()
    features, stored_samples, _ = read_feature_store(store)
    feature_rows = np.full(cache.slices.shape[0], -1, np.int64)
    feature_rows[stored_samples.rows[:, 0]] = np.arange(len(stored_samples))
    samples = build_samples(cache, model.kind, context=getattr(model, "context", 0))
    index = np.arange(min(len(samples), 5))
    with torch.no_grad():
        from_store = model.forward_batch(samples.batch(model, cache, index, features=torch.from_numpy(features),
                                                       feature_rows=feature_rows))
        from_pixels = model.forward_batch(samples.batch(model, cache, index))
    torch.testing.assert_close(from_store, from_pixels, rtol=1e-4, atol=1e-5)


def test_a_scans_score_does_not_depend_on_the_padding(cohort_dir, store):
    cache = SliceCache(cohort_dir / "cache")
    model = model_plan(config(), "cnn_rnn").build().eval()
    samples = build_samples(cache, "scan")
    lengths = (samples.rows != BLANK).sum(axis=1)
    short, long = int(np.argmin(lengths)), int(np.argmax(lengths))
    assert lengths[short] < lengths[long]
    with torch.no_grad():
        alone = model.forward_batch(samples.batch(model, cache, np.array([short])))
        padded = model.forward_batch(samples.batch(model, cache, np.array([short, long])))[:1]
    torch.testing.assert_close(alone, padded, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["cnn_rnn", "slice_context"])
def test_head_mode_run_reads_the_backbones_store_and_reloads(cohort_dir, store, tmp_path, name):
    plan = model_plan(config(), name)
    log = []
    report = train_run(plan, 0, cohort_dir / "rep-0.json", cohort_dir / "cache", run_outputs(tmp_path), features_path=store,
                       log=log.append)
    assert any("no slice goes through the backbone again" in line for line in log)
    cost = json.loads((tmp_path / "cost.json").read_text())
    store_meta = json.loads((store / "features.json").read_text())
    assert cost["feature_seconds"] == store_meta["seconds"]  # the store's cost, not a second pass
    head = sum(p.numel() for p in load_run_model(tmp_path / "model")[0].classifier.parameters())
    assert cost["parameters_trainable"] == head
    assert cost["parameters_total"] == store_meta["parameters"]["total"] + head  # the backbone's and its own
    # The imbalance option used is in the run's outputs (the config's default here).
    assert cost["class_imbalance"] == report["class_imbalance"] == plan.training.class_imbalance == "weighted"
    model, info = load_run_model(tmp_path / "model")
    assert info["plan"]["backbone"]["name"] == "convnext"
    # The reloaded model (backbone rebuilt, head loaded) reproduces the run's test probabilities.
    cache = SliceCache(cohort_dir / "cache")
    samples = build_samples(cache, model.kind, context=getattr(model, "context", 0))
    split = json.loads((cohort_dir / "rep-0.json").read_text())
    index = samples.select(split["test"])
    with torch.no_grad():
        probs = torch.softmax(model.forward_batch(samples.batch(model, cache, index)), dim=1)[:, 1].numpy()
    table = __import__("pandas").read_csv(tmp_path / "sample_predictions.csv")
    np.testing.assert_allclose(probs, table.probability.to_numpy(), rtol=1e-4, atol=1e-6)
    assert report["metrics"]["n_test"] == len(split["test"])
    if name == "cnn_rnn":  # one sample per scan: no slice column
        assert "slice" not in table.columns and len(table) == len(split["test"])
    else:
        assert "slice" in table.columns and len(table) == len(index)


def test_full_mode_saves_a_self_contained_folder(cohort_dir, tmp_path):
    c = config(rnn_full={"architecture": "cnn_rnn", "head": {"hidden_size": 8},
                         "training": {"mode": "full", "epochs": 1, "batch_size": 2}})
    plan = model_plan(c, "rnn_full")
    train_run(plan, 0, cohort_dir / "rep-0.json", cohort_dir / "cache", run_outputs(tmp_path))
    folder = tmp_path / "model"
    assert (folder / "backbone" / "config.json").is_file() and (folder / "model_settings.json").is_file()
    # Loads without the config's entry: the folder holds the backbone and the head settings.
    bare = load_model("cnn_rnn", folder, {}, entry="rnn_full").eval()
    model, _ = load_run_model(folder)
    pixels = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(bare(bare.prepare(pixels)), model(model.prepare(pixels)))
    assert bare.backbone.input_windows == CONVNEXT["input_windows"]


def test_a_store_without_some_slices_is_refused(cohort_dir):
    cache = SliceCache(cohort_dir / "cache")
    model = model_plan(config(), "cnn_rnn").build()
    samples = build_samples(cache, "scan")
    feature_rows = np.arange(cache.slices.shape[0])
    feature_rows[samples.rows[0, 1]] = -1
    with pytest.raises(DataError, match="feature store lacks slices"):
        samples.batch(model, cache, np.array([0]), features=torch.zeros(len(feature_rows), 16),
                      feature_rows=feature_rows)


@pytest.mark.parametrize(("models", "match"), [
    ({"cnn_rnn": {"backbone": "nope"}}, r"models\.cnn_rnn\.backbone: nope is not a model of this config"),
    ({"vivit": {}, "cnn_rnn": {"backbone": "vivit"}}, r"models\.cnn_rnn\.backbone: vivit is a sequence model"),
    ({"cnn_rnn": {"pretrained": "pretrain"}}, r"models\.cnn_rnn\.pretrained: applies only to .*, not cnn_rnn; a two-stage model takes its backbone's"),
    ({"convnext": {**CONVNEXT, "head": {"rnn": "gru"}}}, r"models\.convnext\.head: applies only to architectures cnn_rnn, slice_context, not convnext"),
    ({"convnext": {**CONVNEXT, "num_frames": 8}}, r"models\.cnn_rnn\.backbone: convnext takes only num_frames"),
])
def test_config_errors_name_the_key(models, match):
    with pytest.raises(ConfigError, match=match):
        model_plan(config(**models), "cnn_rnn")


@pytest.mark.parametrize(("head", "match"), [
    ({"rnn": "transformer"}, r"models\.cnn_rnn\.head\.rnn: must be one of gru, lstm"),
    ({"hidden": 8}, r"models\.cnn_rnn\.head\.hidden: unknown key"),
    ({"dropout": 1.5}, r"models\.cnn_rnn\.head\.dropout: expected a number in \[0, 1\)"),
])
def test_head_errors_name_the_key(head, match):
    with pytest.raises(ModelError, match=match):
        model_plan(config(cnn_rnn={"head": head}), "cnn_rnn").build()


def test_compute_features_refuses_a_two_stage_model(cohort_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"models\.cnn_rnn: a two-stage model has no feature store of its own"):
        compute_features(model_plan(config(), "cnn_rnn"), cohort_dir / "cache", tmp_path / "f")
