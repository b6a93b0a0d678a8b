"""Training: cached-feature equivalence, determinism, resuming, outputs, aggregation, frames,
learning above chance -- on tiny randomly initialised models and tiny synthetic cohorts."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from scipy.special import expit, logit
from transformers import ConvNextConfig, ConvNextForImageClassification

from ichseq.atomic import write_json_atomic
from ichseq.data.cache import SliceCache, WindowSpec, build_cache
from ichseq.data.cohort import cohort_from_manifest
from ichseq.data.frames import select_frames
from ichseq.data.splits import patient_split
from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
from ichseq.errors import ConfigError, DataError, ModelError
from ichseq.models.base import Batch
from ichseq.training.calibration import calibration_summary
from ichseq.training.feature_store import extract_features, read_feature_store
from ichseq.training.loop import class_weights, epoch_order, fit, make_optimizer, make_scheduler, predict_logits
from ichseq.training.settings import TrainSettings, run_seed
from ichseq.training.runs import CHECKPOINT_NAME, compute_features, train_run
from ichseq.training.plan import model_plan
from tests.conftest import run_outputs
from ichseq.training.samples import build_samples
from ichseq.training.votes import aggregate_predictions

QUIET = lambda _msg: None  # noqa: E731
VIVIT = {"config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
                    "tubelet_size": [2, 8, 8], "hidden_dropout_prob": 0.3},
         "num_frames": 4, "image_size": 32}
CONVNEXT = {"config": {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2, "drop_path_rate": 0.3,
                       "layer_scale_init_value": 1.0},  # so that drop-path visibly changes outputs
            "image_size": 32}
BASE = {
    "models": {"vivit": VIVIT, "convnext": CONVNEXT},
    "training": {"mode": "head", "epochs": 4, "batch_size": 4, "lr": 0.01, "patience": None,
                 "class_imbalance": "none", "feature_batch_size": 8},
    "frames": {"policy": "uniform", "padding": "edge"},
    "aggregation": {"rule": "any", "threshold": 0.5, "k": 2},
}


def config(**sections) -> dict:
    cfg = json.loads(json.dumps(BASE))
    for key, value in sections.items():
        if isinstance(value, dict) and key != "models":
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


@pytest.fixture(scope="module")
def stores(cohort_dir):
    """Feature stores of both tiny models (head mode)."""
    for name in ("vivit", "convnext"):
        compute_features(model_plan(config(), name), cohort_dir / "cache", cohort_dir / f"features-{name}", log=QUIET)
    return cohort_dir


def run(cohort_dir, out, name="vivit", rep=0, cfg=None, log=QUIET):
    plan = model_plan(cfg or config(), name)
    features = cohort_dir / f"features-{name}" if plan.training.mode == "head" else None
    return train_run(plan, rep, cohort_dir / f"rep-{rep}.json", cohort_dir / "cache", run_outputs(out), features, log=log)


def read_outputs(out) -> dict:
    history = pd.read_csv(out / "history.csv").drop(columns="seconds")
    return {
        "metrics": json.loads((out / "metrics.json").read_text()),
        "predictions": (out / "predictions.csv").read_text(),
        "samples": (out / "sample_predictions.csv").read_text(),
        "history": history.to_csv(index=False),
        "head": (out / "model" / "head.safetensors").read_bytes() if (out / "model" / "head.safetensors").exists() else None,
    }


# -- settings and seeds -------------------------------------------------------------------------


def test_settings_reject_bad_values_naming_the_key():
    with pytest.raises(ConfigError, match=r"models\.vivit\.training\.mode"):
        TrainSettings.from_dict({"mode": "partial"}, where="models.vivit.training")
    with pytest.raises(ConfigError, match=r"training\.epochs"):
        TrainSettings.from_dict({"epochs": 0})
    with pytest.raises(ConfigError, match=r"training\.learning_rate: unknown key"):
        TrainSettings.from_dict({"learning_rate": 0.1})


def test_model_entry_overrides_the_global_sections():
    cfg = config()
    cfg["models"]["convnext"] = {**CONVNEXT, "training": {"lr": 0.5}, "aggregation": {"rule": "k_of_n"}}
    plan = model_plan(cfg, "convnext")
    assert plan.training.lr == 0.5 and plan.training.epochs == 4
    assert plan.aggregation == {"rule": "k_of_n", "threshold": 0.5, "k": 2, "calibration": "platt"}
    assert model_plan(cfg, "vivit").training.lr == 0.01
    with pytest.raises(ConfigError, match="models.resnet"):
        model_plan(cfg, "resnet")


def test_seeds_differ_per_model_and_replicate_and_are_stable():
    seeds = {run_seed(0, m, r) for m in ("vivit", "convnext") for r in range(10)}
    assert len(seeds) == 20
    assert run_seed(0, "vivit", 3) == run_seed(0, "vivit", 3)
    assert run_seed(1, "vivit", 3) != run_seed(0, "vivit", 3)


def test_class_weights_and_balanced_sampling():
    labels = np.array([0] * 90 + [1] * 10)
    w = class_weights(labels)
    assert torch.allclose(w, torch.tensor([100 / 180, 100 / 20]))
    order = epoch_order(labels, TrainSettings(class_imbalance="balanced"), seed=1)
    assert len(order) == 100 and 0.3 < labels[order].mean() < 0.7  # ~half positives, from 10%
    plain = epoch_order(labels, TrainSettings(class_imbalance="none"), seed=1)
    assert sorted(plain) == list(range(100))  # a permutation
    with pytest.raises(DataError, match="single class"):
        class_weights(np.zeros(5, dtype=int))


def test_linear_schedule_warms_up_then_decays_to_zero():
    head = torch.nn.Linear(3, 2)
    settings = TrainSettings(lr=1.0, warmup_steps=2, schedule="linear")
    opt = make_optimizer(head, settings)
    sched = make_scheduler(opt, settings, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25])
    # Weight decay on the weight matrix only, as HF Trainer.
    assert [g["weight_decay"] for g in opt.param_groups] == [settings.weight_decay, 0.0]


# -- cached features == training through the frozen backbone ------------------------------------


@pytest.mark.parametrize("name", ["vivit", "convnext"])
def test_head_on_cached_features_equals_training_through_the_frozen_backbone(cohort_dir, name):
    plan = model_plan(config(training={"class_imbalance": "weighted"}), name)
    cache = SliceCache(cohort_dir / "cache")
    split = json.loads((cohort_dir / "rep-0.json").read_text())
    model = plan.build().freeze_backbone()
    samples = build_samples(cache, model.kind, model.num_frames)
    train, val = samples.select(split["train"]), samples.select(split["val"])
    seed = run_seed(0, name, 0)

    # Cached: features once (batches of 8), then the classifier alone on them.
    stored = torch.from_numpy(extract_features(model, cache, samples, 8, torch.device("cpu"), log=QUIET))
    model.init_classifier_(seed)
    initial = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    cached = fit(model, model.classifier, lambda i: samples.batch(model, cache, i, features=stored), samples.label,
                 samples.patient, train, val, plan.training, seed, log=QUIET)

    # End to end: pixels through the frozen backbone (dropout / drop-path configured, so a
    # backbone left in train mode would give different features) into the HF classifier.
    model.init_classifier_(seed)
    assert all(torch.equal(v, initial[k]) for k, v in model.classifier.state_dict().items())
    direct = fit(model, model, lambda i: samples.batch(model, cache, i), samples.label, samples.patient,
                 train, val, plan.training, seed, log=QUIET)

    for column in ("train_loss", "val_loss"):
        np.testing.assert_allclose(cached.history[column], direct.history[column], rtol=1e-5, atol=1e-7)
    assert cached.best_epoch == direct.best_epoch
    # The classifier's keys in the whole model's state dict.
    prefix = next(name for name, module in model.named_modules() if module is model.classifier) + "."
    for key, value in cached.best_state.items():
        torch.testing.assert_close(value, direct.best_state[prefix + key], rtol=1e-5, atol=1e-7)
    # Training changed the head, and only the head.
    assert not torch.equal(cached.best_state["weight"], initial["weight"])
    fresh = plan.build()
    for key, value in direct.best_state.items():
        if not key.startswith(prefix):
            torch.testing.assert_close(value, fresh.state_dict()[key])


def test_feature_store_round_trip_and_stale_store_is_refused(stores, tmp_path):
    features, samples, meta = read_feature_store(stores / "features-vivit")
    assert features.dtype == np.float32 and features.shape == (len(samples), 16)
    assert meta["kind"] == "sequence" and meta["num_frames"] == 4
    cache = SliceCache(stores / "cache")
    assert len(samples) == len(cache.patients)  # one clip per patient
    # Other backbone settings than the store was made with: a clear error, not silent reuse.
    cfg = config(models={"vivit": {**VIVIT, "num_frames": 6}, "convnext": CONVNEXT})
    with pytest.raises(DataError, match="rerun the features rule"):
        run(stores, tmp_path / "out", cfg=cfg)


# -- a run's outputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vivit", "convnext"])
def test_run_writes_every_output_and_is_deterministic(stores, tmp_path, name):
    report = run(stores, tmp_path / "a", name)
    out = tmp_path / "a"
    for f in ("metrics.json", "predictions.csv", "sample_predictions.csv", "history.csv", "cost.json",
              "model/head.safetensors", "model/ichseq.json"):
        assert (out / f).is_file(), f
    assert not (out / CHECKPOINT_NAME).exists()  # removed once complete
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(report))
    assert set(metrics["metrics"]) >= {"accuracy", "precision", "recall", "specificity", "f1", "balanced_accuracy",
                                       "roc_auc", "tn", "fp", "fn", "tp", "n_test"}
    split = json.loads((stores / "rep-0.json").read_text())
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == ["patient", "label", "probability", "prediction", "probability_uncalibrated"]
    # Test ECE and Brier before and after the calibration, as the predictions give them.
    for when, column in (("before", "probability_uncalibrated"), ("after", "probability")):
        assert metrics["calibration"]["test"][when] == calibration_summary(predictions[column], predictions.label)
    assert sorted(predictions.patient) == split["test"]  # test patients only, each once
    assert metrics["metrics"]["n_test"] == len(split["test"])
    history = pd.read_csv(out / "history.csv")
    assert list(history.epoch) == [1, 2, 3, 4] and history.best.sum() == 1
    assert history.loc[history.best == 1, "epoch"].item() == metrics["best_epoch"]
    cost = json.loads((out / "cost.json").read_text())
    assert cost["parameters_trainable"] == 2 * 16 + 2  # the head: 16 features -> 2 logits
    assert cost["parameters_total"] > cost["parameters_trainable"]
    assert cost["device"].startswith("cpu") and cost["training_seconds"] > 0 and cost["samples_per_second"] > 0

    run(stores, tmp_path / "b", name)  # a rerun gives identical results
    assert read_outputs(tmp_path / "a") == read_outputs(tmp_path / "b")


def test_replicates_get_their_own_split_and_head(stores, tmp_path):
    run(stores, tmp_path / "r0", rep=0)
    run(stores, tmp_path / "r1", rep=1)
    for rep in (0, 1):
        split = json.loads((stores / f"rep-{rep}.json").read_text())
        assert sorted(pd.read_csv(tmp_path / f"r{rep}/predictions.csv").patient) == split["test"]
    assert read_outputs(tmp_path / "r0")["head"] != read_outputs(tmp_path / "r1")["head"]


class Killed(Exception):
    """Stands in for SIGKILL / a scheduler's time limit right after an epoch's checkpoint."""


def killer(at_epoch: int, messages: list):
    def log(message):
        messages.append(message)
        if message.startswith(f"epoch {at_epoch}/"):
            raise Killed

    return log


@pytest.mark.parametrize("name", ["vivit", "convnext"])
def test_killed_run_resumes_from_its_last_epoch_and_ends_identically(stores, tmp_path, name):
    run(stores, tmp_path / "whole", name)
    messages: list[str] = []
    with pytest.raises(Killed):
        run(stores, tmp_path / "resumed", name, log=killer(2, messages))
    # Killed: nothing that looks like a result, only the checkpoint.
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == [CHECKPOINT_NAME]
    messages.clear()
    run(stores, tmp_path / "resumed", name, log=messages.append)
    assert any("resuming from the checkpoint after epoch 2" in m for m in messages)
    assert sum(m.startswith("epoch ") for m in messages) == 2  # epochs 3 and 4 only
    assert read_outputs(tmp_path / "whole") == read_outputs(tmp_path / "resumed")
    cost = json.loads((tmp_path / "resumed" / "cost.json").read_text())
    assert cost["resumed_from_epoch"] == 2


def test_checkpoint_of_other_settings_is_not_resumed(stores, tmp_path):
    with pytest.raises(Killed):
        run(stores, tmp_path / "out", log=killer(2, []))
    cfg = config(training={"lr": 0.02})
    messages: list[str] = []
    run(stores, tmp_path / "out", cfg=cfg, log=messages.append)
    assert any("ignoring checkpoint" in m for m in messages)
    run(stores, tmp_path / "fresh", cfg=cfg)
    assert read_outputs(tmp_path / "out") == read_outputs(tmp_path / "fresh")


def test_early_stopping_keeps_the_best_val_epoch(stores, tmp_path):
    cfg = config(training={"epochs": 30, "patience": 2, "lr": 0.5})
    run(stores, tmp_path / "out", cfg=cfg)
    history = pd.read_csv(tmp_path / "out/history.csv")
    best = history.loc[history.best == 1].iloc[0]
    assert best.val_loss == history.val_loss.min()
    assert len(history) <= 30 and len(history) - best.epoch <= 2
    if len(history) < 30:
        assert len(history) - best.epoch == 2  # stopped exactly `patience` epochs after the best


def _sample_loss(sample_predictions: pd.DataFrame) -> float:
    """Mean cross-entropy of the samples from their stored probabilities of hemorrhage."""
    p = np.where(sample_predictions.label == 1, sample_predictions.probability, 1 - sample_predictions.probability)
    return float(-np.log(p).mean())


@pytest.mark.parametrize("name", ["vivit", "convnext"])
def test_checkpoint_selection_test_keeps_the_epoch_best_on_test_and_says_so(stores, tmp_path, name):
    cfg = config(training={"epochs": 12, "patience": 3, "lr": 0.5, "checkpoint_selection": "test"})
    messages: list[str] = []
    report = run(stores, tmp_path / "test", name, cfg=cfg, log=messages.append)
    history = pd.read_csv(tmp_path / "test/history.csv")
    assert {"val_loss", "test_loss", "test_roc_auc", "test_balanced_accuracy"} <= set(history.columns)
    best = history.loc[history.best == 1].iloc[0]
    assert best.test_loss == history.test_loss.min() and best.epoch == report["best_epoch"]
    if len(history) < 12:  # early stopping watched the test loss too
        assert len(history) - best.epoch == 3
    # The weights kept are that epoch's: the stored test predictions reproduce its test loss.
    samples = pd.read_csv(tmp_path / "test/sample_predictions.csv")
    assert _sample_loss(samples) == pytest.approx(best.test_loss, rel=1e-4)
    # Labelled as biased: in the log (a WARNING on every run) and in the run's outputs.
    assert sum(m.startswith("WARNING: ") and "TEST patients" in m and "biased" in m for m in messages) == 1
    assert "chosen on the TEST patients" in messages[-1]
    assert json.loads((tmp_path / "test/metrics.json").read_text())["checkpoint_selection"] == "test"
    assert json.loads((tmp_path / "test/cost.json").read_text())["checkpoint_selection"] == "test"

    # The default is unchanged: the epoch is chosen on val, nothing of the above appears.
    messages.clear()
    report = run(stores, tmp_path / "val", name, cfg=config(training={"epochs": 12, "patience": 3, "lr": 0.5}),
                 log=messages.append)
    history = pd.read_csv(tmp_path / "val/history.csv")
    assert not [c for c in history.columns if c.startswith("test_")]
    assert history.loc[history.best == 1, "val_loss"].item() == history.val_loss.min()
    assert "checkpoint_selection" not in report and "checkpoint_selection" not in json.loads(
        (tmp_path / "val/cost.json").read_text())
    assert not any("WARNING" in m or "TEST" in m for m in messages)


def test_checkpoint_selection_is_validated_and_test_needs_the_test_samples(stores):
    with pytest.raises(ConfigError, match=r"training\.checkpoint_selection: must be one of val, test"):
        TrainSettings.from_dict({"checkpoint_selection": "train"})
    settings = TrainSettings(checkpoint_selection="test", epochs=1)
    model = model_plan(config(), "convnext").build().freeze_backbone()
    labels, patients = np.array([0, 1, 0, 1]), np.arange(4)
    fetch = lambda i: Batch(torch.as_tensor(labels[i]), features=torch.zeros(len(i), 16))  # noqa: E731
    with pytest.raises(ValueError, match="test_index"):
        fit(model, model.classifier, fetch, labels, patients, np.array([0, 1]), np.array([2, 3]), settings, 0,
            log=QUIET)


def test_warning_messages_reach_the_job_log_at_warning_level(tmp_path):
    from ichseq.runlog import run_step

    run_step(tmp_path / "job.log", lambda log: (log("WARNING: chosen on test"), log("epoch 1/1")), name="job")
    lines = (tmp_path / "job.log").read_text().splitlines()
    assert lines[0].endswith(" WARNING chosen on test") and lines[1].endswith(" INFO epoch 1/1")


# -- decisions: aggregation rules, frames, undefined metrics ------------------------------------


@pytest.mark.parametrize("rule", ["any", "max_prob", "k_of_n"])
def test_slice_model_patient_decision_follows_the_rule(stores, tmp_path, rule):
    cfg = config(aggregation={"rule": rule, "threshold": 0.45, "k": 2})
    report = run(stores, tmp_path / "out", "convnext", cfg=cfg)
    slices = pd.read_csv(tmp_path / "out/sample_predictions.csv")
    assert {"patient", "slice", "label", "probability"} <= set(slices.columns)
    patient_threshold = None
    if rule == "max_prob":
        patient_threshold = report["decision"]["patient_threshold"]
        assert 0.0 <= patient_threshold <= 1.0
    predictions = pd.read_csv(tmp_path / "out/predictions.csv")
    # The model's own patient probability is its highest slice's; the reported one is that
    # through the run's calibration map (fitted on the val patients: a real fit, not the identity).
    top = slices.groupby("patient").probability.max().sort_index().to_numpy()
    np.testing.assert_allclose(predictions.probability_uncalibrated, top)
    calibration = report["calibration"]
    assert calibration["method"] == "platt" and calibration["fitted"] and calibration["slope"] != 1.0
    np.testing.assert_allclose(predictions.probability, expit(calibration["slope"] * logit(top) + calibration["intercept"]),
                               rtol=1e-6)
    if rule == "max_prob":  # chosen on calibrated val probabilities, compared with calibrated ones
        expected = (predictions.probability >= patient_threshold).astype(int).tolist()
    else:  # the study's votes: the model's own slice probabilities against the fixed threshold
        expected = aggregate_predictions(slices, rule, threshold=0.45, k=2).prediction.tolist()
    assert predictions.prediction.tolist() == expected
    assert report["decision"]["rule"] == rule


@pytest.mark.parametrize("rule", ["max_prob", "any"])
def test_scan_model_threshold_is_chosen_on_the_validation_patients(stores, tmp_path, rule):
    cfg = config(aggregation={"rule": rule, "threshold": 0.5})
    report = run(stores, tmp_path / "out", "vivit", cfg=cfg)
    predictions = pd.read_csv(tmp_path / "out/predictions.csv")
    calibration = report["calibration"]
    if rule == "max_prob":
        # The threshold that best separates the val patients' calibrated probabilities.
        info = json.loads((tmp_path / "out/model/ichseq.json").read_text())
        val = json.loads((stores / "rep-0.json").read_text())["val"]
        assert report["decision"]["rule"] == "max_prob" and info["decision"] == report["decision"]
        assert info["calibration"] == {k: v for k, v in calibration.items() if k != "test"}
        assert len(val) == calibration["patients"]
        expected = (predictions.probability >= report["decision"]["patient_threshold"]).astype(int)
    else:  # the study's fixed threshold on the model's own probability
        assert report["decision"] == {"rule": "threshold", "threshold": 0.5}
        expected = (predictions.probability_uncalibrated >= 0.5).astype(int)
    assert predictions.prediction.tolist() == expected.tolist()


def test_a_cache_with_scan_labels_only_trains_scan_models_and_refuses_slice_models(stores, tmp_path):
    """CQ500 gives one label per scan: its cache says so, and a slice model would learn that every
    slice of a bleeding scan bleeds."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(stores / "cache", cache)
    meta = json.loads((cache / "cache.json").read_text())
    (cache / "cache.json").write_text(json.dumps({**meta, "slice_labels": False, "masks": False}))
    cfg = config()

    def train(name, out, plan=None):
        plan = plan or model_plan(cfg, name)
        return train_run(plan, 0, stores / "rep-0.json", cache, run_outputs(tmp_path / out), stores / f"features-{name}",
                         log=QUIET)

    with pytest.raises(ConfigError, match=r"models\.convnext: a slice-level model needs slice labels.*external test set"):
        train("convnext", "convnext")
    assert not (tmp_path / "convnext" / "metrics.json").exists()
    assert train("vivit", "vivit")["metrics"]["n_test"] > 0  # a scan model needs the scan label only
    from dataclasses import replace

    plan = model_plan(cfg, "vivit")
    masked = replace(plan, training=replace(plan.training, mode="full", mask_loss_weight=0.5))
    with pytest.raises(ConfigError, match=r"learns from hemorrhage masks.*has none"):
        train("vivit", "masked", masked)


