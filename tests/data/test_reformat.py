"""Reformatting a new scan to the training geometry (ichseq.data.reformat): thin slices into
slabs of the training thickness, short gaps bridged and listed, long ones refused, the field
of view matched in mm, gantry tilt shifted back; and the readers' side of it (a DICOM series
with a missing slice read when asked, each slice's in-plane offset from DICOM and NIfTI)."""

from __future__ import annotations

import dataclasses
import shutil

import nibabel as nib
import numpy as np
import pytest

from ichseq.data.dicom import export_dicom
from ichseq.data.reformat import AIR_HU, Geometry, gap_warnings, reformat_volume
from ichseq.data.volumes import CTVolume, read_volume
from ichseq.errors import DataError
from tests.conftest import one_line_error

QUIET = {"log": lambda _msg: None}
TRAINING = Geometry(slice_spacing_mm=5.0, field_of_view_mm=230.0, image_size=128)


def _volume(n=240, step=0.625, size=64, spacing=230.0 / 64, start=-40.0, values=None, files=True) -> CTVolume:
    """A stack whose slice k holds the value k everywhere (so averages are visible)."""
    hu = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None] if values is None else values,
                         (n, size, size)).copy()
    return CTVolume(source="/scans/thin", name="thin", hu=hu, positions=start + step * np.arange(n, dtype=np.float64),
                    slice_numbers=np.arange(1, n + 1), files=[f"/scans/thin/{k + 1:04d}.dcm" for k in range(n)] if files
                    else None, series_uid="1.2.3", spacing_mm=(spacing, spacing), slice_thickness_mm=step,
                    in_plane_offsets_mm=np.zeros((n, 2)))


def _drop(volume: CTVolume, ks) -> CTVolume:
    keep = np.setdiff1d(np.arange(len(volume.hu)), ks)
    return dataclasses.replace(volume, hu=volume.hu[keep], positions=volume.positions[keep],
                               slice_numbers=volume.slice_numbers[keep], files=[volume.files[k] for k in keep],
                               in_plane_offsets_mm=volume.in_plane_offsets_mm[keep])


def test_thin_slices_become_slabs_of_the_training_thickness():
    thin = _volume()  # 240 x 0.625 mm = 150 mm
    slabs, report = reformat_volume(thin, TRAINING)
    assert len(slabs.hu) == 30  # 150 mm / 5 mm
    np.testing.assert_allclose(np.diff(slabs.positions), 5.0)
    # Each slab is the mean of the 8 thin slices in it: slices 0-7 -> 3.5, 8-15 -> 11.5, ...
    np.testing.assert_allclose(slabs.hu[:, 0, 0], 3.5 + 8 * np.arange(30))
    assert slabs.positions[0] == pytest.approx(thin.positions[0] - 0.3125 + 2.5)
    assert report["slabs"]["applied"] and report["slabs"]["slabs"] == 30 and report["gaps"] == []
    assert report["slabs"]["slices_per_slab"] == {"min": 8, "max": 8}
    assert slabs.slice_thickness_mm == 5.0 and slabs.files is None


@pytest.mark.parametrize("step, n, expected", [(1.25, 120, 30), (0.625, 232, 29), (0.5, 313, 31)])
def test_the_number_of_slabs_follows_the_extent(step, n, expected):
    slabs, _ = reformat_volume(_volume(n=n, step=step), TRAINING)
    assert len(slabs.hu) == expected


def test_a_missing_thin_slice_is_bridged_and_listed():
    thin = _drop(_volume(), [100])  # one 0.625 mm slice missing near the middle
    slabs, report = reformat_volume(thin, TRAINING)
    assert len(slabs.hu) == 30
    (gap,) = report["gaps"]
    assert gap["missing_slices"] == 1 and gap["gap_mm"] == pytest.approx(1.25)
    assert (gap["before"], gap["after"]) == ("0100.dcm", "0102.dcm")
    assert report["slabs"]["slices_per_slab"] == {"min": 7, "max": 8}
    # The slab holding the gap (slices 96-103) averages the 7 that are there.
    np.testing.assert_allclose(slabs.hu[12, 0, 0], np.mean([96, 97, 98, 99, 101, 102, 103]))
    (line,) = gap_warnings(report)
    assert "1.25 mm" in line and "0100.dcm" in line and "0102.dcm" in line and "\n" not in line


def test_a_gap_longer_than_a_slab_is_refused():
    thin = _drop(_volume(), list(range(100, 110)))  # 10 slices = 6.9 mm of nothing
    one_line_error(lambda: reformat_volume(thin, TRAINING), "/scans/thin", "0100.dcm", "0111.dcm",
                   "longer than the 5.00 mm slabs", "export the complete series")


def test_thick_slices_stay_and_a_missing_one_is_refused():
    thick = _volume(n=30, step=5.0)
    kept, report = reformat_volume(thick, TRAINING)
    assert kept.hu is thick.hu and not report["slabs"]["applied"]
    one_line_error(lambda: reformat_volume(_drop(thick, [12]), TRAINING), "/scans/thin", "0012.dcm", "0014.dcm",
                   "1 missing slice", "export the complete series")


def test_without_training_geometry_nothing_changes_and_the_report_says_so():
    thin = _volume()
    same, report = reformat_volume(thin, None)
    assert same is thin and report["target"] is None and "not recorded" in report["notes"][0]
    one_line_error(lambda: reformat_volume(_drop(thin, [5]), None), "not uniform", "0005.dcm", "0007.dcm")


