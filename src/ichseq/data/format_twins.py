"""Format twins (issue 26.5): a CT-ICH (v1.3.1 NIfTI) twin written in the layouts of CQ500 and
RSNA 2019 (:mod:`ichseq.data.public_layouts`), so that every reader of those datasets is tested
end to end without the real data (``ichseq synthetic OUT --layout cq500|rsna``).

Both take an already written NIfTI dataset (the synthetic twin, or any v1.3.1 folder) and
its labels (``hemorrhage_diagnosis_raw_ct.csv``); the DICOM files are written by
:func:`ichseq.data.dicom.write_dicom_series`. The same input and seed give byte-identical
files: UIDs and ids come from the seed and the patient, nothing from the clock, zip entries are
dated 1980-01-01.

**CQ500** (:func:`write_cq500`)::

    CQ500-CT-<n>.zip  (or, with zipped=False, its folder:)
    CQ500CT<n> CQ500CT<n>/Unknown Study/CT <description>/CT000000.dcm ...
    reads.csv

``n`` is the twin's own patient number (049.nii -> ``CQ500-CT-49``), so the numbering has gaps
as the real one has. One study per patient (StudyInstanceUID, FrameOfReferenceUID shared by its
series), JPEG lossless (1.2.840.10008.1.2.4.70) as the real files, PatientID and PatientName
``CQ500CT<n>``, files ``CT000000.dcm`` ... numbered from 0 in slice order (inferior first).
Series, numbered 1, 2, 3:

1. ``5mm`` or ``PLAIN`` (chosen per patient from the seed): the twin's own slices, kernel STANDARD.
2. ``PLAIN THIN`` (``thin_series``): 0.625 mm slices *derived* from the twin (no second
   generation): :func:`thin_slices` cuts every slice of spacing ``d`` into ``round(d / 0.625)``
   slices spanning the same extent, HU linearly interpolated along the head axis between the
   slice centres (held at the first and last), rounded; kernel STANDARD.
3. ``BONE`` (``bone_series``): the thin series (the twin's slices without ``thin_series``)
   through a sharp kernel, :func:`bone_kernel`: an in-plane unsharp mask (amount 1, Gaussian
   sigma 1 pixel), rounded and clipped to -1024..3071 HU; ConvolutionKernel BONE.

``tilt_deg``: every series is declared acquired at that gantry tilt (GantryDetectorTilt, always
written; ImagePositionPatient moves ``tan(tilt) x slice spacing`` down the rows per slice, the
pixels stay the twin's), so un-tilting recovers the twin's stack.

``reads.csv`` has :func:`ichseq.data.public_layouts.cq500_columns` for every patient: Category
``B1``/``B2``/``CQ500`` drawn from the seed, and three readers who read the truth
(:func:`twin_findings`) with seeded mistakes (:func:`cq500_reads`), so that the readers disagree
on some patients and their majority misses the truth on a few.

**RSNA 2019** (:func:`write_rsna`)::

    stage_2_train/ID_<9 hex>.dcm    one slice per file, uncompressed
    stage_2_train.csv               ID,Label: per slice six rows ID_<hex>_<subtype>

Ids are seeded random hex, unique: the file stem is the SOPInstanceUID, PatientID ``ID_<8 hex>``,
Study- and SeriesInstanceUID ``ID_<10 hex>`` per scan (not valid DICOM UIDs, as in the real
files: pydicom warns about them unless its validation is off). Each file carries only the
elements the real files carry (no InstanceNumber, SliceThickness, SeriesDescription, SOPClassUID:
the order is the ImagePositionPatient's). The label rows follow the slices in a seeded random
order, each slice's six in the real order (epidural, intraparenchymal, intraventricular,
subarachnoid, subdural, any), subtypes from the twin's columns (``RSNA_TO_SUBTYPE``), ``any``
their union.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.uid import generate_uid
from pydicom.valuerep import format_number_as_ds
from scipy.ndimage import gaussian_filter

from ..atomic import atomic_dir
from ..errors import DataError
from ..paths import refuse_overlap
from .dicom import write_dicom_series
from .layout import NIFTI_CSV, NIFTI_MASK_DIR, NIFTI_SCAN_DIR, SUBTYPES, patient_file
from .public_layouts import (
    CQ500_FINDINGS,
    CQ500_LAYOUT,
    CQ500_READS,
    CQ500_READERS,
    CQ500_SERIES_PREFIX,
    CQ500_STUDY_DIR,
    CQ500_SUBTYPES,
    RSNA_LABEL_COLUMNS,
    RSNA_LABELS,
    RSNA_LAYOUT,
    RSNA_SUBTYPES,
    RSNA_TO_SUBTYPE,
    RSNA_TRAIN_DIR,
    cq500_columns,
    cq500_name,
    cq500_patient_dir,
)
from .readers import hounsfield_volume, load_nifti, read_diagnosis_csv
from .synthetic import SYNTHETIC_MARKER

THIN_MM = 0.625  # CQ500's thin series
HU_RANGE = (-1024.0, 3071.0)
#: Series descriptions (the folder is ``CT <description>``); the 5 mm one is drawn per patient.
THICK_DESCRIPTIONS = ("5mm", "PLAIN")
THIN_DESCRIPTION = "PLAIN THIN"
BONE_DESCRIPTION = "BONE"
SOFT_KERNEL, BONE_KERNEL = "STANDARD", "BONE"
#: reads.csv's Category, drawn per patient with these weights.
CATEGORIES = {"B1": 0.4, "B2": 0.45, "CQ500": 0.15}
#: A reader's mistakes, per patient: missing a bleed (all bleed findings 0), naming one subtype
#: of a bleed seen as another, calling a bleed on a scan without one.
MISS, CONFUSE, FALSE_CALL = 0.1, 0.1, 0.04
#: Blood volumes (mL, from the masks) from which the truth has mass effect and midline shift.
MASS_EFFECT_ML, MIDLINE_SHIFT_ML = 15.0, 30.0
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
#: What a real RSNA file holds besides the pixels; the writer's other elements are removed.
RSNA_ELEMENTS = ("SOPInstanceUID", "Modality", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "StudyID",
                 "ImagePositionPatient", "ImageOrientationPatient", "SamplesPerPixel", "PhotometricInterpretation",
                 "Rows", "Columns", "PixelSpacing", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                 "WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope", "PixelData")
_WRITER_ELEMENTS = ("SpecificCharacterSet", "ImageType", "SOPClassUID", "StudyDate", "StudyTime", "AccessionNumber",
                    "ReferringPhysicianName", "Manufacturer", "SeriesDescription", "PatientName", "PatientBirthDate",
                    "PatientSex", "KVP", "SliceThickness", "SpacingBetweenSlices", "SeriesNumber", "InstanceNumber",
                    "FrameOfReferenceUID", "PositionReferenceIndicator", "SliceLocation", "RescaleType")
_BLEED_FINDINGS = ("ICH", *CQ500_SUBTYPES, "BleedLocation-Left", "BleedLocation-Right", "ChronicBleed")
_QUIET = {"log": lambda _msg: None}


# --------------------------------------------------------------------------- the NIfTI twin


class _Twin:
    """The NIfTI dataset read: patients, labels, scans and masks (one at a time)."""

    def __init__(self, src: Path):
        self.src = src
        csv_path = src / NIFTI_CSV
        if not src.is_dir() or not csv_path.is_file() or not (src / NIFTI_SCAN_DIR).is_dir():
            raise DataError(f"{src}: not a CT-ICH v1.3.1 dataset folder ({NIFTI_SCAN_DIR}/ and {NIFTI_CSV}); "
                            f"write one with `ichseq synthetic`")
        self.labels = read_diagnosis_csv(csv_path.read_bytes(), str(csv_path))
        self.patients = sorted(int(p) for p in self.labels.PatientNumber.unique())
        marker = src / SYNTHETIC_MARKER
        self.marker = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None

    def volume(self, folder: str, patient: int) -> tuple[np.ndarray, np.ndarray]:
        path = self.src / folder / patient_file(patient)
        if not path.is_file():
            raise DataError(f"{path}: missing, though {NIFTI_CSV} lists patient {patient}")
        values, affine = load_nifti(path.read_bytes(), str(path))
        return values, affine

    def scan(self, patient: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """``(HU (cols, rows, S), affine, the patient's label rows by SliceNumber)``."""
        values, affine = self.volume(NIFTI_SCAN_DIR, patient)
        values, _ = hounsfield_volume(values, str(self.src / NIFTI_SCAN_DIR / patient_file(patient)), "nifti")
        rows = self.labels[self.labels.PatientNumber == patient].sort_values("SliceNumber")
        if len(rows) != values.shape[2] or rows.SliceNumber.tolist() != list(range(1, values.shape[2] + 1)):
            raise DataError(f"{self.src / NIFTI_CSV}: patient {patient} has {len(rows)} label rows for "
                            f"{values.shape[2]} slices (SliceNumber 1..{values.shape[2]} expected)")
        return values, affine, rows

    def mask(self, patient: int) -> np.ndarray | None:
        if not (self.src / NIFTI_MASK_DIR / patient_file(patient)).is_file():
            return None
        return self.volume(NIFTI_MASK_DIR, patient)[0] > 0

    def marker_for(self, layout: str, **options) -> str | None:
        """The source's synthetic marker with the layout written: a model trained on the twin
        in this layout still says it was synthetic. None for a dataset without one."""
        if self.marker is None:
            return None
        return json.dumps({**self.marker, "layout": layout, "format_twin": options}, indent=2) + "\n"


def _start(src, out) -> tuple[Path, Path, _Twin]:
    src, out = Path(src), Path(out)
    refuse_overlap(out, [src], "OUT")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not empty; remove it or choose another destination")
    return src, out, _Twin(src)


def _owned(_folder: Path) -> bool:
    return False


_OWNED_BY = "the format twins are written only into a new or empty folder"


# --------------------------------------------------------------------------- derived series


def thin_slices(values: np.ndarray, affine: np.ndarray, thin_mm: float = THIN_MM) -> tuple[np.ndarray, np.ndarray]:
    """``(values (cols, rows, S * f), affine)``: each slice of ``values`` (cols, rows, S) cut into
    ``f = round(spacing / thin_mm)`` slices spanning the same extent along the slice axis, HU
    linearly interpolated between the slice centres (held beyond the first and last), rounded."""
    step = float(np.linalg.norm(affine[:3, 2]))
    factor = max(1, int(round(step / thin_mm)))
    n = values.shape[2]
    # Thin slice j's centre in thick-slice index units: the first sits half a thin slice inside
    # the first thick slice's extent.
    t = (np.arange(n * factor) + 0.5) / factor - 0.5
    t = np.clip(t, 0.0, n - 1)
    lo = np.floor(t).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (t - lo).astype(np.float32)
    thin = values[:, :, lo] * (1 - w) + values[:, :, hi] * w
    thin_affine = affine.copy()
    thin_affine[:3, 2] = affine[:3, 2] / factor
    thin_affine[:3, 3] = (affine @ np.array([0.0, 0.0, -0.5 + 0.5 / factor, 1.0]))[:3]
    return np.clip(np.rint(thin), *HU_RANGE).astype(np.float32), thin_affine


def bone_kernel(values: np.ndarray) -> np.ndarray:
    """A sharp (bone) reconstruction of ``values`` (cols, rows, S): an in-plane unsharp mask,
    ``2 x HU - Gaussian(HU, sigma 1 pixel)``, rounded and clipped to -1024..3071 HU."""
    blurred = gaussian_filter(values.astype(np.float64), sigma=(1.0, 1.0, 0.0), mode="nearest")
    return np.clip(np.rint(2 * values - blurred), *HU_RANGE).astype(np.float32)


def tilted(affine: np.ndarray, tilt_deg: float) -> np.ndarray:
    """``affine`` with every slice moved ``tan(tilt) x slice spacing`` further down the rows than
    the one before (a gantry-tilted stack as scanners store it)."""
    if not tilt_deg:
        return affine
    out = affine.copy()
    down = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    out[:3, 2] = affine[:3, 2] + down * np.tan(np.radians(tilt_deg)) * np.linalg.norm(affine[:3, 2])
    return out


# --------------------------------------------------------------------------- CQ500 reads


def twin_findings(rows: pd.DataFrame, mask: np.ndarray | None, affine: np.ndarray) -> dict[str, int]:
    """The truth in CQ500's findings (``CQ500_FINDINGS`` -> 0/1) of one patient's label rows,
    mask (cols, rows, S) and affine: subtypes and ICH from the labels; left/right from the
    mask's world x (RAS: x > 0 is the patient's right); no chronic bleed; Fracture and
    CalvarialFracture from Fracture_Yes_No, no other fracture; mass effect and midline shift
    from the blood volume (``MASS_EFFECT_ML``, ``MIDLINE_SHIFT_ML``)."""
    truth = {finding: 0 for finding in CQ500_FINDINGS}
    for ours, theirs in zip(SUBTYPES, CQ500_SUBTYPES):
        truth[theirs] = int(rows[ours].max())
    truth["ICH"] = int(any(truth[s] for s in CQ500_SUBTYPES))
    fracture = int(rows["Fracture_Yes_No"].max()) if "Fracture_Yes_No" in rows else 0
    truth["Fracture"] = truth["CalvarialFracture"] = fracture
    if truth["ICH"] and mask is not None and mask.any():
        voxels = np.argwhere(mask)
        x = voxels @ affine[0, :3] + affine[0, 3]
        truth["BleedLocation-Right"] = int((x > 0).any())
        truth["BleedLocation-Left"] = int((x < 0).any())
        ml = len(voxels) * abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
        truth["MassEffect"] = int(ml >= MASS_EFFECT_ML)
        truth["MidlineShift"] = int(ml >= MIDLINE_SHIFT_ML)
    elif truth["ICH"]:  # no mask: a side is not known, say right
        truth["BleedLocation-Right"] = 1
    return truth


def _read(truth: Mapping[str, int], rng: np.random.Generator) -> dict[str, int]:
    """One reader's findings: the truth with the seeded mistakes of ``MISS``, ``CONFUSE`` and
    ``FALSE_CALL``; a reader's ICH is always the union of their subtypes."""
    read = {finding: int(truth[finding]) for finding in CQ500_FINDINGS}
    draw = rng.random(3)
    if truth["ICH"]:
        if draw[0] < MISS:
            read.update({finding: 0 for finding in _BLEED_FINDINGS})
        elif draw[1] < CONFUSE:
            present = [s for s in CQ500_SUBTYPES if read[s]]
            absent = [s for s in CQ500_SUBTYPES if not read[s]]
            if absent:
                read[present[rng.integers(len(present))]] = 0
                read[absent[rng.integers(len(absent))]] = 1
    elif draw[2] < FALSE_CALL:
        read["ICH"] = 1
        read[CQ500_SUBTYPES[rng.integers(len(CQ500_SUBTYPES))]] = 1
        read["BleedLocation-Left" if rng.random() < 0.5 else "BleedLocation-Right"] = 1
    return read


def cq500_reads(truth: Mapping[int, Mapping[str, int]], seed: int = 0) -> list[dict[str, object]]:
    """reads.csv's rows (``cq500_columns()`` -> value) for patients ``{number: twin_findings}``,
    in patient order; each patient's Category and reads are drawn from ``(seed, patient)``
    alone, so they do not depend on the other patients."""
    out = []
    for patient in sorted(truth):
        rng = np.random.default_rng([int(seed), 0xC0500, int(patient)])
        weights = np.array(list(CATEGORIES.values()))
        row: dict[str, object] = {"name": cq500_name(patient),
                                  "Category": list(CATEGORIES)[rng.choice(len(CATEGORIES), p=weights / weights.sum())]}
        for reader in CQ500_READERS:
            for finding, value in _read(truth[patient], rng).items():
                row[f"{reader}:{finding}"] = value
        out.append(row)
    return out


# --------------------------------------------------------------------------- CQ500


def _zip_folder(folder: Path, zip_path: Path) -> None:
    """``folder`` (with its own name as the top entry) into ``zip_path``: entries sorted, dated
    1980-01-01, mode 0644, so the same files give the same bytes."""
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(folder.parent).as_posix(), date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=["ichseq format twin", *map(str, parts)])