@pytest.mark.parametrize(("policy", "padding"), [("uniform", "edge"), ("first", "edge"), ("first", "zeros")])
def test_sequence_model_sees_the_frames_of_its_policy(cohort_dir, tmp_path, policy, padding):
    # 20 frames > every tiny scan (12-16 slices), so `first` has to pad.
    vivit = {**VIVIT, "num_frames": 20}
    cfg = config(models={"vivit": vivit}, frames={"policy": policy, "padding": padding})
    plan = model_plan(cfg, "vivit")
    compute_features(plan, cohort_dir / "cache", tmp_path / "features", log=QUIET)
    train_run(plan, 0, cohort_dir / "rep-0.json", cohort_dir / "cache", run_outputs(tmp_path / "out"), tmp_path / "features", log=QUIET)
    cache = SliceCache(cohort_dir / "cache")
    clips = pd.read_csv(tmp_path / "out/sample_predictions.csv")
    for patient, frames in zip(clips.patient, clips.frames):
        slice_numbers = cache.manifest.slice.to_numpy()[cache.patient_rows(patient)]
        index = select_frames(len(slice_numbers), 20, policy, padding)
        assert frames.split() == ["blank" if i < 0 else str(slice_numbers[i]) for i in index]
    if padding == "zeros":
        assert clips.frames.str.contains("blank").all()


