"""The head check for new scans (ichseq.data.headcheck): what is not a head CT is refused in one
line naming the scan, every head of the synthetic twin passes at every size and from DICOM,
real head CT slices pass, and a scan covering too little of the head is refused unless the
user accepts a partial answer."""

from __future__ import annotations

import dataclasses
import shutil
import time

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from scipy import ndimage

from ichseq.data.dicom import export_dicom
from ichseq.data.headcheck import check_coverage, check_head, scan_coverage
from ichseq.data.synthetic import SyntheticSpec, generate_synthetic, volume_to_nifti
from ichseq.data.volumes import CTVolume, read_volume
from tests.conftest import TINY_SPEC, one_line_error

QUIET = {"log": lambda _msg: None}
SIZES = (32, 64, 128)
SYNTHETIC_FOV_MM = 230.0  # the synthetic twin's field of view, as the real scans'
SYNTHETIC_SLICE_MM = 5.0


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """{size: (NIfTI dataset, its DICOM export)}: TINY_SPEC's 8 patients at 32, 64 and 128 px."""
    root = tmp_path_factory.mktemp("heads")
    out = {}
    for size in SIZES:
        nifti, dicom = root / f"nifti-{size}", root / f"dicom-{size}"
        generate_synthetic(nifti, dataclasses.replace(TINY_SPEC, image_size=size), **QUIET)
        export_dicom(nifti, dicom, **QUIET)
        out[size] = (nifti, dicom)
    return out


def _scans(nifti):
    return sorted((nifti / "ct_scans").iterdir())



def _rewrite(path, dest, change):
    """``dest``: the NIfTI scan ``path`` with its slices (display orientation) changed by
    ``change(stack) -> stack``, same affine."""
    img = nib.load(path)
    stack = np.transpose(np.asanyarray(img.dataobj), (2, 1, 0)).astype(np.float32)
    nib.save(volume_to_nifti(change(stack.copy()), img.affine), dest)
    return dest


def _one_file_series(tmp_path, name, edit=None):
    """A folder holding one of pydicom's test files (optionally edited), as read_volume wants."""
    folder = tmp_path / name
    folder.mkdir(parents=True)
    shutil.copy(get_testdata_file(name), folder / name)
    if edit:
        ds = pydicom.dcmread(folder / name)
        edit(ds)
        ds.save_as(folder / name)
    return folder


# --------------------------------------------------------------------------- heads pass


@pytest.mark.parametrize("size", SIZES)
def test_every_synthetic_head_passes_from_nifti_and_from_dicom(twins, size):
    nifti, dicom = twins[size]
    for path in _scans(nifti):
        volume = read_volume(path)
        measured = check_head(volume)
        assert measured["fov_mm"] == pytest.approx([SYNTHETIC_FOV_MM] * 2, abs=0.1)
        assert measured["matrix"] == [size, size]
        # An adult's intracranial cross-section, measured in mm whatever the matrix.
        assert 100 <= measured["intracranial_area_cm2"] <= 250
        assert measured["brain_tissue_fraction"] >= 0.9
        assert 1 <= measured["slices_with_skull"] <= measured["slices_checked"] == len(volume.hu)
        assert measured["best_slice"] in volume.slice_numbers
        from_dicom = check_head(read_volume(dicom / path.stem))
        position = from_dicom.pop("best_slice_position_mm")
        assert position == pytest.approx(measured.pop("best_slice_position_mm"), abs=1e-3)
        assert from_dicom == measured


def test_the_same_head_measures_the_same_area_at_every_matrix(twins):
    # TINY_SPEC draws each patient's head shape before anything that depends on the matrix.
    for path in _scans(twins[128][0]):
        fine = check_head(read_volume(path))["intracranial_area_cm2"]
        for size in (32, 64):
            coarse = check_head(read_volume(twins[size][0] / "ct_scans" / path.name))["intracranial_area_cm2"]
            assert coarse == pytest.approx(fine, rel=0.2), (path.name, size)


