"""DICOM CT series: reading one for prediction, and writing NIfTI scans as DICOM (``ichseq to-dicom``).

Reading (:func:`read_dicom_series`, used by :func:`ichseq.data.volumes.read_volume`): every
DICOM file of a folder with image data, grouped by SeriesInstanceUID (several series: one
must be chosen), refused when not CT, when compressed with a syntax no installed decoder
handles (checked before decoding), or when the slices do not form one regular stack (other
orientation, size or pixel spacing; a missing or duplicated slice). Slices are ordered by
ImagePositionPatient projected on the slice normal (row cosines x column cosines, turned to
point superior), HU = stored * RescaleSlope + RescaleIntercept, pixels as displayed.

Writing (:func:`export_dicom`): CT Image Storage, explicit VR little endian, uncompressed or
in one of the lossless syntaxes hospital exports use (``COMPRESSIONS``: JPEG lossless as in
CQ500, JPEG-LS, JPEG 2000, RLE; encoded by GDCM, python-gdcm), geometry from the NIfTI affine
(RAS -> DICOM LPS). A slice's pixel rows and columns are those
the NIfTI reader displays, so a written series reads back to the same HU, positions and
order. UIDs are derived from the source file's content and name: a rerun writes identical files.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from ..atomic import atomic_dir
from ..errors import DataError
from ..paths import refuse_overlap
from .ct_volume import CTVolume
from .layout import NIFTI_LAYOUT, NIFTI_SCAN_DIR
from .readers import NO_DATA_HU, DatasetFiles, display_slices, hounsfield_volume, load_nifti
from .scan_files import WHAT_TO_GIVE, is_nifti, nifti_name
from .windowing import BRAIN_WINDOW_LEVEL, BRAIN_WINDOW_WIDTH

# Real series write positions with 4-6 decimals; a missing slice doubles a gap, a duplicated
# one makes it 0. A gap further than this from the series' median gap is refused.
SPACING_TOLERANCE_MM = 0.01
SPACING_TOLERANCE_FRACTION = 0.05
ORIENTATION_TOLERANCE = 1e-4  # direction cosines
WHAT_TO_CONVERT = "give a CT-ICH v1.3.1 dataset folder or zip, or one .nii/.nii.gz file"
DECOMPRESS_HINT = "or decompress the series first, e.g. `gdcmconv --raw IN OUT` (GDCM) or `dcmdjpeg IN OUT` (DCMTK)"

# ``ichseq to-dicom --compression``: name -> the lossless transfer syntax written (GDCM encodes
# them all; pydicom alone encodes only RLE). Reading decodes these and the lossy ones through
# pydicom's pixel-data plugins (python-gdcm, pillow).
COMPRESSIONS = {
    "none": ExplicitVRLittleEndian,
    "jpeg-lossless": JPEGLosslessSV1,
    "jpeg-ls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
    "rle": RLELossless,
}

# RAS (NIfTI) <-> LPS (DICOM): x and y change sign.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


# --------------------------------------------------------------------------- reading


def _number(ds: Dataset, keyword: str, default: float) -> float:
    value = ds.get(keyword)
    return default if value is None or value == "" else float(value)


def _positive(ds: Dataset, keyword: str) -> float | None:
    """A positive, finite decimal tag's value; None when missing, empty or unusable."""
    try:
        value = float(ds.get(keyword))
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """PixelSpacing (0028,0030): (between rows, between columns) in mm; None when missing or unusable."""
    try:
        spacing = tuple(float(v) for v in ds.get("PixelSpacing") or ())
    except (TypeError, ValueError):
        return None
    return spacing if len(spacing) == 2 and all(np.isfinite(v) and v > 0 for v in spacing) else None


def _describe(uid: str, slices: list[tuple[Path, Dataset]]) -> str:
    ds = slices[0][1]
    description = str(ds.get("SeriesDescription", "") or "").strip() or "no description"
    return f"{uid or '(no SeriesInstanceUID)'} ({ds.get('Modality', '') or 'no modality'}, {description!r}, {len(slices)} slices)"


