"""The windowed-slice cache: build, read memory-mapped, cohort table."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ichseq.data import readers as dataset_module
from ichseq.data.cache import MANIFEST_COLUMNS, SliceCache, WindowSpec, build_cache
from ichseq.data.cohort import cohort_from_manifest
from ichseq.data.fingerprint import MANIFEST_NAME, dataset_fingerprint, dataset_manifest, manifest_digest, read_manifest
from ichseq.data.layout import NIFTI_CSV, NIFTI_MASK_DIR, NIFTI_SCAN_DIR, SUBTYPES, patient_file
from ichseq.data.windowing import brain_window, to_uint8
from ichseq.errors import DataError
from tests.conftest import fail_on_call, mounted_tmpfs
from tests.test_atomic import DiskUsage, killed_child

QUIET = {"log": lambda _msg: None}


def _build(src, out, size, workers=1):
    return build_cache(src, out, WindowSpec(image_size=size), workers=workers, **QUIET)


@pytest.fixture(scope="module")
def tiny_size(tiny_spec) -> int:
    return tiny_spec.image_size


@pytest.fixture(scope="module")
def native_cache(nifti_dataset, tiny_size, tmp_path_factory):
    """Cache of the tiny NIfTI dataset at its own size (no resizing)."""
    out = tmp_path_factory.mktemp("cache") / "native"
    meta = _build(nifti_dataset, out, tiny_size)
    return out, meta


@pytest.fixture(scope="module")
def small_cache(nifti_dataset, tmp_path_factory):
    """Cache of the tiny NIfTI dataset down-sampled to 32x32, one worker."""
    out = tmp_path_factory.mktemp("cache") / "small"
    meta = _build(nifti_dataset, out, 32)
    return out, meta


@pytest.fixture(scope="module")
def csv_rows(nifti_dataset) -> pd.DataFrame:
    return pd.read_csv(nifti_dataset / NIFTI_CSV, encoding="utf-8-sig")


def _manifest(path) -> pd.DataFrame:
    return pd.read_csv(path / "manifest.csv")


# --------------------------------------------------------------------------- build_cache


def test_cache_files_shapes_and_dtypes(small_cache, csv_rows):
    out, meta = small_cache
    assert sorted(p.name for p in out.iterdir()) == ["cache.json", "dataset.json", "manifest.csv", "masks.npy", "slices.npy"]
    slices = np.load(out / "slices.npy")
    masks = np.load(out / "masks.npy")
    n = len(csv_rows)
    assert slices.dtype == np.uint8 and masks.dtype == np.uint8
    assert slices.shape == (n, 32, 32) and masks.shape == (n, 32, 32)
    assert set(np.unique(masks)) <= {0, 1}
    manifest = _manifest(out)
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert len(manifest) == n
    assert manifest.row.tolist() == list(range(n))


def test_manifest_rows_are_contiguous_per_patient_and_ordered_by_position(small_cache, csv_rows):
    manifest = _manifest(small_cache[0])
    assert sorted(manifest.patient.unique()) == sorted(csv_rows.PatientNumber.unique())
    # Each patient appears as one block of consecutive rows.
    changes = (manifest.patient != manifest.patient.shift()).sum()
    assert changes == manifest.patient.nunique()
    for patient, g in manifest.groupby("patient"):
        assert np.all(np.diff(g.row) == 1)
        assert np.all(np.diff(g.position_mm) > 0)
        np.testing.assert_allclose(np.diff(g.position_mm), 5.0, atol=1e-3)  # 5 mm slices
        expected = sorted(csv_rows.loc[csv_rows.PatientNumber == patient, "SliceNumber"])
        assert sorted(g.slice) == expected


def test_manifest_labels_match_the_csv(small_cache, csv_rows):
    manifest = _manifest(small_cache[0])
    merged = manifest.merge(csv_rows, left_on=["patient", "slice"], right_on=["PatientNumber", "SliceNumber"])
    assert len(merged) == len(manifest)
    assert (merged.label == 1 - merged.No_Hemorrhage).all()
    for s in SUBTYPES:
        assert (merged[f"{s}_x"] == merged[f"{s}_y"]).all(), s
    assert (merged.fracture == merged.Fracture_Yes_No).all()


def test_has_mask_and_labels_agree_with_masks_npy(small_cache):
    out, _ = small_cache
    manifest = _manifest(out)
    masks = np.load(out / "masks.npy")
    nonempty = masks.reshape(len(masks), -1).any(axis=1)
    np.testing.assert_array_equal(manifest.has_mask.to_numpy().astype(bool), nonempty)
    # Down-sampling 64 -> 32 keeps every labelled lesion; the synthetic twin has no mask
    # without a label either.
    np.testing.assert_array_equal(manifest.label.to_numpy().astype(bool), nonempty)
    assert manifest.label.sum() > 0


def test_cache_json_counts(small_cache, csv_rows):
    out, meta = small_cache
    on_disk = json.loads((out / "cache.json").read_text())
    assert on_disk == meta
    assert meta["layout"] == "nifti-v1.3.1"
    assert meta["image_size"] == 32
    assert meta["window"] == {"level": 40.0, "width": 120.0}
    assert meta["patients"] == csv_rows.PatientNumber.nunique()
    assert meta["slices"] == len(csv_rows)
    assert meta["positive_slices"] == int((csv_rows.No_Hemorrhage == 0).sum())


def test_cache_records_the_content_of_the_dataset_it_was_built_from(small_cache, nifti_dataset):
    out, meta = small_cache
    files = read_manifest(out / MANIFEST_NAME)
    assert files == dataset_manifest(nifti_dataset)
    assert meta["dataset_sha256"] == manifest_digest(files) == dataset_fingerprint(nifti_dataset)


def test_cached_pixels_are_the_brain_window_of_the_nifti_hu(native_cache, nifti_dataset, tiny_size):
    """Independent of the reader: load the NIfTI with nibabel and window it here."""
    out, _ = native_cache
    manifest = _manifest(out)
    slices = np.load(out / "slices.npy")
    masks = np.load(out / "masks.npy")
    for patient in manifest.patient.unique()[:3]:
        rows = manifest[manifest.patient == patient]
        hu = np.asanyarray(nib.load(nifti_dataset / NIFTI_SCAN_DIR / patient_file(patient)).dataobj)
        mask = np.asanyarray(nib.load(nifti_dataset / NIFTI_MASK_DIR / patient_file(patient)).dataobj)
        idx = rows.slice.to_numpy() - 1  # file order of each cached slice
        expected = to_uint8(brain_window(hu.transpose(2, 1, 0)[idx]))
        np.testing.assert_array_equal(slices[rows.row], expected)
        np.testing.assert_array_equal(masks[rows.row], (mask.transpose(2, 1, 0)[idx] > 0).astype(np.uint8))
    assert slices.shape[1:] == (tiny_size, tiny_size)


def test_downsampled_cache_is_close_to_the_native_one(native_cache, small_cache):
    native = np.load(native_cache[0] / "slices.npy").astype(np.float32)
    small = np.load(small_cache[0] / "slices.npy").astype(np.float32)
    pooled = native.reshape(len(native), 32, 2, 32, 2).mean(axis=(2, 4))
    assert np.abs(pooled - small).mean() < 6
    np.testing.assert_allclose(small.mean(axis=(1, 2)), native.mean(axis=(1, 2)), atol=3)


def test_workers_give_identical_arrays(nifti_dataset, small_cache, tmp_path):
    out, meta = small_cache
    _build(nifti_dataset, tmp_path / "par", 32, workers=2)
    for name in ("slices.npy", "masks.npy", "manifest.csv"):
        assert (tmp_path / "par" / name).read_bytes() == (out / name).read_bytes(), name


def test_rebuilding_replaces_the_previous_cache(nifti_dataset, tmp_path):
    out = tmp_path / "cache"
    _build(nifti_dataset, out, 32)
    (out / "stale.txt").write_text("left over")
    _build(nifti_dataset, out, 16)
    assert not (out / "stale.txt").exists()
    assert np.load(out / "slices.npy").shape[1:] == (16, 16)
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_inverted_stack_is_put_the_right_way_up(nifti_dataset, small_cache, copy_dataset, tmp_path):
    """A scan stored superior -> inferior gives the same cached rows (slice numbers reversed)."""
    src = copy_dataset(nifti_dataset)
    patient = 49
    for folder in (NIFTI_SCAN_DIR, NIFTI_MASK_DIR):
        path = src / folder / patient_file(patient)
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
        n = data.shape[2]
        flip = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, n - 1], [0, 0, 0, 1]], dtype=float)
        new = nib.Nifti1Image(np.ascontiguousarray(data[:, :, ::-1]), img.affine @ flip, img.header)
        new.set_qform(img.affine @ flip, code=1)
        new.set_sform(img.affine @ flip, code=1)
        nib.save(new, path)
    csv = pd.read_csv(src / NIFTI_CSV, encoding="utf-8-sig")
    sel = csv.PatientNumber == patient
    n = int(sel.sum())
    csv.loc[sel, "SliceNumber"] = n + 1 - csv.loc[sel, "SliceNumber"]
    csv.to_csv(src / NIFTI_CSV, index=False, encoding="utf-8-sig")

    out = tmp_path / "flipped-cache"
    _build(src, out, 32)
    ref_manifest, new_manifest = _manifest(small_cache[0]), _manifest(out)
    ref_rows = ref_manifest[ref_manifest.patient == patient]
    new_rows = new_manifest[new_manifest.patient == patient]
    assert new_rows.slice.tolist() == list(range(n, 0, -1))
    np.testing.assert_allclose(new_rows.position_mm.to_numpy(), ref_rows.position_mm.to_numpy(), atol=1e-3)
    assert new_rows.label.tolist() == ref_rows.label.tolist()
    ref_slices = np.load(small_cache[0] / "slices.npy")
    new_slices = np.load(out / "slices.npy")
    np.testing.assert_array_equal(new_slices[new_rows.row], ref_slices[ref_rows.row])


# --------------------------------------------------------------------------- SliceCache


def test_slice_cache_is_memory_mapped_and_returns_patient_blocks(small_cache):
    out, meta = small_cache
    cache = SliceCache(out)
    assert isinstance(cache.slices, np.memmap)
    assert isinstance(cache.masks, np.memmap)
    assert not cache.slices.flags.writeable
    full = np.load(out / "slices.npy")
    manifest = _manifest(out)
    assert cache.patients == sorted(manifest.patient.unique())
    assert cache.meta == meta
    for patient in cache.patients:
        rows = manifest[manifest.patient == patient]
        block = cache.slices[cache.patient_rows(patient)]
        assert block.shape == (len(rows), 32, 32)
        np.testing.assert_array_equal(block, full[rows.row])
        np.testing.assert_array_equal(cache.patient_labels(patient), rows.label.to_numpy())


def test_slice_cache_rejects_incomplete_or_inconsistent_folders(small_cache, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_cache[0], broken)
    (broken / "slices.npy").unlink()
    with pytest.raises(DataError, match="broken"):
        SliceCache(broken)
    short = tmp_path / "short"
    shutil.copytree(small_cache[0], short)
    manifest = _manifest(short)
    manifest.iloc[:-1].to_csv(short / "manifest.csv", index=False)
    with pytest.raises(DataError, match="rows"):
        SliceCache(short)


# --------------------------------------------------------------------------- JPG layout


def test_jpg_cache_is_close_to_the_nifti_cache(jpg_dataset, native_cache, tmp_path):
    out = tmp_path / "jpg-cache"
    meta = _build(jpg_dataset, out, native_cache[1]["image_size"])
    assert meta["layout"] == "jpg-v1.0.0"
    ref_manifest, manifest = _manifest(native_cache[0]), _manifest(out)
    assert len(manifest) == len(ref_manifest)
    assert manifest.patient.tolist() == ref_manifest.patient.tolist()
    assert manifest.slice.tolist() == ref_manifest.slice.tolist()
    for col in ("label", *SUBTYPES, "fracture", "has_mask"):
        assert manifest[col].tolist() == ref_manifest[col].tolist(), col
    ref = np.load(native_cache[0] / "slices.npy").astype(np.int16)
    jpg = np.load(out / "slices.npy").astype(np.int16)
    diff = np.abs(ref - jpg)
    assert diff.mean() < 2.0  # JPEG at quality 95
    assert np.percentile(diff, 99) <= 12
    ref_masks = np.load(native_cache[0] / "masks.npy").astype(bool)
    jpg_masks = np.load(out / "masks.npy").astype(bool)
    assert (ref_masks != jpg_masks).mean() < 0.002


# --------------------------------------------------------------------------- failures


def _leftovers(parent, name):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}")]


def test_failed_read_leaves_no_output_and_no_temp_folder(nifti_dataset, monkeypatch, tmp_path):
    fail_on_call(monkeypatch, dataset_module.NiftiDataset, "read_scan", 3, DataError("corrupt NIfTI (injected)"))
    out = tmp_path / "cache"
    with pytest.raises(DataError, match="injected"):
        _build(nifti_dataset, out, 32)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_cleans_up_and_keeps_the_previous_cache(nifti_dataset, monkeypatch, tmp_path):
    out = tmp_path / "cache"
    _build(nifti_dataset, out, 32)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(self, *args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError, match="injected"):
        _build(nifti_dataset, out, 16)
    monkeypatch.undo()
    assert _leftovers(tmp_path, "cache") == []
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_refuses_to_replace_a_folder_that_is_not_a_cache_before_reading_anything(nifti_dataset, monkeypatch, tmp_path):
    out = tmp_path / "dcm"
    out.mkdir()
    (out / "IM0001.dcm").write_bytes(b"DICM")
    reads = fail_on_call(monkeypatch, dataset_module.NiftiDataset, "read_scan", 0, AssertionError("never"))
    with pytest.raises(DataError, match=r"dcm: already exists and was not written by ichseq \(no cache.json in it\)"):
        _build(nifti_dataset, out, 32)
    assert reads == []
    assert [p.name for p in out.iterdir()] == ["IM0001.dcm"]
    assert [p.name for p in tmp_path.iterdir()] == ["dcm"]


def test_a_file_in_the_place_of_the_cache_is_one_line(nifti_dataset, tmp_path):
    out = tmp_path / "cache"
    out.write_text("a user's file")
    with pytest.raises(DataError, match=r"cache: is a file, not a folder"):
        _build(nifti_dataset, out, 32)
    assert out.read_text() == "a user's file"


def test_too_little_free_space_is_one_line_before_reading_the_scans(nifti_dataset, monkeypatch, tmp_path):
    out = tmp_path / "cache"
    _build(nifti_dataset, out, 32)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    reads = fail_on_call(monkeypatch, dataset_module.NiftiDataset, "read_scan", 0, AssertionError("never"))
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: DiskUsage(10**9, 10**9 - 50_000, 50_000))
    no_space = r"^no space left on /\S*: needs about 1 MB \(0 MB free\) to write \S*cache; "
    with pytest.raises(DataError, match=no_space) as exc:
        _build(nifti_dataset, out, 64)
    assert "\n" not in str(exc.value)
    assert reads == []
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("where", ["reserving slices.npy", "writing the manifest"])
def test_a_full_disk_during_the_write_is_one_line_and_keeps_the_previous_cache(nifti_dataset, monkeypatch, tmp_path,
                                                                               where):
    out = tmp_path / "cache"
    _build(nifti_dataset, out, 32)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    full = OSError(errno.ENOSPC, "No space left on device")
    if where == "reserving slices.npy":
        # Where the space of the pixel arrays is taken: a full disk must show here, as an error.
        fail_on_call(monkeypatch, os, "posix_fallocate", 1, full)
    else:
        fail_on_call(monkeypatch, pd.DataFrame, "to_csv", 1, full)
    with pytest.raises(DataError, match=r"^no space left on /\S*: needs about 1 MB") as exc:
        _build(nifti_dataset, out, 64)
    assert "\n" not in str(exc.value)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


BUILD_IN_A_CHILD = """
import shutil, sys
from collections import namedtuple
from ichseq.data.cache import WindowSpec, build_cache
from ichseq.runlog import run_step

