"""The acquisition geometry a run trained on (``ichseq.json``'s ``geometry``): what ``ichseq predict``
reformats a new scan to."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from ichseq.data import synthetic
from ichseq.data.cache import SliceCache, WindowSpec, build_cache
from ichseq.data.layout import NIFTI_LAYOUT
from ichseq.errors import DataError
from ichseq.training.runs import RUN_MODEL_INFO, compute_features, train_run, training_geometry
from ichseq.training.plan import model_plan
from tests.conftest import run_outputs

QUIET = lambda _msg: None  # noqa: E731
GEOMETRY_KEYS = {"slice_spacing_mm", "pixel_mm", "field_of_view_mm", "image_size", "model_pixel_mm", "patients"}


def development_patients(cohort_dir, rep: int = 0) -> list[int]:
    split = json.loads((cohort_dir / f"rep-{rep}.json").read_text())
    return [*split["train"], *split["val"]]


def test_geometry_of_a_nifti_cache_is_what_the_synthetic_spec_implies(cohort_dir, tiny_spec):
    """The cartoon generator writes 5 mm slices over a 230 mm field at ``image_size`` pixels."""
    assert tiny_spec.generator == "cartoon"
    cache = SliceCache(cohort_dir / "cache")
    patients = development_patients(cohort_dir)
    geometry = training_geometry(cache, patients)
    assert set(geometry) == GEOMETRY_KEYS
    assert geometry["slice_spacing_mm"] == pytest.approx(synthetic.SLICE_THICKNESS_MM, abs=1e-3)
    assert geometry["pixel_mm"] == pytest.approx(synthetic.FIELD_OF_VIEW_MM / tiny_spec.image_size, abs=1e-4)
    assert geometry["field_of_view_mm"] == pytest.approx(synthetic.FIELD_OF_VIEW_MM, abs=1e-3)
    assert geometry["image_size"] == cache.slices.shape[1] == 32  # the cache's size, not the scans'
    assert geometry["model_pixel_mm"] == pytest.approx(synthetic.FIELD_OF_VIEW_MM / 32, abs=1e-4)
    assert geometry["patients"] == len(patients) < len(cache.patients)  # never the test patients
    assert json.loads(json.dumps(geometry)) == geometry  # plain JSON values


def test_the_field_of_view_is_in_mm_not_pixels(tmp_path):
    """Another pixel count over the same field: other pixel_mm, the same field of view."""
    spec = synthetic.SyntheticSpec(n_patients=2, n_positive=1, image_size=48, min_slices=8, max_slices=9, seed=3,
                                   generator="cartoon")
    synthetic.generate_synthetic(tmp_path / "ds", spec, log=QUIET)
    build_cache(tmp_path / "ds", tmp_path / "cache", WindowSpec(32), log=QUIET)
    cache = SliceCache(tmp_path / "cache")
    geometry = training_geometry(cache, cache.patients)
    assert geometry["pixel_mm"] == pytest.approx(synthetic.FIELD_OF_VIEW_MM / 48, abs=1e-4)
    assert geometry["field_of_view_mm"] == pytest.approx(synthetic.FIELD_OF_VIEW_MM, abs=1e-3)
    assert geometry["slice_spacing_mm"] == pytest.approx(synthetic.SLICE_THICKNESS_MM, abs=1e-3)
    assert geometry["patients"] == 2


def _cache_of(scans: dict[int, dict], layout: str = NIFTI_LAYOUT) -> SliceCache:
    """An in-memory cache of patients given as {patient: {"positions": [...], "pixel_mm": x, "source_size": n}}."""
    frames, start = [], 0
    for patient, scan in scans.items():
        n = len(scan["positions"])
        frames.append(pd.DataFrame({"row": np.arange(start, start + n), "patient": patient,
                                    "slice": np.arange(1, n + 1), "position_mm": scan["positions"], "label": 0,
                                    "has_mask": 0, "pixel_mm": scan["pixel_mm"], "source_size": scan["source_size"]}))
        start += n
    return SliceCache.from_arrays(np.zeros((start, 16, 16), np.uint8), pd.concat(frames), {"layout": layout})


def test_spacings_and_fields_are_medians_over_patients():
    cache = _cache_of({
        1: {"positions": [0.0, 5.0, 10.0, 20.0], "pixel_mm": 0.5, "source_size": 512},  # a missing slice: still 5 mm
        2: {"positions": [3.0, 8.0, 13.0], "pixel_mm": 0.45, "source_size": 512},
        3: {"positions": [0.0, 2.5, 5.0, 7.5], "pixel_mm": 0.4, "source_size": 640},
        4: {"positions": [0.0], "pixel_mm": 1.0, "source_size": 100},  # not one of the patients asked for
    })
    geometry = training_geometry(cache, [1, 2, 3])
    assert geometry["slice_spacing_mm"] == 5.0
    assert geometry["pixel_mm"] == 0.45  # median of the slices' 0.5 x4, 0.45 x3, 0.4 x4
    assert geometry["field_of_view_mm"] == 256.0  # median of 256, 230.4 and 256
    assert geometry["image_size"] == 16 and geometry["model_pixel_mm"] == 16.0
    assert geometry["patients"] == 3
    single = training_geometry(cache, [4])  # one slice: no spacing to measure
    assert single["slice_spacing_mm"] is None and single["field_of_view_mm"] == 100.0


def test_no_development_patient_in_the_cache_is_one_line():
    cache = _cache_of({1: {"positions": [0.0, 5.0], "pixel_mm": 0.5, "source_size": 512}})
    with pytest.raises(DataError, match=r"^<memory>: none of the run's development patients .*brain_window") as exc:
        training_geometry(cache, [7, 8])
    assert "\n" not in str(exc.value)


def test_geometry_of_a_jpg_cache_is_unknown(jpg_dataset, tmp_path):
    """The v1.0.0 JPGs record no pixel spacing, and their positions are slice numbers, not mm."""
    build_cache(jpg_dataset, tmp_path / "cache", WindowSpec(32), log=QUIET)
    cache = SliceCache(tmp_path / "cache")
    geometry = training_geometry(cache, cache.patients)
    assert {k: geometry[k] for k in ("slice_spacing_mm", "pixel_mm", "field_of_view_mm", "model_pixel_mm")} == {
        "slice_spacing_mm": None, "pixel_mm": None, "field_of_view_mm": None, "model_pixel_mm": None}
    assert geometry["image_size"] == 32 and geometry["patients"] == len(cache.patients)


def test_a_cache_written_before_the_geometry_columns_keeps_its_slice_spacing(cohort_dir, tmp_path):
    old = tmp_path / "old-cache"
    shutil.copytree(cohort_dir / "cache", old)
    manifest = pd.read_csv(old / "manifest.csv")
    manifest.drop(columns=["pixel_mm", "source_size"]).to_csv(old / "manifest.csv", index=False)
    patients = development_patients(cohort_dir)
    geometry = training_geometry(SliceCache(old), patients)
    current = training_geometry(SliceCache(cohort_dir / "cache"), patients)
    assert geometry["pixel_mm"] is geometry["field_of_view_mm"] is geometry["model_pixel_mm"] is None
    assert current["pixel_mm"] is not None
    assert geometry["slice_spacing_mm"] == current["slice_spacing_mm"] is not None
    assert geometry["patients"] == current["patients"]


TINY_CONVNEXT = {
    "models": {"convnext": {"config": {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2},
                            "image_size": 32}},
    "training": {"mode": "head", "epochs": 1, "batch_size": 4, "lr": 0.01, "patience": None,
                 "class_imbalance": "none", "feature_batch_size": 8},
}


def test_a_run_records_the_geometry_of_its_development_patients(cohort_dir, tmp_path):
    plan = model_plan(TINY_CONVNEXT, "convnext")
    compute_features(plan, cohort_dir / "cache", tmp_path / "features", log=QUIET)
    train_run(plan, 0, cohort_dir / "rep-0.json", cohort_dir / "cache", run_outputs(tmp_path / "run"),
              tmp_path / "features", log=QUIET)
    info = json.loads((tmp_path / "run" / "model" / RUN_MODEL_INFO).read_text())
    patients = development_patients(cohort_dir)
    assert info["geometry"] == training_geometry(SliceCache(cohort_dir / "cache"), patients)
    assert info["geometry"]["patients"] == info["input_requirements"]["developed_on"]["patients"] == len(patients)
    assert info["geometry"]["image_size"] == info["preprocess"]["image_size"]
    assert info["geometry"]["slice_spacing_mm"] == pytest.approx(synthetic.SLICE_THICKNESS_MM, abs=1e-3)
