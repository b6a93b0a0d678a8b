"""RSNA 2019 intracranial hemorrhage detection (Kaggle): labels, header index, scans (issue 26.2).

The download (:mod:`ichseq.data.public_layouts`) is ``stage_2_train/ID_<hex>.dcm``, one slice
per file under random names (about 752,000 files, 21,700 scans), and ``stage_2_train.csv``
(``ID,Label``, six rows per slice ``ID_<hex>_<subtype>``). A scan is a SeriesInstanceUID; its
slices are ordered by ImagePositionPatient along the slice normal (the files carry no
InstanceNumber nor SliceThickness). RSNA replaced the UIDs by ``ID_<hex>`` strings, which are
not DICOM UIDs: pydicom's validation is turned off while this module reads them.

* :func:`read_rsna_labels`: the label file as one row per slice (the six subtypes, int8),
  vectorised (a few seconds for the real 4.5 million rows); every malformed row is refused in
  one line naming the file; ``any`` disagreeing with the subtypes is reported, not refused.
* :func:`index_headers`: one row per ``.dcm`` file from its header only (never the pixels),
  optionally in a process pool; ``problem`` says why a file cannot be used. Kept as a
  ``.csv.gz`` (:func:`write_header_index` / :func:`read_header_index`): Parquet would be
  smaller and typed, but pyarrow is not a dependency of ichseq.
* :func:`group_scans`: the usable scans and their slices in order, with the labels; the
  faults of the real data are listed (one message line per kind) and the scans or slices
  they touch are skipped, never a crash.
* :func:`read_rsna_scan`: one scan's files read as a :class:`~ichseq.data.volumes.CTVolume`
  (HU, ordered) by :func:`ichseq.data.dicom.read_dicom_series`, with its slices' labels.

Labels in ichseq's terms (:func:`group_scans`): a slice's ``label`` is its ``any`` row; the
subtypes take ichseq's names (``public_layouts.RSNA_TO_SUBTYPE``, ``layout.SUBTYPES`` order);
a scan's label and subtypes are those of any of its slices.

Pixel values are not touched here: the known RSNA quirk of files whose stored values wrap
(BitsStored 12 with values above 4095) is left to the reader's HU checks; ``bits_stored``
is in the index for whoever wants to find them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import csv
import dataclasses
import gzip
import hashlib
import io
import math
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from ..atomic import write_bytes_atomic, write_csv_atomic
from ..config import config_default
from ..errors import ConfigError, DataError
from .cache_files import FAULTS_FILE, HEADER_INDEX_FILE, SCANS_FILE
from .cq500_discovery import RootFiles
from .ct_volume import CTVolume
from .dicom import ORIENTATION_TOLERANCE, SPACING_TOLERANCE_FRACTION, SPACING_TOLERANCE_MM, read_dicom_series
from .fingerprint import sha256_file
from .layout import JPG_CSV, NIFTI_CSV, SUBTYPES
from .public_layouts import (
    RSNA_LABEL_COLUMNS,
    RSNA_LABELS,
    RSNA_LAYOUT,
    RSNA_SUBTYPES,
    RSNA_TO_SUBTYPE,
    RSNA_TRAIN_DIR,
)
from .readers import Scan
from .windowing import BRAIN_WINDOW_LEVEL, BRAIN_WINDOW_WIDTH, brain_window

#: The fewest usable slices of a scan kept: the config's dataset.rsna.min_slices default.
MIN_SLICES: int = config_default("dataset", "rsna", "min_slices")

WHAT_LABELS = (f"it must be RSNA 2019's {RSNA_LABELS}: header {','.join(RSNA_LABEL_COLUMNS)}, rows "
               f"ID_<hex>_<subtype>,0|1 with subtypes {', '.join(RSNA_SUBTYPES)}")
_FIRST = 5  # ids listed in a message before "..."

# --------------------------------------------------------------------------- labels


def _ids(ids, first: int = _FIRST) -> str:
    ids = list(ids)
    shown = ", ".join(str(i) for i in ids[:first])
    return shown + (f", ... ({len(ids) - first} more)" if len(ids) > first else "")


def _first_bad_row(text: str, where: str) -> None:
    """Raise the one-line error for the first malformed row of the label file's ``text``
    (the slow, exact path, taken only when the vectorised checks found something)."""
    generic = re.compile(r"^(ID_[0-9a-f]+)_([^_]*)$")
    for number, line in enumerate(text.splitlines(), 1):
        if number == 1 or not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != 2:
            raise DataError(f"{where}: line {number}: {line[:80]!r} has {len(fields)} fields, not 2; {WHAT_LABELS}")
        match = generic.match(fields[0])
        if not match:
            raise DataError(f"{where}: line {number}: ID {fields[0][:80]!r} is not ID_<hex>_<subtype>; {WHAT_LABELS}")
        if match.group(2) not in RSNA_SUBTYPES:
            raise DataError(f"{where}: line {number}: unknown subtype {match.group(2)[:40]!r} in {fields[0][:80]!r}; "
                            f"{WHAT_LABELS}")
        if fields[1].strip() not in ("0", "1"):
            raise DataError(f"{where}: line {number}: Label {fields[1][:40]!r} of {fields[0]} is not 0 or 1; "
                            f"{WHAT_LABELS}")
    raise DataError(f"{where}: a malformed row that could not be located; {WHAT_LABELS}")


def read_rsna_labels(path: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """``(labels, messages)`` of RSNA 2019's ``stage_2_train.csv``: ``labels`` has one row per
    slice, indexed by the slice id (``ID_<hex>``, the file stem; first-appearance order), with
    the six subtype columns of ``RSNA_SUBTYPES`` (int8 0/1). ``messages``: one line when
    ``any`` disagrees with the five subtypes on some slices (the rows are kept as given).

    Refused in one line naming the file: a missing file, a header other than ``ID,Label``, an
    ID not ``ID_<hex>_<subtype>``, an unknown subtype, a value not 0/1, a slice with a subtype
    row twice or without one of the six. Vectorised: the file is parsed by pandas' C parser
    with ``_`` and ``,`` both as separators (no Python loop over rows), checked per column."""
    path = Path(path)
    where = str(path)
    raw, body = _label_file(path)
    stems, key, value_of = _parse_label_rows(raw, body, where)
    n = len(stems)
    counts = np.bincount(key, minlength=n * len(RSNA_SUBTYPES)).reshape(n, len(RSNA_SUBTYPES))
    ids = pd.Index(np.char.add("ID_", stems.astype(str)).astype(object) if n else [], name="id", dtype=object)
    _check_one_row_per_subtype(counts, ids, where)
    matrix = np.zeros(n * len(RSNA_SUBTYPES), dtype=np.int8)
    matrix[key] = value_of
    labels = pd.DataFrame(matrix.reshape(n, len(RSNA_SUBTYPES)), index=ids, columns=list(RSNA_SUBTYPES))
    messages = []
    any_col = RSNA_SUBTYPES.index("any")
    union = np.delete(labels.to_numpy(), any_col, axis=1).max(axis=1)
    disagree = np.flatnonzero(labels.to_numpy()[:, any_col] != union)
    if len(disagree):
        messages.append(f"{where}: {len(disagree)} slice(s) whose 'any' disagrees with their five subtypes "
                        f"(kept as given; a slice's label is its 'any'): {_ids(ids[disagree])}")
    return labels, messages


def _label_file(path: Path) -> tuple[bytes, bytes]:
    """``(the label file's bytes, its rows after the header)``, once the file is there and its
    header is ``ID,Label``."""
    where = str(path)
    if not path.is_file():
        raise DataError(f"{where}: {'is a folder, not a file' if path.is_dir() else 'does not exist'}; "
                        f"give RSNA 2019's {RSNA_LABELS} (dataset.source rsna)")
    raw = path.read_bytes()
    end = raw.find(b"\n")
    head, body = (raw, b"") if end < 0 else (raw[:end], raw[end + 1:])
    try:
        header = head.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text; {WHAT_LABELS}") from None
    if not header:
        raise DataError(f"{where}: empty; {WHAT_LABELS}")
    if [c.strip() for c in header.split(",")] != list(RSNA_LABEL_COLUMNS):
        raise DataError(f"{where}: header {header[:80]!r}, not {','.join(RSNA_LABEL_COLUMNS)}; {WHAT_LABELS}")
    return raw, body


def _parse_label_rows(raw: bytes, body: bytes, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(distinct slice hex ids in first-appearance order, each row's key = slice x 6 +
    subtype, each row's 0/1)`` of the rows ``body``; a malformed row is refused in one line
    (found by :func:`_first_bad_row` over the whole file ``raw``)."""

    def bad_row() -> None:
        _first_bad_row(raw.decode("utf-8-sig", errors="replace"), where)

    try:
        df = pd.read_csv(io.BytesIO(body.replace(b",", b"_")), sep="_", header=None, engine="c",
                         names=["prefix", "hex", "subtype", "value"], quoting=csv.QUOTE_NONE, na_filter=False,
                         dtype={"prefix": "category", "hex": object, "subtype": "category", "value": "category"})
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError):  # a row with extra fields, bad bytes
        bad_row()
    if df.empty:
        raise DataError(f"{where}: a header but no rows; {WHAT_LABELS}")
    prefix, subtype, value = (df[c].cat for c in ("prefix", "subtype", "value"))
    subtype_pos = np.array([RSNA_SUBTYPES.index(str(c)) if str(c) in RSNA_SUBTYPES else -1
                            for c in subtype.categories] + [-1], dtype=np.int64)[subtype.codes.to_numpy()]
    value_of = np.array([int(str(c)) if str(c) in ("0", "1") else -1 for c in value.categories] + [-1],
                        dtype=np.int8)[value.codes.to_numpy()]
    prefix_ok = np.array([str(c) == "ID" for c in prefix.categories] + [False])[prefix.codes.to_numpy()]
    if not prefix_ok.all() or (subtype_pos < 0).any() or (value_of < 0).any():
        bad_row()
    codes, stems = pd.factorize(df["hex"].to_numpy(dtype=object))
    # One regular-expression pass over every distinct hex part joined by newlines.
    if re.fullmatch(r"(?:[0-9a-f]+\n)*[0-9a-f]+", "\n".join(stems)) is None:
        bad_row()
    return stems, codes.astype(np.int64) * len(RSNA_SUBTYPES) + subtype_pos, value_of


