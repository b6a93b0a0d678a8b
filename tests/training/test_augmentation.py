"""The full-mode training recipe: samples_per_epoch, random clips, flips/shifts (masks moved with
their pixels), the auxiliary mask loss, and the rule that all but samples_per_epoch are refused in
head mode -- on the tiny 32-px cohort and tiny randomly initialised models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from ichseq.data.cache import SliceCache
from ichseq.errors import ConfigError, ModelError
from ichseq.models import REGISTRY, build_model, register
from ichseq.models.base import WEIGHTS_FILE, Batch, CTClassifier
from ichseq.training.loop import epoch_order, fit
from ichseq.training.settings import FULL_MODE_ONLY, TrainSettings
from ichseq.training.runs import full_mode_fetches, load_run_model, train_run
from ichseq.training.plan import model_plan
from ichseq.training.samples import build_samples, flip_shift, random_clip
from tests.conftest import run_outputs

QUIET = lambda _msg: None  # noqa: E731
VIVIT_CONFIG = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                    tubelet_size=[2, 8, 8])
CONVNEXT_CONFIG = dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
VIVIT = {"config": VIVIT_CONFIG, "num_frames": 4, "image_size": 32}
CONVNEXT = {"config": CONVNEXT_CONFIG, "image_size": 32}
ENTRIES = {"vivit": VIVIT, "convnext": CONVNEXT}
NON_DEFAULT = {"augment_flip": True, "augment_shift": 2, "random_clips": True, "mask_loss_weight": 0.5}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def tiny(name: str) -> CTClassifier:
    return build_model(name, {"pretrained": None, **ENTRIES[name]})


def full(**values) -> TrainSettings:
    return TrainSettings.from_dict({"mode": "full", **values})


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    return message


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", FULL_MODE_ONLY)
def test_augmentation_settings_are_refused_in_head_mode_naming_the_key(key):
    assert key in NON_DEFAULT  # every full-mode-only key is tried
    with pytest.raises(ConfigError) as info:
        TrainSettings.from_dict({"mode": "head", key: NON_DEFAULT[key]})
    assert one_line(info).startswith(f"training.{key}: applies to mode full only")
    config = {"training": {"mode": "head"}, "models": {"convnext": {**CONVNEXT, "training": {key: NON_DEFAULT[key]}}}}
    with pytest.raises(ConfigError) as info:
        model_plan(config, "convnext")
    assert one_line(info).startswith(f"models.convnext.training.{key}: applies to mode full only")
    # Full mode takes it; head mode takes the default value written out, and samples_per_epoch.
    assert getattr(full(**{key: NON_DEFAULT[key]}), key) == NON_DEFAULT[key]
    default = TrainSettings.from_dict({"mode": "head", key: TrainSettings().as_dict()[key], "samples_per_epoch": 7})
    assert default.samples_per_epoch == 7


def test_samples_per_epoch_sets_the_epoch_length():
    labels = np.array([0] * 90 + [1] * 10)
    for n in (40, 250):
        balanced = epoch_order(labels, TrainSettings(class_imbalance="balanced", samples_per_epoch=n), seed=3)
        assert len(balanced) == n and 0.3 < labels[balanced].mean() < 0.7  # about half positives, from 10%
    # Not balanced: every sample once before any repeats, however many passes n asks for.
    order = epoch_order(labels, TrainSettings(class_imbalance="none", samples_per_epoch=250), seed=3)
    assert len(order) == 250
    assert sorted(order[:100]) == sorted(order[100:200]) == list(range(100))
    assert len(set(order[200:])) == 50
    short = epoch_order(labels, TrainSettings(class_imbalance="none", samples_per_epoch=30), seed=3)
    assert len(short) == 30 and len(set(short)) == 30
    assert not np.array_equal(order[:100], order[100:200])  # each pass in its own order


def test_the_schedule_and_sample_count_follow_samples_per_epoch():
    # Head-mode training on fixed features: the linear schedule must reach 0 at the last step of
    # the last epoch, which it does only if it counts the epoch's steps from samples_per_epoch.
    model = tiny("convnext").freeze_backbone()
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(48, 16, generator=generator)
    labels = np.array([0, 1] * 24)
    patients = np.arange(48)
    fetch = lambda idx: Batch(torch.as_tensor(labels[idx]), features=features[torch.as_tensor(idx)])  # noqa: E731
    settings = TrainSettings.from_dict({"mode": "head", "epochs": 2, "batch_size": 4, "samples_per_epoch": 10,
                                        "schedule": "linear", "warmup_steps": 0, "patience": None,
                                        "class_imbalance": "none"})
    result = fit(model, model.classifier, fetch, labels, patients, np.arange(40), np.arange(40, 48), settings, 5,
                 log=QUIET)
    assert result.samples_seen == 20
    assert result.history.lr.iloc[-1] == 0.0 and result.history.lr.iloc[0] > 0


# -- random clips -------------------------------------------------------------------------------


def test_random_clip_takes_frames_of_the_scan_in_order():
    rows = np.arange(100, 112)  # a 12-slice scan
    generator = torch.Generator().manual_seed(0)
    clips = [random_clip(rows, 4, generator) for _ in range(30)]
    for clip in clips:
        assert len(clip) == 4 and set(clip) <= set(rows) and (np.diff(clip) > 0).all()  # distinct, in order
    assert len({tuple(c) for c in clips}) > 10  # drawn at random
    assert {c[0] for c in clips} != {100}  # not always from the first slice
    # A scan shorter than the clip: all its slices, some repeated, still in order.
    short = random_clip(np.arange(3), 5, generator)
    assert set(short) == {0, 1, 2} and len(short) == 5 and (np.diff(short) >= 0).all()
    again = [random_clip(rows, 4, torch.Generator().manual_seed(0)) for _ in range(2)]
    assert np.array_equal(again[0], again[1]) and np.array_equal(again[0], clips[0])  # the generator decides


class Codes:
    """Maps the prepared pixels of a batch back to cache rows (every cached slice is distinct)."""

    def __init__(self, cache: SliceCache):
        self.slices = np.asarray(cache.slices)
        self.row_of = {s.tobytes(): i for i, s in enumerate(self.slices)}
        assert len(self.row_of) == len(self.slices)

    @staticmethod
    def uint8(model, pixels: torch.Tensor) -> np.ndarray:
        """(..., 3, S, S) normalised pixels -> (..., S, S) uint8 codes (channel 0; no windows)."""
        x = pixels * model.pixel_std + model.pixel_mean
        return torch.round(x[..., 0, :, :] * 255).to(torch.uint8).numpy()

    def rows(self, model, pixels: torch.Tensor) -> np.ndarray:
        """The cache row of every frame of ``pixels``, shaped as its samples (and frames)."""
        codes = self.uint8(model, pixels)
        frames = codes.reshape(-1, *codes.shape[-2:])
        return np.array([self.row_of[frame.tobytes()] for frame in frames]).reshape(codes.shape[:-2])


def test_random_clips_are_scans_slices_in_order_labelled_by_their_own_slices(cohort_dir):
    cache = SliceCache(cohort_dir / "cache")
    codes = Codes(cache)
    model = tiny("vivit").eval().use_mask_loss(1.0, seed=0)  # so that batches carry masks too
    samples = build_samples(cache, "sequence", 4, "uniform", "edge")
    index = np.arange(len(samples))
    settings = full(random_clips=True)
    slice_labels = cache.manifest.set_index("row").label
    generator = torch.Generator().manual_seed(11)
    clip_labels, seen = {}, {}
    for _ in range(12):
        batch = samples.batch(model, cache, index, augment=settings, generator=generator)
        rows = codes.rows(model, batch.pixels)
        assert torch.equal(batch.masks, torch.from_numpy(np.asarray(cache.masks)[rows]).float())  # the clip's masks
        for i, sample_rows in zip(index, rows):
            patient = int(samples.patient[i])
            scan = list(cache.patient_rows(patient))
            assert set(sample_rows) <= set(scan)  # the right patient
            assert (np.diff([scan.index(r) for r in sample_rows]) > 0).all()  # distinct, in scan order
            label = int(batch.labels[i])
            assert label == slice_labels.loc[sample_rows].max()  # its own slices' label
            clip_labels.setdefault(patient, set()).add(label)
            seen.setdefault(patient, set()).add(tuple(sample_rows))
    # Clips vary; a short bleed (2 of 15 slices) is sometimes in the clip and sometimes not.
    assert all(len(clips) > 1 for clips in seen.values())
    positive = {int(p) for p, l in zip(samples.patient, samples.label) if l == 1}
    assert any(clip_labels[p] == {0, 1} for p in positive)
    assert all(clip_labels[p] == {0} for p in clip_labels if p not in positive)


def test_held_out_batches_are_not_augmented(cohort_dir):
    cache = SliceCache(cohort_dir / "cache")
    codes = Codes(cache)
    for name, kind in (("vivit", "sequence"), ("convnext", "slice")):
        model = tiny(name).eval()
        samples = build_samples(cache, kind, 4 if kind == "sequence" else None, "uniform", "edge")
        index = np.arange(0, len(samples), 3)
        settings = full(augment_flip=True, augment_shift=3, random_clips=True)
        fetch, train_fetch = full_mode_fetches(model, samples, cache, settings, seed=0)
        plain = samples.batch(model, cache, index)
        # The plain batch: exactly the frames policy's cache rows, as they are.
        expected = np.asarray(cache.slices)[samples.rows[index]]
        assert np.array_equal(codes.uint8(model, plain.pixels), expected[:, 0] if kind == "slice" else expected)
        assert torch.equal(fetch(index).pixels, plain.pixels) and torch.equal(fetch(index).labels, plain.labels)
        augmented = train_fetch(index, torch.Generator().manual_seed(0))
        assert not torch.equal(augmented.pixels, plain.pixels)
        # Settings that augment nothing give the plain batch even with a generator.
        same = samples.batch(model, cache, index, augment=full(), generator=torch.Generator().manual_seed(0))
        assert torch.equal(same.pixels, plain.pixels) and torch.equal(same.labels, plain.labels)
        assert full_mode_fetches(model, samples, cache, full(), seed=0)[1] is None  # nothing random
        for key in ("augment_flip", "augment_shift", "random_clips"):  # any one of them makes training batches random
            assert full_mode_fetches(model, samples, cache, full(**{key: NON_DEFAULT[key]}), seed=0)[1] is not None


@pytest.mark.parametrize("name", ["vivit", "convnext"])
def test_augmented_batches_depend_on_the_generator_alone(cohort_dir, name):
    cache = SliceCache(cohort_dir / "cache")
    model = tiny(name).eval()
    model.use_mask_loss(1.0, seed=0)  # so that batches carry masks too
    kind = model.kind
    samples = build_samples(cache, kind, 4 if kind == "sequence" else None, "uniform", "edge")
    index = np.flatnonzero(samples.label == 1)[:6] if kind == "slice" else np.arange(len(samples))
    settings = full(augment_flip=True, augment_shift=3, random_clips=True)
    draw = lambda seed: samples.batch(model, cache, index, augment=settings,  # noqa: E731
                                      generator=torch.Generator().manual_seed(seed))
    first, again, other = draw(4), draw(4), draw(5)
    for field in ("pixels", "masks", "labels"):
        assert torch.equal(getattr(first, field), getattr(again, field)), field
    assert not torch.equal(first.pixels, other.pixels)
    assert first.masks.sum() > 0


# -- flips and shifts ---------------------------------------------------------------------------


def _transforms(image: torch.Tensor, shift: int, flip: bool):
    """Every (flipped, dy, dx) and the image flipped then rolled so."""
    for flipped in ((False, True) if flip else (False,)):
        base = image.flip(-1) if flipped else image
        for dy in range(-shift, shift + 1):
            for dx in range(-shift, shift + 1):
                yield (flipped, dy, dx), base.roll((dy, dx), dims=(-2, -1))


@pytest.mark.parametrize("shape", [(24, 16, 16), (12, 3, 16, 16)])
def test_flip_shift_moves_each_mask_exactly_with_its_pixels(shape):
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randint(0, 200, shape, dtype=torch.uint8, generator=generator)
    blobs = torch.rand(shape, generator=generator) < 0.05
    pixels[blobs] = 200
    masks = (pixels == 200).to(torch.uint8)
    before = pixels.clone(), masks.clone()
    out_pixels, out_masks = flip_shift(pixels, masks, True, 2, torch.Generator().manual_seed(9))
    assert torch.equal(pixels, before[0]) and torch.equal(masks, before[1])  # the inputs are left alone
    assert torch.equal(out_masks, (out_pixels == 200).to(torch.uint8))
    used = []
    for i in range(shape[0]):
        found = [t for t, moved in _transforms(pixels[i], 2, True) if torch.equal(moved, out_pixels[i])]
        assert len(found) == 1, f"sample {i} is not one flip/shift of its input"  # all frames alike, within 2 px
        used.append(found[0])
    assert {t[0] for t in used} == {False, True}  # flipped about half the time
    assert len({t[1:] for t in used}) > 3 and any(t[1:] != (0, 0) for t in used)
    # The same generator draws the same moves; no mask: pixels move the same.
    alone, none = flip_shift(pixels, None, True, 2, torch.Generator().manual_seed(9))
    assert none is None and torch.equal(alone, out_pixels)
    # Flip only: each sample as it was or mirrored.
    flipped, _ = flip_shift(pixels, masks, True, 0, torch.Generator().manual_seed(3))
    for i in range(shape[0]):
        assert torch.equal(flipped[i], pixels[i]) or torch.equal(flipped[i], pixels[i].flip(-1))


def test_a_training_batch_moves_masks_with_their_slices(cohort_dir):
    cache = SliceCache(cohort_dir / "cache")
    model = tiny("convnext").eval()
    model.use_mask_loss(1.0, seed=0)
    samples = build_samples(cache, "slice")
    index = np.flatnonzero(cache.manifest.has_mask.to_numpy()[samples.rows[:, 0]] == 1)
    batch = samples.batch(model, cache, index, augment=full(augment_flip=True, augment_shift=3),
                          generator=torch.Generator().manual_seed(1))
    got = torch.from_numpy(Codes.uint8(model, batch.pixels))
    moves = set()
    for i, row in enumerate(samples.rows[index, 0]):
        slice_, mask = torch.from_numpy(np.array(cache.slices[row])), torch.from_numpy(np.array(cache.masks[row]))
        found = [t for t, moved in _transforms(slice_, 3, True) if torch.equal(moved, got[i])]
        assert found, f"sample {i}: not a flip/shift of its slice"
        transform = found[0]
        flipped, dy, dx = transform
        expected = (mask.flip(-1) if flipped else mask).roll((dy, dx), dims=(-2, -1))
        assert torch.equal(batch.masks[i], expected.float())
        moves.add(transform)
    assert len(moves) > 1


# -- training with the recipe ------------------------------------------------------------------


def recipe_config(name: str, **training) -> dict:
    return {
        "models": {name: ENTRIES[name]},
        "training": {"mode": "full", "epochs": 2, "batch_size": 4, "lr": 0.01, "patience": None,
                     "class_imbalance": "balanced", "samples_per_epoch": 16, "feature_batch_size": 16, **training},
        "frames": {"policy": "uniform", "padding": "edge"},
        "aggregation": {"rule": "any", "threshold": 0.5, "k": 2},
    }


def train(cohort_dir, out, name, **training) -> dict:
    plan = model_plan(recipe_config(name, **training), name)
    train_run(plan, 0, cohort_dir / "rep-0.json", cohort_dir / "cache", run_outputs(out), log=QUIET)
    history = pd.read_csv(out / "history.csv").drop(columns="seconds")
    return {"history": history, "predictions": (out / "predictions.csv").read_text(),
            "samples": (out / "sample_predictions.csv").read_text(),
            "weights": (out / "model" / WEIGHTS_FILE).read_bytes()}


RECIPE = {"augment_flip": True, "augment_shift": 2, "random_clips": True, "mask_loss_weight": 1.0}


@pytest.mark.parametrize("name", ["convnext", "vivit"])
def test_training_with_the_recipe_is_deterministic_and_saves_the_model_alone(cohort_dir, tmp_path, name):
    first = train(cohort_dir, tmp_path / "a", name, **RECIPE)
    again = train(cohort_dir, tmp_path / "b", name, **RECIPE)
    pd.testing.assert_frame_equal(first["history"], again["history"])
    for key in ("predictions", "samples", "weights"):
        assert first[key] == again[key], key
    assert len(first["history"]) == 2
    # Each part of the recipe changes training: the augmented batches and the mask loss.
    plain = train(cohort_dir, tmp_path / "plain", name)["history"].train_loss
    augmented = train(cohort_dir, tmp_path / "augmented", name, **{**RECIPE, "mask_loss_weight": 0})["history"]
    masked = train(cohort_dir, tmp_path / "masked", name, mask_loss_weight=1.0)["history"]
    assert not np.allclose(augmented.train_loss, plain) and not np.allclose(masked.train_loss, plain)
    # The saved folder is the model alone (no auxiliary mask head) and loads as any run's.
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a" / "model" / WEIGHTS_FILE), "pt") as saved:
        assert not [k for k in saved.keys() if "aux" in k]
    model, info = load_run_model(tmp_path / "a" / "model")
    assert model.aux_mask_head is None and "masks" not in model.needs
    assert info["plan"]["training"]["mask_loss_weight"] == 1.0


# -- the auxiliary mask loss --------------------------------------------------------------------


def _batch(name: str, masks: torch.Tensor | None = None, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    shape = (2, 4, 3, 32, 32) if name == "vivit" else (2, 3, 32, 32)
    if masks is None:
        masks = torch.zeros(shape[:-3] + shape[-2:])
        masks[0, ..., 8:14, 16:22] = 1
    return Batch(torch.tensor([1, 0]), pixels=torch.randn(shape, generator=generator), masks=masks)


@pytest.mark.parametrize("name, grid", [("convnext", (8, 8)), ("vivit", (2, 4, 4))])
def test_the_mask_loss_adds_masks_and_a_mask_output_in_training_only(name, grid):
    model = tiny(name)
    assert "masks" not in model.needs and model.aux_mask_head is None
    assert model.use_mask_loss(0.5, seed=1) is model
    assert "masks" in model.needs and model.mask_loss_weight == 0.5
    assert "masks" not in type(model).needs  # the class (other instances) is unchanged
    batch = _batch(name)
    model.train()
    logits, mask_logits = model.forward_batch(batch)
    assert logits.shape == (2, 2) and mask_logits.shape == (2, *grid)
    assert torch.equal(model.logits((logits, mask_logits)), logits)
    model.eval()
    with torch.no_grad():
        out = model.forward_batch(batch)
        assert isinstance(out, torch.Tensor) and torch.equal(out, model(batch.pixels))
        torch.testing.assert_close(out, logits)  # the same logits as the training forward (no dropout here)
    # The aux head is drawn from the seed.
    other = tiny(name).use_mask_loss(0.5, seed=1)
    third = tiny(name).use_mask_loss(0.5, seed=2)
    weights = lambda m: next(p for p in m.aux_mask_head.parameters() if p.ndim > 1)  # noqa: E731
    assert torch.equal(weights(other), weights(model)) and not torch.equal(weights(third), weights(model))


def test_convnext_mask_logits_read_the_first_stage():
    # patch_size 2: the stem and first stage give a 16x16 grid, the second stage 8x8.
    config = {**CONVNEXT_CONFIG, "patch_size": 2}
    model = build_model("convnext", {"pretrained": None, "config": config, "image_size": 32}).use_mask_loss(1.0, seed=0)
    convnext = model.hf_model.convnext
    with torch.no_grad():  # large weights, so that the first stage's output clearly differs from the stem's
        for p in convnext.encoder.stages[0].parameters():
            p.normal_(generator=torch.Generator().manual_seed(p.numel()))
    captured = {}
    convnext.embeddings.register_forward_hook(lambda m, i, o: captured.update(stem=o))
    convnext.encoder.stages[0].register_forward_hook(lambda m, i, o: captured.update(stage=o))
    model.train()
    _, mask_logits = model.forward_batch(_batch("convnext"))
    assert mask_logits.shape == (2, 16, 16)
    with torch.no_grad():
        from_stage, from_stem = (model.aux_mask_head(captured[k])[:, 0] for k in ("stage", "stem"))
    assert (from_stage - from_stem).abs().max() > 0.1 * from_stem.abs().max()
    torch.testing.assert_close(mask_logits, from_stage)


def test_vivit_mask_logits_follow_the_tubelets_in_place():
    # Without attention layers a tubelet token sees its own tubelet only: changing the pixels of
    # frames 2-3, rows 8-15, columns 16-23 must change mask cell (1, 1, 2) and no other.
    config = {**VIVIT_CONFIG, "num_hidden_layers": 0}
    model = build_model("vivit", {**VIVIT, "pretrained": None, "config": config}).use_mask_loss(1.0, seed=0).train()
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 4, 3, 32, 32, generator=generator)
    for frame, row, column in ((2, 8, 16), (0, 24, 0), (3, 0, 31)):
        changed = pixels.clone()
        tubelet = (frame // 2, row // 8, column // 8)
        t, h, w = (slice(2 * tubelet[0], 2 * tubelet[0] + 2), slice(8 * tubelet[1], 8 * tubelet[1] + 8),
                   slice(8 * tubelet[2], 8 * tubelet[2] + 8))
        changed[0, t, :, h, w] += torch.randn(2, 3, 8, 8, generator=generator)
        _, before = model.forward_batch(Batch(torch.tensor([1]), pixels=pixels))
        _, after = model.forward_batch(Batch(torch.tensor([1]), pixels=changed))
        moved = ((before - after).abs() > 1e-6).nonzero().tolist()
        assert moved == [[0, *tubelet]], (tubelet, moved)


@pytest.mark.parametrize("name", ["convnext", "vivit"])
def test_the_mask_loss_adds_to_cross_entropy_and_trains_the_stem(name):
    model = tiny(name).use_mask_loss(2.0, seed=0).train()
    batch = _batch(name)
    outputs = model.forward_batch(batch)
    cross_entropy = F.cross_entropy(outputs[0], batch.labels)
    loss = model.loss(outputs, batch)
    mask_part = model.mask_loss(outputs[1], batch.masks)
    assert mask_part > 0 and loss > cross_entropy
    torch.testing.assert_close(loss, cross_entropy + 2.0 * mask_part)
    stem = (model.hf_model.convnext.embeddings.patch_embeddings.weight if name == "convnext"
            else model.hf_model.vivit.embeddings.patch_embeddings.projection.weight)
    ce_grad = torch.autograd.grad(cross_entropy, stem, retain_graph=True)[0]
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.aux_mask_head.parameters())
    assert not torch.allclose(stem.grad, ce_grad)  # the mask loss reaches the stem / patch embedding


def test_the_mask_target_is_the_mask_max_pooled_to_the_grid():
    # ConvNeXt: 32 px on an 8x8 grid: pixel (9, 20) is cell (2, 5).
    convnext = tiny("convnext").use_mask_loss(1.0, seed=0)
    masks = torch.zeros(1, 32, 32)
    masks[0, 9, 20] = 1
    logits = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0))
    target = torch.zeros(1, 8, 8)
    target[0, 2, 5] = 1
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(convnext.MASK_POS_WEIGHT))
    torch.testing.assert_close(convnext.mask_loss(logits, masks), expected)
    # ViViT, tubelets of 2 frames x 8 x 8 px: frame 3, row 9, column 20 is tubelet (1, 1, 2) alone.
    vivit = tiny("vivit").use_mask_loss(1.0, seed=0)
    masks = torch.zeros(1, 4, 32, 32)
    masks[0, 3, 9, 20] = 1
    logits = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    target = torch.zeros(1, 2, 4, 4)
    target[0, 1, 1, 2] = 1
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(vivit.MASK_POS_WEIGHT))
    torch.testing.assert_close(vivit.mask_loss(logits, masks), expected)
    # Any pixel marks the tubelet of its (frame // 2, row // 8, column // 8), and that one alone.
    for frame, row, column in ((0, 0, 0), (1, 31, 7), (2, 8, 31), (3, 16, 15)):
        masks = torch.zeros(1, 4, 32, 32)
        masks[0, frame, row, column] = 1
        target = torch.zeros(1, 2, 4, 4)
        target[0, frame // 2, row // 8, column // 8] = 1
        expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(vivit.MASK_POS_WEIGHT))
        torch.testing.assert_close(vivit.mask_loss(logits, masks), expected)
    masks = torch.zeros(1, 4, 32, 32)
    masks[0, 3, 9, 20] = 1
    # The loss is lowest when the logits point at that tubelet and no other.
    at = torch.full((1, 2, 4, 4), -8.0)
    at[0, 1, 1, 2] = 8.0
    shifted = torch.full((1, 2, 4, 4), -8.0)
    shifted[0, 1, 2, 1] = 8.0
    assert vivit.mask_loss(at, masks) < 0.01 < vivit.mask_loss(shifted, masks)


@pytest.mark.parametrize("name", ["convnext", "vivit"])
def test_a_model_trained_with_the_mask_loss_saves_without_its_aux_head(name, tmp_path):
    model = tiny(name).use_mask_loss(1.0, seed=0)
    model.save(tmp_path / "saved")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "saved" / WEIGHTS_FILE), "pt") as saved:
        keys = list(saved.keys())
    assert keys and not [k for k in keys if "aux" in k]
    loaded = build_model(name, {"pretrained": str(tmp_path / "saved"),
                                **{k: v for k, v in ENTRIES[name].items() if k != "config"}}).eval()
    assert loaded.aux_mask_head is None and "masks" not in loaded.needs
    x = model.eval().prepare(torch.randint(0, 256, (2, 4, 32, 32) if name == "vivit" else (2, 32, 32),
                                           dtype=torch.uint8))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


class PlainNet(CTClassifier):
    """A model that is not a Hugging Face one and has no auxiliary mask loss."""

    kind = "slice"
    entry_keys = {"image_size": None}

    def __init__(self, image_size: int = 32, name: str = "plainnet"):
        super().__init__(image_size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name=name)
        self.encoder = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)

    @classmethod
    def from_settings(cls, settings, name):
        return cls(int(settings.get("image_size") or 32), name)

    @property
    def classifier(self):
        return self.fc

    def features(self, pixel_values):
        return self.encoder(pixel_values).amax(dim=(2, 3))


class AuxNet(PlainNet):
    """The same with the mask loss, as a model opts in: its head on the encoder's map."""

    def use_mask_loss(self, weight, seed):
        return self.enable_mask_loss(torch.nn.Conv2d(4, 1, 1), weight, seed)

    def forward_batch(self, batch):
        if self.aux_mask_head is None or not self.training:
            return super().forward_batch(batch)
        maps = self.encoder(batch.pixels)
        return self.fc(maps.amax(dim=(2, 3))), self.aux_mask_head(maps)[:, 0]


