"""Compressed DICOM (issue 25, point 1): series in the lossless syntaxes hospital exports use
(JPEG lossless as CQ500's, JPEG-LS, JPEG 2000, RLE) read to the same HU as uncompressed ones,
whether ``ichseq to-dicom`` wrote them (GDCM encodes) or other tools did (pydicom's bundled
files, decoded here and checked against their uncompressed originals or a second decoder)."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from ichseq.cli import main
from ichseq.data.dicom import COMPRESSIONS, _hu, export_dicom
from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
from ichseq.data.volumes import read_volume
from ichseq.errors import DataError
from tests.conftest import one_line_error

SPEC = SyntheticSpec(n_patients=2, n_positive=1, image_size=48, min_slices=8, max_slices=10, seed=4,
                     generator="cartoon")
QUIET = {"log": lambda _msg: None}


@pytest.fixture(scope="module")
def nifti(tmp_path_factory):
    """One positive cartoon scan as a .nii file."""
    root = tmp_path_factory.mktemp("compress")
    generate_synthetic(root / "ds", SPEC, **QUIET)
    return sorted((root / "ds" / "ct_scans").iterdir())[0]


@pytest.fixture(scope="module")
def plain(nifti, tmp_path_factory):
    """Its uncompressed export."""
    dest = tmp_path_factory.mktemp("plain") / "series"
    export_dicom(nifti, dest, **QUIET)
    return dest


@pytest.fixture(scope="module")
def uncompressed(plain):
    return read_volume(plain)


@pytest.mark.parametrize("compression", [c for c in COMPRESSIONS if c != "none"])
def test_a_compressed_export_reads_back_to_the_same_hounsfield_units(compression, nifti, plain, uncompressed, tmp_path):
    dest = tmp_path / compression
    messages = []
    export_dicom(nifti, dest, log=messages.append, compression=compression)
    files = sorted(dest.iterdir())
    assert len(files) == len(uncompressed.hu)
    syntaxes = {pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID for f in files}
    assert syntaxes == {COMPRESSIONS[compression]} and syntaxes.pop().is_compressed
    assert COMPRESSIONS[compression].name in messages[0]
    volume = read_volume(dest)
    np.testing.assert_array_equal(volume.hu, uncompressed.hu)  # lossless: every HU
    np.testing.assert_allclose(volume.positions, uncompressed.positions, atol=1e-6)
    assert volume.spacing_mm == uncompressed.spacing_mm
    # Really compressed: a CT slice's air and smooth tissue take less room.
    assert sum(f.stat().st_size for f in files) < 0.8 * sum(f.stat().st_size for f in plain.iterdir())


def test_the_cli_writes_jpeg_lossless_like_cq500(nifti, uncompressed, tmp_path, capsys):
    assert main(["to-dicom", str(nifti), str(tmp_path / "cq500-like"), "--compression", "jpeg-lossless"]) == 0
    assert "JPEG Lossless" in capsys.readouterr().out
    first = pydicom.dcmread(sorted((tmp_path / "cq500-like").iterdir())[0], stop_before_pixels=True)
    assert first.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"  # CQ500's syntax
    np.testing.assert_array_equal(read_volume(tmp_path / "cq500-like").hu, uncompressed.hu)


def test_an_unknown_compression_is_one_line_naming_the_choices(nifti, tmp_path):
    one_line_error(lambda: export_dicom(nifti, tmp_path / "x", compression="jpeg-xl", **QUIET),
                   "--compression jpeg-xl", "jpeg-lossless", "rle")
    assert not (tmp_path / "x").exists()
    assert main(["to-dicom", str(nifti), str(tmp_path / "y"), "--compression", "zip"]) == 1
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"])
def test_files_other_tools_compressed_decode_to_their_originals(name):
    """pydicom's bundled compressed copies of one slice (encoded by other software) decode to
    the uncompressed original's values, pixel for pixel."""
    original = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    path = get_testdata_file(name)
    compressed = pydicom.dcmread(path)
    assert compressed.file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(_hu(path, compressed), _hu(path, original))


def test_jpeg_lossless_from_another_encoder_decodes():
    """The only JPEG lossless (process 14 SV1) file pydicom bundles is colour; its pixels equal
    the RLE copy of the same image (two syntaxes, two decoders)."""
    jpeg = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_gdcm.dcm"))
    rle = pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm"))
    assert jpeg.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    np.testing.assert_array_equal(jpeg.pixel_array, rle.pixel_array)


def _series_of(path, folder, n=4, step=5.0):
    """A series of ``n`` slices from one bundled slice: its compressed pixel data kept, the
    position moved ``step`` mm each, new instance UIDs."""
    folder.mkdir()
    for k in range(n):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [float(ds.ImagePositionPatient[2]) + k * step]
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[str(k)])
        ds.save_as(folder / f"{k:03d}.dcm")
    return folder


@pytest.mark.parametrize("name", ["693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_real_jpeg2000_ct_slices_read_as_a_series(name, tmp_path):
    """pydicom's real compressed CT slices (JPEG 2000, lossy and lossless, 512 px) read through
    the series reader to HU; a second decoder (pillow's OpenJPEG) gives the same values."""
    path = get_testdata_file(name)
    folder = _series_of(path, tmp_path / "series")
    volume = read_volume(folder)
    assert volume.hu.shape == (4, 512, 512)
    ds = pydicom.dcmread(path)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    other = pydicom.pixels.pixel_array(path, decoding_plugin="pillow").astype(np.float64) * slope + intercept
    for k in range(4):
        np.testing.assert_array_equal(volume.hu[k], other.astype(np.float32))
    gaps = np.diff(volume.positions)  # along the slice normal (one of the slices is oblique)
    assert gaps.min() > 0 and np.ptp(gaps) < 1e-6


def test_a_compressed_mr_series_is_refused_as_not_ct(tmp_path):
    folder = _series_of(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"), tmp_path / "mr")
    one_line_error(lambda: read_volume(folder), "Modality MR", "not CT")


def test_a_corrupt_compressed_slice_is_one_line(tmp_path):
    folder = _series_of(get_testdata_file("693_J2KI.dcm"), tmp_path / "corrupt")
    target = folder / "002.dcm"
    ds = pydicom.dcmread(target)
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])  # a J2K header and nothing
    ds.save_as(target)
    with pytest.raises(DataError) as err:
        read_volume(folder)
    assert "002.dcm" in str(err.value) and "\n" not in str(err.value)


def test_no_compressed_export_is_left_when_gdcm_is_missing(nifti, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_gdcm(name, *args, **kwargs):
        if name == "gdcm":
            raise ImportError("No module named 'gdcm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gdcm)
    one_line_error(lambda: export_dicom(nifti, tmp_path / "z", compression="jpeg-ls", **QUIET),
                   "python-gdcm", "JPEG-LS")
    assert not (tmp_path / "z").exists()
    shutil.rmtree(tmp_path / "z", ignore_errors=True)
