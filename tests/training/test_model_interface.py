"""The open model interface: a model that is not a Hugging Face one, with its own loss and a
need for masks and slice positions, is added by registering one class (here, in the test only)
and one config entry, and trains, saves and loads through the unchanged pipeline code."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from ichseq.data.cache import SliceCache
from ichseq.models import REGISTRY, register
from ichseq.models.base import Batch, CTClassifier
from ichseq.training.runs import compute_features, load_run_model, train_run
from ichseq.training.plan import model_plan
from tests.conftest import run_outputs

QUIET = lambda _msg: None  # noqa: E731
ARCH = "test_masknet"


class MaskNet(CTClassifier):
    """Two convolutions; global max pooling -> a Linear classifier; a 1x1 conv predicts the mask.
    Its loss adds the mask's binary cross-entropy to the classification loss."""

    kind = "slice"
    needs = frozenset({"masks", "positions"})
    entry_keys = {"config": None, "image_size": None}  # the entry keys it reads: shared definitions
    seen: list[dict] = []  # what loss() received, batch by batch

    def __init__(self, width: int, image_size: int, name: str):
        super().__init__(image_size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name=name)
        self.encoder = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(),
                                           torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU())
        self.mask_head = torch.nn.Conv2d(width, 1, 1)
        self.fc = torch.nn.Linear(width, 2)

    @classmethod
    def from_settings(cls, settings, name):
        return cls(int((settings.get("config") or {}).get("width", 8)), int(settings.get("image_size", 32)), name)

    @property
    def classifier(self):
        return self.fc

    def features(self, pixel_values):
        return self.encoder(pixel_values).amax(dim=(2, 3))

    def forward(self, pixel_values):
        maps = self.encoder(pixel_values)
        return {"logits": self.fc(maps.amax(dim=(2, 3))), "mask": self.mask_head(maps)[:, 0]}

    def logits(self, outputs):
        return outputs["logits"] if isinstance(outputs, dict) else outputs

    def loss(self, outputs, batch: Batch, class_weight=None):
        MaskNet.seen.append({"pixels": batch.pixels is not None, "masks": None if batch.masks is None else
                             tuple(batch.masks.shape), "positions": None if batch.positions is None else
                             tuple(batch.positions.shape), "mask_sum": float(batch.masks.sum())})
        loss = super().loss(outputs, batch, class_weight)
        if isinstance(outputs, dict):  # end to end: the mask branch learns too
            loss = loss + F.binary_cross_entropy_with_logits(outputs["mask"], batch.masks)
        return loss


@pytest.fixture
def masknet():
    register(ARCH)(MaskNet)
    MaskNet.seen.clear()
    try:
        yield MaskNet
    finally:
        REGISTRY.pop(ARCH)


def plan_for(mode: str, epochs: int = 3):
    config = {
        "models": {"masknet": {"architecture": ARCH, "config": {"width": 8}, "image_size": 32}},
        "training": {"mode": mode, "epochs": epochs, "batch_size": 8, "lr": 0.01, "patience": None,
                     "class_imbalance": "weighted", "feature_batch_size": 16},
        "frames": {"policy": "uniform", "padding": "edge"},
        "aggregation": {"rule": "any", "threshold": 0.5, "k": 2},
    }
    return model_plan(config, "masknet")


def reread_probabilities(run_dir, cohort_dir) -> np.ndarray:
    """The test slices' probabilities recomputed by the model loaded back from the run's folder."""
    model, info = load_run_model(run_dir / "model")
    tested = pd.read_csv(run_dir / "sample_predictions.csv")
    cache = SliceCache(cohort_dir / "cache")
    rows = [int(cache.manifest.row[(cache.manifest.patient == p) & (cache.manifest.slice == s)].item())
            for p, s in zip(tested.patient, tested.slice)]
    with torch.no_grad():
        logits = model.logits(model(model.prepare(torch.from_numpy(np.asarray(cache.slices[rows])))))
    assert info["plan"]["architecture"] == ARCH
    return torch.softmax(logits, 1)[:, 1].double().numpy(), tested.probability.to_numpy()


def test_head_mode_trains_the_models_own_classifier_on_its_cached_features(masknet, cohort_dir, tmp_path):
    plan = plan_for("head")
    meta = compute_features(plan, cohort_dir / "cache", tmp_path / "features", log=QUIET)
    assert meta["feature_dim"] == 8 and meta["head_init_std"] == 0.02
    report = train_run(plan, 0, cohort_dir / "rep-0.json", cohort_dir / "cache", run_outputs(tmp_path / "run"),
                       tmp_path / "features", log=QUIET)
    assert report["metrics"]["n_test"] > 0
    # The batches held features (no pixels) and, as the model asked, masks and positions.
    assert MaskNet.seen and not any(s["pixels"] for s in MaskNet.seen)
    assert all(s["masks"] == (s["positions"][0], 32, 32) for s in MaskNet.seen)
    saved = sorted(p.name for p in (tmp_path / "run/model").iterdir())
    assert saved == ["head.safetensors", "ichseq.json", "ood_reference.npz"]
    recomputed, written = reread_probabilities(tmp_path / "run", cohort_dir)
    np.testing.assert_allclose(recomputed, written, rtol=1e-5, atol=1e-6)


