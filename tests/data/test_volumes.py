"""Reading one new scan (ichseq.data.volumes) from NIfTI and DICOM, and writing the synthetic
twin as DICOM (ichseq.data.dicom, ``ichseq to-dicom``): same HU, positions and order either
way and as training's reader; order from geometry, not file names; every bad input refused
in one line."""

from __future__ import annotations

import filecmp
import gzip
import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from ichseq.cli import main
from ichseq.data import dicom as dicom_module
from ichseq.data.dicom import export_dicom
from ichseq.data.readers import open_dataset
from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
from ichseq.data.scan_files import find_scans
from ichseq.data.volumes import read_volume
from ichseq.errors import DataError
from tests.conftest import fail_on_call, one_line_error

SPEC = SyntheticSpec(n_patients=2, n_positive=1, image_size=32, min_slices=8, max_slices=12, seed=11,
                     generator="cartoon")
QUIET = {"log": lambda _msg: None}


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """(NIfTI dataset, its DICOM export): patients 049 and 050; do not modify them."""
    root = tmp_path_factory.mktemp("twin")
    generate_synthetic(root / "nifti", SPEC, **QUIET)
    export_dicom(root / "nifti", root / "dicom", **QUIET)
    return root / "nifti", root / "dicom"


def _copy_series(src, dest, rename=None):
    dest.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(sorted(os.listdir(src))):
        shutil.copy(src / name, dest / (rename(i, name) if rename else name))
    return dest


def _edit(folder, change, only=None):
    """Apply ``change(ds)`` to the series' files (``only``: those indices) and save them."""
    for i, name in enumerate(sorted(os.listdir(folder))):
        if only is None or i in only:
            ds = pydicom.dcmread(folder / name)
            change(ds)
            ds.save_as(folder / name)



def _same_volume(a, b):
    np.testing.assert_allclose(a.hu, b.hu, atol=1e-4)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
    np.testing.assert_array_equal(a.slice_numbers, b.slice_numbers)


# --------------------------------------------------------------------------- same scan, same slices


@pytest.mark.parametrize("patient", [49, 50])
def test_dicom_export_reads_back_as_the_nifti_and_as_training_reads_it(twin, patient):
    nifti, dicom = twin
    from_nifti = read_volume(nifti / "ct_scans" / f"{patient:03d}.nii")
    from_dicom = read_volume(dicom / f"{patient:03d}")
    numbers, positions, hu, _masks = open_dataset(nifti).read_hu(patient)
    np.testing.assert_array_equal(from_nifti.hu, hu)
    np.testing.assert_array_equal(from_nifti.positions, positions)
    np.testing.assert_array_equal(from_nifti.slice_numbers, numbers)
    _same_volume(from_dicom, from_nifti)
    assert from_nifti.hu.dtype == from_dicom.hu.dtype == np.float32
    assert from_nifti.positions.dtype == from_dicom.positions.dtype == np.float64
    assert from_nifti.slice_numbers.dtype == from_dicom.slice_numbers.dtype == np.int64
    assert (from_nifti.name, from_dicom.name) == (f"{patient:03d}", f"{patient:03d}")
    assert from_nifti.files is None and from_nifti.series_uid is None
    assert len(from_dicom.files) == len(from_dicom.hu) and from_dicom.series_uid
    assert np.all(np.diff(from_dicom.positions) > 0)


def test_file_names_do_not_decide_the_order(twin, tmp_path):
    _, dicom = twin
    rng = np.random.default_rng(0)
    names = [f"{n:08x}.dcm" for n in rng.permutation(1000)[:40]]
    shuffled = _copy_series(dicom / "049", tmp_path / "shuffled", rename=lambda i, _name: names[i])
    # The copy's name order is a different permutation of the slices than the geometric one.
    assert sorted(os.listdir(shuffled)) != [names[i] for i in range(len(os.listdir(shuffled)))]
    volume = read_volume(shuffled)
    _same_volume(volume, read_volume(dicom / "049"))
    assert [pydicom.dcmread(f).InstanceNumber for f in volume.files] == list(volume.slice_numbers)