def test_a_model_without_the_mask_loss_refuses_it_in_one_line(cohort_dir, tmp_path):
    with pytest.raises(ModelError) as info:
        PlainNet(name="mine").use_mask_loss(1.0, seed=0)
    message = one_line(info)
    assert message.startswith("models.mine: PlainNet has no auxiliary mask loss")
    assert "training.mask_loss_weight" in message
    # In a run: refused before anything is written.
    register("test_plainnet")(PlainNet)
    try:
        config = {"models": {"plain": {"architecture": "test_plainnet", "image_size": 32}},
                  "training": {"mode": "full", "epochs": 1, "batch_size": 8, "mask_loss_weight": 1.0}}
        with pytest.raises(ModelError, match=r"models\.plain: .*training\.mask_loss_weight"):
            train_run(model_plan(config, "plain"), 0, cohort_dir / "rep-0.json", cohort_dir / "cache",
                      run_outputs(tmp_path / "run"), log=QUIET)
        assert not (tmp_path / "run" / "metrics.json").exists()
    finally:
        REGISTRY.pop("test_plainnet")


def test_a_non_hf_model_saves_without_its_aux_head_and_loads(tmp_path):
    model = AuxNet().use_mask_loss(1.0, seed=0)
    assert any(k.startswith("aux_mask_head.") for k in model.state_dict())  # trained and checkpointed with it
    model.train()
    batch = Batch(torch.tensor([1, 0]), pixels=torch.randn(2, 3, 32, 32), masks=torch.zeros(2, 32, 32))
    assert model.loss(model.forward_batch(batch), batch) > 0
    (tmp_path / "saved").mkdir()
    model.save(tmp_path / "saved", {"image_size": 32})
    loaded = AuxNet.load(tmp_path / "saved", name="auxnet")  # strict: exactly the model's weights
    assert loaded.aux_mask_head is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))