@pytest.mark.parametrize("policy", ["first", "uniform"])
def test_slice_model_limited_to_n_slices_per_scan(cohort_dir, tmp_path, policy):
    # 14 slices: fewer than some tiny scans have (12-16), more than others.
    cache = SliceCache(cohort_dir / "cache")
    lengths = {p: len(cache.patient_rows(p)) for p in cache.patients}
    assert min(lengths.values()) < 14 < max(lengths.values())
    slice_numbers = cache.manifest.slice.to_numpy()
    samples = build_samples(cache, "slice", 14, policy)
    for patient, n in lengths.items():
        rows = samples.rows[samples.patient == patient, 0]
        assert len(rows) == min(14, n) == len(set(rows))
        by_position = cache.patient_rows(patient)
        if policy == "first":  # the first ones by position, as the study's loop took them
            assert list(rows) == list(by_position[: min(14, n)])
        assert list(samples.slice[samples.patient == patient]) == list(slice_numbers[rows])
    assert len(build_samples(cache, "slice")) == len(cache.manifest)  # default: every slice

    # Through the pipeline: features, training and test all use those slices only.
    cfg = config(models={"convnext": {**CONVNEXT, "num_frames": 14}}, frames={"policy": policy})
    plan = model_plan(cfg, "convnext")
    assert plan.build().num_frames == 14
    meta = compute_features(plan, cohort_dir / "cache", tmp_path / "features", log=QUIET)
    assert meta["frames"] == {"policy": policy}
    train_run(plan, 0, cohort_dir / "rep-0.json", cohort_dir / "cache", run_outputs(tmp_path / "out"), tmp_path / "features", log=QUIET)
    tested = pd.read_csv(tmp_path / "out/sample_predictions.csv")
    split = json.loads((cohort_dir / "rep-0.json").read_text())
    expected = samples.select(split["test"])
    assert list(tested.slice) == list(samples.slice[expected]) and len(tested) == len(expected)
    # Features of another policy are refused, not reused.
    other = model_plan(config(models={"convnext": {**CONVNEXT, "num_frames": 14}},
                              frames={"policy": "uniform" if policy == "first" else "first"}), "convnext")
    with pytest.raises(DataError, match="rerun the features rule"):
        train_run(other, 0, cohort_dir / "rep-0.json", cohort_dir / "cache", run_outputs(tmp_path / "other"), tmp_path / "features",
                  log=QUIET)