def _check_decodable(path: Path, ds: Dataset) -> None:
    """Refuse a transfer syntax that no installed pydicom plugin decodes, before decoding."""
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if uid is None:
        return  # pydicom falls back to implicit VR little endian, which it always decodes
    try:
        decoder = pydicom.pixels.get_decoder(uid)
    except NotImplementedError:
        raise DataError(
            f"{path}: transfer syntax {uid.name} ({uid}) cannot be decoded by pydicom; {DECOMPRESS_HINT.removeprefix('or ')}"
        ) from None
    if not decoder.is_available:
        # "gdcm - requires gdcm>=3.0.10" -> "gdcm>=3.0.10"
        needs = [d.split(" - ", 1)[-1].removeprefix("requires ") for d in decoder.missing_dependencies]
        raise DataError(
            f"{path}: compressed transfer syntax {uid.name} ({uid}) needs a decoder that is not installed; "
            f"install {' or '.join(needs) or 'a pydicom pixel-data plugin'} into the environment, {DECOMPRESS_HINT}"
        )


# Reconstruction kernels sharper than the soft-tissue (brain) ones the models learnt from:
# vendors' bone / lung / edge kernels (GE BONE, BONEPLUS, EDGE, LUNG; Siemens H/B/J/Hr/Br/Qr
# kernels numbered 60 and up; Canon FC30-FC39 and FC8x bone/lung; Philips D, E, L, Y-sharp).
_SHARP_KERNEL = re.compile(r"BONE|EDGE|LUNG|SHARP|DETAIL|^[HBJIQ]R?[6-9]\d|^FC(3\d|8\d)$|^[DEL]$|^YD|^YE")
# "CONTRAST" but not a plain series named for it ("PRE CONTRAST", "NON-CONTRAST", "WITHOUT CONTRAST",
# as CQ500's plain series are); "PRE AND POST CONTRAST" still matches POST CON.
_CONTRAST_WORDS = re.compile(r"\bCTA\b|ANGIO|(?<!PRE)(?<!PRE[ -])(?<!NON)(?<!NON[ -])(?<!\bNO )(?<!WITHOUT )(?<!W/O )"
                             r"CONTRAST|\bC\+|POST[ -]?CON|ARTERIAL|VENOUS PHASE")


def kernel_name(ds: Dataset) -> str:
    """ConvolutionKernel (0018,1210) as one string (several values joined by spaces); "" when missing."""
    kernel = ds.get("ConvolutionKernel") or ""
    kernel = " ".join(kernel) if isinstance(kernel, (list, tuple, pydicom.multival.MultiValue)) else str(kernel)
    return kernel.strip()


def is_sharp_kernel(ds: Dataset) -> bool:
    """A sharp (bone, lung, edge) reconstruction: by ConvolutionKernel, or BONE in SeriesDescription."""
    return bool(_SHARP_KERNEL.search(kernel_name(ds).upper())) or "BONE" in str(ds.get("SeriesDescription", "") or "").upper()


def is_contrast(ds: Dataset) -> bool:
    """Contrast-enhanced: a ContrastBolusAgent, or contrast words in SeriesDescription."""
    agent = str(ds.get("ContrastBolusAgent", "") or "").strip()
    return bool(agent) or bool(_CONTRAST_WORDS.search(str(ds.get("SeriesDescription", "") or "").upper()))


def is_localizer(ds: Dataset) -> bool:
    """A localizer (scout, topogram) image by its ImageType, not an axial slice."""
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    return "LOCALIZER" in image_type or "SCOUT" in image_type or "TOPOGRAM" in image_type


def series_warnings(ds: Dataset) -> list[str]:
    """What the first slice says about the series that changes how an answer reads: a sharp
    (bone or lung) kernel, or contrast. One line each; the series is still read."""
    out = []
    kernel = kernel_name(ds)
    description = str(ds.get("SeriesDescription", "") or "")
    if is_sharp_kernel(ds):
        out.append(f"a sharp reconstruction kernel (ConvolutionKernel {kernel.strip() or '-'}, series "
                   f"{description.strip() or '-'!r}): the model learnt from soft-tissue (brain) kernels, whose "
                   f"noise and edges differ; prefer the soft-tissue series of the study")
    agent = str(ds.get("ContrastBolusAgent", "") or "").strip()
    if is_contrast(ds):
        out.append(f"contrast-enhanced (ContrastBolusAgent {agent or '-'}, series {description.strip() or '-'!r}): "
                   f"enhancing vessels and tissue look like blood to a model trained on non-contrast CT")
    return out