def test_a_stack_stored_superior_to_inferior_is_put_right_way_up(twin, tmp_path):
    nifti, _ = twin
    img = nib.load(nifti / "ct_scans" / "049.nii")
    data = np.asanyarray(img.dataobj)
    n = data.shape[2]
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1, n - 1  # file slice k is the original slice n-1-k
    reversed_nii = tmp_path / "reversed.nii"
    nib.save(nib.Nifti1Image(data[:, :, ::-1].copy(), img.affine @ flip), reversed_nii)
    export_dicom(reversed_nii, tmp_path / "reversed-dicom", **QUIET)
    # The DICOM files now run superior -> inferior in name and InstanceNumber order.
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in sorted((tmp_path / "reversed-dicom").iterdir())]
    assert np.all(np.diff(z) < 0)

    original = read_volume(nifti / "ct_scans" / "049.nii")
    for volume in (read_volume(reversed_nii), read_volume(tmp_path / "reversed-dicom")):
        np.testing.assert_array_equal(volume.hu, original.hu)
        np.testing.assert_allclose(volume.positions, original.positions, atol=1e-6)
        np.testing.assert_array_equal(volume.slice_numbers, n + 1 - original.slice_numbers)


def test_rows_running_posterior_to_anterior_still_give_inferior_to_superior(twin, tmp_path):
    # Rows stored bottom-up: row x column cosines then point inferior, which must not turn the stack over.
    nifti, _ = twin
    img = nib.load(nifti / "ct_scans" / "049.nii")
    data = np.asanyarray(img.dataobj)
    flip = np.eye(4)
    flip[1, 1], flip[1, 3] = -1, data.shape[1] - 1
    upside_down = tmp_path / "rows-flipped.nii"
    nib.save(nib.Nifti1Image(data[:, ::-1, :].copy(), img.affine @ flip), upside_down)
    export_dicom(upside_down, tmp_path / "rows-flipped", **QUIET)
    iop = [float(v) for v in pydicom.dcmread(tmp_path / "rows-flipped" / "0001.dcm").ImageOrientationPatient]
    assert np.cross(iop[:3], iop[3:])[2] < 0

    original = read_volume(nifti / "ct_scans" / "049.nii")
    for volume in (read_volume(upside_down), read_volume(tmp_path / "rows-flipped")):
        np.testing.assert_array_equal(volume.hu, original.hu[:, ::-1, :])  # displayed as stored
        np.testing.assert_allclose(volume.positions, original.positions, atol=1e-6)
        np.testing.assert_array_equal(volume.slice_numbers, original.slice_numbers)


def test_pydicom_ct_test_file_reads_in_hounsfield_units(tmp_path):
    source = get_testdata_file("CT_small.dcm")
    folder = tmp_path / "ct-small"
    folder.mkdir()
    shutil.copy(source, folder / "CT_small.dcm")
    volume = read_volume(folder)
    ds = pydicom.dcmread(source)
    stored = ds.pixel_array
    expected = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert volume.hu.shape == (1, ds.Rows, ds.Columns)
    assert volume.hu.min() == pytest.approx(expected.min()) and volume.hu.max() == pytest.approx(expected.max())
    assert float(ds.RescaleIntercept) != 0 and volume.hu.min() != stored.min()  # rescaled, not raw values
    assert -1100 <= volume.hu.min() < -200 and 200 < volume.hu.max() < 4000  # air to bone
    assert volume.series_uid == ds.SeriesInstanceUID and list(volume.slice_numbers) == [int(ds.InstanceNumber)]


def test_non_image_and_hidden_files_beside_the_series_are_ignored(twin, tmp_path):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "with-extras")
    (folder / "README.txt").write_text("not DICOM")
    shutil.copy(folder / "0001.dcm", folder / ".hidden.dcm")  # would be a duplicated slice if read
    index = pydicom.dcmread(folder / "0001.dcm")
    del index.PixelData  # like a DICOMDIR: DICOM, but no image
    index.save_as(folder / "DICOMDIR")
    _same_volume(read_volume(folder), read_volume(dicom / "049"))