def _check_one_row_per_subtype(counts: np.ndarray, ids: pd.Index, where: str) -> None:
    """Refuse, in one line, a slice with a subtype row twice or without one of the six
    (``counts``: rows per slice and subtype)."""
    if (counts > 1).any():
        i, j = np.argwhere(counts > 1)[0]
        twice = int((counts > 1).any(axis=1).sum())
        raise DataError(f"{where}: {ids[i]}_{RSNA_SUBTYPES[j]} appears {counts[i, j]} times ({twice} slice(s) with a "
                        f"repeated subtype row); each slice has one row per subtype; {WHAT_LABELS}")
    if (counts == 0).any():
        i, j = np.argwhere(counts == 0)[0]
        short = int((counts == 0).any(axis=1).sum())
        raise DataError(f"{where}: {ids[i]} has no {RSNA_SUBTYPES[j]} row ({short} slice(s) without all six "
                        f"subtypes); {WHAT_LABELS}")


# --------------------------------------------------------------------------- header index

#: :func:`index_headers`' columns and their dtypes (strings are objects, None when missing).
HEADER_DTYPES: dict[str, object] = {
    "id": object, "study": object, "series": object, "patient": object, "modality": object,
    "position_x": "float64", "position_y": "float64", "position_z": "float64",
    "row_cosine_x": "float64", "row_cosine_y": "float64", "row_cosine_z": "float64",
    "column_cosine_x": "float64", "column_cosine_y": "float64", "column_cosine_z": "float64",
    "rows": "Int64", "columns": "Int64", "pixel_spacing_row": "float64", "pixel_spacing_column": "float64",
    "rescale_slope": "float64", "rescale_intercept": "float64",
    "bits_allocated": "Int64", "bits_stored": "Int64", "pixel_representation": "Int64",
    "transfer_syntax": object, "problem": object,
}
HEADER_COLUMNS = tuple(HEADER_DTYPES)
_POSITION = ("position_x", "position_y", "position_z")
_ORIENTATION = ("row_cosine_x", "row_cosine_y", "row_cosine_z", "column_cosine_x", "column_cosine_y", "column_cosine_z")
#: The kinds of ``problem`` (its text starts with one of them and a colon).
UNREADABLE, NOT_CT, NO_POSITION = "unreadable", "not CT-like", "missing position"
_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_TAGS = {  # keyword -> tag, read from the raw element (no pydicom value conversion: 1.6x faster)
    "study": 0x0020000D, "series": 0x0020000E, "patient": 0x00100020, "modality": 0x00080060,
    "position": 0x00200032, "orientation": 0x00200037, "spacing": 0x00280030,
    "slope": 0x00281053, "intercept": 0x00281052, "samples": 0x00280002, "frames": 0x00280008,
    "rows": 0x00280010, "columns": 0x00280011, "bits_allocated": 0x00280100, "bits_stored": 0x00280101,
    "pixel_representation": 0x00280103,
}
_US = {"samples", "rows", "columns", "bits_allocated", "bits_stored", "pixel_representation"}


