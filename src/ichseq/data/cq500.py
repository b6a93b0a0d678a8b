"""CQ500 (qure.ai, CC BY-NC-SA): reading its labels, finding its scans, choosing a series.

Labels: ``reads.csv`` (:func:`read_cq500_reads`), three radiologists' 0/1 reads per patient,
turned into one label per patient by a rule (:func:`cq500_labels`: ``majority`` = at least 2
of 3, ``any`` = at least 1, ``R1``/``R2``/``R3`` = that reader).

Scans (:func:`find_cq500_patients`): the download is one ``CQ500-CT-<n>.zip`` per patient,
holding ``CQ500CT<n> CQ500CT<n>/Unknown Study/CT <series description>/CT000001.dcm ...``.
Under ``root``, at its top level or one folder below it (a download folder inside the
folder given), a patient is any of:

* ``CQ500-CT-<n>.zip``, read in place (members are streamed, never all extracted);
* ``CQ500CT<n> CQ500CT<n>`` (or ``CQ500CT<n>``): the zip extracted into ``root``;
* ``CQ500-CT-<n>/``: the zip extracted into a folder named after it (the patient folder
  inside it, when there is one, is the location).

``root`` may also be one patient's folder itself. A patient found more than once (zipped and
extracted, or twice) is read once: an extracted folder wins over a zip (read in place, no
decompression of the archive), then the shallower path, then the first in path order; the
others are reported (:func:`cq500_inventory`'s messages).

Series (:func:`list_series`): every folder holding DICOM files, grouped by
SeriesInstanceUID, from headers only (``stop_before_pixels``). :func:`choose_series` takes
per patient the non-contrast, soft-tissue, non-localizer CT series whose slice thickness is
nearest the slab thickness (5 mm), or the series a user pinned; :func:`read_cq500_scan` reads
it as a :class:`~ichseq.data.volumes.CTVolume`, ready for
:func:`ichseq.data.reformat.reformat_volume` (a thin series is averaged into slabs there).

Every problem with an input file is a one-line :class:`~ichseq.errors.DataError` naming it;
a patient whose scan cannot be used is skipped with its reason, not a crash.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import os
import posixpath
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from ..atomic import write_csv_atomic
from ..config import config_default
from ..errors import ConfigError, DataError
from .cache_files import SERIES_CHOICE_FILE
from .cq500_discovery import RootFiles, discover_cq500, find_cq500_patients, looks_like_cq500, patient_number
from .dicom import is_contrast, is_localizer, is_sharp_kernel, kernel_name, slice_normal
from .layout import JPG_CSV, NIFTI_CSV, SUBTYPES
from .public_layouts import (
    CQ500_CATEGORY_COLUMN,
    CQ500_LAYOUT,
    CQ500_NAME,
    CQ500_NAME_COLUMN,
    CQ500_PATIENT_DIR,
    CQ500_READERS,
    CQ500_READS,
    CQ500_SERIES_PREFIX,
    CQ500_SUBTYPES,
    cq500_columns,
    cq500_name,
)
from .readers import Scan
from .reformat import SLAB_BELOW, Geometry, gap_warnings, reformat_volume
from .scan_files import is_dicom_file, visible_names
from .volumes import CTVolume, read_volume
from .windowing import BRAIN_WINDOW_LEVEL, BRAIN_WINDOW_WIDTH, brain_window

#: The defaults of the config's dataset.cq500 section (written in the schema only).
LABEL_RULE: str = config_default("dataset", "cq500", "label_rule")
SLAB_MM: float = config_default("dataset", "cq500", "slab_mm")

RULES = ("majority", "any", *CQ500_READERS)
#: CQ500 subtype -> ichseq's name (layout.SUBTYPES, in its order).
SUBTYPE_NAMES = dict(zip(CQ500_SUBTYPES, SUBTYPES))
LABEL_COLUMNS = ("label", *SUBTYPES, "fracture")
WHAT_READS = (f"it must be CQ500's {CQ500_READS} (columns {CQ500_NAME_COLUMN}, {CQ500_CATEGORY_COLUMN}, "
              f"R1:ICH ... R3:MidlineShift, values 0/1)")
SERIES_COLUMNS = ("patient", "location", "folder", "description", "series_description", "series_uid", "files",
                  "modality", "thickness_mm", "spacing_mm", "kernel", "sharp", "contrast", "localizer", "problem")
CHOICE_COLUMNS = ("location", "folder", "description", "series_uid", "thickness_mm", "spacing_mm", "slices",
                  "reformat", "reason")
_FIRST = 5  # names listed in a message before "..."


def _names(patients, first: int = _FIRST) -> str:
    patients = list(patients)
    shown = ", ".join(cq500_name(p) for p in patients[:first])
    return shown + (f", ... ({len(patients) - first} more)" if len(patients) > first else "")


# --------------------------------------------------------------------------- reads.csv


def read_cq500_reads(path_or_bytes: str | Path | bytes, where: str | None = None) -> pd.DataFrame:
    """CQ500's ``reads.csv`` (a path, or its bytes with ``where`` naming it in messages):
    one row per patient, indexed by the patient number (``CQ500-CT-12`` -> 12), with
    ``name``, ``Category`` and every ``R<k>:<finding>`` column as 0/1 integers. Column order
    and a UTF-8 byte-order mark do not matter; missing or unknown columns, a name not
    ``CQ500-CT-<n>``, a repeated patient or a value other than 0/1 are refused in one line."""
    raw, where = _reads_bytes(path_or_bytes, where)
    try:
        df = pd.read_csv(io.BytesIO(raw), encoding="utf-8-sig", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{where}: empty; {WHAT_READS}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{where}: not a readable CSV ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                        f"{WHAT_READS}") from None
    df.columns = [str(c).strip() for c in df.columns]
    expected = cq500_columns()
    _check_reads_columns(df, expected, where)
    patients = _reads_patients(df[CQ500_NAME_COLUMN].str.strip(), where)
    out = pd.DataFrame(index=pd.Index(patients, name="patient"))
    out[CQ500_NAME_COLUMN] = [cq500_name(p) for p in patients]
    out[CQ500_CATEGORY_COLUMN] = df[CQ500_CATEGORY_COLUMN].str.strip().to_numpy()
    for column in expected[2:]:
        text = df[column].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        bad = ~values.isin([0, 1])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{where}: row {i + 2} ({cq500_name(patients[i])}), column {column}: {text.iloc[i]!r}, "
                            f"not 0 or 1; {WHAT_READS}")
        out[column] = values.astype(np.int8).to_numpy()
    return out


def _reads_bytes(path_or_bytes: str | Path | bytes, where: str | None) -> tuple[bytes, str]:
    """``(reads.csv's bytes, how messages name it)`` of a path or of the bytes themselves."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return bytes(path_or_bytes), where or CQ500_READS
    path = Path(path_or_bytes)
    where = where or str(path)
    if not path.is_file():
        raise DataError(f"{where}: {'is a folder, not a file' if path.is_dir() else 'does not exist'}; "
                        f"give CQ500's {CQ500_READS} (dataset.source cq500)")
    return path.read_bytes(), where


def _check_reads_columns(df: pd.DataFrame, expected: tuple[str, ...], where: str) -> None:
    """Refuse, in one line, reads.csv without exactly the ``expected`` columns (each once) or
    without a patient row."""
    missing = [c for c in expected if c not in df.columns]
    unknown = [c for c in df.columns if c not in expected]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing[:6])}"
                         + (f" and {len(missing) - 6} more" if len(missing) > 6 else ""))
        if unknown:
            parts.append(f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:6])}"
                         + (f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""))
        raise DataError(f"{where}: {'; '.join(parts)}; {WHAT_READS}")
    if len(df.columns) != len(set(df.columns)):
        raise DataError(f"{where}: a column appears twice; {WHAT_READS}")
    if df.empty:
        raise DataError(f"{where}: a header but no patients; {WHAT_READS}")