def test_reruns_write_identical_files(twin, tmp_path):
    nifti, dicom = twin
    export_dicom(nifti, tmp_path / "again", **QUIET)
    for patient in ("049", "050"):
        names = sorted(os.listdir(dicom / patient))
        assert names == sorted(os.listdir(tmp_path / "again" / patient))
        match, mismatch, errors = filecmp.cmpfiles(dicom / patient, tmp_path / "again" / patient, names, shallow=False)
        assert not mismatch and not errors and len(match) == len(names)
    uids = {pydicom.dcmread(next((dicom / p).iterdir())).SeriesInstanceUID for p in ("049", "050")}
    assert len(uids) == 2


def test_non_integer_hu_are_kept_to_a_fraction_of_a_unit(twin, tmp_path):
    nifti, _ = twin
    img = nib.load(nifti / "ct_scans" / "050.nii")
    data = np.asanyarray(img.dataobj).astype(np.float32) + np.float32(0.3)
    nib.save(nib.Nifti1Image(data, img.affine), tmp_path / "float.nii.gz")
    export_dicom(tmp_path / "float.nii.gz", tmp_path / "float", **QUIET)
    a, b = read_volume(tmp_path / "float.nii.gz"), read_volume(tmp_path / "float")
    assert a.name == "float"
    np.testing.assert_allclose(b.hu, a.hu, atol=0.05)
    np.testing.assert_allclose(b.positions, a.positions, atol=1e-6)


def test_find_scans_lists_each_scan_of_a_folder(twin, tmp_path):
    nifti, dicom = twin
    batch = tmp_path / "batch"
    _copy_series(dicom / "049", batch / "a-series")
    _copy_series(dicom / "050", batch / "nested" / "b-series")
    (batch / "c.nii.gz").write_bytes(gzip.compress((nifti / "ct_scans" / "049.nii").read_bytes()))
    (batch / "notes.txt").write_text("ignored")
    assert find_scans(batch) == [batch / "a-series", batch / "c.nii.gz", batch / "nested" / "b-series"]
    assert find_scans(batch / "a-series") == [batch / "a-series"]
    assert find_scans(batch / "c.nii.gz") == [batch / "c.nii.gz"]
    _same_volume(read_volume(batch / "c.nii.gz"), read_volume(nifti / "ct_scans" / "049.nii"))
    # A CT-ICH dataset: its scans, not its masks.
    assert find_scans(nifti) == [nifti / "ct_scans" / "049.nii", nifti / "ct_scans" / "050.nii"]
    one_line_error(lambda: read_volume(batch), str(batch), "3 scan(s) below it")


# --------------------------------------------------------------------------- bad input


def test_missing_path_and_folders_without_dicom(tmp_path):
    one_line_error(lambda: read_volume(tmp_path / "nope"), str(tmp_path / "nope"), "does not exist")
    one_line_error(lambda: find_scans(tmp_path / "nope"), "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "scan.txt").write_text("not DICOM")
    one_line_error(lambda: read_volume(empty), str(empty), "no DICOM files")
    one_line_error(lambda: find_scans(empty), str(empty), "no NIfTI file")
    one_line_error(lambda: read_volume(empty / "scan.txt"), "not a NIfTI file")


def test_two_series_in_one_folder_are_listed_and_one_can_be_chosen(twin, tmp_path):
    _, dicom = twin
    mixed = _copy_series(dicom / "049", tmp_path / "mixed", rename=lambda _i, name: f"a-{name}")
    _copy_series(dicom / "050", mixed, rename=lambda _i, name: f"b-{name}")
    uid_a, uid_b = (read_volume(dicom / p).series_uid for p in ("049", "050"))
    message = one_line_error(lambda: read_volume(mixed), str(mixed), "2 DICOM series", uid_a, uid_b, "--series", "series:")
    assert "CT" in message and "slices" in message
    _same_volume(read_volume(mixed, series=uid_b), read_volume(dicom / "050"))
    one_line_error(lambda: read_volume(mixed, series="1.2.3"), "no series 1.2.3", uid_a)


def test_non_ct_modality_is_refused(twin, tmp_path):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "mr")
    _edit(folder, lambda ds: setattr(ds, "Modality", "MR"))
    one_line_error(lambda: read_volume(folder), str(folder / "0001.dcm"), "Modality MR", "not CT")


def _unavailable_compressed_syntax():
    for uid in (pydicom.uid.JPEGLosslessSV1, pydicom.uid.JPEGLSLossless, pydicom.uid.JPEG2000Lossless,
                pydicom.uid.JPEGExtended12Bit, pydicom.uid.HTJ2KLossless):
        if not pydicom.pixels.get_decoder(uid).is_available:
            return uid
    pytest.skip("every compressed syntax tried has a decoder installed here")


