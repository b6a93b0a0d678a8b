"""seg_cls (BloodNet-style segmentation-dependent classification): building, the head/backbone
split, the area features, saving and reloading, input windows, one-line errors, the three-step
schedule in the training loop (which parameters each phase trains, kept epochs, resuming), and
training on synthetic patients at tiny size: the pretrain stage then the head-only protocol, and
full mode; plus the statistics of a metric only one model reports."""

from __future__ import annotations

import copy
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from ichseq.analysis.collect import collect
from ichseq.analysis.figures import metric_figures
from ichseq.analysis.outputs import COMPARISON_NAMES
from ichseq.analysis.ranking import write_comparison
from ichseq.analysis.stats import OUTPUT_NAMES, read_runs, write_stats
from ichseq.atomic import write_json_atomic
from ichseq.config import validate_config
from ichseq.data.cache import SliceCache, WindowSpec, build_cache
from ichseq.data.cohort import cohort_from_manifest
from ichseq.data.splits import patient_split
from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
from ichseq.errors import ConfigError, ModelError
from ichseq.models import available_models, build_model, load_model
from ichseq.models.base import PREPROCESSOR_FILE, SETTINGS_FILE, WEIGHTS_FILE, Batch
from ichseq.models.seg_cls import SegCls
from ichseq.training.loop import fit
from ichseq.training.settings import TrainSettings
from ichseq.training.pretrain import pretrain_model
from ichseq.training.plan import model_plan, pretrain_settings
from ichseq.training.runs import compute_features, full_mode_fetches, load_run_model, train_run
from ichseq.training.samples import build_samples
from tests.conftest import run_outputs
from tests.models.test_input_windows import BLOOD, BRAIN, CACHE_WINDOW, CALCIFICATION, CODES, EXPECTED

QUIET = lambda _msg: None  # noqa: E731
TINY = {"config": {"channels": [4, 8], "stem_stride": 2}, "image_size": 32}
WINDOWS = [BRAIN, BLOOD, CALCIFICATION]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny(**extra) -> SegCls:
    return build_model("seg_cls", {**TINY, **extra}).eval()


def uint8_batch(*shape: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8)


def one_line_error(exc_type, call) -> str:
    with pytest.raises(exc_type) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


# -- building, features, head ------------------------------------------------------------------


def test_builds_by_name_and_head_of_features_is_the_forward():
    assert "seg_cls" in available_models()
    model = tiny()
    assert model.kind == "slice" and "masks" in model.needs
    x = model.prepare(uint8_batch(3, 32, 32))
    with torch.no_grad():
        features = model.features(x)
        # The pooled deepest map (8 channels) and the two area features.
        assert features.shape == (3, 8 + 2)
        assert torch.equal(model.head(features), model(x))
        logits, mask_logits = model.forward_batch(Batch(torch.zeros(3, dtype=torch.long), pixels=x))
        assert torch.equal(logits, model(x)) and mask_logits.shape == (3, 32, 32)
        assert torch.equal(model.forward_batch(Batch(torch.zeros(3, dtype=torch.long), features=features)), logits)


def test_area_features_count_only_the_pixels_called_blood():
    logits = torch.full((2, 32, 32), -6.0)  # background: p = 0.0025 in every pixel
    logits[0, :3, :4] = 2.0  # 12 pixels of blood, p = 0.881 each
    area = SegCls.area_features(logits)
    p_blood = torch.sigmoid(torch.tensor(2.0))
    assert torch.allclose(area[0], torch.stack([torch.log1p(12 * p_blood), p_blood]))
    # A slice without blood: no area, however many small probabilities it has.
    assert torch.allclose(area[1], torch.tensor([0.0, float(torch.sigmoid(torch.tensor(-6.0)))]))


def test_max_or_mean_pooling_of_the_deepest_map():
    model, mean = tiny(), tiny(pooling="mean")
    mean.load_state_dict(model.state_dict())
    x = model.prepare(uint8_batch(2, 32, 32))
    with torch.no_grad():
        deepest, _ = model.segmentation(x)
        assert torch.equal(model.features(x)[:, :8], deepest.amax(dim=(-2, -1)))
        assert torch.equal(mean.features(x)[:, :8], deepest.mean(dim=(-2, -1)))
        assert torch.equal(model.features(x)[:, 8:], mean.features(x)[:, 8:])


# -- saving and loading --------------------------------------------------------------------------