def _reads_patients(names: pd.Series, where: str) -> list[int]:
    """The patient number of each row's ``name`` (``CQ500-CT-<n>``); a name not of that form,
    or a patient twice, is refused in one line."""
    patients = []
    for i, name in enumerate(names):
        match = CQ500_NAME.match(name)
        if not match:
            raise DataError(f"{where}: row {i + 2}: name {name!r} is not CQ500-CT-<n>; {WHAT_READS}")
        patients.append(int(match.group(1)))
    seen: dict[int, int] = {}
    for i, patient in enumerate(patients):
        if patient in seen:
            raise DataError(f"{where}: rows {seen[patient] + 2} and {i + 2} are both {cq500_name(patient)}; "
                            f"each patient has one row in CQ500's {CQ500_READS}")
        seen[patient] = i
    return patients


def cq500_labels(reads: pd.DataFrame, rule: str = LABEL_RULE) -> pd.DataFrame:
    """Per patient (``reads``' index): ``label`` (ICH), the five subtypes under ichseq's names
    (Intraventricular, Intraparenchymal, Subarachnoid, Epidural, Subdural) and ``fracture``, each
    0/1 by ``rule``: ``majority`` (at least 2 of the 3 readers), ``any`` (at least 1), or
    ``R1``/``R2``/``R3`` (that reader alone)."""
    if rule not in RULES:
        raise ConfigError(f"cq500 label rule {rule!r}: not one of {', '.join(RULES)}")

    def finding(name: str) -> np.ndarray:
        if rule in CQ500_READERS:
            return reads[f"{rule}:{name}"].to_numpy().astype(np.int8)
        votes = sum(reads[f"{reader}:{name}"].to_numpy().astype(int) for reader in CQ500_READERS)
        return (votes >= (2 if rule == "majority" else 1)).astype(np.int8)

    out = pd.DataFrame(index=reads.index)
    out["label"] = finding("ICH")
    for cq500, ours in SUBTYPE_NAMES.items():
        out[ours] = finding(cq500)
    out["fracture"] = finding("Fracture")
    return out


# --------------------------------------------------------------------------- series