def write_cq500(nifti_dataset_dir: str | Path, out: str | Path, *, zipped: bool = True, thin_series: bool = True,
                bone_series: bool = True, tilt_deg: float = 0.0, seed: int = 0, log=print) -> dict:
    """Write the NIfTI dataset ``nifti_dataset_dir`` in CQ500's layout into ``out`` (new or
    empty; it appears only when complete): per patient a zip (``zipped``) or folder with the
    series of the module's description, and reads.csv. Returns a summary."""
    if not abs(float(tilt_deg)) < 30:
        raise DataError(f"tilt_deg {tilt_deg}: a gantry tilt must be within +-30 degrees")
    src, out, twin = _start(nifti_dataset_dir, out)
    truth: dict[int, dict[str, int]] = {}
    n_files = 0
    series_names: set[str] = set()
    with atomic_dir(out, owned=_owned, owned_by=_OWNED_BY) as tmp:
        for patient in twin.patients:
            values, affine, rows = twin.scan(patient)
            truth[patient] = twin_findings(rows, twin.mask(patient), affine)
            affine = tilted(affine, tilt_deg)
            rng = np.random.default_rng([int(seed), 0xC05E, patient])
            series = [(THICK_DESCRIPTIONS[rng.integers(len(THICK_DESCRIPTIONS))], values, affine, SOFT_KERNEL)]
            thin = thin_slices(values, affine) if thin_series else None
            if thin is not None:
                series.append((THIN_DESCRIPTION, *thin, SOFT_KERNEL))
            if bone_series:
                base, base_affine = thin if thin is not None else (values, affine)
                series.append((BONE_DESCRIPTION, bone_kernel(base), base_affine, BONE_KERNEL))
            top = tmp / cq500_patient_dir(patient)
            patient_id = cq500_patient_dir(patient).split(" ")[0]
            common = {"StudyInstanceUID": _uid(seed, patient, "study"),
                      "FrameOfReferenceUID": _uid(seed, patient, "frame of reference"),
                      "PatientID": patient_id, "PatientName": patient_id, "Manufacturer": "ichseq synthetic",
                      "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
                      "GantryDetectorTilt": format_number_as_ds(float(tilt_deg))}
            for number, (description, data, data_affine, kernel) in enumerate(series, 1):
                folder = top / CQ500_STUDY_DIR / f"{CQ500_SERIES_PREFIX}{description}"
                n = data.shape[2]
                n_files += len(write_dicom_series(
                    data, data_affine, folder, name=patient_id, uid_seed=f"{seed} {description}",
                    description=description, compression="jpeg-lossless",
                    file_names=[f"CT{k:06d}.dcm" for k in range(n)],
                    tags={**common, "SeriesNumber": number, "ConvolutionKernel": kernel}))
                series_names.add(description)
            if zipped:
                _zip_folder(top, tmp / f"{cq500_name(patient)}.zip")
                shutil.rmtree(top)
        with open(tmp / CQ500_READS, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(cq500_columns()), lineterminator="\n")
            writer.writeheader()
            writer.writerows(cq500_reads(truth, seed))
        marker = twin.marker_for(CQ500_LAYOUT, seed=seed, zipped=zipped, thin_series=thin_series,
                                 bone_series=bone_series, tilt_deg=tilt_deg)
        if marker:
            (tmp / SYNTHETIC_MARKER).write_text(marker, encoding="utf-8")
    positives = sum(t["ICH"] for t in truth.values())
    summary = {"layout": CQ500_LAYOUT, "patients": len(truth), "positive_patients": positives, "files": n_files,
               "series": sorted(series_names), "zipped": zipped}
    log(f"CQ500 twin written to {out}: {len(truth)} patients ({positives} with hemorrhage), {n_files} DICOM files "
        f"(JPEG lossless; series {', '.join(sorted(series_names))}), {'zips' if zipped else 'folders'} and "
        f"{CQ500_READS} of three readers")
    return summary