def test_saved_folder_loads_back_as_pretrained_with_identical_outputs(tmp_path):
    model = tiny(input_windows=WINDOWS, cache_window=CACHE_WINDOW, pooling="mean")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # not the seeded initialisation: the weights must travel
    model.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {WEIGHTS_FILE, SETTINGS_FILE, PREPROCESSOR_FILE}
    assert json.loads((tmp_path / SETTINGS_FILE).read_text()) == {
        "architecture": "seg_cls", "config": {"channels": [4, 8], "stem_stride": 2}, "image_size": 32,
        "pooling": "mean"}
    torch.manual_seed(1)  # another seed: nothing may come from a fresh initialisation
    loaded = build_model("seg_cls", {"pretrained": str(tmp_path), "cache_window": CACHE_WINDOW}).eval()
    reloaded = load_model("seg_cls", tmp_path, {"image_size": 32, "cache_window": CACHE_WINDOW}).eval()
    pixels = uint8_batch(2, 32, 32)
    with torch.no_grad():
        for other in (loaded, reloaded):
            assert other.input_windows == model.input_windows and other.pooling == "mean"
            assert torch.equal(other.prepare(pixels), model.prepare(pixels))
            assert torch.equal(other(other.prepare(pixels)), model(model.prepare(pixels)))
            assert torch.equal(other.segment(other.prepare(pixels)), model.segment(model.prepare(pixels)))


def test_input_windows_show_each_channel_through_its_window(tmp_path):
    model = tiny(input_windows=WINDOWS, cache_window=CACHE_WINDOW)
    image = torch.tensor(CODES, dtype=torch.uint8).repeat(32 * 32 // len(CODES) + 1)[: 32 * 32].view(1, 32, 32)
    shown = (model.prepare(image)[0] * model.pixel_std + model.pixel_mean).reshape(3, -1)[:, : len(CODES)]
    for channel, window in enumerate(("brain", "blood", "calcification")):
        assert torch.allclose(shown[channel], torch.tensor(EXPECTED[window]), atol=1e-6)
    # The windows are saved with the model; without any, the slice is in all three channels.
    model.save(tmp_path)
    assert json.loads((tmp_path / PREPROCESSOR_FILE).read_text())["input_windows"] == WINDOWS
    plain = (tiny().prepare(image)[0] * 0.5 + 0.5).reshape(3, -1)
    assert torch.equal(plain[0], plain[1]) and torch.equal(plain[1], plain[2])


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings, key", [
    ({"config": {"channels": [4, 8], "depth": 3}}, "models.seg_cls.config.depth"),
    ({"config": {"channels": [8]}}, "models.seg_cls.config.channels"),
    ({"config": {"channels": [8, "16"]}}, "models.seg_cls.config.channels"),
    ({"config": {"stem_stride": 3}}, "models.seg_cls.config.stem_stride"),
    ({"config": {"channels": [4, 8, 16], "stem_stride": 4}, "image_size": 40}, "models.seg_cls.image_size"),
    ({"pooling": "cls"}, "models.seg_cls.pooling"),
    ({"mean_filters": {"channel": 1, "count": 2}}, "models.seg_cls.mean_filters"),
    ({"position_embeddings": "reset"}, "models.seg_cls.position_embeddings"),
    ({"phases": {"segmentation": 1, "joint": 2}}, "models.seg_cls.phases.joint"),
    ({"phases": [1, 1]}, "models.seg_cls.phases"),
    ({"pretrained": "facebook/convnext-tiny-224"}, "models.seg_cls.pretrained"),
])
def test_bad_settings_are_one_line_model_errors_naming_the_key(settings, key):
    message = one_line_error(ModelError, lambda: build_model("seg_cls", {**TINY, **settings}))
    assert message.startswith(key + ":")


def test_a_folder_that_is_not_a_saved_seg_cls_is_refused(tmp_path):
    (tmp_path / SETTINGS_FILE).write_text(json.dumps({"architecture": "convnext"}))
    (tmp_path / "real").mkdir()
    tiny().save(tmp_path / "real")
    (tmp_path / WEIGHTS_FILE).write_bytes((tmp_path / "real" / WEIGHTS_FILE).read_bytes())
    message = one_line_error(ModelError, lambda: build_model("seg_cls", {"pretrained": str(tmp_path)}))
    assert message.startswith("models.seg_cls.pretrained:") and "not a seg_cls model" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a saved seg_cls model" in one_line_error(
        ModelError, lambda: build_model("seg_cls", {"pretrained": str(empty)}))