def test_full_mode_uses_the_models_loss_with_masks_and_saves_a_loadable_model(masknet, cohort_dir, tmp_path):
    plan = plan_for("full")
    train_run(plan, 0, cohort_dir / "rep-0.json", cohort_dir / "cache", run_outputs(tmp_path / "run"), log=QUIET)
    # Pixels and masks reached the model's own loss; the tiny cohort's positive slices have masks.
    assert MaskNet.seen and all(s["pixels"] for s in MaskNet.seen)
    assert sum(s["mask_sum"] for s in MaskNet.seen) > 0
    history = pd.read_csv(tmp_path / "run/history.csv")
    assert len(history) == 3 and history.train_loss.notna().all()
    saved = sorted(p.name for p in (tmp_path / "run/model").iterdir())
    assert saved == ["ichseq.json", "model.safetensors", "model_settings.json", "ood_reference.npz",
                     "preprocessor_config.json"]
    # The backbone (and the mask branch, trained by the model's own loss) moved from initialisation.
    fresh, _ = plan.build(), None
    loaded, _ = load_run_model(tmp_path / "run/model")
    for key in ("encoder.0.weight", "mask_head.weight"):
        assert not torch.equal(loaded.state_dict()[key], fresh.state_dict()[key])
    recomputed, written = reread_probabilities(tmp_path / "run", cohort_dir)
    np.testing.assert_allclose(recomputed, written, rtol=1e-5, atol=1e-6)
    info = json.loads((tmp_path / "run/model/ichseq.json").read_text())
    assert info["plan"]["training"]["mode"] == "full"


def test_batch_masks_and_positions_follow_the_samples(masknet, cohort_dir):
    cache = SliceCache(cohort_dir / "cache")
    model = plan_for("full").build()
    from ichseq.training.samples import build_samples

    samples = build_samples(cache, "slice")
    with_mask = np.flatnonzero(cache.manifest.has_mask.to_numpy() == 1)[:3]
    index = np.concatenate([with_mask, [0]])
    batch = samples.batch(model, cache, index)
    assert batch.pixels.shape == (4, 3, 32, 32) and batch.features is None
    assert torch.equal(batch.masks, torch.from_numpy(np.asarray(cache.masks[samples.rows[index, 0]])).float())
    assert (batch.masks[:3].flatten(1).amax(1) == 1).all()
    np.testing.assert_allclose(batch.positions.numpy(), cache.manifest.position_mm.to_numpy()[samples.rows[index, 0]],
                               rtol=1e-6)
    assert torch.equal(batch.labels, torch.as_tensor(samples.label[index]))


def test_a_model_module_is_found_without_being_imported(tmp_path):
    from ichseq.models.catalogue import inherited, read_package

    (tmp_path / "base.py").write_text('class Contract(Module, ABC):\n    entry_keys: ClassVar[dict] = {}\n')
    (tmp_path / "mine.py").write_text(
        '@register("mine")\nclass Mine(Contract):\n    kind = "scan"\n    entry_keys = {"head": None, '
        '"depth": {"type": "integer"}}\n\n@register("other")\nclass Other(Mine):\n    refusal_hint = "ask"\n\n'
        '@other("no")\nclass X: pass\n\n@register("bare")\nclass Bare(Contract):\n    pass\n')
    classes, registered = read_package(tmp_path, "plugins")
    assert registered == {"mine": "Mine", "other": "Other", "bare": "Bare"}
    assert classes["Other"].module == "plugins.mine" and classes["Contract"].module == "plugins.base"
    # What a class does not state it inherits, along its bases, as Python would.
    assert inherited(classes, "Other", "kind") == "scan" and inherited(classes, "Other", "refusal_hint") == "ask"
    assert inherited(classes, "Other", "entry_keys") == {"head": None, "depth": {"type": "integer"}}
    assert inherited(classes, "Bare", "entry_keys") == {} and inherited(classes, "Bare", "kind") is None


def test_a_declaration_that_is_not_a_literal_is_refused_in_one_line(tmp_path):
    from ichseq.errors import ModelError
    from ichseq.models.catalogue import read_package

    (tmp_path / "mine.py").write_text('@register("mine")\nclass Mine(Contract):\n    entry_keys = make_keys()\n')
    with pytest.raises(ModelError, match=r"^Mine\.entry_keys: must be a literal \(it is read without importing"):
        read_package(tmp_path, "plugins")


def test_every_builtin_declaration_read_from_source_matches_the_class():
    from ichseq.models import BUILTIN, BUILTIN_DECLARED, model_class

    for name in BUILTIN:
        cls = model_class(name)
        assert BUILTIN_DECLARED[name] == {"kind": cls.kind, "entry_keys": cls.entry_keys,
                                          "refusal_hint": cls.refusal_hint}, name


def test_every_builtin_kind_is_read_without_import_and_matches_the_class():
    import subprocess
    import sys

    code = ("import sys; from ichseq.models import BUILTIN, model_kind; "
            "print({n: model_kind(n) for n in BUILTIN}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    kinds = eval(out[0])  # noqa: S307 (our own printout)
    assert out[1] == "False"  # reading the kinds imported no model module
    from ichseq.models import KINDS, model_class

    assert kinds["convnext"] == "slice" and kinds["vivit"] == "sequence"
    for name, kind in kinds.items():
        assert kind in KINDS and model_class(name).kind == kind