def test_a_512_pixel_scan_is_checked_in_well_under_a_second(tmp_path):
    spec = SyntheticSpec(n_patients=1, n_positive=1, image_size=128, min_slices=40, max_slices=40, seed=3,
                         generator="cartoon")
    generate_synthetic(tmp_path / "ds", spec, **QUIET)
    small = read_volume(next((tmp_path / "ds" / "ct_scans").iterdir()))
    # The same head on a clinical 512 x 512 matrix: each pixel split into 4 x 4 of a quarter the size.
    big = dataclasses.replace(small, hu=np.repeat(np.repeat(small.hu, 4, axis=1), 4, axis=2),
                              spacing_mm=(small.spacing_mm[0] / 4, small.spacing_mm[1] / 4))
    assert big.hu.shape == (40, 512, 512)
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        measured = check_head(big)
        seconds.append(time.perf_counter() - start)
    assert min(seconds) < 1.0, seconds
    assert measured["intracranial_area_cm2"] == pytest.approx(check_head(small)["intracranial_area_cm2"], rel=0.05)


def test_a_thin_slice_scan_is_checked_on_a_sample_of_its_slices(twins):
    volume = read_volume(_scans(twins[64][0])[0])
    # The same head cut ten times thinner: 0.5 mm slices, as a thin-slice reconstruction.
    n = 10 * len(volume.hu)
    thin = dataclasses.replace(volume, hu=np.repeat(volume.hu, 10, axis=0), positions=np.arange(n) * 0.5,
                               slice_numbers=np.arange(1, n + 1))
    measured = check_head(thin)
    assert measured["slices_checked"] == 64 < n
    assert measured["slices_with_skull"] >= 32
    assert scan_coverage(thin)["z_extent_mm"] == pytest.approx(scan_coverage(volume)["z_extent_mm"])