def test_no_positive_prediction_makes_precision_null(stores, tmp_path):
    # A threshold of 1 cannot be reached by a softmax probability: nothing is predicted positive.
    run(stores, tmp_path / "out", "vivit", cfg=config(aggregation={"threshold": 1.0}))
    text = (tmp_path / "out/metrics.json").read_text()
    metrics = json.loads(text)["metrics"]
    assert metrics["tp"] == metrics["fp"] == 0
    assert metrics["precision"] is None and '"precision": null' in text
    assert metrics["recall"] == 0.0


# -- weights ------------------------------------------------------------------------------------


def test_full_mode_trains_the_backbone_and_saves_a_loadable_model(cohort_dir, tmp_path):
    cfg = config(training={"mode": "full", "epochs": 2})
    report = run(cohort_dir, tmp_path / "out", "convnext", cfg=cfg)
    saved = ConvNextForImageClassification.from_pretrained(tmp_path / "out/model")
    fresh = model_plan(cfg, "convnext").build().hf_model
    stem = "convnext.embeddings.patch_embeddings.weight"
    assert not torch.equal(saved.state_dict()[stem], fresh.state_dict()[stem])  # the backbone learned
    assert saved.config.id2label[1] == "hemorrhage"
    assert json.loads((tmp_path / "out/cost.json").read_text())["feature_seconds"] == 0.0
    assert report["metrics"]["n_test"] > 0