class _Source:
    """The DICOM files of one patient: a folder's, or a zip's members (streamed). Names are
    relative to the patient folder: a zip's top ``CQ500CT<n> CQ500CT<n>/`` is left out, so a
    zip and its extracted folder name their series alike."""

    def __init__(self, location: Path):
        self.location = location
        self.is_zip = location.is_file()
        self.prefix = ""
        if self.is_zip:
            try:
                self.zip = zipfile.ZipFile(location)
            except (zipfile.BadZipFile, OSError) as exc:
                raise DataError(f"{location}: not a readable zip ({type(exc).__name__}: {exc}); "
                                f"download it again") from None

    def close(self) -> None:
        if self.is_zip:
            self.zip.close()

    def files(self) -> list[str]:
        """Every file (posix path relative to the location) that is not hidden."""
        if self.is_zip:
            names = [i.filename for i in self.zip.infolist() if not i.is_dir()]
            tops = {n.split("/", 1)[0] for n in names if "/" in n}
            if len(tops) == 1 and all("/" in n for n in names) and CQ500_PATIENT_DIR.match(next(iter(tops))):
                self.prefix = next(iter(tops)) + "/"
                names = [n[len(self.prefix):] for n in names]
        else:
            names = []
            for dirpath, dirs, files in os.walk(self.location):
                dirs[:] = visible_names(dirs)
                rel = Path(dirpath).relative_to(self.location).as_posix()
                names.extend(posixpath.join(rel, n) if rel != "." else n for n in visible_names(files))
        return sorted(n for n in names if not any(p.startswith((".", "__MACOSX")) for p in n.split("/"))
                      and posixpath.basename(n).upper() != "DICOMDIR")

    def where(self, name: str) -> str:
        return f"{self.location}/{self.prefix}{name}" if self.is_zip else str(self.location / name)

    def open(self, name: str):
        return self.zip.open(self.prefix + name)

    def header(self, name: str) -> pydicom.Dataset | None:
        """The file's header, None when it is not a DICOM Part 10 file (no ``DICM`` preamble)."""
        if not self.is_zip:
            path = self.location / name
            return pydicom.dcmread(path, stop_before_pixels=True) if is_dicom_file(path) else None
        with self.open(name) as fh:
            head = fh.read(132)
            if len(head) < 132 or head[128:] != b"DICM":
                return None
            fh.seek(0)
            return pydicom.dcmread(fh, stop_before_pixels=True)


def _spacing(headers: list[pydicom.Dataset]) -> tuple[float | None, str]:
    """The median spacing (mm) of the slices along the first one's normal, and a problem, if any."""
    try:
        iop = np.array(headers[0].ImageOrientationPatient, float)
        normal = slice_normal(iop)
        positions = np.sort([float(np.dot(np.array(ds.ImagePositionPatient, float), normal)) for ds in headers])
        orientations = {tuple(np.round(np.array(ds.ImageOrientationPatient, float), 4)) for ds in headers}
    except (AttributeError, TypeError, ValueError, DataError):
        return None, "slices without a usable ImagePositionPatient/ImageOrientationPatient"
    if len(orientations) > 1:
        return None, f"slices in {len(orientations)} orientations (not one stack)"
    if len(positions) < 2:
        return None, ""
    return round(float(np.median(np.diff(positions))), 4), ""


def _thickness(ds: pydicom.Dataset) -> float | None:
    try:
        value = float(ds.get("SliceThickness"))
    except (TypeError, ValueError):
        return None
    return round(value, 4) if np.isfinite(value) and value > 0 else None


def list_series(patient_location: str | Path, patient: int | None = None) -> pd.DataFrame:
    """The series of one patient (a CQ500 zip or folder), one row each (columns
    :data:`SERIES_COLUMNS`), read from headers only: ``folder`` (relative to the patient folder,
    ``CQ500CT<n> CQ500CT<n>``, inside a zip too),
    ``description`` (the folder's name without CQ500's ``CT `` prefix; SeriesDescription where
    the folder does not name it), ``series_description`` (the DICOM tag), ``series_uid``,
    ``files``, ``thickness_mm`` (SliceThickness), ``spacing_mm`` (median spacing along the slice
    normal, from ImagePositionPatient), ``kernel``, ``sharp`` (a bone/lung kernel, as
    :func:`ichseq.data.dicom.series_warnings` judges), ``contrast`` (likewise), ``localizer``
    (any localizer image), ``problem`` (why the reader would refuse it, from the headers:
    unreadable files in its folder, mixed thickness or orientations, not CT; "" if none).
    DICOM files without an image (no Rows: reports, presentation states) are left out; a zip or
    folder without DICOM images gives an empty table."""
    location = Path(patient_location)
    if not location.exists():
        raise DataError(f"{location}: does not exist; give a CQ500-CT-<n>.zip or its extracted folder")
    patient = patient_number(location) if patient is None else patient
    groups, unreadable = _series_headers(location)
    rows = [_series_row(patient, location, folder, uid, headers, unreadable.get(folder))
            for (folder, uid), headers in sorted(groups.items())]
    for folder, bad in sorted(unreadable.items()):  # a folder with no readable DICOM at all
        if not any(f == folder for f, _ in groups):
            rows.append({"patient": patient, "location": str(location), "folder": folder,
                         "description": posixpath.basename(folder).removeprefix(CQ500_SERIES_PREFIX) or folder,
                         "series_description": "", "series_uid": "", "files": 0, "modality": "",
                         "thickness_mm": None, "spacing_mm": None, "kernel": "", "sharp": False, "contrast": False,
                         "localizer": False,
                         "problem": f"{len(bad)} unreadable file(s) ({', '.join(bad[:3])})"})
    return pd.DataFrame(rows, columns=list(SERIES_COLUMNS))