# --------------------------------------------------------------------------- RSNA


class _HexIds:
    """Seeded random lowercase hex ids, never the same twice."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng([int(seed), 0x25A])
        self.used: set[str] = set()

    def __call__(self, digits: int) -> str:
        while True:
            value = "ID_" + "".join("0123456789abcdef"[d] for d in self.rng.integers(0, 16, digits))
            if value not in self.used:
                self.used.add(value)
                return value


@contextmanager
def _ids_as_uids() -> Iterator[None]:
    """pydicom left quiet about RSNA's ``ID_...`` values in UI elements while they are written."""
    settings = pydicom.config.settings
    saved = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


def write_rsna(nifti_dataset_dir: str | Path, out: str | Path, *, seed: int = 0, compression: str = "none",
               log=print) -> dict:
    """Write the NIfTI dataset ``nifti_dataset_dir`` in the RSNA 2019 layout into ``out`` (new
    or empty; it appears only when complete): ``stage_2_train/ID_<hex>.dcm`` and
    ``stage_2_train.csv``, as the module describes. ``compression``: uncompressed (RSNA's own
    files are) or, for benchmarks, a lossless syntax of ``ichseq to-dicom --compression``.
    Returns a summary."""
    src, out, twin = _start(nifti_dataset_dir, out)
    ids = _HexIds(seed)
    slices: list[tuple[str, dict[str, int]]] = []  # (slice id, RSNA subtype -> 0/1)
    dropped: dict[str, object] = {keyword: None for keyword in _WRITER_ELEMENTS}
    with atomic_dir(out, owned=_owned, owned_by=_OWNED_BY) as tmp, _ids_as_uids():
        for patient in twin.patients:
            values, affine, rows = twin.scan(patient)
            patient_id, study, series = ids(8), ids(10), ids(10)
            stems = [ids(9) for _ in range(values.shape[2])]
            common = {**dropped, "PatientID": patient_id, "StudyInstanceUID": study, "SeriesInstanceUID": series}
            write_dicom_series(values, affine, tmp / RSNA_TRAIN_DIR, name=patient_id, uid_seed=f"{seed} rsna",
                               description=f"patient {patient}", compression=compression,
                               file_names=[f"{stem}.dcm" for stem in stems],
                               tags=lambda k: {**common, "SOPInstanceUID": stems[k]})
            for stem, (_, row) in zip(stems, rows.iterrows()):
                labels = {theirs: int(row[ours]) for theirs, ours in RSNA_TO_SUBTYPE.items()}
                labels["any"] = int(any(labels.values()))
                slices.append((stem, labels))
        order = np.random.default_rng([int(seed), 0x25A, 1]).permutation(len(slices))
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(RSNA_LABEL_COLUMNS)
        for i in order:
            stem, labels = slices[i]
            writer.writerows([f"{stem}_{subtype}", labels[subtype]] for subtype in RSNA_SUBTYPES)
        (tmp / RSNA_LABELS).write_text(text.getvalue(), encoding="utf-8")
        marker = twin.marker_for(RSNA_LAYOUT, seed=seed)
        if marker:
            (tmp / SYNTHETIC_MARKER).write_text(marker, encoding="utf-8")
    positives = sum(labels["any"] for _, labels in slices)
    summary = {"layout": RSNA_LAYOUT, "patients": len(twin.patients), "slices": len(slices),
               "positive_slices": positives}
    log(f"RSNA 2019 twin written to {out}: {len(twin.patients)} scans, {len(slices)} slices ({positives} with "
        f"hemorrhage) in {RSNA_TRAIN_DIR}/, {RSNA_LABELS} with {6 * len(slices)} rows")
    return summary


#: ``ichseq synthetic --layout``: name -> (what it is, the writer or None for the NIfTI twin itself).
LAYOUTS: dict[str, tuple[str, Callable | None]] = {
    "ctich": ("CT-ICH v1.3.1: ct_scans/NNN.nii, masks/NNN.nii, hemorrhage_diagnosis_raw_ct.csv", None),
    "cq500": ("CQ500: CQ500-CT-<n>.zip per patient (5 mm, 0.625 mm and bone series, JPEG-lossless DICOM) and "
              "reads.csv of three readers", write_cq500),
    "rsna": ("RSNA 2019: stage_2_train/ID_<hex>.dcm, one slice per file, and stage_2_train.csv", write_rsna),
}