if sys.argv[3] == "pretend-free":  # past any check of the free space: the write itself meets the full disk
    shutil.disk_usage = lambda path: namedtuple("usage", "total used free")(1 << 40, 0, 1 << 40)
run_step(None, lambda log: build_cache(sys.argv[1], sys.argv[2], WindowSpec(image_size=64), log=log),
         name="brain_window")
"""


@pytest.mark.parametrize("free_space", ["as-is", "pretend-free"])
def test_a_real_full_file_system_is_one_line_not_a_bus_error(nifti_dataset, tmp_path, free_space):
    """The cache (~1 MB at 64x64) onto a 512 KB file system, in a child as the brain_window rule
    runs it: one line and exit status 1, not SIGBUS from a page of a sparse memory map."""
    with mounted_tmpfs(tmp_path / "small", "512k") as small:
        proc = subprocess.run([sys.executable, "-c", BUILD_IN_A_CHILD, str(nifti_dataset), str(small / "cache"),
                               free_space], capture_output=True, text=True, timeout=300)
        assert proc.returncode != -7, "killed by SIGBUS"
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert f"brain_window failed: no space left on {small}: needs about 1 MB" in last, proc.stderr
        assert list(small.iterdir()) == []


def test_the_next_build_sweeps_what_a_killed_build_left_and_nothing_else(nifti_dataset, tmp_path):
    out = tmp_path / "cache"
    foreign = tmp_path / ".cache.abc"
    foreign.mkdir()
    (foreign / "slices.npy").write_bytes(b"someone else's")
    from ichseq.atomic import temp_dir_beside

    live = temp_dir_beside(out)  # a build of a running process (this one): not to be touched
    killed_child(f"""
        import pandas as pd
        from ichseq.data.cache import WindowSpec, build_cache
        pd.DataFrame.to_csv = die  # killed while writing, the pixel arrays already in the temporary folder
        build_cache({str(nifti_dataset)!r}, {str(out)!r}, WindowSpec(image_size=32), log=lambda _msg: None)
    """)
    left = [p for p in tmp_path.iterdir() if p not in (foreign, live)]
    assert len(left) == 1 and left[0].name.startswith(".cache.")
    assert {"slices.npy", "masks.npy"} <= {p.name for p in left[0].iterdir()}

    _build(nifti_dataset, out, 32)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".cache.abc", live.name, "cache"])
    assert (foreign / "slices.npy").read_bytes() == b"someone else's"


# --------------------------------------------------------------------------- cohort


def test_cohort_from_manifest_is_consistent_with_the_manifest(small_cache, csv_rows, tiny_spec):
    manifest = _manifest(small_cache[0])
    cohort = cohort_from_manifest(manifest)
    assert cohort.patient.tolist() == sorted(manifest.patient.unique())
    assert len(cohort) == tiny_spec.n_patients
    assert int(cohort.label.sum()) == tiny_spec.n_positive
    for row in cohort.itertuples():
        g = manifest[manifest.patient == row.patient]
        c = csv_rows[csv_rows.PatientNumber == row.patient]
        assert row.n_slices == len(g) == len(c)
        assert row.n_positive_slices == int(g.label.sum()) == int((c.No_Hemorrhage == 0).sum())
        assert row.label == int(row.n_positive_slices > 0)
        present = [s for s in SUBTYPES if c[s].any()]
        assert row.subtypes == ";".join(present)
        assert row.fracture == int(c.Fracture_Yes_No.any())
    assert cohort.n_slices.sum() == len(manifest)
    assert cohort.n_positive_slices.sum() == manifest.label.sum()


# --------------------------------------------------------------------------- pre-windowed scans


def test_prewindowed_scans_need_the_option_and_are_then_cached_as_they_are(nifti_dataset, copy_dataset, tiny_size, tmp_path):
    src = copy_dataset(nifti_dataset)
    display = {}
    for path in sorted((src / NIFTI_SCAN_DIR).glob("*.nii")):
        img = nib.load(path)
        display[int(path.stem)] = to_uint8(brain_window(np.asarray(img.dataobj, dtype=np.float32)))
        nib.save(nib.Nifti1Image(display[int(path.stem)], img.affine), path)
    out = tmp_path / "cache"
    with pytest.raises(DataError, match=r"ct_scans/\d{3}\.nii: values 0\.\.255 .*dataset\.prewindowed: true"):
        _build(src, out, tiny_size)
    assert not out.exists()
    meta = build_cache(src, out, WindowSpec(image_size=tiny_size, prewindowed=True), workers=2, **QUIET)
    assert "pre-windowed" in meta["window"]
    manifest, slices = _manifest(out), np.load(out / "slices.npy")
    for patient, values in display.items():
        rows = manifest[manifest.patient == patient]
        np.testing.assert_array_equal(slices[rows.row], values.transpose(2, 1, 0)[rows.slice.to_numpy() - 1])


# --------------------------------------------------------------------------- scan geometry


def _nifti_geometry(path) -> tuple[float, int]:
    """``(mean in-plane pixel spacing in mm, number of columns)`` of a NIfTI file, read here with
    nibabel: columns are the file's first axis, rows its second."""
    img = nib.load(path)
    column_mm, row_mm = (float(np.linalg.norm(img.affine[:3, axis])) for axis in (0, 1))
    return (row_mm + column_mm) / 2, int(img.shape[0])