def _series_headers(location: Path) -> tuple[dict[tuple[str, str], list[pydicom.Dataset]], dict[str, list[str]]]:
    """``(headers by (folder, SeriesInstanceUID), unreadable files by folder)`` of the image
    files of a patient's zip or folder (headers only; files without an image are left out)."""
    source = _Source(location)
    groups: dict[tuple[str, str], list[pydicom.Dataset]] = {}
    unreadable: dict[str, list[str]] = {}
    try:
        for name in source.files():
            folder = posixpath.dirname(name)
            try:
                ds = source.header(name)
            except Exception as exc:  # a damaged file: pydicom and zipfile raise many types
                unreadable.setdefault(folder, []).append(f"{posixpath.basename(name)} ({type(exc).__name__})")
                continue
            if ds is None or "Rows" not in ds:  # not DICOM, or no image (a report, a presentation state)
                continue
            groups.setdefault((folder, str(ds.get("SeriesInstanceUID", "") or "")), []).append(ds)
    finally:
        source.close()
    return groups, unreadable


def _series_row(patient, location: Path, folder: str, uid: str, headers: list[pydicom.Dataset],
                unreadable: list[str] | None) -> dict:
    """One :data:`SERIES_COLUMNS` row: the series ``uid`` in ``folder`` from its ``headers``
    (``unreadable``: the folder's files that could not be read, or None)."""
    first = headers[0]
    base = posixpath.basename(folder)
    description = base[len(CQ500_SERIES_PREFIX):] if base.startswith(CQ500_SERIES_PREFIX) else ""
    series_description = str(first.get("SeriesDescription", "") or "").strip()
    localizer = any(is_localizer(ds) for ds in headers)
    axial = [ds for ds in headers if not is_localizer(ds)] or headers
    thicknesses = {t for t in (_thickness(ds) for ds in axial) if t is not None}
    spacing, problem = _spacing(axial)
    problems = [problem] if problem else []
    modalities = sorted({str(ds.get("Modality", "") or "-") for ds in headers})
    if modalities != ["CT"]:
        problems.append(f"Modality {'/'.join(modalities)}, not CT")
    if len(thicknesses) > 1:
        problems.append(f"slices of different thickness ({', '.join(f'{t:g}' for t in sorted(thicknesses))} mm)")
    if unreadable is not None:
        problems.append(f"{len(unreadable)} unreadable file(s) in its folder ({', '.join(unreadable[:3])})")
    return {
        "patient": patient, "location": str(location), "folder": folder,
        "description": description or series_description or base or "(no description)",
        "series_description": series_description, "series_uid": uid, "files": len(headers),
        "modality": "/".join(modalities),
        "thickness_mm": float(np.median(sorted(thicknesses))) if thicknesses else None,
        "spacing_mm": spacing, "kernel": kernel_name(first), "sharp": is_sharp_kernel(first),
        "contrast": is_contrast(first), "localizer": localizer, "problem": "; ".join(problems),
    }


def _mm(row) -> float | None:
    """The series' thickness for choosing: SliceThickness, else the spacing of its slices."""
    for key in ("thickness_mm", "spacing_mm"):
        value = row.get(key)
        if value is not None and not pd.isna(value):
            return float(value)
    return None


def _rejection(row) -> str:
    """Why a series is not taken by default; "" when it may be."""
    if row["problem"]:
        return row["problem"]
    if row["localizer"]:
        return "a localizer (scout) series"
    if row["contrast"]:
        return "contrast-enhanced"
    if row["sharp"]:
        return f"a sharp kernel ({row['kernel'] or 'BONE in its description'})"
    if row["files"] < 2:
        return "a single image"
    return ""


def _will_reformat(row, prefer_mm: float) -> bool:
    step = row.get("spacing_mm")
    step = _mm(row) if step is None or pd.isna(step) else float(step)
    return step is not None and step < SLAB_BELOW * prefer_mm


def _describe(row) -> str:
    mm = _mm(row)
    return f"{row['description']!r} ({'?' if mm is None else f'{mm:g}'} mm, {row['files']} slices)"


def _pin(patient, rows: pd.DataFrame, pin: str) -> int:
    """The row index of the series ``pin`` names among a patient's ``rows``."""
    pin = str(pin).strip()
    exact = rows.index[rows["series_uid"] == pin]
    if len(exact) == 0:
        text = pin.upper()
        matches = rows.index[[text in str(d).upper() or text in str(s).upper() or text in str(f).upper()
                              for d, s, f in zip(rows["description"], rows["series_description"], rows["folder"])]]
        equal = [i for i in matches if str(rows.at[i, "description"]).upper() == text]
        exact = equal if len(equal) == 1 else matches
    listing = "; ".join(f"{_describe(r)} {r['series_uid']}" for _, r in rows.iterrows())
    if len(exact) == 0:
        raise ConfigError(f"series choice for {cq500_name(patient)}: {pin!r} matches none of its series ({listing}); "
                          f"give a SeriesInstanceUID or a part of a description")
    if len(exact) > 1:
        raise ConfigError(f"series choice for {cq500_name(patient)}: {pin!r} matches {len(exact)} series "
                          f"({'; '.join(_describe(rows.loc[i]) for i in exact)}); give more of the description or "
                          f"the SeriesInstanceUID")
    return exact[0]


