"""Reading one new CT scan (not part of a CT-ICH dataset) in Hounsfield units.

``read_volume(path)`` takes a NIfTI file (``.nii``/``.nii.gz``) or a folder holding one DICOM
series and gives its slices in the training pipeline's order and orientation:

* NIfTI: exactly what the training reader gives for the same file (the shared functions of
  :mod:`ichseq.data.readers`): slices ordered by the world z of their centre, displayed as
  ``(rows, cols)`` = the file's second and first axes.
* DICOM (:mod:`ichseq.data.dicom`): slices ordered by ImagePositionPatient along the slice
  normal (never by file name or InstanceNumber), HU from RescaleSlope/Intercept, the pixel
  array as displayed. ``ichseq to-dicom`` writes a NIfTI scan as a series that reads back
  to the same HU, positions and order.

Non-finite voxels: NaN means "no data" (the padding resampling tools write outside the field
they had data for). Up to half of the voxels, NaN becomes -1024 HU (air, the value scanners
store as padding) and :attr:`CTVolume.nan_voxels` counts them; a volume more than half NaN
is refused, naming NaN and how many, and so is any +inf/-inf voxel (no tool writes one on
purpose). Training's reader and ``ichseq to-dicom`` apply the same rule
(:func:`ichseq.data.readers.hounsfield_volume`).

``spacing_mm`` is the in-plane pixel spacing of the displayed slices (NIfTI: from the affine;
DICOM: PixelSpacing), so a slice's field of view in mm is ``shape * spacing_mm``; it is what
:mod:`ichseq.data.headcheck` measures heads with.

Which paths are scans (``find_scans``: a NIfTI file, a DICOM folder, or a folder of several)
is :mod:`ichseq.data.scan_files`.

Every problem raises :class:`~ichseq.errors.DataError` with one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .ct_volume import CTVolume
from .dicom import read_dicom_series
from .readers import hounsfield_volume, load_nifti, nifti_pixel_spacing, order_nifti_slices
from .scan_files import WHAT_TO_GIVE, dicom_files, find_scans, is_dicom_file, is_nifti, nifti_name

__all__ = ["CTVolume", "nifti_in_plane_offsets", "read_nifti_volume", "read_volume"]


def read_nifti_volume(path: Path) -> CTVolume:
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{where}: cannot be read ({exc.strerror}); check its permissions") from None
    values, affine = load_nifti(raw, where)
    numbers, positions, hu = order_nifti_slices(values, affine)
    hu, nan_voxels = hounsfield_volume(hu, where, "nifti")
    return CTVolume(
        source=where, name=nifti_name(path), hu=np.ascontiguousarray(hu, dtype=np.float32),
        positions=positions.astype(np.float64), slice_numbers=numbers.astype(np.int64), files=None, series_uid=None,
        spacing_mm=nifti_pixel_spacing(affine), slice_thickness_mm=None, nan_voxels=nan_voxels,
        in_plane_offsets_mm=nifti_in_plane_offsets(affine, numbers),
    )  # fmt: skip


def nifti_in_plane_offsets(affine: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """(S, 2) mm: how far each slice (1-based file index ``numbers``, in reading order) lies from
    the first along the displayed rows (the file's second axis) and columns (its first axis):
    the slice step's components in the slice plane, non-zero when the affine is sheared, as a
    gantry-tilted series converted without tilt correction is."""
    step = np.asarray(affine, float)[:3, 2]
    rows_dir, cols_dir = (np.asarray(affine, float)[:3, axis] for axis in (1, 0))
    per_slice = np.array([step @ rows_dir / np.linalg.norm(rows_dir), step @ cols_dir / np.linalg.norm(cols_dir)])
    index = np.asarray(numbers, float) - float(numbers[0])
    return index[:, None] * per_slice[None, :]


def read_volume(path: str | Path, series: str | None = None, allow_gaps: bool = False) -> CTVolume:
    """Read one scan: a ``.nii``/``.nii.gz`` file, or a folder holding one DICOM series
    (``series``: the SeriesInstanceUID to read when the folder holds several). ``allow_gaps``:
    a DICOM series with missing slices (gaps a whole number of spacings long) is read, for
    :func:`ichseq.data.reformat.reformat_volume` to bridge or refuse; otherwise it is refused."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: does not exist; {WHAT_TO_GIVE}")
    if path.is_file():
        if is_nifti(path):
            if series is not None:
                raise DataError(f"{path}: a NIfTI file holds one scan; series {series} applies to DICOM folders only")
            return read_nifti_volume(path)
        if is_dicom_file(path):
            raise DataError(f"{path}: a single DICOM file; give the folder that holds its whole series")
        raise DataError(f"{path}: not a NIfTI file (.nii/.nii.gz) nor a folder; {WHAT_TO_GIVE}")
    files = dicom_files(path)
    if not files:
        try:
            inside = find_scans(path)
        except DataError:
            inside = []
        if inside:
            raise DataError(
                f"{path}: no DICOM files directly in this folder but {len(inside)} scan(s) below it "
                f"(e.g. {inside[0]}); give one of them, or the folder as a batch of scans"
            )
        raise DataError(f"{path}: no DICOM files in this folder; {WHAT_TO_GIVE}")
    return read_dicom_series(path, files, series, allow_gaps=allow_gaps)