def _check_slice(path: Path, ds: Dataset) -> None:
    modality = str(ds.get("Modality", "") or "")
    if modality != "CT":
        raise DataError(f"{path}: Modality {modality or '(missing)'}, not CT; ichseq reads CT series only")
    if is_localizer(ds):
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        raise DataError(f"{path}: a localizer (scout) image (ImageType {'/'.join(image_type)}), not an axial slice; "
                        f"give the axial series, or remove the localizer from the folder")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(
            f"{path}: a multi-frame (enhanced) image with {frames} frames; ichseq reads one slice per file: "
            f"convert it to single-frame files first (e.g. dcm4che's emf2sf)"
        )
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DataError(f"{path}: a colour image (SamplesPerPixel {ds.SamplesPerPixel}), not a CT slice; remove it")
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient"):
        if len(ds.get(keyword) or []) != (6 if keyword == "ImageOrientationPatient" else 3):
            raise DataError(
                f"{path}: no valid {keyword}, so the slice order cannot be taken from the geometry; "
                f"re-export the series with its geometry tags"
            )
    _check_decodable(path, ds)


def _check_same(slices: list[tuple[Path, Dataset]], folder: Path) -> None:
    """Every slice has the first one's orientation, size and pixel spacing."""
    first_path, first = slices[0]
    iop0 = np.array(first.ImageOrientationPatient, dtype=float)
    spacing0 = first.get("PixelSpacing")
    for path, ds in slices[1:]:
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        if not np.allclose(iop, iop0, atol=ORIENTATION_TOLERANCE):
            raise DataError(
                f"{folder}: slices differ in ImageOrientationPatient ({path.name}: {iop.round(4).tolist()}, "
                f"{first_path.name}: {iop0.round(4).tolist()}); not one stack: remove localizers or export one series"
            )
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise DataError(
                f"{folder}: slices differ in size ({path.name}: {ds.Rows}x{ds.Columns}, {first_path.name}: "
                f"{first.Rows}x{first.Columns} rows x columns); not one stack: export one series"
            )
        spacing = ds.get("PixelSpacing")
        if (spacing is None) != (spacing0 is None) or (
            spacing is not None and not np.allclose(np.array(spacing, float), np.array(spacing0, float), rtol=1e-4)
        ):
            raise DataError(
                f"{folder}: slices differ in PixelSpacing ({path.name}: {spacing}, {first_path.name}: {spacing0}); "
                f"not one stack: export one series"
            )


def slice_normal(iop) -> np.ndarray:
    """The unit normal of a slice (row cosines x column cosines), turned to point superior
    (+z in LPS) so that positions grow inferior -> superior, as in training."""
    iop = np.asarray(iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    length = np.linalg.norm(normal)
    if length < 1e-6:
        raise DataError(f"ImageOrientationPatient {iop.tolist()}: row and column directions are parallel")
    normal /= length
    return -normal if normal[2] < 0 else normal


def _check_spacing(positions: np.ndarray, paths: list[Path], folder: Path, allow_gaps: bool = False) -> None:
    gaps = np.diff(positions)
    if len(gaps) == 0:
        return
    dup = np.flatnonzero(gaps < SPACING_TOLERANCE_MM)
    if len(dup):
        i = dup[0]
        raise DataError(
            f"{folder}: {paths[i].name} and {paths[i + 1].name} are at the same position ({positions[i]:.3f} mm): "
            f"a duplicated slice; remove one of them"
        )
    ref = float(np.median(gaps))
    tolerance = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * ref)
    off = np.abs(gaps - ref) > tolerance
    if allow_gaps:  # missing slices: a whole number of spacings, left for the reformatting
        multiple = np.rint(gaps / ref)
        off &= ~((multiple >= 2) & (np.abs(gaps - multiple * ref) <= tolerance * multiple))
    bad = np.flatnonzero(off)
    if len(bad):
        i = bad[0]
        raise DataError(
            f"{folder}: slice spacing is not uniform: {gaps[i]:.3f} mm between {paths[i].name} and "
            f"{paths[i + 1].name} where the series' spacing is {ref:.3f} mm (a missing or extra slice?); "
            f"export the complete series"
        )