def test_pretrained_weights_from_a_local_folder(cohort_dir, tmp_path):
    config_ = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32, num_labels=7)
    checkpoint = ConvNextForImageClassification(config_)
    checkpoint.save_pretrained(tmp_path / "ckpt")
    cfg = config(models={"convnext": {"pretrained": str(tmp_path / "ckpt"), "config": {"hidden_sizes": [99]}}})
    plan = model_plan(cfg, "convnext")
    assert "config" not in plan.model  # random-init overrides do not apply to a checkpoint
    meta = compute_features(plan, cohort_dir / "cache", tmp_path / "features", log=QUIET)
    model = plan.build().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the backbone is the checkpoint's
        torch.testing.assert_close(model.features(x), checkpoint.eval().convnext(x).pooler_output)
    assert meta["feature_dim"] == 16
    train_run(plan, 0, cohort_dir / "rep-0.json", cohort_dir / "cache", run_outputs(tmp_path / "out"), tmp_path / "features",
              log=QUIET)
    assert (tmp_path / "out/metrics.json").is_file()


def test_uncached_hub_id_offline_fails_with_one_actionable_line(cohort_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    plan = model_plan(config(models={"convnext": {"pretrained": "facebook/convnext-tiny-224"}}), "convnext")
    with pytest.raises(ModelError) as err:
        compute_features(plan, cohort_dir / "cache", tmp_path / "features", log=QUIET)
    message = str(err.value)
    assert "\n" not in message and "models.convnext.pretrained" in message and "folder" in message
    assert not (tmp_path / "features").exists()


# -- learning -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    """A 20-patient twin at 64 px: enough slices for a tiny CNN to show what it learned."""
    root = tmp_path_factory.mktemp("learnable")
    spec = SyntheticSpec(n_patients=20, n_positive=10, image_size=64, min_slices=12, max_slices=16, seed=3,
                         generator="cartoon")
    generate_synthetic(root / "ds", spec, log=QUIET)
    build_cache(root / "ds", root / "cache", WindowSpec(64), log=QUIET)
    cohort = cohort_from_manifest(pd.read_csv(root / "cache" / "manifest.csv"))
    for rep in range(3):
        write_json_atomic(root / f"rep-{rep}.json", patient_split(cohort, rep, 0, 0.3, 0.25))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["head", "full"])
