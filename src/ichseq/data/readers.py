"""Reading CT-ICH from a folder or a zip, in either published layout.

``open_dataset(path)`` finds the dataset root (the folder holding the diagnosis CSV, at any
depth: PhysioNet's zips wrap everything in one long-named folder), detects the layout,
checks that the CSV and the image files describe the same slices, and returns an object
whose ``read_scan(patient)`` gives the brain-windowed slices **ordered by their position
along the head axis**, with their hemorrhage masks.

* v1.3.1 (NIfTI): HU volumes; the official brain window (level 40 / width 120) is applied
  here; slices are ordered by the world z coordinate of the affine (an inverted stack is
  put the right way up), and each keeps its CSV ``SliceNumber``. A volume with nothing
  below -200 HU holds no air, so it is not in Hounsfield units and is refused, unless the
  dataset is opened with ``prewindowed=True``: then its values are 0-255 display values,
  used as they are (like the v1.0.0 JPGs).
  NaN voxels mean "no data" (the padding resampling tools write outside the field they had
  data for): up to half of a volume they become -1024 HU, air/padding (0 in a pre-windowed
  scan); more than half is refused, and so is any infinite voxel (:func:`hounsfield_volume`,
  shared with ``ichseq predict`` and ``ichseq to-dicom``).
* v1.0.0 (JPG): brain JPGs are already windowed by the dataset authors and are used as
  they are; ``*_HGE_Seg.jpg`` masks and everything under ``bone/`` are filtered out of the
  classification input by name, as the study did. Slices are ordered by the number in the
  file name (numerically: ``10.jpg`` after ``9.jpg``).

Every inconsistency raises :class:`~ichseq.errors.DataError` with one line naming the file.
"""

from __future__ import annotations

import copy
import gzip
import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .cq500_discovery import looks_like_cq500
from .layout import (
    DIAGNOSIS_COLUMNS,
    JPG_CSV,
    JPG_LAYOUT,
    JPG_MASK_SUFFIX,
    JPG_ROOT,
    NIFTI_CSV,
    NIFTI_LAYOUT,
    NIFTI_MASK_DIR,
    NIFTI_SCAN_DIR,
    SUBTYPES,
    patient_file,
)
from .windowing import BRAIN_WINDOW_LEVEL, BRAIN_WINDOW_WIDTH, brain_window

NIFTI_HEADER_BYTES = 352

# A head CT in Hounsfield units always shows air around the head (about -1000 HU), and often
# padding outside the reconstructed circle (-1024, -2048, -3024); fat, the lowest tissue,
# is about -100. A volume whose minimum is above this holds no air: it is not HU.
HU_AIR_CEILING = -200.0


# Advice for values that are not HU, by where the volume came from: a CT-ICH dataset being
# cached (its config has dataset.prewindowed), a single NIfTI file, or a DICOM series.
_HU_FIX = {
    "dataset": {
        "windowed": "convert to HU or set dataset.prewindowed: true",
        "intercept": "convert to HU (set scl_inter in the NIfTI header)",
    },
    "nifti": {
        "windowed": "convert it to HU; scans are read in Hounsfield units",
        "intercept": "convert to HU (set scl_inter in the NIfTI header)",
    },
    "dicom": {
        "windowed": "export the series in HU; scans are read in Hounsfield units",
        "intercept": "convert to HU (set RescaleIntercept (0028,1052), usually -1024, and RescaleSlope "
        "(0028,1053) in every file, or re-export the series with them)",
    },
}


def check_hounsfield(values: np.ndarray, where: str, source: str = "dataset") -> None:
    """Raise :class:`DataError` when ``values`` (a whole CT volume, NaN voxels ignored as "no
    data") cannot be Hounsfield units. ``source`` (``dataset``, ``nifti`` or ``dicom``) picks
    the advice: a dataset option, the NIfTI header field, or the DICOM rescale tags."""
    fixes = _HU_FIX[source]
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if lo < HU_AIR_CEILING:
        return
    if lo >= 0 and hi <= 255:
        guess = "which looks like an image already windowed to 0-255, not Hounsfield units"
        fix = fixes["windowed"]
    elif lo >= 0:
        guess = "which looks like stored values without their rescale intercept (usually -1024), not Hounsfield units"
        fix = fixes["intercept"]
    else:
        guess = "so there is no air (about -1000 HU) in the image: not Hounsfield units"
        fix = "convert to HU"
    raise DataError(f"{where}: values {lo:g}..{hi:g} with nothing below {HU_AIR_CEILING:g}, {guess}; {fix}")