@contextlib.contextmanager
def quiet_rsna_uids() -> Iterator[None]:
    """pydicom's validation off while RSNA's ``ID_<hex>`` values (not DICOM UIDs) are read."""
    settings = pydicom.config.settings
    saved = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode = saved


def _train_dir(folder: str | Path) -> Path:
    """The folder of the ``.dcm`` files: ``folder/stage_2_train`` when there is one, else ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: {'is a file, not a folder' if folder.exists() else 'does not exist'}; give "
                        f"RSNA 2019's {RSNA_TRAIN_DIR} folder or the folder holding it")
    return folder / RSNA_TRAIN_DIR if (folder / RSNA_TRAIN_DIR).is_dir() else folder


def _raw(ds: pydicom.Dataset, tag: int, little: bool, us: bool):
    """An element's value from its raw bytes: str (stripped; None when empty) or, for US, int."""
    element = ds.get_item(tag)
    if element is None:
        return None
    value = element.value
    if isinstance(value, (bytes, bytearray)):
        if us:
            return int.from_bytes(value[:2], "little" if little else "big") if len(value) >= 2 else None
        value = value.decode("latin-1").strip(" \x00")
    elif value is not None and not us:  # already converted (a DataElement): back to DICOM text
        value = "\\".join(str(v) for v in value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) \
            else str(value)
    return None if value is None or value == "" else value


def _numbers(text: str | None, n: int) -> list[float] | None:
    try:
        values = [float(v) for v in (text or "").split("\\")]
    except ValueError:
        return None
    return values if len(values) == n and all(map(math.isfinite, values)) else None


def _cross(a, b) -> tuple[float, float, float]:
    return a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]