def test_compressed_syntax_without_a_decoder_is_refused_before_decoding(twin, tmp_path):
    _, dicom = twin
    uid = _unavailable_compressed_syntax()
    folder = _copy_series(dicom / "049", tmp_path / "compressed")

    def compress(ds):
        ds.file_meta.TransferSyntaxUID = uid
        ds.PixelData = encapsulate([ds.PixelData])  # not real JPEG: decoding it would fail differently

    _edit(folder, compress)
    one_line_error(lambda: read_volume(folder), str(folder / "0001.dcm"), uid.name, "not installed", "gdcmconv --raw")


def test_inconsistent_orientation_is_refused(twin, tmp_path):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "tilted")
    _edit(folder, lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0.8, -0.6]), only={3})
    one_line_error(lambda: read_volume(folder), str(folder), "ImageOrientationPatient", "0004.dcm")


def test_a_missing_middle_slice_is_refused_naming_the_files_around_the_gap(twin, tmp_path):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "gap")
    (folder / "0004.dcm").unlink()
    one_line_error(lambda: read_volume(folder), str(folder), "not uniform", "0003.dcm", "0005.dcm")


def test_a_duplicated_slice_is_refused(twin, tmp_path):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "dup")
    shutil.copy(folder / "0004.dcm", folder / "0004-copy.dcm")
    one_line_error(lambda: read_volume(folder), str(folder), "same position", "0004.dcm", "0004-copy.dcm")


def test_slices_of_different_size_are_refused(twin, tmp_path):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "sizes")

    def shrink(ds):
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[:16, :16]).tobytes()
        ds.Rows, ds.Columns = 16, 16

    _edit(folder, shrink, only={2})
    one_line_error(lambda: read_volume(folder), str(folder), "differ in size", "0003.dcm", "16x16")


def test_stored_values_without_their_intercept_are_refused(twin, tmp_path):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "no-intercept")
    _edit(folder, lambda ds: setattr(ds, "RescaleIntercept", 0))
    message = one_line_error(lambda: read_volume(folder), str(folder), "not Hounsfield units", "RescaleIntercept (0028,1052)")
    assert "scl_inter" not in message and "NIfTI" not in message  # DICOM advice for a DICOM series


def test_a_dicom_series_without_rescale_tags_gets_dicom_advice(twin, tmp_path):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "no-rescale")

    def drop_rescale(ds):
        del ds.RescaleIntercept
        del ds.RescaleSlope

    _edit(folder, drop_rescale)
    message = one_line_error(lambda: read_volume(folder), str(folder), "RescaleIntercept", "RescaleSlope")
    assert "scl_inter" not in message


# --------------------------------------------------------------------------- to-dicom


def test_to_dicom_refuses_a_non_empty_destination_and_a_missing_source(twin, tmp_path):
    nifti, _ = twin
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    one_line_error(lambda: export_dicom(nifti, dest, **QUIET), str(dest), "not empty")
    assert os.listdir(dest) == ["keep.txt"]
    one_line_error(lambda: export_dicom(tmp_path / "nope", tmp_path / "out", **QUIET), "does not exist")