def _pin_key(key) -> int:
    if isinstance(key, str) and not key.strip().isdigit():
        match = CQ500_NAME.match(key.strip())
        if not match:
            raise ConfigError(f"series choice key {key!r}: not a patient number nor CQ500-CT-<n>")
        return int(match.group(1))
    return int(key)


def choose_series(series_table: pd.DataFrame, prefer_mm: float = SLAB_MM, choice: dict | None = None) -> pd.DataFrame:
    """The series to read per patient of ``series_table`` (:func:`list_series` rows, several
    patients allowed), indexed by patient, columns :data:`CHOICE_COLUMNS`.

    By default the CT series that is not contrast-enhanced, not a sharp (bone) kernel, not a
    localizer and that the reader can read (no ``problem``), whose slice thickness is nearest
    ``prefer_mm``; ties: more slices, then description order. ``reformat`` is true where its
    slices are thinner than the slabs (:data:`ichseq.data.reformat.SLAB_BELOW` x ``prefer_mm``):
    it will be averaged into ``prefer_mm`` slabs. ``choice`` (``{patient or 'CQ500-CT-<n>':
    SeriesInstanceUID or part of a description}``) pins a patient's series; a pin matching none
    or several of its series, or a localizer, is a :class:`ConfigError`; pins of patients not
    in the table are ignored. A patient with no acceptable series gets a row with an empty
    ``series_uid`` and the reason."""
    pins = {_pin_key(k): v for k, v in (choice or {}).items()}
    out = []
    for patient, rows in series_table.groupby("patient", sort=True, dropna=False):
        rows = rows.reset_index(drop=True)
        record = dict.fromkeys(CHOICE_COLUMNS, None)
        record.update(patient=patient, location=rows["location"].iloc[0], series_uid="")
        if patient in pins:
            i = _pin(patient, rows, pins[patient])
            row = rows.loc[i]
            if row["localizer"] or row["problem"]:
                raise ConfigError(f"series choice for {cq500_name(patient)}: {pins[patient]!r} is {_describe(row)}, "
                                  f"which cannot be read as a volume ({row['problem'] or 'a localizer'}); pin another")
            notes = [w for w, on in (("contrast-enhanced", row["contrast"]), ("a sharp kernel", row["sharp"])) if on]
            reason = (f"pinned by the series choice {pins[patient]!r}: {_describe(row)}"
                      + (f" ({' and '.join(notes)}: the pin wins)" if notes else ""))
        else:
            rejected = {i: _rejection(r) for i, r in rows.iterrows()}
            ok = [i for i, why in rejected.items() if not why]
            if not ok:
                record["reason"] = ("no acceptable series: " + "; ".join(f"{_describe(rows.loc[i])}: {why}"
                                                                         for i, why in rejected.items()))
                out.append(record)
                continue

            def rank(i):
                mm = _mm(rows.loc[i])
                return (abs(mm - prefer_mm) if mm is not None else np.inf, -rows.at[i, "files"],
                        str(rows.at[i, "description"]), str(rows.at[i, "series_uid"]))

            ok.sort(key=rank)
            i, row = ok[0], rows.loc[ok[0]]
            others = [f"{_describe(rows.loc[j])}: {rejected[j] or f'further from {prefer_mm:g} mm or fewer slices'}"
                      for j in rows.index if j != i]
            reason = (f"the non-contrast soft-tissue series nearest {prefer_mm:g} mm: {_describe(row)}"
                      + (f"; passed over {'; '.join(others)}" if others else ""))
        reformat = _will_reformat(row, prefer_mm)
        if reformat:
            reason += f"; thinner than {prefer_mm:g} mm: it will be reformatted (averaged) into {prefer_mm:g} mm slabs"
        record.update(folder=row["folder"], description=row["description"], series_uid=row["series_uid"],
                      thickness_mm=row["thickness_mm"], spacing_mm=row["spacing_mm"], slices=int(row["files"]),
                      reformat=reformat, reason=reason)
        out.append(record)
    table = pd.DataFrame(out, columns=["patient", *CHOICE_COLUMNS])
    return table.set_index("patient")


# --------------------------------------------------------------------------- inventory


