"""A dataset whose content changes rebuilds the brain-window cache; one that does not, does not.

End-to-end through Snakemake on a local dataset (folder and zip), up to the cohort table only.
Plus the content manifest itself: hashes reused for unchanged files, every change seen.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ichseq.data import fingerprint
from ichseq.data.fingerprint import MANIFEST_NAME, dataset_fingerprint, dataset_manifest, manifest_digest, read_manifest
from ichseq.data.windowing import brain_window, resize_slices, to_uint8
from tests.test_workflow import TINY, snakemake

SCAN = "ct_scans/051.nii"
CACHE = "results/data/cache"


def replace_scan(root: Path, rel: str = SCAN) -> np.ndarray:
    """Replace one scan by a same-sized file with other pixels (a 'fixed' scan, copied in
    over the old one); returns the new HU volume in storage order."""
    path = root / rel
    img = nib.load(path)
    hu = np.asarray(img.dataobj).copy()
    hu[hu > 0] = 90  # every tissue voxel becomes bright blood-like HU: unmistakable pixels
    new = nib.Nifti1Image(hu, img.affine, img.header)
    tmp = path.with_name(".incoming.nii")
    nib.save(new, tmp)
    assert tmp.stat().st_size == path.stat().st_size, "test setup: the new scan should have the same size"
    os.replace(tmp, path)
    return hu.astype(np.float32)


def expected_pixels(hu: np.ndarray, slices: np.ndarray) -> np.ndarray:
    """What the cache must hold for a HU volume (storage order) at the slices' positions."""
    windowed = brain_window(hu.transpose(2, 1, 0)[slices - 1])
    return to_uint8(resize_slices(windowed, TINY["preprocess"]["image_size"]))


def cached_patient(workdir: Path, patient: int) -> tuple[np.ndarray, np.ndarray]:
    manifest = pd.read_csv(workdir / CACHE / "manifest.csv")
    rows = manifest[manifest.patient == patient]
    return np.load(workdir / CACHE / "slices.npy")[rows.row.to_numpy()], rows.slice.to_numpy()


def nothing_to_do(workdir: Path, config: dict) -> bool:
    proc = snakemake(workdir, "results/data/cohort.csv", "-n", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return "Nothing to be done" in proc.stdout + proc.stderr


def build(workdir: Path, config: dict) -> None:
    proc = snakemake(workdir, "results/data/cohort.csv", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]


def local(path: Path) -> dict:
    return {**TINY, "dataset": {"source": "local", "local": {"path": str(path)}}}


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory):
    from ichseq.data.synthetic import SyntheticSpec, generate_synthetic

    spec = SyntheticSpec(**TINY["dataset"]["synthetic"])
    dest = tmp_path_factory.mktemp("data") / "ct-ich"
    generate_synthetic(dest, spec, log=lambda _msg: None)
    return dest


@pytest.mark.slow
def test_replaced_scan_in_a_local_folder_rebuilds_the_cache(synthetic_folder, copy_dataset, tmp_path):
    data = copy_dataset(synthetic_folder)
    work = tmp_path / "work"
    work.mkdir()
    config = local(data)
    build(work, config)
    old_pixels, _ = cached_patient(work, 51)
    built = (work / CACHE / "cache.json").stat().st_mtime_ns
    assert nothing_to_do(work, config)
    # Same bytes with a new time stamp: nothing changed, nothing to do.
    os.utime(data / "ct_scans" / "050.nii")
    assert nothing_to_do(work, config)

    folder_mtime = data.stat().st_mtime_ns
    new_hu = replace_scan(data)
    assert data.stat().st_mtime_ns == folder_mtime, "test setup: the folder's own time stamp must not move"
    assert not nothing_to_do(work, config)
    build(work, config)
    assert (work / CACHE / "cache.json").stat().st_mtime_ns != built
    pixels, slices = cached_patient(work, 51)
    np.testing.assert_array_equal(pixels, expected_pixels(new_hu, slices))
    assert not np.array_equal(pixels, old_pixels)
    meta = json.loads((work / CACHE / "cache.json").read_text())
    assert meta["dataset_sha256"] == manifest_digest(dataset_manifest(data))
    # And the untouched rerun after the rebuild has nothing to do.
    assert nothing_to_do(work, config)