@pytest.mark.parametrize("name", ["slice.png", "scan.dcm", "notes.txt"])
def test_to_dicom_of_a_file_that_is_neither_nifti_nor_zip_says_what_to_give(name, tmp_path, capsys):
    src = tmp_path / name
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    message = one_line_error(lambda: export_dicom(src, tmp_path / "out", **QUIET), str(src),
                              "CT-ICH v1.3.1 dataset folder or zip", ".nii/.nii.gz")
    assert "dataset.local.path" not in message  # a config key means nothing to a command
    assert not (tmp_path / "out").exists()
    assert main(["to-dicom", str(src), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ichseq to-dicom: ") and "dataset.local.path" not in err and "\n" not in err


def test_a_failed_conversion_leaves_nothing(twin, tmp_path, monkeypatch):
    nifti, _ = twin
    fail_on_call(monkeypatch, dicom_module, "write_dicom_series", 2, DataError("disk full"))  # the second scan
    with pytest.raises(DataError, match="disk full"):
        export_dicom(nifti, tmp_path / "out", **QUIET)
    assert os.listdir(tmp_path) == []


def test_cli_to_dicom(twin, tmp_path, capsys):
    nifti, _ = twin
    assert main(["to-dicom", str(nifti / "ct_scans" / "050.nii"), str(tmp_path / "one")]) == 0
    assert "1 series" in capsys.readouterr().out
    _same_volume(read_volume(tmp_path / "one"), read_volume(nifti / "ct_scans" / "050.nii"))
    assert main(["to-dicom", str(nifti), str(tmp_path / "one")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ichseq to-dicom: ") and "not empty" in err and "\n" not in err


# --------------------------------------------------------------------------- non-finite voxels


def _float_copy(twin, tmp_path, name, value, fraction, seed=0):
    """Scan 050 as float32 NIfTI with ``fraction`` of its voxels (at random, at least one) set
    to ``value``; (path, mask of those voxels in display orientation and position order)."""
    nifti, _ = twin
    img = nib.load(nifti / "ct_scans" / "050.nii")
    data = np.asanyarray(img.dataobj).astype(np.float32)
    chosen = np.random.default_rng(seed).random(data.shape) < fraction
    chosen.flat[0] = True
    data[chosen] = value
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, img.affine), path)
    return path, np.transpose(chosen, (2, 1, 0))  # the synthetic affine keeps file order = position order


def test_a_few_nan_voxels_are_counted_and_read_as_padding(twin, tmp_path):
    nifti, _ = twin
    path, chosen = _float_copy(twin, tmp_path, "nan.nii.gz", np.nan, 0.001)
    volume = read_volume(path)
    original = read_volume(nifti / "ct_scans" / "050.nii")
    assert volume.nan_voxels == int(chosen.sum()) > 0 and original.nan_voxels == 0
    np.testing.assert_array_equal(volume.hu[chosen], -1024.0)
    np.testing.assert_array_equal(volume.hu[~chosen], original.hu[~chosen])
    # to-dicom writes the padding as -1024 HU, which DICOM then holds as an ordinary value.
    export_dicom(path, tmp_path / "nan-dicom", **QUIET)
    from_dicom = read_volume(tmp_path / "nan-dicom")
    _same_volume(from_dicom, volume)
    assert from_dicom.nan_voxels == 0


def test_a_mostly_nan_nifti_is_refused_naming_nan(twin, tmp_path):
    path, chosen = _float_copy(twin, tmp_path, "mostly-nan.nii.gz", np.nan, 0.7)
    needles = (str(path), "NaN", f"{int(chosen.sum())} of {chosen.size}", f"{100 * chosen.mean():.0f}%")
    message = one_line_error(lambda: read_volume(path), *needles)
    assert "nan..nan" not in message
    one_line_error(lambda: export_dicom(path, tmp_path / "out", **QUIET), *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_voxels_are_refused_with_their_count(twin, tmp_path, value):
    path, chosen = _float_copy(twin, tmp_path, "inf.nii.gz", value, 0.0005)
    needles = (str(path), f"{int(chosen.sum())} infinite voxel")
    one_line_error(lambda: read_volume(path), *needles)
    one_line_error(lambda: export_dicom(path, tmp_path / "out", **QUIET), *needles)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- pixel spacing


def test_pixel_spacing_is_known_in_the_displayed_axes(twin, tmp_path):
    nifti, dicom = twin
    spacing = 230.0 / SPEC.image_size  # the synthetic twin's field of view over its matrix
    assert read_volume(nifti / "ct_scans" / "049.nii").spacing_mm == pytest.approx((spacing, spacing))
    assert read_volume(dicom / "049").spacing_mm == pytest.approx((spacing, spacing))
    # Non-square pixels: NIfTI axis 0 (columns as displayed) at 0.5 mm, axis 1 (rows) at 0.8 mm.
    img = nib.load(nifti / "ct_scans" / "049.nii")
    affine = np.diag([-0.5, -0.8, 5.0, 1.0])
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), affine), tmp_path / "oblong.nii")
    export_dicom(tmp_path / "oblong.nii", tmp_path / "oblong", **QUIET)
    from_nifti, from_dicom = read_volume(tmp_path / "oblong.nii"), read_volume(tmp_path / "oblong")
    assert from_nifti.spacing_mm == pytest.approx((0.8, 0.5))
    assert from_dicom.spacing_mm == pytest.approx((0.8, 0.5))
    assert [float(v) for v in pydicom.dcmread(tmp_path / "oblong" / "0001.dcm").PixelSpacing] == pytest.approx([0.8, 0.5])
    assert from_nifti.slice_thickness_mm is None and from_dicom.slice_thickness_mm == pytest.approx(5.0)