def test_phases_are_refused_for_other_architectures():
    phases = {"phases": {"segmentation": 1, "classifier": 1}}
    message = one_line_error(ModelError, lambda: build_model("convnext", {"config": {"hidden_sizes": [8, 16],
                                                                                      "depths": [1, 1], "num_stages": 2},
                                                                          **phases}))
    assert message == "models.convnext.phases: applies only to architecture seg_cls, not convnext; remove it"
    message = one_line_error(ConfigError, lambda: validate_config({"models": {"vivit": phases}}))
    assert message == "invalid configuration: models.vivit.phases: applies only to architecture seg_cls, not vivit; remove it"
    # Another entry name of architecture seg_cls keeps them.
    config = validate_config({"models": {"bloodnet": {"architecture": "seg_cls", **phases}}})
    assert model_plan(config, "bloodnet").model["phases"] == phases["phases"]


@pytest.mark.parametrize("config, key", [
    ({"training": {"mode": "full", "epochs": 2}, "models": {"seg_cls": {"phases": {"segmentation": 2, "classifier": 0}}}},
     "training.epochs"),
    ({"training": {"mode": "full"}, "models": {"seg_cls": {"phases": {"segmentation": 1, "classifier": 2},
                                                          "training": {"epochs": 2}}}},
     "models.seg_cls.training.epochs"),
    ({"models": {"seg_cls": {"pretrained": "pretrain", "phases": {"segmentation": 2, "classifier": 2}}}},
     "pretrain.training.epochs"),
    ({"models": {"seg_cls": {"pretrained": "pretrain", "phases": {"segmentation": 3, "classifier": 0},
                             "pretrain": {"epochs": 3}}}},
     "models.seg_cls.pretrain.epochs"),
])
def test_phases_that_do_not_fit_the_epochs_are_refused_when_the_config_is_read(config, key):
    message = one_line_error(ConfigError, lambda: validate_config(config))
    assert message.startswith("invalid configuration: models.seg_cls.phases:") and f"epochs of {key} " in message


def test_phases_fit_any_epochs_in_head_mode_and_are_checked_again_when_training():
    # Head mode trains the classifier alone: the phases do not apply there.
    validate_config({"training": {"epochs": 1}, "models": {"seg_cls": {"phases": {"segmentation": 3}}}})
    model = tiny(phases={"segmentation": 3, "classifier": 0})
    assert "models.seg_cls.phases:" in one_line_error(ModelError, lambda: model.start_epoch(1, 3))
    assert model.freeze_backbone().start_epoch(1, 3) is True


def test_the_auxiliary_mask_loss_is_refused_in_one_line():
    settings = TrainSettings.from_dict({"mode": "full", "mask_loss_weight": 0.5})
    message = one_line_error(ModelError, lambda: full_mode_fetches(tiny(), None, None, settings, 0))
    assert message.startswith("models.seg_cls:") and "mask_loss_weight" in message


# -- losses and phases ----------------------------------------------------------------------------


def test_the_loss_follows_the_phase():
    model = tiny().train()
    x = model.prepare(uint8_batch(4, 32, 32))
    masks = torch.zeros(4, 32, 32)
    masks[1, 10:14, 10:14] = 1.0
    batch = Batch(torch.tensor([0, 1, 0, 1]), pixels=x, masks=masks)
    weight = torch.tensor([0.25, 4.0])
    outputs = model.forward_batch(batch)
    ce = torch.nn.functional.cross_entropy(outputs[0], batch.labels, weight=weight)
    segmentation = model.segmentation_loss(outputs[1], masks)
    expected = {"segmentation": segmentation, "classifier": ce, "joint": ce + segmentation}
    for epoch, phase in ((1, "segmentation"), (2, "classifier"), (3, "joint")):
        assert model.start_epoch(epoch, 3) is (phase != "segmentation") and model.phase == phase
        assert torch.allclose(model.loss(outputs, batch, class_weight=weight), expected[phase])
    # Cached features (head mode) carry no mask: the cross-entropy alone.
    cached = Batch(batch.labels, features=model.features(x).detach(), masks=masks)
    assert torch.allclose(model.loss(model.forward_batch(cached), cached, class_weight=weight),
                          torch.nn.functional.cross_entropy(model.head(cached.features), batch.labels, weight=weight))


