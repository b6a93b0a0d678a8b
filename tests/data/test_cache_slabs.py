"""The slice cache of a thin-slice cohort (``preprocess.slab_mm``): slices averaged in HU into
slabs of slab_mm, as ``ichseq predict`` reformats a thin scan; labels and masks OR'ed per slab;
gaps bridged or refused; thick cohorts and slab_mm null unchanged; the config key and the
brain_window rule's param.

The thin cohort is the anatomical twin at 1.25 mm (its head atlas is built once per process)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ichseq.config import validate_config
from ichseq.data import readers
from ichseq.data.cache import SliceCache, WindowSpec, build_cache
from ichseq.data.layout import NIFTI_CSV, NIFTI_MASK_DIR, NIFTI_SCAN_DIR, SUBTYPES, patient_file
from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
from ichseq.data.windowing import brain_window, to_uint8
from ichseq.errors import ConfigError, DataError
from tests.conftest import one_line_error

QUIET = {"log": lambda _msg: None}
SLAB = 5.0
SIZE = 64  # the twin's own size: the cache resizes nothing, so pixels compare exactly
# 1.25 mm slices, ~100 a scan: the twin spaces them 1.4-1.5 mm apart to reach the vertex.
THIN = SyntheticSpec(n_patients=3, n_positive=2, image_size=SIZE, min_slices=90, max_slices=110, seed=3,
                     slice_thickness_mm=1.25)


@pytest.fixture(scope="module")
def thin_dataset(tmp_path_factory):
    dest = tmp_path_factory.mktemp("thin") / "ct-ich"
    generate_synthetic(dest, THIN, **QUIET)
    return dest


@pytest.fixture(scope="module")
def slab_cache(thin_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("slabs") / "cache"
    lines: list[str] = []
    meta = build_cache(thin_dataset, out, WindowSpec(SIZE, slab_mm=SLAB), log=lines.append)
    return out, meta, lines


def _manifest(cache) -> pd.DataFrame:
    return pd.read_csv(cache / "manifest.csv")


def _read_nifti(path):
    """``(positions mm, volume (S, rows, cols))`` of a NIfTI file, read here with nibabel alone."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32).transpose(2, 1, 0)
    centre = np.array([(data.shape[2] - 1) / 2, (data.shape[1] - 1) / 2, 0.0, 1.0])
    positions = np.array([(img.affine @ (centre + [0, 0, k, 0]))[2] for k in range(len(data))])
    order = np.argsort(positions, kind="stable")
    return positions[order], data[order], order + 1


def _step(positions: np.ndarray) -> float:
    return float(np.median(np.diff(positions)))


