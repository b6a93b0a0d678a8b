"""One scan's slices in Hounsfield units (:class:`CTVolume`): what :mod:`ichseq.data.volumes`
(NIfTI files and DICOM folders) and :mod:`ichseq.data.dicom` (DICOM series) give, in a module
of its own so that neither reader imports the other for it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CTVolume:
    """One scan's slices in Hounsfield units, ordered inferior -> superior."""

    source: str  # the file or folder it was read from
    name: str  # scan name for output folders: NIfTI file name without .nii/.nii.gz; DICOM folder name
    hu: np.ndarray  # float32 (S, rows, cols), ordered by position ascending
    positions: np.ndarray  # float64 (S,) mm along the slice normal (NIfTI: world z of the slice centre)
    slice_numbers: np.ndarray  # int64 (S,): NIfTI: 1-based index in the file; DICOM: InstanceNumber
    files: list[str] | None  # DICOM: the file of each slice, in the same order; None for NIfTI
    series_uid: str | None
    # (between rows, between columns) in mm of the displayed slices; None when a DICOM series
    # has no usable PixelSpacing (its field of view is then unknown).
    spacing_mm: tuple[float, float] | None = None
    slice_thickness_mm: float | None = None  # DICOM SliceThickness (0018,0050) when given; None for NIfTI
    nan_voxels: int = 0  # NaN ("no data") voxels of the file, now -1024 HU in ``hu``
    # (S, 2) mm each slice's origin lies from the first slice's along the displayed rows (down) and
    # columns (right): zero for a straight stack, growing slice by slice under gantry tilt
    # (:mod:`ichseq.data.reformat` shifts it back); None when unknown.
    in_plane_offsets_mm: np.ndarray | None = None
    # What the series says that the answer should be read against (a bone kernel, contrast):
    # one line each, logged and kept in decision.json; the scan is still scored.
    warnings: tuple[str, ...] = ()