def test_pydicom_ct_test_file_has_its_pixel_spacing_and_thickness(tmp_path):
    folder = tmp_path / "ct-small"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "CT_small.dcm")
    ds = pydicom.dcmread(folder / "CT_small.dcm")
    volume = read_volume(folder)
    assert volume.spacing_mm == pytest.approx(tuple(float(v) for v in ds.PixelSpacing))
    assert volume.slice_thickness_mm == pytest.approx(float(ds.SliceThickness))


def test_a_series_without_pixel_spacing_reads_with_spacing_unknown(twin, tmp_path):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "no-spacing")
    _edit(folder, lambda ds: delattr(ds, "PixelSpacing"))
    assert read_volume(folder).spacing_mm is None


@pytest.mark.parametrize("inside", [True, False])
def test_to_dicom_refuses_a_destination_inside_or_around_its_source(nifti_dataset, copy_dataset, tmp_path, capsys,
                                                                    inside):
    """DEST inside SRC (or SRC inside an empty DEST) must be refused before anything is written."""
    from ichseq.cli import main

    src = copy_dataset(nifti_dataset)
    before = sorted(p for p in src.rglob("*"))
    dest = src / "dicom" if inside else src.parent
    assert main(["to-dicom", str(src), str(dest)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "DEST" in err and "input" in err
    assert sorted(p for p in src.rglob("*")) == before


def test_a_localizer_is_refused_as_not_an_axial_slice(twin, tmp_path):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "scout")
    _edit(folder, lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "LOCALIZER"]), only={0})
    one_line_error(lambda: read_volume(folder), "0001.dcm", "localizer", "axial series")


def test_two_reconstructions_of_different_thickness_in_one_series_are_refused(twin, tmp_path):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "mixed-thickness")
    _edit(folder, lambda ds: setattr(ds, "SliceThickness", "1.25"), only={2, 3})
    one_line_error(lambda: read_volume(folder), str(folder), "different thickness", "1.25", "5", "export one")


@pytest.mark.parametrize("kernel", ["BONE", "H70s", ["Br64", "3"], "FC30", "LUNG"])
def test_a_sharp_kernel_series_is_read_with_a_warning(twin, tmp_path, kernel):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "bone")
    _edit(folder, lambda ds: setattr(ds, "ConvolutionKernel", kernel))
    volume = read_volume(folder)
    assert len(volume.warnings) == 1 and "sharp reconstruction kernel" in volume.warnings[0]
    assert "\n" not in volume.warnings[0]


@pytest.mark.parametrize("kernel", ["STANDARD", "H30s", "FC26", "SOFT", "Hr38"])
def test_soft_tissue_kernels_give_no_warning(twin, tmp_path, kernel):
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "soft")
    _edit(folder, lambda ds: setattr(ds, "ConvolutionKernel", kernel))
    assert read_volume(folder).warnings == ()


def test_contrast_is_warned_about_as_pydicoms_own_ct_slice_says(twin, tmp_path):
    """pydicom's CT_small.dcm was acquired with Isovue (ContrastBolusAgent ISOVUE300/100)."""
    from ichseq.data.dicom import series_warnings

    (line,) = series_warnings(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    assert "contrast-enhanced" in line and "ISOVUE300/100" in line
    assert series_warnings(pydicom.dcmread(get_testdata_file("693_J2KI.dcm"))) == []  # "5/5mm Plain", STANDARD
    _, dicom = twin
    folder = _copy_series(dicom / "049", tmp_path / "cta")
    _edit(folder, lambda ds: setattr(ds, "SeriesDescription", "CTA HEAD"))
    assert "contrast-enhanced" in read_volume(folder).warnings[0]