def _slab_members(positions: np.ndarray) -> list[np.ndarray]:
    """The thin slices (indices into ``positions``) of each 5 mm slab: edges every 5 mm from half a
    spacing below the first slice, as many slabs as the extent holds (the last at least half full)."""
    start = positions[0] - _step(positions) / 2
    n = int(np.floor((positions[-1] + _step(positions) / 2 - start) / SLAB + 0.5))
    slab = np.minimum(((positions - start) // SLAB).astype(int), n - 1)
    return [np.flatnonzero(slab == j) for j in range(n)]


# --------------------------------------------------------------------------- slabs


def test_thin_slices_are_cached_as_slabs_of_slab_mm(thin_dataset, slab_cache):
    out, meta, lines = slab_cache
    manifest = _manifest(out)
    csv = pd.read_csv(thin_dataset / NIFTI_CSV)
    assert len(manifest) < len(csv) / 3  # 3-4 slices of ~1.45 mm a slab
    for patient, rows in manifest.groupby("patient"):
        positions, _hu, _numbers = _read_nifti(thin_dataset / NIFTI_SCAN_DIR / patient_file(patient))
        step = _step(positions)
        assert step < 0.75 * SLAB
        extent = positions[-1] - positions[0] + step
        assert len(rows) == round(extent / SLAB)
        np.testing.assert_allclose(np.diff(rows.position_mm), SLAB, atol=2e-3)
        assert rows.position_mm.iloc[0] == pytest.approx(positions[0] - step / 2 + SLAB / 2, abs=1e-3)
        assert rows.slice.tolist() == list(range(1, len(rows) + 1))
        assert any(f"patient {patient}:" in line and "slabs of 5 mm" in line for line in lines)
    assert meta["slab_mm"] == SLAB and meta["slabbed_scans"] == THIN.n_patients
    assert json.loads((out / "cache.json").read_text())["slab_mm"] == SLAB


def test_a_slab_is_the_window_of_the_mean_hu_of_its_slices(thin_dataset, slab_cache):
    out, _meta, _lines = slab_cache
    manifest, cache = _manifest(out), SliceCache(out)
    patient = int(manifest.patient.iloc[0])
    positions, hu, _numbers = _read_nifti(thin_dataset / NIFTI_SCAN_DIR / patient_file(patient))
    members = _slab_members(positions)
    mean_hu = np.stack([hu[m].astype(np.float64).mean(axis=0) for m in members]).astype(np.float32)
    expected = to_uint8(brain_window(mean_hu))
    got = np.asarray(cache.slices[cache.patient_rows(patient)])
    assert got.shape == expected.shape
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999  # float rounding at a .5 only
    # Averaging the windowed slices instead is not the same (the window clips), so this tells them apart.
    windowed_first = to_uint8(np.stack([brain_window(hu[m]).mean(axis=0) for m in members]))
    assert (np.abs(windowed_first.astype(int) - got.astype(int)) > 1).sum() > 100


def test_a_slab_is_positive_and_masked_where_any_of_its_slices_is(thin_dataset, slab_cache):
    out, _meta, _lines = slab_cache
    manifest, cache = _manifest(out), SliceCache(out)
    csv = pd.read_csv(thin_dataset / NIFTI_CSV)
    mixed = 0
    for patient, rows in manifest.groupby("patient"):
        positions, _hu, numbers = _read_nifti(thin_dataset / NIFTI_SCAN_DIR / patient_file(patient))
        _, masks, _ = _read_nifti(thin_dataset / NIFTI_MASK_DIR / patient_file(patient))
        labels = csv[csv.PatientNumber == patient].set_index("SliceNumber").loc[numbers]
        labels["label"] = labels[list(SUBTYPES)].max(axis=1)
        for slab, members in zip(rows.itertuples(), _slab_members(positions)):
            thin = labels.iloc[members]
            for column in ("label", *SUBTYPES):
                assert getattr(slab, column) == thin[column].max(), (patient, slab.slice, column)
            assert slab.fracture == thin.Fracture_Yes_No.max()
            mixed += thin.label.max() > thin.label.min()
            np.testing.assert_array_equal(cache.masks[slab.row], (masks[members] > 0).any(axis=0))
            assert slab.has_mask == (masks[members] > 0).any()
    assert mixed > 0  # slabs holding both positive and negative thin slices were checked


def test_one_positive_thin_slice_makes_its_slab_positive(thin_dataset, tmp_path):
    """A negative patient given a bleed on one thin slice (label and mask): its slab is positive and
    masked there, the slabs around it are not."""
    data = shutil.copytree(thin_dataset, tmp_path / "ct-ich")
    csv = pd.read_csv(data / NIFTI_CSV)
    patient = int(csv.groupby("PatientNumber").No_Hemorrhage.min().idxmax())  # never a bleed
    number = 41  # a thin slice in the middle of the scan
    row = (csv.PatientNumber == patient) & (csv.SliceNumber == number)
    csv.loc[row, ["Subdural", "No_Hemorrhage"]] = [1, 0]
    csv.to_csv(data / NIFTI_CSV, index=False)
    mask_file = data / NIFTI_MASK_DIR / patient_file(patient)
    img = nib.load(str(mask_file))
    mask = np.asarray(img.dataobj).copy()
    mask[30:34, 20:23, number - 1] = 1
    nib.save(nib.Nifti1Image(mask, img.affine, img.header), str(mask_file))

    build_cache(data, tmp_path / "cache", WindowSpec(SIZE, slab_mm=SLAB), **QUIET)
    manifest, cache = _manifest(tmp_path / "cache"), SliceCache(tmp_path / "cache")
    rows = manifest[manifest.patient == patient]
    assert rows.label.sum() == rows.Subdural.sum() == rows.has_mask.sum() == 1
    slab = rows[rows.label == 1].iloc[0]
    positions, _hu, numbers = _read_nifti(data / NIFTI_SCAN_DIR / patient_file(patient))
    members = _slab_members(positions)[int(slab.slice) - 1]
    assert number in numbers[members] and len(members) >= 3
    mask = cache.masks[int(slab.row)]
    assert mask.sum() == 12 and mask[20:23, 30:34].all()  # display orientation: rows are the file's 2nd axis


# --------------------------------------------------------------------------- unchanged


def test_slab_mm_null_caches_slice_for_slice(thin_dataset, tmp_path):
    meta = build_cache(thin_dataset, tmp_path / "cache", WindowSpec(SIZE), **QUIET)
    manifest, cache = _manifest(tmp_path / "cache"), SliceCache(tmp_path / "cache")
    dataset = readers.open_dataset(thin_dataset)
    assert len(manifest) == len(dataset.labels) and meta["slab_mm"] is None and "slabbed_scans" not in meta
    for patient in dataset.patients:
        scan = dataset.read_scan(patient)
        np.testing.assert_array_equal(cache.slices[cache.patient_rows(patient)], to_uint8(scan.images))
        assert manifest[manifest.patient == patient].slice.tolist() == scan.slice_numbers.tolist()


def test_a_thick_cohort_is_the_same_with_slab_mm(nifti_dataset, tiny_spec, tmp_path):
    plain = build_cache(nifti_dataset, tmp_path / "plain", WindowSpec(tiny_spec.image_size), **QUIET)
    slab = build_cache(nifti_dataset, tmp_path / "slab", WindowSpec(tiny_spec.image_size, slab_mm=SLAB), **QUIET)
    for name in ("slices.npy", "masks.npy", "manifest.csv"):
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "slab" / name).read_bytes(), name
    assert plain["slab_mm"] is None and slab["slab_mm"] == SLAB and slab["slabbed_scans"] == 0
    different = {k for k in plain.keys() | slab.keys() if plain.get(k) != slab.get(k)}
    assert different <= {"slab_mm", "slabbed_scans", "seconds"}


def test_the_runs_recorded_geometry_is_the_slabs(slab_cache):
    from ichseq.training.runs import training_geometry

    cache = SliceCache(slab_cache[0])
    assert training_geometry(cache, cache.patients)["slice_spacing_mm"] == pytest.approx(SLAB, abs=1e-3)


# --------------------------------------------------------------------------- gaps and refusals


def _without_slices(monkeypatch, patient: int, drop: list[int]) -> None:
    """The reader gives ``patient``'s scan without the slices at ``drop`` (0-based, in position
    order): a series with missing slices (a NIfTI file's affine cannot hold a gap)."""
    original = readers.NiftiDataset.read_hu_scan

    def read_hu_scan(self, p):
        scan = original(self, p)
        if p != patient:
            return scan
        keep = np.setdiff1d(np.arange(len(scan.positions)), drop)
        return dataclasses.replace(scan, slice_numbers=scan.slice_numbers[keep], positions=scan.positions[keep],
                                   images=scan.images[keep], masks=scan.masks[keep])

    monkeypatch.setattr(readers.NiftiDataset, "read_hu_scan", read_hu_scan)


def test_a_gap_shorter_than_a_slab_is_bridged_and_logged(thin_dataset, tmp_path, monkeypatch):
    patient = readers.open_dataset(thin_dataset).patients[1]
    _without_slices(monkeypatch, patient, [40, 41])  # 3 spacings (~4.4 mm) between slices 40 and 43
    positions, _hu, _numbers = _read_nifti(thin_dataset / NIFTI_SCAN_DIR / patient_file(patient))
    gap = positions[42] - positions[39]
    lines: list[str] = []
    build_cache(thin_dataset, tmp_path / "cache", WindowSpec(SIZE, slab_mm=SLAB), log=lines.append)
    (line,) = [line for line in lines if "bridged" in line]
    assert f"patient {patient}:" in line and "slice 40" in line and "slice 43" in line and f"{gap:.2f} mm" in line
    rows = _manifest(tmp_path / "cache").query("patient == @patient")
    np.testing.assert_allclose(np.diff(rows.position_mm), SLAB, atol=2e-3)


def test_a_gap_longer_than_a_slab_is_refused_naming_the_patient_and_file(thin_dataset, tmp_path, monkeypatch):
    patient = readers.open_dataset(thin_dataset).patients[1]
    _without_slices(monkeypatch, patient, list(range(40, 46)))  # 7 spacings (~10 mm) between slices 40 and 47
    one_line_error(lambda: build_cache(thin_dataset, tmp_path / "cache", WindowSpec(SIZE, slab_mm=SLAB), **QUIET),
                   f"(patient {patient})", patient_file(patient), "slice 40", "slice 47",
                   "longer than the 5.00 mm slabs",
                   "preprocess.slab_mm")
    assert not (tmp_path / "cache").exists()


def test_slab_mm_is_refused_for_a_dataset_without_positions_or_hu(jpg_dataset, nifti_dataset, tmp_path):
    one_line_error(lambda: build_cache(jpg_dataset, tmp_path / "jpg", WindowSpec(64, slab_mm=SLAB), **QUIET),
                   "preprocess.slab_mm", "JPG", "null")
    one_line_error(lambda: build_cache(nifti_dataset, tmp_path / "pre", WindowSpec(64, prewindowed=True, slab_mm=SLAB),
                                       **QUIET), "preprocess.slab_mm", "dataset.prewindowed")
    assert not (tmp_path / "jpg").exists() and not (tmp_path / "pre").exists()
    # A pre-windowed dataset holds no HU for anyone to average.
    with pytest.raises(DataError, match="prewindowed"):
        readers.open_dataset(nifti_dataset, prewindowed=True).read_hu_scan(49)


# --------------------------------------------------------------------------- config and rule


def test_the_schema_takes_a_positive_slab_mm_or_null():
    assert validate_config({})["preprocess"]["slab_mm"] is None
    assert validate_config({"preprocess": {"slab_mm": 5}})["preprocess"]["slab_mm"] == 5
    assert validate_config({"preprocess": {"slab_mm": 2.5}})["preprocess"]["slab_mm"] == 2.5
    for bad in (0, -5, "5mm", [5]):
        with pytest.raises(ConfigError, match="preprocess.slab_mm"):
            validate_config({"preprocess": {"slab_mm": bad}})


@pytest.mark.slow
def test_the_brain_window_rule_passes_slab_mm_and_reruns_when_it_changes(thin_dataset, tmp_path):
    from tests.test_workflow import TINY, snakemake

    config = {**TINY, "dataset": {"source": "local", "local": {"path": str(thin_dataset)}},
              "preprocess": {"image_size": 32, "slab_mm": SLAB}}
    proc = snakemake(tmp_path, "results/data/cache", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "results/data/cache/cache.json").read_text())
    assert meta["slab_mm"] == SLAB and meta["slabbed_scans"] == THIN.n_patients
    manifest = _manifest(tmp_path / "results/data/cache")
    assert len(manifest) < len(pd.read_csv(thin_dataset / NIFTI_CSV)) / 3
    assert "slabs of 5 mm" in (tmp_path / "logs/data/brain_window.log").read_text()
    proc = snakemake(tmp_path, "results/data/cache", "-n", config={**config, "preprocess": {"image_size": 32}})
    assert proc.returncode == 0 and "brain_window" in proc.stdout + proc.stderr