def test_segmentation_loss_is_bce_plus_soft_dice():
    logits = torch.tensor([[[2.0, -1.0], [0.0, -3.0]]])
    masks = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    p = torch.sigmoid(logits)
    bce = -(masks * p.log() + (1 - masks) * (1 - p).log()).mean()
    dice = (2 * (p * masks).sum() + 1) / (p.sum() + masks.sum() + 1)
    assert torch.allclose(SegCls.segmentation_loss(logits, masks), bce + 1 - dice)


# -- the schedule in the training loop ----------------------------------------------------------


@pytest.fixture(scope="module")
def loop_data(tmp_path_factory):
    """A tiny synthetic cohort at 32 px: its slice cache and train / val slice indices."""
    root = tmp_path_factory.mktemp("seg-loop")
    spec = SyntheticSpec(n_patients=6, n_positive=3, image_size=32, min_slices=8, max_slices=10, seed=3,
                         generator="cartoon")
    generate_synthetic(root / "ds", spec, log=QUIET)
    build_cache(root / "ds", root / "cache", WindowSpec(32), log=QUIET)
    cache = SliceCache(root / "cache")
    samples = build_samples(cache, "slice")
    train = samples.select(cache.patients[:4])
    val = samples.select(cache.patients[4:])
    return cache, samples, train, val


def seeded_model(phases=None) -> SegCls:
    torch.manual_seed(0)
    return tiny(phases=phases or {"segmentation": 1, "classifier": 1}).init_classifier_(5)


def run_fit(loop_data, model, epochs=4, checkpoint=None, log=QUIET, **training):
    cache, samples, train, val = loop_data
    settings = TrainSettings.from_dict({"mode": "full", "epochs": epochs, "batch_size": 16, "lr": 0.01,
                                        "patience": None, "warmup_steps": 0, **training})
    return fit(model, model, lambda idx: samples.batch(model, cache, idx), samples.label, samples.patient, train, val,
               settings, seed=5, checkpoint=checkpoint, fingerprint="seg", log=log)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_each_phase_trains_its_part(loop_data):
    model = seeded_model()
    states = [_state(model)]
    # The loop logs one "epoch N/M" line after each epoch: the weights then.
    result = run_fit(loop_data, model, epochs=4, log=lambda m: states.append(_state(model)) if m.startswith("epoch ") else None)
    assert len(states) == 5

    def changed(epoch, part):
        return any(not torch.equal(states[epoch - 1][k], states[epoch][k]) for k in states[0] if k.startswith(part))

    assert changed(1, "segmentation.") and not changed(1, "_classifier.")  # segmentation alone
    assert not changed(2, "segmentation.") and changed(2, "_classifier.")  # classifier alone
    for epoch in (3, 4):  # joint
        assert changed(epoch, "segmentation.") and changed(epoch, "_classifier.")
    assert result.best_epoch > 1 and result.history.best.tolist()[0] == 0


def test_segmentation_epochs_are_neither_kept_nor_counted_by_early_stopping(loop_data):
    # An lr too small to change a float32 weight: every epoch scores the same, so the first
    # epoch that may be kept is the best one, and with patience 1 the next one stops training.
    result = run_fit(loop_data, seeded_model({"segmentation": 2, "classifier": 1}), epochs=6, lr=1e-12, patience=1)
    assert result.best_epoch == 3 and len(result.history) == 4


def test_resuming_mid_schedule_ends_with_identical_weights(loop_data, tmp_path):
    straight = seeded_model()
    run_fit(loop_data, straight, epochs=4, checkpoint=tmp_path / "a.pt")

    class Killed(Exception):
        pass

    def kill_after_epoch_1(message):  # the segmentation phase; the resumed run starts the classifier's
        if message.startswith("epoch 1/"):
            raise Killed

    with pytest.raises(Killed):
        run_fit(loop_data, seeded_model(), epochs=4, checkpoint=tmp_path / "b.pt", log=kill_after_epoch_1)
    messages = []
    resumed = seeded_model()  # a new process: a new model, whose phase nobody has set
    result = run_fit(loop_data, resumed, epochs=4, checkpoint=tmp_path / "b.pt", log=messages.append)
    assert result.resumed_from == 1 and any(m.startswith("resuming") for m in messages)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in straight.state_dict().items())


# -- training on synthetic patients ---------------------------------------------------------------

SIZE = 64
ENTRY = {"config": {"channels": [8, 16, 32]}, "input_windows": WINDOWS, "phases": {"segmentation": 2, "classifier": 1},
         "image_size": SIZE}