@pytest.mark.parametrize("name", ["693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_real_head_ct_slices_pass(name, tmp_path):
    # Two clinical slices shipped with pydicom: a supratentorial one with the headrest's curve
    # under the head, and one through the skull base (sinuses, petrous bones) at 22 degrees of gantry tilt.
    ds = pydicom.dcmread(get_testdata_file(name))
    if not pydicom.pixels.get_decoder(ds.file_meta.TransferSyntaxUID).is_available:
        pytest.skip(f"no JPEG 2000 decoder installed for {name}")
    measured = check_head(read_volume(_one_file_series(tmp_path, name)))
    assert measured["slices_with_skull"] == 1
    assert 60 <= measured["intracranial_area_cm2"] <= 250


# --------------------------------------------------------------------------- robust to real-world heads


def test_a_craniectomy_on_most_slices_still_passes(twins, tmp_path):
    path = _scans(twins[64][0])[0]
    volume = read_volume(path)
    n = len(volume.hu)
    rows, cols = np.mgrid[:64, :64] - 31.5
    flap = np.abs(np.angle(np.exp(1j * (np.arctan2(rows, cols) + np.pi / 2)))) < np.pi / 3  # a 120-degree sector

    def remove_flap(from_slice):
        def change(stack):
            for k in range(from_slice, n):
                # The bone flap is gone, its blurred edges too (all above soft tissue's 100 HU);
                # the scalp closed over the gap: soft tissue.
                bone = (stack[k] > 100) & flap
                stack[k][bone] = 35.0
            return stack

        return change

    open_above_base = read_volume(_rewrite(path, tmp_path / "craniectomy.nii", remove_flap(3)))
    assert np.any(open_above_base.hu != volume.hu)
    measured = check_head(open_above_base)
    assert 1 <= measured["slices_with_skull"] <= 3  # only the intact slices near the skull base count
    # Open on every slice, there is no closed skull anywhere: refused, not guessed.
    open_everywhere = read_volume(_rewrite(path, tmp_path / "open.nii", remove_flap(0)))
    one_line_error(lambda: check_head(open_everywhere), str(tmp_path / "open.nii"), "no skull", "never in a closed ring")


def test_a_head_off_centre_and_rotated_passes(twins, tmp_path):
    path = _scans(twins[64][0])[1]
    reference = check_head(read_volume(path))

    def move(stack):
        turned = ndimage.rotate(stack, 25.0, axes=(1, 2), reshape=False, order=1, cval=-1000.0)
        return np.roll(turned, (6, -5), axis=(1, 2))  # about 2 cm down and 2 cm to the side

    measured = check_head(read_volume(_rewrite(path, tmp_path / "moved.nii", move)))
    assert measured["intracranial_area_cm2"] == pytest.approx(reference["intracranial_area_cm2"], rel=0.1)


def test_a_headrest_streaks_and_noise_do_not_hide_the_head(twins, tmp_path):
    path = _scans(twins[128][0])[2]
    rng = np.random.default_rng(0)
    spacing = SYNTHETIC_FOV_MM / 128
    y, x = (np.mgrid[:128, :128] - 63.5) * spacing  # mm; rows run anterior -> posterior

    def clutter(stack):
        # A carbon-fibre headrest: a 3 mm shell 110-113 mm from the centre, behind the head.
        shell = (np.hypot(x, y) > 110) & (np.hypot(x, y) < 113) & (y > 0)
        for k, image in enumerate(stack):
            image[shell] = 400.0
            # Metal streaks through the brain: bright and dark bands of +-200 HU.
            angle = rng.uniform(0, np.pi)
            distance = x * np.sin(angle) - y * np.cos(angle)
            image[np.abs(distance) < 1.5] += 200.0
            image[np.abs(distance - 6.0) < 1.5] -= 200.0
            image += rng.normal(0.0, 20.0, image.shape)  # a noisier, lower-dose scan
        return stack

    measured = check_head(read_volume(_rewrite(path, tmp_path / "cluttered.nii", clutter)))
    assert measured["intracranial_area_cm2"] >= 100


# --------------------------------------------------------------------------- not a head


def test_a_vertebra_isone_line_error(tmp_path):
    # pydicom's CT_small.dcm: one slice of a vertebra, 128 x 128 at 0.66 mm.
    folder = _one_file_series(tmp_path, "CT_small.dcm")
    one_line_error(lambda: check_head(read_volume(folder)), str(folder), "field of view 85 x 85 mm", "not a head CT")
    # Even with pixels big enough for a head's field of view, its bone rings enclose a spinal
    # canal and marrow, nowhere near a brain.
    bigger = _one_file_series(tmp_path / "bigger", "CT_small.dcm", edit=lambda ds: setattr(ds, "PixelSpacing", [1.6, 1.6]))
    message = one_line_error(lambda: check_head(read_volume(bigger)), str(bigger), "no skull around brain", "cm^2")
    assert "field of view" not in message


def test_a_one_voxel_volume_isone_line_error(tmp_path):
    path = tmp_path / "voxel.nii"
    nib.save(nib.Nifti1Image(np.full((1, 1, 1), -1000, np.int16), np.eye(4)), path)
    volume = read_volume(path)  # air: Hounsfield units, so it reads
    one_line_error(lambda: check_head(volume), str(path), "1x1 pixels", "not a head CT")


def test_a_uniform_40_hu_volume_and_a_water_phantom_areone_line_error(tmp_path):
    uniform = np.full((12, 64, 64), 40.0, np.float32)
    affine = np.diag([-3.6, -3.6, 5.0, 1.0])
    nib.save(volume_to_nifti(uniform, affine), tmp_path / "uniform.nii")
    one_line_error(lambda: read_volume(tmp_path / "uniform.nii"), "not Hounsfield units")
    volume = CTVolume(source="uniform-40", name="uniform-40", hu=uniform, positions=np.arange(12) * 5.0,
                      slice_numbers=np.arange(1, 13), files=None, series_uid=None, spacing_mm=(3.6, 3.6))
    one_line_error(lambda: check_head(volume), "uniform-40", "no bone")
    # A 20 cm cylinder of water-like 40 HU in air: a head's size, no skull.
    y, x = (np.mgrid[:64, :64] - 31.5) * 3.6
    phantom = np.where(np.hypot(x, y) < 100, 40.0, -1000.0).astype(np.float32)
    nib.save(volume_to_nifti(np.repeat(phantom[None], 12, axis=0), affine), tmp_path / "phantom.nii")
    one_line_error(lambda: check_head(read_volume(tmp_path / "phantom.nii")), str(tmp_path / "phantom.nii"), "no bone")


@pytest.mark.parametrize(("pixel_mm", "fov"), [(1.0, "64 x 64 mm"), (10.0, "640 x 640 mm")])
def test_a_field_of_view_no_head_ct_has_isone_line_error(twins, tmp_path, pixel_mm, fov):
    path = _scans(twins[64][0])[0]
    img = nib.load(path)
    affine = np.diag([-pixel_mm, -pixel_mm, 5.0, 1.0])
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), affine), tmp_path / "wrong-spacing.nii")
    one_line_error(lambda: check_head(read_volume(tmp_path / "wrong-spacing.nii")), str(tmp_path / "wrong-spacing.nii"),
             f"field of view {fov}", "pixel spacing")


def test_a_series_without_pixel_spacing_cannot_be_checked(twins, tmp_path):
    series = tmp_path / "no-spacing"
    shutil.copytree(twins[64][1] / "049", series)
    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        del ds.PixelSpacing
        ds.save_as(path)
    one_line_error(lambda: check_head(read_volume(series)), str(series), "PixelSpacing")