def _header_row(path: str) -> dict:
    """One :data:`HEADER_COLUMNS` row of the file ``path``, from its header only."""
    name = os.path.basename(path)
    row: dict = {"id": name[:-4] if name.lower().endswith(".dcm") else name}
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            pixel_offset = fh.tell()  # where PixelData's tag starts
    except Exception as exc:  # a truncated or damaged file: pydicom raises many types
        row["problem"] = f"{UNREADABLE}: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        return row
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "") or None
    row["transfer_syntax"] = syntax
    little = syntax != "1.2.840.10008.1.2.2"
    value = {key: _raw(ds, tag, little, key in _US) for key, tag in _TAGS.items()}
    for key in ("study", "series", "patient", "modality", "rows", "columns", "bits_allocated", "bits_stored",
                "pixel_representation"):
        row[key] = value[key]
    position, orientation = _numbers(value["position"], 3), _numbers(value["orientation"], 6)
    spacing = _numbers(value["spacing"], 2)
    row.update(zip(_POSITION, position or [np.nan] * 3))
    row.update(zip(_ORIENTATION, orientation or [np.nan] * 6))
    row["pixel_spacing_row"], row["pixel_spacing_column"] = spacing or (np.nan, np.nan)
    for key, column, default in (("slope", "rescale_slope", 1.0), ("intercept", "rescale_intercept", 0.0)):
        number = _numbers(value[key], 1)
        row[column] = number[0] if number else (default if value[key] is None else np.nan)
    rows, columns, bits = value["rows"], value["columns"], value["bits_allocated"]
    frames = _numbers(value["frames"], 1) if value["frames"] is not None else [1.0]
    problem = None
    if pixel_offset >= size - 8:  # pydicom reached the end without meeting PixelData
        problem = f"{UNREADABLE}: the file ends after {size} bytes, before any pixel data (truncated?)"
    elif value["modality"] != "CT":
        problem = f"{NOT_CT}: Modality {value['modality'] or '(missing)'}"
    elif (value["samples"] or 1) != 1:
        problem = f"{NOT_CT}: SamplesPerPixel {value['samples']}"
    elif frames is None or frames[0] != 1:
        problem = f"{NOT_CT}: NumberOfFrames {value['frames']}"
    elif not rows or not columns or bits not in (8, 16, 32):
        problem = f"{NOT_CT}: no image (Rows {rows}, Columns {columns}, BitsAllocated {bits})"
    elif not math.isfinite(row["rescale_slope"]) or not math.isfinite(row["rescale_intercept"]):
        problem = f"{NOT_CT}: RescaleSlope/Intercept {value['slope']!r}/{value['intercept']!r} not numbers"
    elif position is None or orientation is None:
        bad = "ImagePositionPatient" if position is None else "ImageOrientationPatient"
        problem = f"{NO_POSITION}: no valid {bad}"
    elif math.hypot(*_cross(orientation[:3], orientation[3:])) < 1e-6:
        problem = f"{NO_POSITION}: ImageOrientationPatient row and column directions are parallel"
    elif syntax in _UNCOMPRESSED or syntax is None:
        need = rows * columns * bits // 8
        have = size - pixel_offset - (8 if syntax in (None, "1.2.840.10008.1.2") else 12)
        if have < need:
            problem = f"{UNREADABLE}: pixel data truncated ({max(have, 0)} of {need} bytes)"
    row["problem"] = problem
    return row


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with exactly :data:`HEADER_COLUMNS` in :data:`HEADER_DTYPES` (strings: None when missing)."""
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for column, dtype in HEADER_DTYPES.items():
        values = df[column] if column in df else pd.Series([None] * len(df), dtype=object)
        values = values.reset_index(drop=True)
        if dtype is object:
            values = values.astype(object)
            out[column] = values.where(values.notna(), None).astype(object)
        else:
            out[column] = pd.to_numeric(values, errors="coerce").astype(dtype)
    return out


def _index_chunk(paths: list[str]) -> pd.DataFrame:
    with quiet_rsna_uids():
        return _typed(pd.DataFrame([_header_row(p) for p in paths]))


def index_headers(folder: str | Path, workers: int = 1, log: Callable[[str], None] = print,
                  chunk_size: int = 2000) -> pd.DataFrame:
    """One row per ``.dcm`` file of ``folder`` (RSNA's ``stage_2_train``, or the folder holding
    it), sorted by ``id`` (the file stem), columns :data:`HEADER_COLUMNS`: the identifiers,
    ImagePositionPatient (``position_*``), ImageOrientationPatient (``row_cosine_*``,
    ``column_cosine_*``), the size, PixelSpacing (between rows, between columns), the rescale,
    the bits, the transfer syntax, and ``problem``: None, or why the file cannot be used,
    starting with its kind (``unreadable``: pydicom cannot parse it or its pixel data is cut
    short; ``not CT-like``: not a one-frame greyscale CT image; ``missing position``: no usable
    ImagePositionPatient/ImageOrientationPatient).

    Headers only (``stop_before_pixels``; the pixel data's length is checked against the file
    size), read from the raw elements. ``workers`` > 1: a pool of processes, ``chunk_size``
    files per task and at most ``2 x workers`` tasks in flight, so memory stays flat; the
    result does not depend on ``workers``. ``log``: progress about every 30 s and a summary."""
    where = _train_dir(folder)
    names = sorted((e.name for e in os.scandir(where) if e.name.lower().endswith(".dcm") and e.is_file()),
                   key=lambda n: (n[:-4], n))
    if not names:
        raise DataError(f"{where}: no .dcm files; give RSNA 2019's {RSNA_TRAIN_DIR} folder or the folder holding it")
    workers = max(1, int(workers))
    chunks = [[os.path.join(where, n) for n in names[i:i + chunk_size]] for i in range(0, len(names), chunk_size)]
    parts: list[pd.DataFrame | None] = [None] * len(chunks)
    start = last = time.perf_counter()
    done = 0

    def progress(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.perf_counter()
        if now - last >= 30 and done < len(names):
            log(f"{where}: {done}/{len(names)} headers indexed ({done / (now - start):.0f} files/s)")
            last = now

    if workers == 1:
        for i, chunk in enumerate(chunks):
            parts[i] = _index_chunk(chunk)
            progress(len(chunk))
    else:
        _index_in_pool(chunks, workers, parts, progress)
    index = pd.concat(parts, ignore_index=True)
    seconds = time.perf_counter() - start
    bad = int(index["problem"].notna().sum())
    log(f"{where}: {len(index)} DICOM headers indexed in {seconds:.1f} s ({len(index) / max(seconds, 1e-9):.0f} "
        f"files/s, {workers} worker{'s' if workers > 1 else ''}); {bad} cannot be used")
    return index


def _index_in_pool(chunks: list[list[str]], workers: int, parts: list, progress: Callable[[int], None]) -> None:
    """Index ``chunks`` in ``workers`` processes into ``parts`` (chunk ``i``'s table at ``i``),
    at most ``2 x workers`` chunks in flight, calling ``progress`` with each finished chunk's size."""
    # Forked, as ichseq's other pools: a spawned worker would run a Snakemake script's body again.
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: dict[concurrent.futures.Future, int] = {}
        queue = iter(enumerate(chunks))
        while True:
            for i, chunk in queue:
                pending[pool.submit(_index_chunk, chunk)] = i
                if len(pending) >= 2 * workers:
                    break
            if not pending:
                break
            finished, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                i = pending.pop(future)
                parts[i] = future.result()
                progress(len(chunks[i]))


def write_header_index(index: pd.DataFrame, path: str | Path) -> Path:
    """Write :func:`index_headers`' table to ``path`` (``.csv.gz``: gzip'd CSV, written
    atomically, the same bytes for the same table). CSV, not Parquet: pyarrow is not a
    dependency of ichseq and adding one is out of scope; :func:`read_header_index` restores
    the dtypes."""
    path = Path(path)
    missing = [c for c in HEADER_COLUMNS if c not in index]
    if missing:
        raise DataError(f"{path}: the table lacks column(s) {', '.join(missing)}; write index_headers' table")
    text = _typed(index[list(HEADER_COLUMNS)]).to_csv(index=False, lineterminator="\n")
    write_bytes_atomic(path, gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0))
    return path


# pandas 3 parses floats to the bit by default (and deprecates asking); pandas 2 must be asked.
_ROUND_TRIP = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