REPLICATES = 3


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """A pretraining cohort and a study cohort of other patients (another seed) at 64 px, with
    three replicate splits of the study cohort."""
    root = tmp_path_factory.mktemp("seg-cohorts")
    for name, seed, n in (("pretrain", 21, 24), ("study", 22, 20)):
        spec = SyntheticSpec(n_patients=n, n_positive=n // 2, image_size=SIZE, min_slices=12, max_slices=16, seed=seed,
                             generator="cartoon")
        generate_synthetic(root / f"ds-{name}", spec, log=QUIET)
        build_cache(root / f"ds-{name}", root / f"cache-{name}", WindowSpec(SIZE), log=QUIET)
    study = cohort_from_manifest(pd.read_csv(root / "cache-study" / "manifest.csv"))
    splits = []
    for rep in range(REPLICATES):
        splits.append(root / f"split-{rep}.json")
        write_json_atomic(splits[-1], patient_split(study, rep, 0, 0.4, 0.25))
    return root, splits


def _config(**training):
    return validate_config({
        "preprocess": {"image_size": SIZE},
        "models": {"seg_cls": copy.deepcopy(ENTRY)},
        "training": {"epochs": 15, "batch_size": 16, "lr": 0.01, "patience": None, "feature_batch_size": 64, **training},
        "pretrain": {"training": {"epochs": 5, "samples_per_epoch": 320, "batch_size": 16, "mask_loss_weight": 0,
                                  "monitor": "val_loss"}},
    })


@pytest.mark.slow
def test_pretrain_then_head_mode_learns_on_unseen_patients_and_reports_dice(cohorts, tmp_path):
    root, splits = cohorts
    config = _config()
    config["models"]["seg_cls"]["pretrained"] = "pretrain"
    plan = model_plan(config, "seg_cls")
    report = pretrain_model(plan, pretrain_settings(config, "seg_cls"), root / "cache-pretrain", root / "cache-study",
                            {"model": tmp_path / "pre/model", "history": tmp_path / "pre/h.csv",
                             "metrics": tmp_path / "pre/m.json"}, log=QUIET)
    history = pd.read_csv(tmp_path / "pre/h.csv")
    assert report["best_epoch"] > 2 and history.best.tolist()[:2] == [0, 0]  # never a segmentation epoch
    plan = plan.with_weights(tmp_path / "pre/model")
    compute_features(plan, root / "cache-study", tmp_path / "features", log=QUIET)
    reports = [train_run(plan, rep, split, root / "cache-study", run_outputs(tmp_path / f"rep-{rep}"),
                         features_path=tmp_path / "features", log=QUIET) for rep, split in enumerate(splits)]
    metrics = pd.DataFrame([r["metrics"] for r in reports])
    # Chance is 0.5; 4 positive and 4 negative test patients per replicate: the mean of three
    # has an SD of about 0.1 by chance, measured 0.94.
    assert metrics.roc_auc.mean() >= 0.8
    assert metrics.dice.between(0, 1).all() and metrics.volume_spearman.notna().all()

    # Blood volume: per patient of the whole study cohort (none seen in pretraining), predicted
    # against the masks' (measured 0.80; by chance over 20 patients its SD is about 0.23).
    model = build_model("seg_cls", plan.model).eval()
    cache = SliceCache(root / "cache-study")
    samples = build_samples(cache, "slice")
    everyone = np.arange(len(samples))
    whole = model.extra_test_metrics(lambda idx: samples.batch(model, cache, idx), everyone, samples.patient, 64)
    assert whole["volume_spearman"] >= 0.6
    assert whole["volume_spearman"] == pytest.approx(_volume_spearman(model, cache, samples))


def _volume_spearman(model, cache, samples) -> float:
    """Spearman's rho of the per-patient blood volumes, counted here independently of the model's
    own metric: pixels with p >= 0.5 against mask pixels, summed per patient."""
    predicted, truth = {}, {}
    with torch.no_grad():
        for patient in cache.patients:
            idx = samples.select([patient])
            batch = samples.batch(model, cache, idx)
            predicted[patient] = int((torch.sigmoid(model.segment(batch.pixels)) >= 0.5).sum())
            truth[patient] = int(cache.masks[cache.patient_rows(patient)].sum())
    return float(spearmanr(list(predicted.values()), list(truth.values())).statistic)