def _hu(path: Path, ds: Dataset) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom and its plugins raise many unrelated types
        raise DataError(
            f"{path}: pixel data cannot be decoded ({type(exc).__name__}: {' '.join(str(exc).split())}); "
            f"re-export the series uncompressed"
        ) from None
    slope, intercept = _number(ds, "RescaleSlope", 1.0), _number(ds, "RescaleIntercept", 0.0)
    if slope == 1 and float(intercept).is_integer() and pixels.dtype.itemsize <= 2:
        # CT's usual rescale: 16-bit integers plus an integer intercept are exact in float32,
        # which is what the float64 route gives too, in a third of the time.
        hu = pixels.astype(np.float32)
        hu += np.float32(intercept)
        return hu
    return (pixels.astype(np.float64) * slope + intercept).astype(np.float32)


def read_dicom_series(folder: Path, files: list[Path], series: str | None = None, allow_gaps: bool = False) -> CTVolume:
    """The CT series held by ``files`` (the DICOM files of ``folder``); ``series`` picks one
    SeriesInstanceUID when there are several; ``allow_gaps``: missing slices (a gap a whole
    number of the series' spacings long) are read, not refused (the reformatting bridges or
    refuses them)."""
    uid, chosen = _pick_series(_image_slices(folder, files), folder, series)
    for path, ds in chosen:
        _check_slice(path, ds)
    _check_same(chosen, folder)
    thicknesses = {round(t, 3) for t in (_positive(ds, "SliceThickness") for _, ds in chosen) if t is not None}
    if len(thicknesses) > 1:
        raise DataError(f"{folder}: slices of different thickness ({', '.join(f'{t:g}' for t in sorted(thicknesses))} "
                        f"mm SliceThickness) in one series: two reconstructions mixed; export one of them")
    normal = slice_normal(chosen[0][1].ImageOrientationPatient)
    positions = np.array([float(np.dot(np.array(ds.ImagePositionPatient, float), normal)) for _, ds in chosen])
    order = np.argsort(positions, kind="stable")
    chosen = [chosen[i] for i in order]
    positions = positions[order]
    paths = [path for path, _ in chosen]
    _check_spacing(positions, paths, folder, allow_gaps)
    hu, nan_voxels = hounsfield_volume(np.stack([_hu(path, ds) for path, ds in chosen]), str(folder), "dicom")
    slice_numbers = _slice_numbers([ds for _, ds in chosen])
    first = chosen[0][1]
    # Each slice's origin relative to the first, in the slice plane: (down the rows, along the
    # columns) = the column and row direction cosines. Non-zero and growing under gantry tilt.
    iop = np.array(first.ImageOrientationPatient, float)
    origins = np.array([np.array(ds.ImagePositionPatient, float) for _, ds in chosen])
    offsets = np.stack([(origins - origins[0]) @ iop[3:], (origins - origins[0]) @ iop[:3]], axis=1)
    return CTVolume(
        source=str(folder), name=folder.resolve().name, hu=hu, positions=positions.astype(np.float64),
        slice_numbers=slice_numbers, files=[str(p) for p in paths], series_uid=uid or None,
        spacing_mm=_pixel_spacing(first), slice_thickness_mm=_positive(first, "SliceThickness"), nan_voxels=nan_voxels,
        in_plane_offsets_mm=offsets, warnings=tuple(series_warnings(first)),
    )  # fmt: skip


def _image_slices(folder: Path, files: list[Path]) -> list[tuple[Path, Dataset]]:
    """``(path, dataset)`` of each of ``files`` that holds image data (not DICOMDIR, reports,
    presentation states); a corrupt file, or none with an image, is refused in one line."""
    slices: list[tuple[Path, Dataset]] = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:  # a truncated or damaged file: pydicom raises many types
            raise DataError(
                f"{path}: corrupt DICOM file ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                f"re-export it or remove it from the folder"
            ) from None
        if "PixelData" in ds:  # not DICOMDIR, reports, presentation states
            slices.append((path, ds))
    if not slices:
        raise DataError(f"{folder}: DICOM files but none with image data (a DICOMDIR or reports only?); {WHAT_TO_GIVE}")
    return slices