def cq500_inventory(root: str | Path, reads_path: str | Path, rule: str = LABEL_RULE, prefer_mm: float = SLAB_MM,
                    choice: dict | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per patient on disk under ``root`` or in ``reads_path`` (sorted by patient):
    ``patient``, ``name``, ``on_disk``, ``in_reads``, ``location``, the labels by ``rule``
    (:data:`LABEL_COLUMNS`, empty where not in reads.csv), the chosen series (``folder``,
    ``description``, ``series_uid``, ``thickness_mm``, ``spacing_mm``, ``slices``,
    ``reformat``), ``use`` (on disk, labelled and a series chosen) and ``reason``; and the
    messages, one line each and each said once: reads.csv rows with no scan, scans with no
    reads (skipped), patients found twice, patients with no usable series (skipped), pins of
    patients not on disk."""
    root = Path(root)
    labels = cq500_labels(read_cq500_reads(reads_path), rule)
    on_disk, duplicates = discover_cq500(root)
    labelled = [p for p in on_disk if p in labels.index]
    tables, failures = [], {}
    for patient in labelled:
        try:
            tables.append(list_series(on_disk[patient], patient))
        except DataError as exc:
            failures[patient] = str(exc)
    series = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(SERIES_COLUMNS))
    chosen = choose_series(series, prefer_mm, choice)
    rows = []
    for patient in sorted(set(on_disk) | set(labels.index)):
        row = {"patient": patient, "name": cq500_name(patient), "on_disk": patient in on_disk,
               "in_reads": patient in labels.index, "location": str(on_disk.get(patient, ""))}
        for column in LABEL_COLUMNS:
            row[column] = labels.at[patient, column] if patient in labels.index else pd.NA
        pick = chosen.loc[patient] if patient in chosen.index else None
        picked = pick is not None and pd.notna(pick["folder"])
        for column in CHOICE_COLUMNS[1:-1]:
            row[column] = pick[column] if picked else None
        row["series_uid"] = row["series_uid"] or ""
        if not row["on_disk"]:
            reason = f"no scan under {root}"
        elif not row["in_reads"]:
            reason = f"not in {CQ500_READS}: skipped (no labels)"
        elif patient in failures:
            reason = f"{failures[patient]}: skipped"
        elif pick is None:
            reason = "no DICOM series in it: skipped"
        else:
            reason = pick["reason"] if picked else f"{pick['reason']}: skipped"
        row["use"] = bool(row["on_disk"] and row["in_reads"] and picked)
        row["reason"] = reason
        rows.append(row)
    table = pd.DataFrame(rows, columns=["patient", "name", "on_disk", "in_reads", "location", *LABEL_COLUMNS,
                                        *CHOICE_COLUMNS[1:-1], "use", "reason"])
    for column in LABEL_COLUMNS:
        table[column] = table[column].astype("Int64")
    return table, _inventory_messages(root, reads_path, labels, on_disk, duplicates, table,
                                      sorted({_pin_key(k) for k in (choice or {})} - set(chosen.index)))


def _inventory_messages(root: Path, reads_path, labels: pd.DataFrame, on_disk: dict, duplicates: dict,
                        table: pd.DataFrame, stray: list[int]) -> list[str]:
    """:func:`cq500_inventory`'s messages: reads.csv rows with no scan, scans with no reads,
    patients found twice, patients with no usable series, pins (``stray``) of patients not on disk."""
    messages = []
    absent = [p for p in labels.index.sort_values() if p not in on_disk]
    if absent:
        messages.append(f"{len(absent)} of {len(labels)} {CQ500_READS} rows have no scan under {root}: {_names(absent)}")
    unread = [p for p in on_disk if p not in labels.index]
    if unread:
        messages.append(f"{len(unread)} scan(s) under {root} have no row in {reads_path}, skipped: {_names(unread)}")
    if duplicates:
        messages.append(f"{len(duplicates)} patient(s) found more than once under {root}, each read once (an extracted "
                        f"folder before a zip): {_names(duplicates)} (e.g. {on_disk[next(iter(duplicates))]} read, "
                        f"{duplicates[next(iter(duplicates))][0]} not)")
    unusable = table.loc[table["on_disk"] & table["in_reads"] & ~table["use"], "patient"].tolist()
    if unusable:
        messages.append(f"{len(unusable)} patient(s) with no usable series, skipped (the reason column says why): "
                        f"{_names(unusable)}")
    if stray:
        messages.append(f"{len(stray)} series choice(s) name patients with no series on disk, ignored: {_names(stray)}")
    return messages


def write_series_choice(table: pd.DataFrame, path: str | Path) -> Path:
    """Write :func:`cq500_inventory`'s table as CSV (atomically), for the user to read and pin from."""
    path = Path(path)
    write_csv_atomic(table, path)
    return path


# --------------------------------------------------------------------------- reading a scan


def read_cq500_scan(patient_location: str | Path, series_uid: str, folder: str | None = None,
                    allow_gaps: bool = False) -> CTVolume:
    """The series ``series_uid`` of one patient (a CQ500 zip or folder) as a
    :class:`~ichseq.data.volumes.CTVolume` (HU, ordered inferior -> superior), read by
    :func:`ichseq.data.volumes.read_volume`; ``folder`` (from :func:`list_series`, relative to
    the location) saves looking for it. From a zip, only that folder's members are extracted,
    to a temporary folder removed afterwards; ``source`` and ``files`` then name the zip's
    members. The volume is named after the patient (``CQ500-CT-<n>``) when the location says."""
    location = Path(patient_location)
    if folder is None:
        series = list_series(location)
        match = series[series["series_uid"] == series_uid]
        if match.empty:
            listing = "; ".join(f"{r['description']!r} {r['series_uid']}" for _, r in series.iterrows())
            raise DataError(f"{location}: no series {series_uid}; it holds {len(series)}: {listing or 'none'}")
        folder = match["folder"].iloc[0]
    patient = patient_number(location)
    name = cq500_name(patient) if patient is not None else None
    if not location.is_file():
        volume = read_volume(location / folder, series=series_uid, allow_gaps=allow_gaps)
        return dataclasses.replace(volume, name=name or volume.name)
    source = _Source(location)
    tmp = Path(tempfile.mkdtemp(prefix="ichseq-cq500-"))
    try:
        members = [n for n in source.files() if posixpath.dirname(n) == folder]
        where = source.where(folder).rstrip("/")
        for n in members:
            with source.open(n) as fh, open(tmp / posixpath.basename(n), "wb") as out:
                shutil.copyfileobj(fh, out)
        try:
            volume = read_volume(tmp, series=series_uid, allow_gaps=allow_gaps)
        except DataError as exc:
            raise DataError(str(exc).replace(str(tmp), where)) from None
    finally:
        source.close()
        shutil.rmtree(tmp, ignore_errors=True)
    files = [f"{where}/{Path(f).name}" for f in volume.files or []]
    return dataclasses.replace(volume, source=where, name=name or posixpath.basename(folder) or location.stem,
                               files=files)


# --------------------------------------------------------------------------- the dataset (slice cache)

class Cq500Dataset:
    """CQ500 as the slice cache reads a dataset (:func:`ichseq.data.cache.build_cache` with
    ``source="cq500"``): the patients of :func:`cq500_inventory` that can be used, one scan each
    (the chosen series), and scan labels only.

    CQ500 has no slice labels and no masks: every slice carries its scan's labels by ``rule``
    (``label``, the five subtypes, ``Fracture_Yes_No``) and an empty mask; ``slice_labels`` and
    ``has_masks`` are False, which the cache records (cache.json ``slice_labels``, ``masks``).
    A scan is read by :func:`read_cq500_scan` and put straight (gantry tilt undone) and, when
    its slices are thinner than :data:`ichseq.data.reformat.SLAB_BELOW` x ``prefer_mm``, averaged
    in HU into ``prefer_mm`` slabs (:func:`ichseq.data.reformat.reformat_volume`, as ``ichseq
    predict`` does); short gaps are bridged (noted), longer ones refused in one line.

    The inventory (every series header read once) is made here, once: its messages go to
    ``log`` once; the object holds no open file nor ``log``, so worker processes get it pickled
    rather than taking the inventory again."""

    layout = CQ500_LAYOUT
    slice_labels = False
    has_masks = False

    def __init__(self, root: str | Path, reads_path: str | Path | None = None, rule: str = LABEL_RULE,
                 prefer_mm: float = SLAB_MM, choice: dict | None = None, log=print):
        self.root = Path(root)
        if not (isinstance(prefer_mm, (int, float)) and prefer_mm > 0):
            raise ConfigError(f"invalid configuration: dataset.cq500.slab_mm: {prefer_mm!r} is not a positive "
                              f"number of mm")
        if rule not in RULES:
            raise ConfigError(f"invalid configuration: dataset.cq500.label_rule: {rule!r} is not one of "
                              f"{', '.join(RULES)}")
        self.reads_path = Path(reads_path) if reads_path else self.root / CQ500_READS
        if not self.reads_path.exists() and not looks_like_cq500(self.root):
            raise DataError(f"{self.root}: not CQ500 (no {CQ500_READS}, no CQ500-CT-<n>.zip nor CQ500CT<n> folder); "
                            f"CT-ICH ({NIFTI_CSV} or {JPG_CSV}) is read with dataset.source local; point "
                            f"dataset.cq500.path at the CQ500 download")
        self.rule = rule
        self.prefer_mm = float(prefer_mm)
        self.choice = dict(choice or {})
        self.files = RootFiles(self.root)
        self.table, self.messages = cq500_inventory(self.root, self.reads_path, rule, self.prefer_mm, self.choice)
        for line in self.messages:
            log(f"CQ500: {line}")
        usable = self.table[self.table["use"]].set_index("patient")
        if usable.empty:
            raise DataError(f"{self.root}: no usable CQ500 scan: {len(self.table)} patient(s) in {self.reads_path} "
                            f"or on disk, none both on disk, in {CQ500_READS} and with a readable non-localizer CT "
                            f"series (see the reasons above); point dataset.cq500.path at the CQ500 download")
        self.patients = [int(p) for p in usable.index]
        self._usable = usable
        self._notes: dict[int, list[str]] = {}
        self._counts: dict[int, int] = {}
        # Slice rows by the chosen series' slice counts (a thin one by its slabs, estimated): the
        # counts the cache announces and sizes its free-space check by.
        self.labels = pd.concat([self._rows(p, self._planned(p)) for p in self.patients], ignore_index=True)

    @property
    def path(self) -> Path:
        return self.root

    def _planned(self, patient: int) -> int:
        """The slices the patient's scan will give: its series' count, or about its extent over
        ``prefer_mm`` when it will be averaged into slabs."""
        row = self._usable.loc[patient]
        n = int(row["slices"])
        step = row["spacing_mm"] if pd.notna(row["spacing_mm"]) else row["thickness_mm"]
        if not row["reformat"] or pd.isna(step):
            return n
        return max(1, min(n, int(np.floor(n * float(step) / self.prefer_mm + 0.5))))

    def _rows(self, patient: int, n: int) -> pd.DataFrame:
        """``n`` slice rows of ``patient`` (SliceNumber 1..n), each with the scan's labels, in
        the columns of :func:`ichseq.data.readers.read_diagnosis_csv`."""
        row = self._usable.loc[patient]
        flags = {name: int(row[name]) for name in ("label", *SUBTYPES)}
        return pd.DataFrame({"PatientNumber": patient, "SliceNumber": np.arange(1, n + 1),
                             **{s: flags[s] for s in SUBTYPES}, "No_Hemorrhage": 1 - flags["label"],
                             "Fracture_Yes_No": int(row["fracture"]), "label": flags["label"]})

    def patient_labels(self, patient: int) -> pd.DataFrame:
        """The patient's slice rows by SliceNumber, each with the scan's labels: 1..the chosen
        series' slice count (at least as many as a read gives: slabs are fewer than slices), or
        the count of the last read if more."""
        n = max(int(self._usable.at[patient, "slices"]), self._counts.get(patient, 0))
        return self._rows(patient, n).set_index("SliceNumber")

    def scan_where(self, patient: int) -> str:
        """How to name ``patient``'s scan (its location and series folder) in a message."""
        row = self._usable.loc[patient]
        return f"{row['location']}/{row['folder']}"

    def scan_notes(self, patient: int) -> list[str]:
        """What the last read of ``patient`` did worth a log line (slabs, bridged gaps, warnings)."""
        return list(self._notes.get(patient, []))

    def read_hu_scan(self, patient: int) -> Scan:
        """The chosen series in HU (float32), ordered inferior -> superior, untilted, slabbed to
        ``prefer_mm`` when thin; slices numbered 1..S in that order; empty masks."""
        row = self._usable.loc[patient]
        volume = read_cq500_scan(row["location"], row["series_uid"], row["folder"], allow_gaps=True)
        read, report = reformat_volume(volume, Geometry(self.prefer_mm, None, 0))
        notes = [f"{cq500_name(patient)}: WARNING {line}" for line in volume.warnings]
        slabs = report.get("slabs") or {}
        if slabs.get("applied"):
            notes.append(f"{cq500_name(patient)}: {slabs['source_slices']} slices of {slabs['source_spacing_mm']:.3g} mm "
                         f"averaged into {slabs['slabs']} slabs of {slabs['slab_mm']:g} mm")
        if (report.get("tilt") or {}).get("corrected"):
            notes.append(f"{cq500_name(patient)}: gantry tilt of {report['tilt']['tilt_deg']:g} degrees undone")
        notes += [f"{cq500_name(patient)}: {line}" for line in gap_warnings(report)]
        n = len(read.positions)
        self._notes[patient] = notes
        self._counts[patient] = n
        numbers = np.arange(1, n + 1)
        masks = np.zeros(read.hu.shape, bool)
        return Scan(patient, numbers, np.asarray(read.positions, float), read.hu.astype(np.float32), masks,
                    None if read.spacing_mm is None else tuple(float(v) for v in read.spacing_mm))

    def read_scan(self, patient: int, level: float = BRAIN_WINDOW_LEVEL, width: float = BRAIN_WINDOW_WIDTH) -> Scan:
        """As :meth:`read_hu_scan`, brain-windowed (``level``/``width``) into [0, 1] as
        :class:`~ichseq.data.readers.NiftiDataset`'s."""
        scan = self.read_hu_scan(patient)
        return dataclasses.replace(scan, images=brain_window(scan.images, level, width))

    def for_patients(self, patients) -> "Cq500Dataset":
        """A copy reading only ``patients`` (a shard of the cache); the inventory table stays whole
        (one row per patient: small), the scans read are the shard's."""
        keep = [int(p) for p in patients]
        part = copy.copy(self)
        part.patients = keep
        part._usable = self._usable.loc[keep]
        part._notes, part._counts = {}, {}
        part.labels = self.labels[self.labels["PatientNumber"].isin(keep)].reset_index(drop=True)
        return part

    def cache_extras(self, folder: Path) -> dict:
        """Write the series-choice table into the cache ``folder`` being written; what cache.json
        records of it (the file, the label rule, the reads file)."""
        write_series_choice(self.table, Path(folder) / SERIES_CHOICE_FILE)
        return {"series_choice": SERIES_CHOICE_FILE, "label_rule": self.rule, "cq500_slab_mm": self.prefer_mm,
                "reads": str(self.reads_path)}


__all__ = ["LABEL_COLUMNS", "RULES", "SERIES_COLUMNS", "CHOICE_COLUMNS", "SERIES_CHOICE_FILE", "Cq500Dataset",
           "choose_series", "cq500_inventory", "cq500_labels", "find_cq500_patients", "list_series",
           "looks_like_cq500", "patient_number", "read_cq500_reads", "read_cq500_scan", "write_series_choice"]