def test_tiny_convnext_detects_bleeds_above_chance_on_unseen_patients(learnable, tmp_path, mode):
    convnext = {"config": {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}, "image_size": 64}
    training = {"mode": mode, "epochs": 30 if mode == "head" else 6, "lr": 0.01 if mode == "head" else 0.002,
                "batch_size": 16, "class_imbalance": "weighted"}
    cfg = config(models={"convnext": convnext}, training=training)
    plan = model_plan(cfg, "convnext")
    if mode == "head":
        compute_features(plan, learnable / "cache", learnable / "features-convnext", log=QUIET)
    aucs = []
    for rep in range(3):
        out = tmp_path / f"rep-{rep}"
        train_run(plan, rep, learnable / f"rep-{rep}.json", learnable / "cache", run_outputs(out),
                  learnable / "features-convnext", threads=2, log=QUIET)
        slices = pd.read_csv(out / "sample_predictions.csv")  # test patients' slices only
        aucs.append(roc_auc_score(slices.label, slices.probability))
    # Chance is 0.5; measured 0.66-0.77 per replicate for both modes.
    assert np.mean(aucs) > 0.6 and min(aucs) > 0.55, aucs


def test_tiny_vivit_learns_its_training_scans(learnable):
    plan = model_plan(config(models={"vivit": {**VIVIT, "num_frames": 8, "image_size": 64,
                                               "config": {**VIVIT["config"], "tubelet_size": [2, 16, 16]}}},
                             training={"epochs": 60, "lr": 0.05, "batch_size": 4}), "vivit")
    cache = SliceCache(learnable / "cache")
    model = plan.build().freeze_backbone()
    samples = build_samples(cache, "sequence", 8)
    stored = torch.from_numpy(extract_features(model, cache, samples, 8, torch.device("cpu"), log=QUIET))
    split = json.loads((learnable / "rep-0.json").read_text())
    train = samples.select(split["train"])
    model.init_classifier_(1)
    fetch = lambda i: samples.batch(model, cache, i, features=stored)  # noqa: E731
    before = roc_auc_score(samples.label[train], torch.softmax(predict_logits(model, fetch, train, 8), 1)[:, 1])
    result = fit(model, model.classifier, fetch, samples.label, samples.patient, train, samples.select(split["val"]),
                 plan.training, seed=1, log=QUIET)
    after = roc_auc_score(samples.label[train], torch.softmax(predict_logits(model, fetch, train, 8), 1)[:, 1])
    assert result.history.train_loss.iloc[-1] < result.history.train_loss.iloc[0]
    assert after > 0.8 and after > before, (before, after)