def _pick_series(slices: list[tuple[Path, Dataset]], folder: Path,
                 series: str | None) -> tuple[str, list[tuple[Path, Dataset]]]:
    """``(SeriesInstanceUID, its slices)``: ``series`` when given, else the only series; several
    without a choice, or a ``series`` not there, are refused in one line listing them."""
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for path, ds in slices:
        groups.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append((path, ds))
    listing = "; ".join(_describe(uid, group) for uid, group in sorted(groups.items()))
    if series is not None:
        if series not in groups:
            raise DataError(f"{folder}: no series {series}; it holds {len(groups)}: {listing}")
        uid = series
    elif len(groups) > 1:
        raise DataError(
            f"{folder}: {len(groups)} DICOM series in one folder: {listing}; choose one with --series UID "
            f"(ichseq predict) or series: UID in the predict config"
        )
    else:
        uid = next(iter(groups))
    return uid, groups[uid]


def _slice_numbers(datasets: list[Dataset]) -> np.ndarray:
    """The slices' InstanceNumbers (int64, in the given order), or 1..S when some are missing
    or repeated (the geometric order)."""
    numbers = [ds.get("InstanceNumber") for ds in datasets]
    if all(n is not None and n != "" for n in numbers) and len({int(n) for n in numbers}) == len(numbers):
        return np.array([int(n) for n in numbers], dtype=np.int64)
    return np.arange(1, len(datasets) + 1, dtype=np.int64)


# --------------------------------------------------------------------------- writing


def _ds(values) -> list[str]:
    return [format_number_as_ds(float(v)) for v in np.atleast_1d(values)]