def test_manifest_records_the_pixel_spacing_and_size_the_nifti_affines_give(nifti_dataset, copy_dataset, tmp_path):
    """One patient rewritten with unequal row and column spacing and fewer columns than rows, so
    that mixing up rows and columns (or taking one spacing for both) shows."""
    src = copy_dataset(nifti_dataset)
    changed = 50
    for folder in (NIFTI_SCAN_DIR, NIFTI_MASK_DIR):
        path = src / folder / patient_file(changed)
        img = nib.load(path)
        affine = img.affine @ np.diag([1.25, 0.9, 1.0, 1.0])  # columns 1.25x, rows 0.9x the spacing
        data = np.ascontiguousarray(np.asanyarray(img.dataobj)[8:56])  # 48 of the 64 columns
        new = nib.Nifti1Image(data, affine, img.header)
        new.set_qform(affine, code=1)
        new.set_sform(affine, code=1)
        nib.save(new, path)
    out = tmp_path / "cache"
    _build(src, out, 32)
    manifest = _manifest(out)
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    recorded = {}
    for patient, rows in manifest.groupby("patient"):
        pixel_mm, columns = _nifti_geometry(src / NIFTI_SCAN_DIR / patient_file(patient))
        np.testing.assert_allclose(rows.pixel_mm.to_numpy(), pixel_mm, rtol=1e-6)
        assert (rows.source_size == columns).all(), patient
        recorded[patient] = (rows.pixel_mm.iloc[0], rows.source_size.iloc[0])
    assert manifest.source_size.dtype.kind == "i"
    others = {value for patient, value in recorded.items() if patient != changed}
    assert recorded[changed] not in others and recorded[changed][1] == 48