KILL_SCRIPT = """
import json, os, signal, sys
from ichseq.training.runs import train_run
from ichseq.training.plan import model_plan
root, outputs, cfg = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])

def log(message):
    if message.startswith("epoch 2/"):
        os.kill(os.getpid(), signal.SIGKILL)  # as a scheduler's time limit or the OOM killer would

plan = model_plan(cfg, "convnext")
train_run(plan, 0, f"{root}/rep-0.json", f"{root}/cache", outputs, f"{root}/features-convnext", log=log)
"""


@pytest.mark.slow
def test_sigkilled_process_resumes_in_a_new_process(stores, tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "resumed"
    outputs = json.dumps({key: str(path) for key, path in run_outputs(out).items()})
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(stores), outputs, json.dumps(config())],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT_NAME]
    messages: list[str] = []
    run(stores, out, "convnext", log=messages.append)
    assert any("resuming from the checkpoint after epoch 2" in m for m in messages)
    run(stores, tmp_path / "whole", "convnext")
    assert read_outputs(tmp_path / "whole") == read_outputs(out)


def test_protocol_caveats_name_the_models_whose_checkpoint_was_chosen_on_test():
    from ichseq.config import validate_config
    from ichseq.training.plan import model_plan, protocol_caveats

    config = validate_config({"models": {"vivit": {}, "convnext": {"training": {"checkpoint_selection": "test"}}}})
    plans = [model_plan(config, name) for name in config["models"]]
    (caveat,) = protocol_caveats(plans)
    assert "convnext" in caveat and "vivit" not in caveat and "test patients" in caveat
    assert protocol_caveats([model_plan(validate_config({}), "vivit")]) == []