def _encode(hu: np.ndarray) -> tuple[np.ndarray, str, str]:
    """``(stored uint16/int16, RescaleSlope, RescaleIntercept)`` for HU values: exact for whole
    numbers (stored = HU + 1024, as scanners do); else 65536 steps over the range."""
    lo, hi = float(hu.min()), float(hu.max())
    if np.array_equal(hu, np.rint(hu)):
        if lo >= -1024 and hi + 1024 <= 65535:
            return (hu + 1024).astype(np.uint16), "1", "-1024"
        if lo >= -32768 and hi <= 32767:
            return hu.astype(np.int16), "1", "0"
    intercept = float(np.floor(lo))
    slope_text = format_number_as_ds(max((hi - intercept) / 65535, 1e-6) * (1 + 1e-6))
    slope = float(slope_text)
    stored = np.clip(np.rint((hu.astype(np.float64) - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, slope_text, format_number_as_ds(intercept)


def _geometry(affine: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, list[float], float]:
    """``(orientation (6,), normal, PixelSpacing [between rows, between columns], slice spacing)``."""
    column_step = _RAS_TO_LPS @ affine[:3, 0]  # one column to the right: NIfTI axis 0
    row_step = _RAS_TO_LPS @ affine[:3, 1]  # one row down: NIfTI axis 1
    dx, dy = float(np.linalg.norm(column_step)), float(np.linalg.norm(row_step))
    if dx == 0 or dy == 0:
        raise DataError(f"{where}: its affine has a zero pixel size; fix the NIfTI header")
    row_cosines, column_cosines = column_step / dx, row_step / dy
    if abs(float(np.dot(row_cosines, column_cosines))) > ORIENTATION_TOLERANCE:
        raise DataError(f"{where}: its affine is sheared (rows not perpendicular to columns), which DICOM cannot describe")
    normal = np.cross(row_cosines, column_cosines)
    spacing = abs(float(np.dot(_RAS_TO_LPS @ affine[:3, 2], normal)))
    if spacing < 1e-6:
        raise DataError(f"{where}: its affine puts every slice in the same plane; fix the NIfTI header")
    return np.concatenate([row_cosines, column_cosines]), normal, [dy, dx], spacing


def _compress_file(path: Path, uid) -> None:
    """Re-encode a written (uncompressed) DICOM file in place in the lossless syntax ``uid``."""
    try:
        import gdcm
    except ImportError:
        raise DataError(f"--compression: writing {uid.name} needs python-gdcm; pip install python-gdcm==3.2.6 "
                        "(requirements.txt)") from None
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():  # pragma: no cover - a file just written by pydicom
        raise DataError(f"{path}: GDCM cannot read the file it was to compress")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(str(uid))))
    change.SetInput(reader.GetImage())
    if not change.Change():  # pragma: no cover - lossless syntaxes of 16-bit monochrome data
        raise DataError(f"{path}: GDCM could not encode it as {uid.name}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(path))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise OSError(f"{path}: GDCM could not write the compressed file")


def write_dicom_series(
    values: np.ndarray, affine: np.ndarray, folder: Path, *, name: str, uid_seed: str, description: str,
    compression: str = "none", file_names: Sequence[str] | None = None,
    tags: Mapping[str, object] | Callable[[int], Mapping[str, object]] | None = None,
) -> list[Path]:
    """Write a NIfTI volume ``(cols, rows, S)`` in HU as one CT series into ``folder`` (one file
    per slice, in the file's slice order, InstanceNumber = 1-based NIfTI index), uncompressed
    or in a lossless syntax of ``COMPRESSIONS``.

    ``file_names``: one per slice (default ``0001.dcm`` ...). ``tags``: DICOM keyword -> value
    set on every slice after the defaults (or a function: slice index -> such a mapping), e.g.
    ConvolutionKernel, or a StudyInstanceUID that several series share; None removes the
    element; a SOPInstanceUID given there is the file meta's too (the format twins,
    :mod:`ichseq.data.format_twins`)."""
    if compression not in COMPRESSIONS:
        raise DataError(f"--compression {compression}: not one of {', '.join(COMPRESSIONS)}")
    orientation, normal, pixel_spacing, spacing = _geometry(affine, description)
    stack = display_slices(values)
    if file_names is not None and len(file_names) != len(stack):
        raise ValueError(f"{len(file_names)} file names for {len(stack)} slices")
    stored, slope, intercept = _encode(stack)
    study_uid = generate_uid(entropy_srcs=[uid_seed, name, "study"])
    series_uid = generate_uid(entropy_srcs=[uid_seed, name, "series"])
    frame_uid = generate_uid(entropy_srcs=[uid_seed, name, "frame of reference"])
    folder.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(len(stack))))
    written = []
    series = {"name": name, "description": description, "spacing": spacing, "orientation": orientation,
              "normal": normal, "pixel_spacing": pixel_spacing, "slope": slope, "intercept": intercept,
              "study_uid": study_uid, "series_uid": series_uid, "frame_uid": frame_uid}
    for k in range(len(stack)):
        position = _RAS_TO_LPS @ (affine @ np.array([0.0, 0.0, k, 1.0]))[:3]
        sop_uid = generate_uid(entropy_srcs=[uid_seed, name, "slice", str(k)])
        ds = _slice_dataset(stored[k], k, position, sop_uid, series)
        meta = ds.file_meta
        for keyword, value in ((tags(k) if callable(tags) else tags) or {}).items():
            if value is not None:
                setattr(ds, keyword, value)
            elif keyword in ds:
                delattr(ds, keyword)
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / (file_names[k] if file_names is not None else f"{k + 1:0{width}d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        if compression != "none":
            _compress_file(path, COMPRESSIONS[compression])
        written.append(path)
    return written


def _slice_dataset(stored: np.ndarray, k: int, position: np.ndarray, sop_uid: str, series: dict) -> Dataset:
    """Slice ``k`` (0-based) of a written series as a CT image dataset with its file meta:
    ``stored`` its pixels (uint16/int16), ``position`` its origin (LPS mm), ``series`` what
    every slice of the series shares (:func:`write_dicom_series`' names, UIDs, geometry and
    rescale)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.StudyTime = ds.AccessionNumber = ds.ReferringPhysicianName = ""
    ds.Modality = "CT"
    ds.Manufacturer = "ichseq to-dicom"
    ds.SeriesDescription = series["description"][-64:]
    ds.PatientName = series["name"]
    ds.PatientID = series["name"]
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.KVP = ""
    ds.SliceThickness = _ds(series["spacing"])[0]
    ds.SpacingBetweenSlices = _ds(series["spacing"])[0]
    ds.StudyInstanceUID = series["study_uid"]
    ds.SeriesInstanceUID = series["series_uid"]
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = _ds(position)
    ds.ImageOrientationPatient = _ds(np.round(series["orientation"], 12) + 0.0)
    ds.FrameOfReferenceUID = series["frame_uid"]
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(float(np.dot(position, series["normal"])))[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[0], stored.shape[1]
    ds.PixelSpacing = _ds(series["pixel_spacing"])
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.WindowCenter = _ds(BRAIN_WINDOW_LEVEL)[0]
    ds.WindowWidth = _ds(BRAIN_WINDOW_WIDTH)[0]
    ds.RescaleIntercept = series["intercept"]
    ds.RescaleSlope = series["slope"]
    ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes()
    return ds


def _nifti_sources(src: Path) -> list[tuple[str, Callable[[], bytes], str]]:
    """``(scan name, read bytes, where)`` of every scan to convert; one for a NIfTI file."""
    if src.is_file() and is_nifti(src):
        return [(nifti_name(src), src.read_bytes, str(src))]
    if src.is_file() and not zipfile.is_zipfile(src):
        raise DataError(f"{src}: neither a NIfTI file nor a zip archive; {WHAT_TO_CONVERT}")
    files = DatasetFiles(src)  # a v1.3.1 dataset folder or zip, at any depth
    if files.layout != NIFTI_LAYOUT:
        raise DataError(f"{src}: a v1.0.0 (JPG) dataset; to-dicom converts v1.3.1 NIfTI scans in HU")
    rels = [n for n in files.names if n.startswith(f"{NIFTI_SCAN_DIR}/") and n.count("/") == 1 and is_nifti(Path(n))]
    if not rels:
        raise DataError(f"{files.where(NIFTI_SCAN_DIR)}: no .nii scans; {WHAT_TO_CONVERT}")
    return [(nifti_name(Path(rel)), lambda rel=rel: files.read(rel), files.where(rel)) for rel in rels]


def export_dicom(src: str | Path, dest: str | Path, log=print, compression: str = "none") -> Path:
    """Write ``src`` (a CT-ICH v1.3.1 dataset folder/zip: every ``ct_scans/NNN.nii`` ->
    ``dest/NNN/``; or one ``.nii``/``.nii.gz`` file -> ``dest``) as DICOM CT series,
    uncompressed or in a lossless syntax of ``COMPRESSIONS`` (the same HU either way).

    ``dest`` must not exist or be empty; it appears only when every series is written. NaN
    voxels (no data) are written as -1024 HU, as :func:`ichseq.data.volumes.read_volume`
    reads them; infinite voxels and mostly-NaN scans are refused.
    """
    src, dest = Path(src), Path(dest)
    if compression not in COMPRESSIONS:
        raise DataError(f"--compression {compression}: not one of {', '.join(COMPRESSIONS)}")
    refuse_overlap(dest, [src], "DEST")  # DEST inside SRC would be read back as more scans; around it, replace it
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest}: already exists and is not empty; remove it or choose another destination")
    if not src.exists():
        raise DataError(f"{src}: does not exist; {WHAT_TO_CONVERT}")
    sources = _nifti_sources(src)
    single = src.is_file() and is_nifti(src)
    n_slices = n_nan = 0
    with atomic_dir(dest, owned=lambda _folder: False, owned_by="to-dicom writes only into a new or empty folder") as tmp:
        for name, read, where in sources:
            raw = read()
            values, affine = load_nifti(raw, where)
            values, nan_voxels = hounsfield_volume(values, where, "nifti")
            n_nan += nan_voxels
            # The content decides the UIDs, so a rerun (or another copy of the file) writes the same ones.
            seed = hashlib.sha256(raw).hexdigest()
            folder = tmp if single else tmp / name
            n_slices += len(write_dicom_series(values, affine, folder, name=name, uid_seed=seed,
                                               description=f"ichseq to-dicom of {Path(where).name}",
                                               compression=compression))
    padding = f"; {n_nan} NaN voxels (no data) written as {NO_DATA_HU:g} HU" if n_nan else ""
    syntax = "" if compression == "none" else f", {COMPRESSIONS[compression].name}"
    log(f"DICOM written to {dest}: {len(sources)} series, {n_slices} slices{syntax}{padding}")
    return dest