# NaN in a CT volume means "no data": resampling and registration tools asked for a NaN fill
# value write it outside the field they had data for, where a scanner stores padding. Filled
# with the scanners' padding value (air), a minority of NaN changes nothing a model reads
# (the brain window of -1024 is 0, as for any air). A volume that is more than half NaN has
# less image than padding: it is refused rather than scored. An infinite value has no such
# meaning (no scanner, converter or resampler writes one on purpose): always refused.
NO_DATA_HU = -1024.0
NO_DATA_DISPLAY = 0.0  # the same padding in a pre-windowed 0-255 scan: black, like air
MAX_NAN_FRACTION = 0.5


def count_no_data(values: np.ndarray, where: str) -> int:
    """The number of NaN ("no data") voxels of ``values`` (a whole volume); raises
    :class:`DataError` naming ``where`` for any infinite voxel, or when more than
    ``MAX_NAN_FRACTION`` of the voxels are NaN."""
    if np.isfinite(values).all():  # the usual case: one pass, no counts
        return 0
    infinite = int(np.isinf(values).sum())
    if infinite:
        positive = int(np.isposinf(values).sum())
        raise DataError(
            f"{where}: {infinite} infinite voxel(s) ({positive} +inf, {infinite - positive} -inf); a CT value is "
            f"always finite, so the file is damaged or was written by a faulty conversion: re-export it"
        )
    nan = int(np.isnan(values).sum())
    if nan > MAX_NAN_FRACTION * values.size:
        raise DataError(
            f"{where}: {nan} of {values.size} voxels ({100 * nan / values.size:.0f}%) are NaN (no data), more than "
            f"the {100 * MAX_NAN_FRACTION:.0f}% accepted as padding; re-export the scan with its image data"
        )
    return nan


def fill_no_data(values: np.ndarray, nan_voxels: int, fill: float) -> np.ndarray:
    """``values`` with its NaN voxels set to ``fill`` (a copy when there are any)."""
    if not nan_voxels:
        return values
    filled = values.copy()
    filled[np.isnan(filled)] = fill
    return filled


def hounsfield_volume(values: np.ndarray, where: str, source: str = "dataset") -> tuple[np.ndarray, int]:
    """``(values with NaN voxels set to -1024 HU, number of NaN voxels)`` of a whole CT volume;
    raises :class:`DataError` for infinite voxels, a mostly-NaN volume or values that are not
    HU (:func:`check_hounsfield`, judged on the voxels that hold data)."""
    nan_voxels = count_no_data(values, where)
    check_hounsfield(values, where, source)
    return fill_no_data(values, nan_voxels, NO_DATA_HU), nan_voxels


def check_display_values(values: np.ndarray, where: str) -> None:
    """Raise :class:`DataError` when ``values`` are not 0-255 display values (``prewindowed``);
    NaN voxels (no data) are ignored."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if lo < HU_AIR_CEILING:
        raise DataError(
            f"{where}: values {lo:g}..{hi:g} go below {HU_AIR_CEILING:g}, which looks like Hounsfield units, "
            f"but dataset.prewindowed is true; set it to false"
        )
    if lo < 0 or hi > 255:
        raise DataError(
            f"{where}: values {lo:g}..{hi:g} are outside 0..255, but dataset.prewindowed: true expects "
            f"0-255 display values; convert the scans to HU and set it to false"
        )
    if hi <= 1:
        raise DataError(
            f"{where}: values {lo:g}..{hi:g}, which looks like 0-1 intensities, but dataset.prewindowed: true "
            f"expects 0-255 display values; rescale them to 0-255"
        )


# --------------------------------------------------------------------------- NIfTI volumes
# Shared by the dataset readers below and by ``ichseq.data.volumes`` (a new scan to predict
# on), so that a NIfTI file gives the same slices, in the same order, either way.


def load_nifti(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(values (cols, rows, S) float32 after scl_slope / scl_inter, affine)`` of a NIfTI-1
    file's bytes (gzipped or not); ``where`` names the file in errors."""
    try:
        if raw[:2] == b"\x1f\x8b":  # .nii.gz
            raw = gzip.decompress(raw)
        img = nib.Nifti1Image.from_bytes(raw)
        data = np.asanyarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise DataError(f"{where}: corrupt NIfTI ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{where}: expected a 3-D volume, got shape {data.shape}")
    return data, img.affine