@pytest.mark.slow
def test_replaced_zip_with_an_old_time_stamp_rebuilds_the_cache(synthetic_folder, copy_dataset, tmp_path):
    def zip_folder(src: Path, dest: Path) -> Path:
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(src.rglob("*")):
                zf.write(p, f"ct-ich/{p.relative_to(src).as_posix()}")
        return dest

    data = copy_dataset(synthetic_folder)
    archive = zip_folder(data, tmp_path / "ct-ich.zip")
    stamp = archive.stat().st_mtime_ns - 10**9 * 3600  # an hour before the cache is built
    os.utime(archive, ns=(stamp, stamp))
    work = tmp_path / "work"
    work.mkdir()
    config = local(archive)
    build(work, config)
    assert nothing_to_do(work, config)
    # A fixed release unpacked from a backup keeps its old time stamp: only its content tells.
    new_hu = replace_scan(data)
    zip_folder(data, archive)
    os.utime(archive, ns=(stamp, stamp))
    assert not nothing_to_do(work, config)
    build(work, config)
    pixels, slices = cached_patient(work, 51)
    np.testing.assert_array_equal(pixels, expected_pixels(new_hu, slices))
    assert nothing_to_do(work, config)


# --------------------------------------------------------------------------- the manifest


def test_manifest_lists_data_files_with_size_and_sha256(nifti_dataset):
    import hashlib

    rows = dataset_manifest(nifti_dataset)
    on_disk = sorted(p.relative_to(nifti_dataset).as_posix() for p in nifti_dataset.rglob("*") if p.is_file())
    assert [r["path"] for r in rows] == [p for p in on_disk if not p.split("/")[-1].startswith(".")]
    for r in rows[:5]:
        data = (nifti_dataset / r["path"]).read_bytes()
        assert (r["size"], r["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


def test_unchanged_files_are_not_read_again(nifti_dataset, copy_dataset, tmp_path, monkeypatch):
    data = copy_dataset(nifti_dataset)
    first = dataset_manifest(data)
    fingerprint.write_manifest(tmp_path / MANIFEST_NAME, first)
    hashed = []
    original = fingerprint.sha256_file
    monkeypatch.setattr(fingerprint, "sha256_file", lambda p: hashed.append(Path(p).name) or original(p))
    assert dataset_fingerprint(data, tmp_path / MANIFEST_NAME) == manifest_digest(first)
    assert hashed == []
    replace_scan(data)
    changed = dataset_fingerprint(data, tmp_path / MANIFEST_NAME)
    assert hashed == ["051.nii"] and changed != manifest_digest(first)


def test_digest_follows_content_not_time(nifti_dataset, copy_dataset, tmp_path):
    data = copy_dataset(nifti_dataset)
    before = dataset_fingerprint(data)
    os.utime(data / SCAN, ns=(1, 1))
    assert dataset_fingerprint(data) == before
    (data / "extra.txt").write_text("a note")
    with_note = dataset_fingerprint(data)
    assert with_note != before
    (data / "extra.txt").unlink()
    (data / ".hidden").write_text("not data")  # hidden files are not read, as by the reader
    assert dataset_fingerprint(data) == before
    assert dataset_fingerprint(tmp_path / "nowhere") == "absent"


def test_unreadable_previous_manifest_means_hashing_again(nifti_dataset, tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    assert read_manifest(tmp_path / MANIFEST_NAME) == []
    assert dataset_fingerprint(nifti_dataset, tmp_path / MANIFEST_NAME) == dataset_fingerprint(nifti_dataset)