def read_header_index(path: str | Path) -> pd.DataFrame:
    """A header index written by :func:`write_header_index`, with its dtypes (and floats, to
    the bit) as :func:`index_headers` gave them; refused in one line when missing, not a
    gzip'd CSV or without the index's columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'does not exist'}; write it with "
                        f"write_header_index (or index the headers again)")
    try:
        df = pd.read_csv(path, compression="gzip", dtype=HEADER_DTYPES, keep_default_na=False, na_values=[""],
                         **_ROUND_TRIP)
    except (OSError, EOFError, gzip.BadGzipFile, pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a gzip'd CSV header index ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:120]}); index the headers again") from None
    missing = [c for c in HEADER_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(missing)}: not a header index of this ichseq; "
                        f"index the headers again")
    return _typed(df)


# --------------------------------------------------------------------------- scans

#: :func:`group_scans`' reasons to skip a scan, in the order they are judged (a scan is
#: counted under the first that applies).
SKIP_REASONS = {
    "mixed ids": "whose slices name several studies or patients",
    "mixed sizes": "mixing slice sizes (Rows x Columns)",
    "mixed orientations": "mixing slice orientations (ImageOrientationPatient)",
    "mixed pixel spacing": "mixing PixelSpacing",
    "duplicate positions": "with two slices at the same position (a duplicated slice)",
    "unlabelled slices": "with slices that have no label rows (the scan's label would be unknown)",
    "uneven spacing": "with a gap or uneven spacing between slices (a missing or unusable slice?)",
    "too few slices": "with fewer slices than min_slices",
}
SLICE_COLUMNS = ("id", "scan", "study", "patient", "order", "position_mm", "label", *SUBTYPES)
SCAN_COLUMNS = ("scan", "study", "patient", "slices", "spacing_mm", "rows", "columns", "pixel_spacing_row",
                "pixel_spacing_column", "label", *SUBTYPES)
#: RSNA's label columns -> ichseq's (``label`` is RSNA's ``any``).
_LABEL_NAMES = {"any": "label", **RSNA_TO_SUBTYPE}


def slice_positions(index: pd.DataFrame) -> np.ndarray:
    """Each row's ImagePositionPatient along its own slice normal (row x column cosines,
    turned to point superior, as :func:`ichseq.data.dicom.slice_normal`), in mm."""
    iop = index[list(_ORIENTATION)].to_numpy(dtype=np.float64)
    normal = np.cross(iop[:, :3], iop[:, 3:])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    normal[normal[:, 2] < 0] *= -1
    return np.einsum("ij,ij->i", index[list(_POSITION)].to_numpy(dtype=np.float64), normal)


def group_scans(index: pd.DataFrame, labels: pd.DataFrame, min_slices: int = MIN_SLICES,
                allow_gaps: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """``(scans, slices, messages)`` from a header index (:func:`index_headers`) and the labels
    (:func:`read_rsna_labels`' table).

    ``slices`` (:data:`SLICE_COLUMNS`): one row per slice of a usable scan, by scan then
    ``order`` (0 = most inferior, along the slice normal), ``position_mm`` along the normal,
    ``label`` (RSNA's ``any``) and the five subtypes under ichseq's names (int8).
    ``scans`` (:data:`SCAN_COLUMNS`): one row per usable scan (``scan`` = SeriesInstanceUID),
    sorted: its study, patient, number of slices, ``spacing_mm`` (median step between
    slices), slice size, PixelSpacing, ``label`` and subtypes (any of its slices).

    Faults are skipped, each kind reported in one line of ``messages`` with counts and the
    first few ids: a file that cannot be used (its ``problem``) loses its slice, so a scan
    left with a gap is skipped for ``uneven spacing``; scans are skipped for the reasons of
    :data:`SKIP_REASONS`. A slice without label rows skips its whole scan rather than the
    slice: the scan's label ("any slice positive") cannot be known without it, and dropping an
    inner slice would leave a gap anyway. Label rows without a file are counted. Spacing is
    judged as :func:`ichseq.data.dicom.read_dicom_series` judges it (``allow_gaps``: gaps a
    whole number of spacings long are kept, as there), so every scan kept reads with
    :func:`read_rsna_scan`."""
    missing = [c for c in HEADER_COLUMNS if c not in index]
    if missing:
        raise DataError(f"the header index lacks column(s) {', '.join(missing)}; give index_headers' table")
    absent = [c for c in RSNA_SUBTYPES if c not in labels]
    if absent:
        raise DataError(f"the labels lack column(s) {', '.join(absent)}; give read_rsna_labels' table")
    messages = _file_fault_messages(index, labels)
    df = _usable_slices(index, labels)
    reasons, details = _skip_reasons(df, min_slices, allow_gaps)
    skipped = pd.Series(False, index=df.groupby("series", sort=True).size().index)
    for kind, text in SKIP_REASONS.items():
        hit = reasons[kind].reindex(skipped.index, fill_value=False).astype(bool) & ~skipped
        if hit.any():
            ids = list(skipped.index[hit.to_numpy()])
            detail = details.get(kind, pd.Series(dtype=object))
            shown = ", ".join(f"{s} ({detail[s]})" if s in detail.index else str(s) for s in ids[:_FIRST])
            more = f", ... ({len(ids) - _FIRST} more)" if len(ids) > _FIRST else ""
            text = text.replace("min_slices", str(int(min_slices))) if kind == "too few slices" else text
            messages.append(f"{len(ids)} scan(s) skipped, {text}: {shown}{more}")
        skipped |= hit
    scans, slices = _scan_tables(df[~df["series"].map(skipped).astype(bool)].copy())
    return scans, slices, messages


def _file_fault_messages(index: pd.DataFrame, labels: pd.DataFrame) -> list[str]:
    """One line per kind of file problem (their slices are dropped) and one for labelled slices
    without a file."""
    messages: list[str] = []
    bad = index[index["problem"].notna()]
    for kind, group in bad.groupby(bad["problem"].str.split(":", n=1).str[0], sort=True):
        examples = ", ".join(f"{r.id} ({r.problem})" for r in group.head(3).itertuples())
        messages.append(f"{len(group)} file(s) {kind}, their slices dropped: {examples}"
                        + (f", ... ({len(group) - 3} more)" if len(group) > 3 else ""))
    files = set(index["id"])
    orphans = [i for i in labels.index if i not in files]
    if orphans:
        messages.append(f"{len(orphans)} labelled slice(s) without a .dcm file, ignored: {_ids(orphans)}")
    return messages


def _usable_slices(index: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The usable files' rows with their labels under ichseq's names (NaN: no label rows),
    ``position_mm`` along the slice normal and ``gap`` (mm from the slice below in the same
    series; NaN for a series' first), sorted by series then position."""
    problem = index["problem"]
    df = index[problem.isna() & index["series"].notna()].reset_index(drop=True)
    df["position_mm"] = slice_positions(df) if len(df) else np.zeros(0)
    rsna = labels[list(RSNA_SUBTYPES)].rename(columns=_LABEL_NAMES)
    df = df.join(rsna, on="id")
    df = df.sort_values(["series", "position_mm", "id"], kind="stable").reset_index(drop=True)
    same = df["series"].eq(df["series"].shift())
    df["gap"] = df["position_mm"].diff().where(same)
    return df


def _skip_reasons(df: pd.DataFrame, min_slices: int, allow_gaps: bool) -> tuple[dict, dict]:
    """``(reasons, details)`` by :data:`SKIP_REASONS` kind: per series whether it applies, and
    for some kinds the first offending slice in words."""
    by = df.groupby("series", sort=True)
    reasons: dict[str, pd.Series] = {}
    details: dict[str, pd.Series] = {}

    def first(mask: pd.Series, text: Callable[[int], str]) -> pd.Series:
        """Per scan, ``text(row)`` of its first row where ``mask`` holds."""
        rows = df.index[mask.to_numpy()]
        return pd.Series([text(i) for i in rows], index=df.loc[rows, "series"].to_numpy(),
                         dtype=object).groupby(level=0).first()

    reasons["mixed ids"] = (by["study"].nunique(dropna=False) > 1) | (by["patient"].nunique(dropna=False) > 1)
    size = df["rows"].astype("int64") * 65536 + df["columns"].astype("int64")  # usable files have both
    reasons["mixed sizes"] = size.groupby(df["series"]).nunique() > 1
    first_size = size.groupby(df["series"]).transform("first")
    details["mixed sizes"] = first(size.ne(first_size), lambda i: (
        f"{df.at[i, 'id']} {df.at[i, 'rows']}x{df.at[i, 'columns']}, others "
        f"{first_size[i] // 65536}x{first_size[i] % 65536}"))
    spread = by[list(_ORIENTATION)].max() - by[list(_ORIENTATION)].min()
    reasons["mixed orientations"] = (spread > ORIENTATION_TOLERANCE).any(axis=1)
    pixel = by[["pixel_spacing_row", "pixel_spacing_column"]]
    nan = df[["pixel_spacing_row", "pixel_spacing_column"]].isna().any(axis=1).groupby(df["series"])
    reasons["mixed pixel spacing"] = ((pixel.max() - pixel.min()) > 1e-4 * pixel.max().abs()).any(axis=1) | (
        nan.any() & ~nan.all())
    duplicated = df["gap"] < SPACING_TOLERANCE_MM
    reasons["duplicate positions"] = duplicated.groupby(df["series"]).any()
    details["duplicate positions"] = first(duplicated, lambda i: f"{df.at[i - 1, 'id']} and {df.at[i, 'id']} at "
                                                                 f"{df.at[i, 'position_mm']:.3f} mm")
    unlabelled = df["label"].isna()
    reasons["unlabelled slices"] = unlabelled.groupby(df["series"]).any()
    details["unlabelled slices"] = df.loc[unlabelled, "id"].groupby(df.loc[unlabelled, "series"]).agg(
        lambda s: f"slice {_ids(s, 3)}")
    spacing = by["gap"].median()
    tolerance = np.maximum(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * spacing)
    ref, tol = df["series"].map(spacing), df["series"].map(tolerance)
    off = (df["gap"] - ref).abs() > tol
    if allow_gaps:  # a whole number of spacings: missing slices, left to the reformatting
        multiple = np.rint(df["gap"] / ref)
        off &= ~((multiple >= 2) & ((df["gap"] - multiple * ref).abs() <= tol * multiple))
    reasons["uneven spacing"] = off.groupby(df["series"]).any()
    details["uneven spacing"] = first(off, lambda i: f"{df.at[i, 'gap']:.3f} mm before {df.at[i, 'id']}, spacing "
                                                     f"{spacing[df.at[i, 'series']]:.3f} mm")
    reasons["too few slices"] = by.size() < int(min_slices)
    details["too few slices"] = by.size().astype(str) + " slices"
    return reasons, details


def _scan_tables(keep: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`group_scans`' ``(scans, slices)`` tables of the kept slices ``keep``."""
    keep["scan"] = keep["series"]
    keep["order"] = keep.groupby("scan").cumcount().astype(np.int64)
    keep["rows"], keep["columns"] = keep["rows"].astype(np.int64), keep["columns"].astype(np.int64)
    for column in ("label", *SUBTYPES):
        keep[column] = keep[column].astype(np.int8)
    slices = keep[list(SLICE_COLUMNS)].reset_index(drop=True)
    per = keep.groupby("scan", sort=True)
    scans = per.agg(study=("study", "first"), patient=("patient", "first"), slices=("id", "size"),
                    spacing_mm=("gap", "median"), rows=("rows", "first"), columns=("columns", "first"),
                    pixel_spacing_row=("pixel_spacing_row", "first"),
                    pixel_spacing_column=("pixel_spacing_column", "first"))
    labels_max = per[["label", *SUBTYPES]].max().astype(np.int8)
    scans = scans.join(labels_max).reset_index()
    scans["slices"] = scans["slices"].astype(np.int64)
    return scans[list(SCAN_COLUMNS)], slices


# --------------------------------------------------------------------------- one scan


def read_rsna_scan(folder: str | Path, slices: pd.DataFrame, allow_gaps: bool = False) -> tuple[CTVolume, pd.DataFrame]:
    """``(volume, labels)`` of one scan: ``slices`` are its rows of :func:`group_scans`'
    ``slices`` (at least ``id``; ``scan`` too, to check that they are one series), ``folder``
    RSNA's ``stage_2_train`` or the folder holding it. The files are read by
    :func:`ichseq.data.dicom.read_dicom_series` (HU, ordered along the slice normal, positions,
    PixelSpacing; its one-line refusals); the volume is named after the scan. ``labels``: the
    ``slices`` rows in the volume's slice order (index 0..S-1), so row ``k`` is ``volume.hu[k]``."""
    where = _train_dir(folder)
    if "id" not in slices or slices.empty:
        raise DataError(f"{where}: no slices given; give one scan's rows of group_scans' slices table")
    scan = None
    if "scan" in slices:
        scans = slices["scan"].unique()
        if len(scans) != 1:
            raise DataError(f"{where}: the slices given belong to {len(scans)} scans ({_ids(scans, 3)}); give one "
                            f"scan's rows")
        scan = str(scans[0])
    rows = slices.sort_values("order") if "order" in slices else slices
    files = [where / f"{i}.dcm" for i in rows["id"]]
    lost = [p.name for p in files if not p.is_file()]
    if lost:
        raise DataError(f"{where}: {len(lost)} file(s) of scan {scan or '?'} missing ({_ids(lost, 3)}); index "
                        f"the headers of this folder again")
    with quiet_rsna_uids():
        volume = read_dicom_series(where, files, series=scan, allow_gaps=allow_gaps)
    volume = dataclasses.replace(volume, name=scan or volume.series_uid or volume.name)
    order = [Path(f).stem for f in volume.files or []]
    labels = rows.set_index("id").loc[order].reset_index()
    return volume, labels


# --------------------------------------------------------------------------- the dataset (slice cache)

#: scans.csv's columns: ichseq's patient number, the scan's identifiers, its slices and labels.
SCANS_FILE_COLUMNS = ("patient", "series_uid", "study_uid", "patient_id", "slices", "spacing_mm", "rows", "columns",
                      "pixel_spacing_row", "pixel_spacing_column", "label", *SUBTYPES)


def rsna_labels_path(root: str | Path, labels: str | Path | None = None) -> Path:
    """The label file: ``labels`` when given, else ``stage_2_train.csv`` in ``root`` (or beside
    it, when ``root`` is the ``stage_2_train`` folder itself)."""
    if labels:
        return Path(labels)
    root = Path(root)
    if not (root / RSNA_LABELS).exists() and root.name == RSNA_TRAIN_DIR and (root.parent / RSNA_LABELS).exists():
        return root.parent / RSNA_LABELS
    return root / RSNA_LABELS


def _listing_digest(train: Path) -> tuple[int, int, str]:
    """``(files, bytes, sha256)`` over every ``.dcm`` file's name, size and modification time in
    ``train`` (one stat per file: the pixels are not read)."""
    digest = hashlib.sha256()
    n = total = 0
    for entry in sorted((e for e in os.scandir(train) if e.name.lower().endswith(".dcm")), key=lambda e: e.name):
        st = entry.stat()
        digest.update(f"{entry.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        n += 1
        total += st.st_size
    return n, total, digest.hexdigest()


def rsna_content_digest(root: str | Path, labels: str | Path | None = None) -> str:
    """A cheap content digest of an RSNA download, for the workflow's rerun check: the SHA-256 of
    the label file and a SHA-256 over every ``.dcm`` file's name, size and modification time
    (what the header index is built from; the ~450 GB of pixels are not read: one stat per file)."""
    n, _total, listing = _listing_digest(_train_dir(root))
    path = rsna_labels_path(root, labels)
    if not path.is_file():
        raise DataError(f"{path}: does not exist; give RSNA 2019's {RSNA_LABELS} (dataset.rsna.labels, or in "
                        f"dataset.rsna.path)")
    return f"labels sha256 {sha256_file(path)}, {n} .dcm files (name, size, mtime) sha256 {listing}"


class RsnaDataset:
    """RSNA 2019 as the slice cache reads a dataset (:func:`ichseq.data.cache.build_cache` with
    ``source="rsna"``): one scan per usable SeriesInstanceUID (:func:`group_scans`), numbered
    1..N as ichseq's patients in the order of the sorted SeriesInstanceUIDs, with its slices' own
    labels (``slice_labels`` True) and no masks (``has_masks`` False: empty masks, has_mask 0).

    The header index (every file's header, ``workers`` processes) and the grouping are made
    here, once; the faults of the data go to ``log`` once per kind and their scans are skipped.
    :meth:`cache_extras` writes the header index, ``scans.csv`` (patient -> SeriesInstanceUID,
    StudyInstanceUID, PatientID, labels) and the fault lines into the cache. Several scans of
    one PatientID stay separate patients of the cache; the cohort records their ``patient_id``
    and :func:`ichseq.data.splits.patient_split` keeps them in one part."""

    layout = RSNA_LAYOUT
    slice_labels = True
    has_masks = False

    def __init__(self, root: str | Path, labels_path: str | Path | None = None, min_slices: int = MIN_SLICES,
                 workers: int = 1, log=print):
        self.root = Path(root)
        if not (isinstance(min_slices, int) and min_slices >= 1):
            raise ConfigError(f"invalid configuration: dataset.rsna.min_slices: {min_slices!r} is not a whole "
                              f"number of slices >= 1")
        self.min_slices = int(min_slices)
        self.labels_path = rsna_labels_path(self.root, labels_path)
        train = _train_dir(self.root)
        if not self.labels_path.is_file():
            raise DataError(f"{self.labels_path}: does not exist; not RSNA 2019 (no {RSNA_LABELS}): point "
                            f"dataset.rsna.path at the folder holding {RSNA_TRAIN_DIR}/ and {RSNA_LABELS}, or set "
                            f"dataset.rsna.labels (CT-ICH, {NIFTI_CSV} or {JPG_CSV}, is dataset.source local)")
        self.files = RootFiles(self.root)
        self.train = train
        labels, messages = read_rsna_labels(self.labels_path)
        self.index = index_headers(train, workers=workers, log=lambda line: log(f"RSNA: {line}"))
        scans, slices, more = group_scans(self.index, labels, self.min_slices)
        self.messages = messages + more
        for line in self.messages:
            log(f"RSNA: {line}")
        if scans.empty:
            raise DataError(f"{train}: no usable RSNA scan among {len(self.index)} files (see the reasons above); "
                            f"point dataset.rsna.path at the RSNA 2019 download")
        scans = scans.sort_values("scan", kind="stable").reset_index(drop=True)
        number = pd.Series(np.arange(1, len(scans) + 1, dtype=np.int64), index=scans["scan"].to_numpy())
        patient_id = scans["patient"].astype(object)
        # A scan without PatientID is a patient of its own (grouped by its series, never with another).
        patient_id = patient_id.where(patient_id.notna(), "series:" + scans["scan"].astype(str))
        self.scans = pd.DataFrame({"patient": number.to_numpy(), "series_uid": scans["scan"],
                                   "study_uid": scans["study"], "patient_id": patient_id,
                                   **{c: scans[c] for c in SCANS_FILE_COLUMNS[4:]}})[list(SCANS_FILE_COLUMNS)]
        self.patients = [int(p) for p in self.scans["patient"]]
        slices = slices.assign(patient=slices["scan"].map(number).astype(np.int64))
        self._slices = {int(p): rows.reset_index(drop=True) for p, rows in slices.groupby("patient", sort=True)}
        self._series = dict(zip(self.patients, self.scans["series_uid"]))
        self._notes: dict[int, list[str]] = {}
        self.labels = pd.concat([self._rows(p) for p in self.patients], ignore_index=True)

    @property
    def path(self) -> Path:
        return self.root

    def __getstate__(self) -> dict:
        # The header index (one row per file) is written by cache_extras in the main process
        # only: worker processes get the dataset without it.
        state = dict(self.__dict__)
        state["index"] = None
        return state

    def _rows(self, patient: int) -> pd.DataFrame:
        """The patient's slice rows (SliceNumber = order + 1, inferior first) with their own
        labels, in the columns of :func:`ichseq.data.readers.read_diagnosis_csv` (no fracture
        labels in RSNA: Fracture_Yes_No 0)."""
        rows = self._slices[patient]
        label = rows["label"].to_numpy().astype(np.int64)
        return pd.DataFrame({"PatientNumber": patient, "SliceNumber": rows["order"].to_numpy() + 1,
                             **{s: rows[s].to_numpy().astype(np.int64) for s in SUBTYPES},
                             "No_Hemorrhage": 1 - label, "Fracture_Yes_No": 0, "label": label})

    def patient_labels(self, patient: int) -> pd.DataFrame:
        """The patient's slice rows by SliceNumber, each with the slice's own labels."""
        return self._rows(patient).set_index("SliceNumber")

    def scan_where(self, patient: int) -> str:
        return f"{self.train} series {self._series[patient]}"

    def scan_notes(self, patient: int) -> list[str]:
        return list(self._notes.get(patient, []))

    def read_hu_scan(self, patient: int) -> Scan:
        """The scan in HU (float32), ordered inferior -> superior (:func:`read_rsna_scan`),
        slices numbered as :meth:`patient_labels`; empty masks."""
        volume, labels = read_rsna_scan(self.train, self._slices[patient])
        self._notes[patient] = [f"patient {patient} ({self._series[patient]}): WARNING {line}"
                                for line in volume.warnings]
        numbers = labels["order"].to_numpy().astype(np.int64) + 1
        return Scan(patient, numbers, np.asarray(volume.positions, float), volume.hu.astype(np.float32),
                    np.zeros(volume.hu.shape, bool),
                    None if volume.spacing_mm is None else tuple(float(v) for v in volume.spacing_mm))

    def read_scan(self, patient: int, level: float = BRAIN_WINDOW_LEVEL, width: float = BRAIN_WINDOW_WIDTH) -> Scan:
        """As :meth:`read_hu_scan`, brain-windowed (``level``/``width``) into [0, 1]."""
        scan = self.read_hu_scan(patient)
        return dataclasses.replace(scan, images=brain_window(scan.images, level, width))

    def content_manifest(self, known: list[dict] | None = None) -> list[dict]:
        """The cache's content manifest (``dataset.json``) of RSNA 2019 without reading its ~450 GB:
        the label file (its SHA-256, kept from ``known`` while its size and time match) and one
        entry for the .dcm files, whose ``sha256`` is over their names, sizes and times
        (:func:`rsna_content_digest`'s; a file rewritten with the same size and time goes unseen)."""
        st = self.labels_path.stat()
        name = self.labels_path.name
        previous = {(e["path"], e["size"], e["mtime_ns"]): e["sha256"] for e in known or []}
        labels_sha = previous.get((name, st.st_size, st.st_mtime_ns)) or sha256_file(self.labels_path)
        n, total, listing = _listing_digest(self.train)
        return [{"path": name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": labels_sha},
                {"path": f"{self.train.name}/*.dcm ({n} files: name, size, mtime)", "size": total, "mtime_ns": 0,
                 "sha256": listing}]

    def for_patients(self, patients) -> "RsnaDataset":
        """A copy reading only ``patients`` (a shard of the cache): their slices and scans, no
        header index; pickled to a shard job, it holds the shard, not the cohort."""
        keep = [int(p) for p in patients]
        part = copy.copy(self)
        part.index = None
        part.patients = keep
        part._slices = {p: self._slices[p] for p in keep}
        part._series = {p: self._series[p] for p in keep}
        part._notes = {}
        part.scans = self.scans[self.scans["patient"].isin(keep)].reset_index(drop=True)
        part.labels = self.labels[self.labels["PatientNumber"].isin(keep)].reset_index(drop=True)
        return part

    def cache_extras(self, folder: Path) -> dict:
        """Write the header index, scans.csv and the fault lines into the cache ``folder``
        being written; what cache.json records of them."""
        folder = Path(folder)
        if self.index is None:
            raise DataError("RSNA: the header index is not held by this copy of the dataset (a worker's); "
                            "write the cache's extras in the process that opened it")
        write_header_index(self.index, folder / HEADER_INDEX_FILE)
        write_csv_atomic(self.scans, folder / SCANS_FILE)
        write_bytes_atomic(folder / FAULTS_FILE, "".join(f"{line}\n" for line in self.messages).encode("utf-8"))
        return {"header_index": HEADER_INDEX_FILE, "scans": SCANS_FILE, "faults": FAULTS_FILE,
                "rsna_faults": len(self.messages), "labels": str(self.labels_path),
                "rsna_min_slices": self.min_slices,
                "patient_ids": int(self.scans["patient_id"].nunique())}


__all__ = ["FAULTS_FILE", "HEADER_COLUMNS", "HEADER_DTYPES", "HEADER_INDEX_FILE", "SCANS_FILE", "SCAN_COLUMNS",
           "SKIP_REASONS", "SLICE_COLUMNS", "RsnaDataset", "group_scans", "index_headers", "quiet_rsna_uids",
           "read_header_index", "read_rsna_labels", "read_rsna_scan", "rsna_content_digest", "rsna_labels_path",
           "slice_positions", "write_header_index"]