def nifti_slice_positions(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World z (mm, RAS: inferior -> superior) of each slice's centre, in file order."""
    centre = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, 0.0, 1.0])
    return np.array([(affine @ (centre + [0, 0, k, 0]))[2] for k in range(shape[2])])


def nifti_pixel_spacing(affine: np.ndarray) -> tuple[float, float]:
    """``(between rows, between columns)`` in mm of the displayed slices: rows are the file's
    second axis and columns its first (:func:`display_slices`), as DICOM's PixelSpacing."""
    return float(np.linalg.norm(affine[:3, 1])), float(np.linalg.norm(affine[:3, 0]))


def display_slices(volume: np.ndarray) -> np.ndarray:
    """NIfTI ``(cols, rows, S)`` -> ``(S, rows, cols)``, the display orientation of the slices."""
    return np.transpose(volume, (2, 1, 0))


def order_nifti_slices(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(slice_numbers (1-based index in the file), positions_mm, stack (S, rows, cols))``
    ordered by position along the head axis."""
    positions = nifti_slice_positions(volume.shape, affine)
    # A stack stored superior-to-inferior is reordered, never trusted in file order.
    order = np.argsort(positions, kind="stable")
    return order + 1, positions[order], display_slices(volume)[order]


@dataclass
class Scan:
    """One patient's slices, ordered inferior to superior, at the scan's own pixel grid."""

    patient: int
    slice_numbers: np.ndarray  # the CSV SliceNumber of each slice
    positions: np.ndarray  # mm along the head axis (v1.0.0: the slice number)
    images: np.ndarray  # float32 (S, H, W) brain window in [0, 1] (NiftiDataset.read_hu_scan: HU)
    masks: np.ndarray  # bool (S, H, W); never part of the classification input
    # (between rows, between columns) in mm, as :func:`nifti_pixel_spacing`; None where the
    # layout records no geometry (the v1.0.0 JPGs).
    pixel_mm: tuple[float, float] | None

    @property
    def source_size(self) -> int:
        """The number of columns of the scan's slices as stored, before any resizing."""
        return int(self.images.shape[2])


# --------------------------------------------------------------------------- file access


class DatasetFiles:
    """Uniform read access to a folder or a zip archive, relative to the dataset root."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self.zip = None
            names = []
            for dirpath, _dirs, files in os.walk(path):
                rel = Path(dirpath).relative_to(path)
                names.extend((rel / f).as_posix() for f in files)
        elif path.is_file() and zipfile.is_zipfile(path):
            self.zip = zipfile.ZipFile(path)
            names = [i.filename for i in self.zip.infolist() if not i.is_dir()]
        elif path.exists():
            raise DataError(f"{path}: not a folder or a zip archive; point dataset.local.path at the CT-ICH folder or zip")
        else:
            raise DataError(f"{path}: does not exist; check dataset.local.path")
        # Hidden files (macOS ``__MACOSX``, ``._x``, our own download marker) are not data.
        names = [n for n in names if not any(p.startswith((".", "__MACOSX")) for p in n.split("/"))]
        self.root = self._find_root(names)
        prefix = f"{self.root}/" if self.root else ""
        self.names = sorted(n[len(prefix) :] for n in names if n.startswith(prefix))
        self._nameset = set(self.names)
        self.layout = NIFTI_LAYOUT if NIFTI_CSV in self.names else JPG_LAYOUT

    def _find_root(self, names: list[str]) -> str:
        for wanted in (NIFTI_CSV, JPG_CSV):
            hits = [n for n in names if PurePosixPath(n).name == wanted]
            if hits:
                return str(PurePosixPath(min(hits, key=lambda n: n.count("/"))).parent).strip(".")
        if looks_like_cq500(self.path):
            raise DataError(
                f"{self.path}: CQ500's layout (reads.csv, CQ500-CT-<n> zips or folders), not CT-ICH's ({NIFTI_CSV} "
                f"or {JPG_CSV}); read it with dataset.source: cq500 and dataset.cq500.path"
            )
        raise DataError(
            f"{self.path}: unknown layout: found neither {NIFTI_CSV} (CT-ICH v1.3.1, NIfTI) "
            f"nor {JPG_CSV} (v1.0.0, JPG), nor CQ500's reads.csv and CQ500-CT-<n> zips or folders "
            f"(dataset.source: cq500); point the dataset path at the unpacked release or its zip"
        )

    def full(self, rel: str) -> str:
        """``rel`` (relative to the dataset root) as a path inside the folder or zip."""
        return f"{self.root}/{rel}" if self.root else rel

    def where(self, rel: str) -> str:
        """How to name ``rel`` in an error message."""
        return f"{self.path}:{self.full(rel)}" if self.zip else str(self.path / self.full(rel))

    def exists(self, rel: str) -> bool:
        return rel in self._nameset

    def size(self, rel: str) -> int:
        if self.zip:
            return self.zip.getinfo(self.full(rel)).file_size
        return (self.path / self.full(rel)).stat().st_size

    def read(self, rel: str, n: int | None = None) -> bytes:
        if self.zip:
            with self.zip.open(self.full(rel)) as fh:
                return fh.read() if n is None else fh.read(n)
        with open(self.path / self.full(rel), "rb") as fh:
            return fh.read() if n is None else fh.read(n)


# --------------------------------------------------------------------------- labels


def read_diagnosis_csv(data: bytes, where: str) -> pd.DataFrame:
    """Parse a diagnosis CSV (either release) into one int row per (patient, slice)."""
    try:
        # Keep blank lines so that a row's index + 2 is its line number in the file.
        df = pd.read_csv(io.BytesIO(data), encoding="utf-8-sig", skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: not a readable CSV ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    df = df.dropna(how="all")  # blank lines; the index keeps the file's line numbers
    required = [c for c in DIAGNOSIS_COLUMNS if c != "Fracture_Yes_No"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}; expected {','.join(DIAGNOSIS_COLUMNS)}")
    if "Fracture_Yes_No" not in df.columns:
        df["Fracture_Yes_No"] = 0
    df = df[list(DIAGNOSIS_COLUMNS)]
    if df.empty:
        raise DataError(f"{where}: has a header but no rows")
    for col in DIAGNOSIS_COLUMNS:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            first = df.index[bad.to_numpy()][0]
            raise DataError(f"{where}: line {first + 2}: column {col} is not an integer ({df.at[first, col]!r})")
        df[col] = values.astype(int)
    for col in (*SUBTYPES, "No_Hemorrhage", "Fracture_Yes_No"):
        bad = ~df[col].isin([0, 1])
        if bad.any():
            raise DataError(f"{where}: line {df.index[bad.to_numpy()][0] + 2}: column {col} must be 0 or 1")
    dup = df.duplicated(["PatientNumber", "SliceNumber"], keep=False)
    if dup.any():
        lines = (df.index[dup.to_numpy()][:2] + 2).tolist()
        row = df[dup].iloc[0]
        raise DataError(
            f"{where}: duplicate rows for patient {row.PatientNumber} slice {row.SliceNumber} "
            f"(lines {lines[0]} and {lines[1]}); remove one"
        )
    # A slice is positive when any subtype is marked; No_Hemorrhage must agree.
    any_subtype = df[list(SUBTYPES)].max(axis=1)
    conflict = any_subtype == df["No_Hemorrhage"]
    if conflict.any():
        row = df[conflict].iloc[0]
        raise DataError(
            f"{where}: patient {row.PatientNumber} slice {row.SliceNumber}: No_Hemorrhage="
            f"{row.No_Hemorrhage} contradicts the subtype columns"
        )
    df["label"] = any_subtype.astype(int)
    return df.sort_values(["PatientNumber", "SliceNumber"]).reset_index(drop=True)


# --------------------------------------------------------------------------- datasets


class CTICHDataset:
    """Common interface of both layouts; use :func:`open_dataset`."""

    layout: str

    def __init__(self, files: DatasetFiles, csv_name: str):
        self.files = files
        self.csv_name = csv_name
        if not files.exists(csv_name):  # pragma: no cover - root detection guarantees it
            raise DataError(f"{files.where(csv_name)}: missing")
        self.labels = read_diagnosis_csv(files.read(csv_name), files.where(csv_name))
        self.patients = sorted(int(p) for p in self.labels.PatientNumber.unique())
        self._slices = {
            int(p): sorted(int(s) for s in g.SliceNumber) for p, g in self.labels.groupby("PatientNumber")
        }
        self.validate()

    @property
    def path(self) -> Path:
        return self.files.path

    def patient_labels(self, patient: int) -> pd.DataFrame:
        return self.labels[self.labels.PatientNumber == patient].set_index("SliceNumber")

    def for_patients(self, patients) -> "CTICHDataset":
        """A copy reading only ``patients`` (a shard of the cache), on the same open files."""
        keep = [int(p) for p in patients]
        part = copy.copy(self)
        part.patients = keep
        part.labels = self.labels[self.labels.PatientNumber.isin(keep)].reset_index(drop=True)
        part._slices = {p: self._slices[p] for p in keep}
        return part

    def _check_slice_numbers(self, patient: int, present: list[int], where: str) -> None:
        rows = self._slices[patient]
        extra_rows = sorted(set(rows) - set(present))
        if extra_rows:
            raise DataError(
                f"{self.files.where(self.csv_name)}: patient {patient} slice {extra_rows[0]} has a CSV row "
                f"but {where} has no such slice ({len(present)} slices)"
            )
        extra_slices = sorted(set(present) - set(rows))
        if extra_slices:
            raise DataError(
                f"{where}: slice {extra_slices[0]} has no row in {self.csv_name} (patient {patient})"
            )

    def validate(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def read_scan(
        self, patient: int, level: float = BRAIN_WINDOW_LEVEL, width: float = BRAIN_WINDOW_WIDTH
    ) -> Scan:  # pragma: no cover - abstract
        raise NotImplementedError


class NiftiDataset(CTICHDataset):
    """CT-ICH v1.3.1: ``ct_scans/NNN.nii`` + ``masks/NNN.nii`` + diagnosis CSV.

    ``prewindowed``: the scans hold 0-255 display values (already windowed), not HU.
    """

    layout = NIFTI_LAYOUT

    def __init__(self, files: DatasetFiles, prewindowed: bool = False):
        self.prewindowed = prewindowed
        super().__init__(files, NIFTI_CSV)

    def _header(self, rel: str) -> nib.Nifti1Header:
        if not self.files.exists(rel):
            raise DataError(f"{self.files.where(rel)}: missing (listed in {self.csv_name})")
        raw = self.files.read(rel, NIFTI_HEADER_BYTES)
        # nibabel "repairs" a wrong sizeof_hdr with a warning instead of failing, so check
        # the two fields that make a file NIfTI-1 ourselves.
        sizeof_hdr = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
        if len(raw) < 348 or 348 not in sizeof_hdr or raw[344:348] not in (b"n+1\0", b"ni1\0"):
            raise DataError(f"{self.files.where(rel)}: not a valid NIfTI-1 file (bad header); re-download it")
        try:
            header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=True)
        except Exception as exc:  # nibabel raises several unrelated types for a bad header
            raise DataError(f"{self.files.where(rel)}: not a valid NIfTI-1 file ({type(exc).__name__}: {exc})") from None
        shape = header.get_data_shape()
        if len(shape) < 3 or 0 in shape[:3]:
            raise DataError(f"{self.files.where(rel)}: empty volume (shape {shape}); expected rows x cols x slices")
        need = int(header.get_data_offset()) + int(np.prod(shape)) * header.get_data_dtype().itemsize
        have = self.files.size(rel)
        if have < need:
            raise DataError(f"{self.files.where(rel)}: truncated NIfTI ({have} of {need} bytes); re-download it")
        return header

    def validate(self) -> None:
        csv_patients = set(self.patients)
        for rel in self.files.names:
            parts = rel.split("/")
            if len(parts) == 2 and parts[0] in (NIFTI_SCAN_DIR, NIFTI_MASK_DIR) and parts[1].endswith(".nii"):
                stem = parts[1][:-4]
                if not stem.isdigit() or int(stem) not in csv_patients:
                    raise DataError(f"{self.files.where(rel)}: no rows for this patient in {self.csv_name}")
        for patient in self.patients:
            scan_h = self._header(f"{NIFTI_SCAN_DIR}/{patient_file(patient)}")
            mask_h = self._header(f"{NIFTI_MASK_DIR}/{patient_file(patient)}")
            shape = scan_h.get_data_shape()[:3]
            if mask_h.get_data_shape()[:3] != shape:
                raise DataError(
                    f"{self.files.where(f'{NIFTI_MASK_DIR}/{patient_file(patient)}')}: shape "
                    f"{mask_h.get_data_shape()} differs from its scan's {shape}"
                )
            where = self.files.where(f"{NIFTI_SCAN_DIR}/{patient_file(patient)}")
            self._check_slice_numbers(patient, list(range(1, shape[2] + 1)), where)

    def _volume(self, rel: str) -> tuple[np.ndarray, np.ndarray]:
        return load_nifti(self.files.read(rel), self.files.where(rel))

    def _read_ordered(
        self, patient: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
        """``(slice_numbers, positions_mm, values (S, rows, cols), masks, pixel_mm)`` ordered by
        position; values as stored, after the header's scl_slope / scl_inter; ``pixel_mm`` as
        :func:`nifti_pixel_spacing` (from the scan's affine, the one its positions come from)."""
        name = patient_file(patient)
        hu, affine = self._volume(f"{NIFTI_SCAN_DIR}/{name}")
        mask, _ = self._volume(f"{NIFTI_MASK_DIR}/{name}")
        numbers, positions, stack = order_nifti_slices(hu, affine)
        masks = display_slices(mask)[numbers - 1] > 0
        return numbers, positions, stack, masks, nifti_pixel_spacing(affine)

    def _hounsfield(self, patient: int, values: np.ndarray) -> np.ndarray:
        hu, _nan_voxels = hounsfield_volume(values, self.files.where(f"{NIFTI_SCAN_DIR}/{patient_file(patient)}"))
        return hu

    def read_hu(self, patient: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(slice_numbers, positions_mm, hu (S, rows, cols), masks)`` ordered by position.

        NaN voxels (no data) are -1024 HU. Raises :class:`DataError` when the scan's values
        cannot be Hounsfield units, hold an infinity or are mostly NaN.
        """
        numbers, positions, values, masks, _pixel_mm = self._read_ordered(patient)
        return numbers, positions, self._hounsfield(patient, values), masks

    def read_hu_scan(self, patient: int) -> Scan:
        """As :meth:`read_scan`, but ``images`` hold the slices in Hounsfield units (float32, NaN
        voxels -1024), not windowed: for a caller that combines slices before the window (the
        slice cache's slabs, ``preprocess.slab_mm``). Raises :class:`DataError` as :meth:`read_hu`,
        and for a dataset opened ``prewindowed`` (its values are not HU)."""
        if self.prewindowed:
            raise DataError(f"{self.path}: the scans hold 0-255 display values (dataset.prewindowed), not "
                            f"Hounsfield units; read them with read_scan")
        numbers, positions, values, masks, pixel_mm = self._read_ordered(patient)
        return Scan(patient, numbers, positions, self._hounsfield(patient, values), masks, pixel_mm)

    def scan_where(self, patient: int) -> str:
        """How to name ``patient``'s scan file in an error message."""
        return self.files.where(f"{NIFTI_SCAN_DIR}/{patient_file(patient)}")

    def read_scan(self, patient, level=BRAIN_WINDOW_LEVEL, width=BRAIN_WINDOW_WIDTH) -> Scan:
        numbers, positions, values, masks, pixel_mm = self._read_ordered(patient)
        if not self.prewindowed:
            hu = self._hounsfield(patient, values)
            return Scan(patient, numbers, positions, brain_window(hu, level, width), masks, pixel_mm)
        # Already windowed by whoever exported them: level/width are ignored, as for the JPGs.
        where = self.files.where(f"{NIFTI_SCAN_DIR}/{patient_file(patient)}")
        nan_voxels = count_no_data(values, where)
        check_display_values(values, where)
        values = fill_no_data(values, nan_voxels, NO_DATA_DISPLAY)
        images = np.clip(values / np.float32(255.0), 0.0, 1.0).astype(np.float32)
        return Scan(patient, numbers, positions, images, masks, pixel_mm)


_JPG_NAME = re.compile(r"^(\d+)(" + JPG_MASK_SUFFIX + r")?\.jpe?g$", re.IGNORECASE)


class JpgDataset(CTICHDataset):
    """CT-ICH v1.0.0: ``Patients_CT/NNN/brain/N.jpg`` (+ ``N_HGE_Seg.jpg``) + diagnosis CSV."""

    layout = JPG_LAYOUT

    def __init__(self, files: DatasetFiles):
        self._brain: dict[int, dict[int, str]] = {}
        self._seg: dict[int, dict[int, str]] = {}
        for rel in files.names:
            parts = rel.split("/")
            # Only Patients_CT/NNN/brain/*: bone/ is dropped by name, as in the study.
            if len(parts) != 4 or parts[0] != JPG_ROOT or parts[2] != "brain" or not parts[1].isdigit():
                continue
            m = _JPG_NAME.match(parts[3])
            if not m:
                continue
            target = self._seg if m.group(2) else self._brain
            target.setdefault(int(parts[1]), {})[int(m.group(1))] = rel
        super().__init__(files, JPG_CSV)

    def validate(self) -> None:
        for patient in sorted(set(self._brain) - set(self.patients)):
            raise DataError(
                f"{self.files.where(f'{JPG_ROOT}/{patient:03d}/brain')}: no rows for this patient in {self.csv_name}"
            )
        for patient in self.patients:
            where = self.files.where(f"{JPG_ROOT}/{patient:03d}/brain")
            if patient not in self._brain:
                raise DataError(f"{where}: missing (patient {patient} is listed in {self.csv_name})")
            self._check_slice_numbers(patient, sorted(self._brain[patient]), where)

    def _jpg(self, rel: str) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(self.files.read(rel))) as im:
                im.load()
                return np.asarray(im.convert("L"), dtype=np.float32)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise DataError(f"{self.files.where(rel)}: corrupt or truncated JPG ({exc})") from None

    def read_scan(self, patient, level=BRAIN_WINDOW_LEVEL, width=BRAIN_WINDOW_WIDTH) -> Scan:
        # level/width are ignored: the published JPGs are already brain-windowed.
        numbers = sorted(self._brain[patient])  # numeric order, not file-name order
        images = [self._jpg(self._brain[patient][n]) / 255.0 for n in numbers]
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise DataError(f"{self.files.where(f'{JPG_ROOT}/{patient:03d}/brain')}: slices differ in size {sorted(shapes)}")
        masks = []
        for n, im in zip(numbers, images):
            rel = self._seg.get(patient, {}).get(n)
            # JPEG ringing makes a 0/255 mask noisy: threshold at mid-grey.
            masks.append(self._jpg(rel) > 127 if rel else np.zeros(im.shape, bool))
            if masks[-1].shape != im.shape:
                raise DataError(f"{self.files.where(rel)}: mask size {masks[-1].shape} differs from its slice {im.shape}")
        nums = np.array(numbers)
        # A JPG holds no pixel spacing (nor slice positions): the geometry is unknown.
        return Scan(patient, nums, nums.astype(float), np.stack(images).astype(np.float32), np.stack(masks),
                    pixel_mm=None)


def open_dataset(path: str | Path, prewindowed: bool = False) -> CTICHDataset:
    """Open a CT-ICH folder or zip of either layout (detected) and validate it.

    CT-ICH only: a CQ500 folder is refused in one line naming ``dataset.source: cq500``
    (CQ500 is opened by the config's source, :func:`ichseq.data.cache.open_source`, with its
    reads file, label rule and series choice; a folder like neither gets a line naming both).

    ``prewindowed``: v1.3.1 scans hold 0-255 display values instead of HU (the v1.0.0 JPGs
    always do, so it changes nothing there).
    """
    files = DatasetFiles(Path(path))
    return NiftiDataset(files, prewindowed) if files.layout == NIFTI_LAYOUT else JpgDataset(files)