# --------------------------------------------------------------------------- non-finite voxels


def test_a_head_with_a_few_nan_voxels_passes_with_them_counted(twins, tmp_path):
    path = _scans(twins[64][0])[0]
    chosen = np.random.default_rng(1).random(read_volume(path).hu.shape) < 0.001

    def sprinkle(stack):
        stack[chosen] = np.nan
        return stack

    volume = read_volume(_rewrite(path, tmp_path / "nan.nii", sprinkle))
    assert volume.nan_voxels == int(chosen.sum()) > 0
    np.testing.assert_array_equal(volume.hu[chosen], -1024.0)
    assert check_head(volume)["slices_with_skull"] >= 1


def test_a_mostly_nan_head_is_refused_naming_nan(twins, tmp_path):
    path = _scans(twins[64][0])[0]

    def blank(stack):
        stack[:, :, :40] = np.nan  # 40 of 64 columns: 62%
        return stack

    one_line_error(lambda: read_volume(_rewrite(path, tmp_path / "mostly-nan.nii", blank)), "mostly-nan.nii", "NaN", "62%")


def test_infinite_voxels_are_refused_on_reading_and_by_the_check(twins, tmp_path):
    path = _scans(twins[64][0])[0]

    def spike(stack):
        stack[3, 30, 30] = np.inf
        return stack

    one_line_error(lambda: read_volume(_rewrite(path, tmp_path / "inf.nii", spike)), "inf.nii", "1 infinite voxel")
    volume = read_volume(path)
    volume.hu[3, 30, 30] = np.inf  # a volume built in memory, past the reader
    one_line_error(lambda: check_head(volume), str(path), "1 infinite voxel")


# --------------------------------------------------------------------------- coverage


def test_coverage_of_a_whole_scan(twins):
    nifti, dicom = twins[64]
    for volume in (read_volume(_scans(nifti)[0]), read_volume(dicom / _scans(nifti)[0].stem)):
        n = len(volume.hu)
        coverage = scan_coverage(volume)
        assert coverage == {"slices": n, "slice_spacing_mm": pytest.approx(SYNTHETIC_SLICE_MM),
                            "z_extent_mm": pytest.approx(n * SYNTHETIC_SLICE_MM)}
        checked = check_coverage(volume, min_slices=n, min_extent_mm=n * SYNTHETIC_SLICE_MM, allow_partial=False)
        assert checked["partial"] is False and checked["min_slices"] == n


def test_a_single_slice_cut_from_a_head_is_refused_unless_partial_is_allowed(twins, tmp_path):
    nifti, _ = twins[64]
    img = nib.load(_scans(nifti)[0])
    k = img.shape[2] // 2
    one = tmp_path / "one-slice.nii"
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:, :, k : k + 1], img.affine @ _shift_z(k)), one)
    export_dicom(one, tmp_path / "one-slice-dicom", **QUIET)
    for volume, extent in ((read_volume(one), 0.0), (read_volume(tmp_path / "one-slice-dicom"), SYNTHETIC_SLICE_MM)):
        assert check_head(volume)["slices_with_skull"] == 1  # a slice of a head is a head...
        message = one_line_error(lambda: check_coverage(volume, min_slices=12, min_extent_mm=60.0, allow_partial=False),
                           volume.source, "1 slice(s)", "at least 12", "at least 60 mm", "--allow-partial", "partial")
        assert f"{extent:g} mm" in message
        # ... but not a patient's scan: scored only when asked, and marked.
        partial = check_coverage(volume, min_slices=12, min_extent_mm=60.0, allow_partial=True)
        assert partial["partial"] is True and partial["slices"] == 1 and partial["z_extent_mm"] == extent
        assert "1 slice(s)" in partial["shortfall"]
    # NIfTI knows no thickness for one slice: the extent is 0 and says why.
    assert "unknown thickness" in scan_coverage(read_volume(one))["note"]


def _shift_z(k: int) -> np.ndarray:
    """Voxel index k of the original file becomes index 0 of the cut one."""
    shift = np.eye(4)
    shift[2, 3] = k
    return shift


def test_a_short_scan_is_refused_for_its_extent_alone(twins):
    volume = read_volume(_scans(twins[64][0])[0])
    n = len(volume.hu)
    message = one_line_error(lambda: check_coverage(volume, min_slices=1, min_extent_mm=n * 5.0 + 50, allow_partial=False),
                       f"{n * 5.0:g} mm along the head", "--allow-partial")
    assert "slice(s) where" not in message