def test_jpg_cache_records_the_jpg_size_and_no_pixel_spacing(jpg_dataset, tmp_path):
    from PIL import Image

    out = tmp_path / "jpg-cache"
    _build(jpg_dataset, out, 32)
    manifest = _manifest(out)
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert manifest.pixel_mm.isna().all()  # a JPG has no geometry
    for patient, rows in manifest.groupby("patient"):
        first = rows.slice.iloc[0]
        with Image.open(jpg_dataset / "Patients_CT" / f"{patient:03d}" / "brain" / f"{first}.jpg") as im:
            assert (rows.source_size == im.width).all(), patient
    cache = SliceCache(out)
    assert cache.manifest.pixel_mm.isna().all()


def test_a_manifest_without_the_geometry_columns_still_loads(small_cache, tmp_path):
    """A cache written before the manifest had pixel_mm and source_size: readable, the geometry unknown."""
    old = tmp_path / "old-cache"
    shutil.copytree(small_cache[0], old)
    manifest = _manifest(old)
    manifest.drop(columns=["pixel_mm", "source_size"]).to_csv(old / "manifest.csv", index=False)
    cache, current = SliceCache(old), SliceCache(small_cache[0])
    assert cache.manifest.pixel_mm.isna().all() and cache.manifest.source_size.isna().all()
    assert current.manifest.pixel_mm.notna().all()
    assert cache.patients == current.patients
    kept = [c for c in MANIFEST_COLUMNS if c not in ("pixel_mm", "source_size")]
    pd.testing.assert_frame_equal(cache.manifest[kept], current.manifest[kept])
    for patient in cache.patients:
        np.testing.assert_array_equal(cache.patient_rows(patient), current.patient_rows(patient))
    # As ``ichseq predict`` builds one for a new scan: only the columns the readers use.
    rows = current.manifest[["row", "patient", "slice", "position_mm", "label", "has_mask"]]
    in_memory = SliceCache.from_arrays(np.asarray(current.slices), rows, current.meta)
    assert in_memory.manifest.pixel_mm.isna().all() and in_memory.manifest.source_size.isna().all()
    assert in_memory.patients == current.patients