@pytest.mark.slow
def test_full_mode_learns_and_its_saved_model_reloads(cohorts, tmp_path):
    root, splits = cohorts
    plan = model_plan(_config(mode="full", epochs=5, lr=0.003, class_imbalance="balanced", samples_per_epoch=320),
                      "seg_cls")
    reports = [train_run(plan, rep, split, root / "cache-study", run_outputs(tmp_path / f"rep-{rep}"), log=QUIET)
               for rep, split in enumerate(splits)]
    metrics = pd.DataFrame([r["metrics"] for r in reports])
    # As above; measured: ROC AUC 0.98, volume Spearman 0.90 (means of three replicates).
    assert metrics.roc_auc.mean() >= 0.8 and metrics.volume_spearman.mean() >= 0.5
    assert all(r["best_epoch"] > 2 for r in reports)
    model, info = load_run_model(tmp_path / "rep-0" / "model")
    assert isinstance(model, SegCls) and info["plan"]["model"]["phases"] == ENTRY["phases"]
    cache = SliceCache(root / "cache-study")
    table = pd.read_csv(tmp_path / "rep-0" / "sample_predictions.csv")
    samples = build_samples(cache, "slice")
    index = np.concatenate([samples.select([p]) for p in dict.fromkeys(table.patient)])
    with torch.no_grad():
        probs = torch.softmax(model(samples.batch(model, cache, index).pixels), dim=1)[:, 1].numpy()
    assert np.allclose(probs, table.probability, atol=1e-6)


# -- a metric only one model reports ---------------------------------------------------------------


def test_a_metric_of_one_model_is_undefined_for_the_others_in_every_table(tmp_path):
    rng = np.random.default_rng(0)
    inputs = {key: [] for key in ("metrics", "predictions", "history", "cost")}
    for model in ("convnext", "vivit", "seg_cls"):
        for rep in range(5):  # autorank needs 5 replicates (ranking.MIN_BLOCKS says 3)
            run = tmp_path / "runs" / model / f"rep-{rep}"
            run.mkdir(parents=True)
            metrics = {"roc_auc": float(rng.uniform(0.6, 1.0)), "balanced_accuracy": float(rng.uniform(0.5, 1.0)),
                       "tn": 3, "fp": 1, "fn": 1, "tp": 3, "n_test": 8}
            if model == "seg_cls":
                metrics.update(dice=float(rng.uniform(0.5, 0.9)), volume_spearman=float(rng.uniform(0.5, 0.9)))
            write_json_atomic(run / "metrics.json", {"model": model, "replicate": rep, "metrics": metrics})
            pd.DataFrame({"patient": [1], "label": [1], "probability": [0.9], "prediction": [1]}).to_csv(
                run / "predictions.csv", index=False)
            pd.DataFrame({"epoch": [1], "train_loss": [0.5]}).to_csv(run / "history.csv", index=False)
            write_json_atomic(run / "cost.json", {"model": model, "replicate": rep, "parameters_total": 10,
                                                  "training_seconds": 1.0})
            for key in inputs:
                inputs[key].append(run / f"{key}.{'json' if key in ('metrics', 'cost') else 'csv'}")
    collect(inputs, {"runs": tmp_path / "runs.csv"})
    runs = read_runs(tmp_path / "runs.csv")
    out = tmp_path / "stats"
    write_stats(runs, {k: out / v for k, v in OUTPUT_NAMES.items()}, n_resamples=200, log=QUIET)
    write_comparison(runs, {k: out / v for k, v in COMPARISON_NAMES.items()}, n_resamples=200)
    metric_figures(runs, out, log=QUIET)

    summary = pd.read_csv(out / "summary.csv").query("metric == 'dice'").set_index("model")
    assert summary.loc["seg_cls", "n"] == 5 and summary.loc[["convnext", "vivit"], "n"].tolist() == [0, 0]
    assert summary.loc[["convnext", "vivit"], "mean"].isna().all()
    tests = pd.read_csv(out / "tests.csv").query("metric == 'dice' and model_b == 'seg_cls'")
    assert tests.p_value.isna().all() and tests.note.str.contains("undefined").all()
    friedman = pd.read_csv(out / "friedman.csv").set_index("metric")
    assert np.isnan(friedman.at["dice", "p_value"]) and "undefined" in friedman.at["dice", "note"]
    assert np.isfinite(friedman.at["roc_auc", "p_value"])
    board = pd.read_csv(out / "leaderboard.csv").set_index("model")
    assert board.loc[["convnext", "vivit"], "dice_mean"].isna().all() and np.isfinite(board.at["seg_cls", "dice_mean"])
    assert "**dice**, convnext vs seg_cls: no value for convnext." in (out / "summary.md").read_text()