def test_the_field_of_view_is_matched_in_millimetres():
    # 512 px at 0.6 mm = 307 mm: cropped about the centre to 230 mm = 383 px of 0.6 mm.
    values = np.zeros((30, 512, 512), np.float32)
    values[:, 256, 256] = 1000.0  # the centre stays the centre
    wide = _volume(n=30, step=5.0, size=512, spacing=0.6, values=values)
    cropped, report = reformat_volume(wide, TRAINING)
    assert cropped.hu.shape[1:] == (383, 383) and report["field_of_view"]["applied"]
    assert np.argwhere(cropped.hu[0] == 1000.0).tolist() == [[192, 192]]  # 256 - (512 - 383) // 2
    assert cropped.spacing_mm == (0.6, 0.6)
    # A 180 mm field of view is padded with air to 230 mm.
    narrow = _volume(n=30, step=5.0, size=300, spacing=0.6)
    padded, report = reformat_volume(narrow, TRAINING)
    assert padded.hu.shape[1:] == (383, 383) and "padded" in report["field_of_view"]["how"]
    assert padded.hu[0, 0, 0] == AIR_HU and padded.hu[0, 191, 191] == 0.0
    # Within 2%: kept as it is.
    same, report = reformat_volume(_volume(n=30, step=5.0, size=128, spacing=1.8), TRAINING)
    assert same.hu.shape[1:] == (128, 128) and not report["field_of_view"]["applied"]


def test_gantry_tilt_is_shifted_back():
    """A sheared stack (each slice's content 0.4 mm further down the rows per mm along the head,
    as under a ~22 degree tilt) is straightened: the bright column lines up again."""
    n, size, spacing = 30, 96, 2.0
    positions = 5.0 * np.arange(n)
    offsets = np.stack([0.4 * positions, np.zeros(n)], axis=1)  # mm down the rows: one pixel per slice
    hu = np.zeros((n, size, size), np.float32)
    for k in range(n):
        hu[k, 20 + int(round(offsets[k, 0] / spacing)), 48] = 1000.0  # the same structure, shifted by the tilt
    tilted = CTVolume(source="tilted", name="tilted", hu=hu, positions=positions, slice_numbers=np.arange(1, n + 1),
                      files=None, series_uid=None, spacing_mm=(spacing, spacing), in_plane_offsets_mm=offsets)
    straight, report = reformat_volume(tilted, Geometry(5.0, None, 128))
    assert report["tilt"]["corrected"] and report["tilt"]["tilt_deg"] == pytest.approx(21.8, abs=0.05)
    rows = [np.unravel_index(np.argmax(plane), plane.shape) for plane in straight.hu]
    assert {r for r, _ in rows} == {20} and {c for _, c in rows} == {48}
    # A straight stack is left untouched.
    _, report = reformat_volume(dataclasses.replace(tilted, in_plane_offsets_mm=np.zeros((n, 2))), TRAINING)
    assert not report["tilt"]["corrected"]


@pytest.fixture(scope="module")
def sheared_nifti(tmp_path_factory):
    """A small scan whose affine is sheared as a tilted series converted without correction:
    each slice 5 mm up and 2 mm posterior (about 22 degrees)."""
    rng = np.random.default_rng(0)
    data = rng.normal(30, 5, size=(40, 40, 12)).astype(np.float32)
    data[:4] = -1000.0  # air beside the "head"
    affine = np.array([[-1.0, 0, 0, 20], [0, -1.0, -2.0, 20], [0, 0, 5.0, -30], [0, 0, 0, 1]])
    path = tmp_path_factory.mktemp("sheared") / "tilted.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_the_readers_give_each_slices_in_plane_offset(sheared_nifti, tmp_path):
    from_nifti = read_volume(sheared_nifti)
    # The slice step (0, -2, 5) mm has 2 mm along the displayed rows (the affine's -y axis).
    np.testing.assert_allclose(from_nifti.in_plane_offsets_mm[:, 0], 2.0 * np.arange(12))
    np.testing.assert_allclose(from_nifti.in_plane_offsets_mm[:, 1], 0.0, atol=1e-9)
    export_dicom(sheared_nifti, tmp_path / "dicom", **QUIET)
    from_dicom = read_volume(tmp_path / "dicom")
    np.testing.assert_allclose(from_dicom.in_plane_offsets_mm, from_nifti.in_plane_offsets_mm, atol=1e-4)


def test_a_dicom_series_with_a_missing_slice_is_read_only_when_asked(tmp_path):
    values = np.random.default_rng(1).normal(30, 5, size=(32, 32, 16)).astype(np.float32)
    values[:4] = -1000.0
    nifti = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(values, np.diag([0.5, 0.5, 0.625, 1.0])), nifti)
    export_dicom(nifti, tmp_path / "series", **QUIET)
    (tmp_path / "series" / "0007.dcm").unlink()
    one_line_error(lambda: read_volume(tmp_path / "series"), "not uniform", "0006.dcm", "0008.dcm")
    volume = read_volume(tmp_path / "series", allow_gaps=True)
    assert len(volume.hu) == 15 and np.diff(volume.positions).max() == pytest.approx(1.25)
    # Spacing that is not a whole number of slices stays refused.
    shutil.copytree(tmp_path / "series", tmp_path / "odd")
    import pydicom

    ds = pydicom.dcmread(tmp_path / "odd" / "0010.dcm")
    ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [float(ds.ImagePositionPatient[2]) + 0.3]
    ds.save_as(tmp_path / "odd" / "0010.dcm")
    with pytest.raises(DataError, match="not uniform"):
        read_volume(tmp_path / "odd", allow_gaps=True)
