"""The RSNA 2019 reader (issue 26.2) on the RSNA format twin: the label file (and its one-line
refusals), the header index (one row per file, a .csv.gz round trip, the same with a process
pool), scans grouped and read back to the twin's slices, HU and labels, and the real data's
faults injected into a copy: listed in one line each, the scan or slice skipped, never a crash."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from ichseq.data import public_layouts as pl
from ichseq.data.layout import NIFTI_CSV, patient_file
from ichseq.data.readers import display_slices, load_nifti
from ichseq.data.rsna import (
    HEADER_COLUMNS,
    SCAN_COLUMNS,
    SLICE_COLUMNS,
    group_scans,
    index_headers,
    read_header_index,
    read_rsna_labels,
    read_rsna_scan,
    write_header_index,
)
from ichseq.data.synthetic import SyntheticSpec
from tests.conftest import one_line_error

# 6 patients (3 with hemorrhage), 32 px, 8-10 slices: one scan per injected fault and a clean one.
SPEC = SyntheticSpec(n_patients=6, n_positive=3, image_size=32, min_slices=9, max_slices=10, seed=4,
                     generator="cartoon")
SEED = 7
QUIET = {"log": lambda _msg: None}


pytestmark = pytest.mark.usefixtures("unchecked_dicom_ids")


@pytest.fixture(scope="module")
def twin(small_twins) -> Path:
    return small_twins(SPEC)


@pytest.fixture(scope="module")
def twin_labels(twin) -> pd.DataFrame:
    return pd.read_csv(twin / NIFTI_CSV, encoding="utf-8-sig")


@pytest.fixture(scope="module")
def rsna(small_twins) -> Path:
    return small_twins(SPEC, "rsna", seed=SEED)


@pytest.fixture(scope="module")
def index(rsna) -> pd.DataFrame:
    return index_headers(rsna / pl.RSNA_TRAIN_DIR, **QUIET)


@pytest.fixture(scope="module")
def grouped(rsna, index):
    labels, messages = read_rsna_labels(rsna / pl.RSNA_LABELS)
    assert messages == []
    return group_scans(index, labels)


def _nifti_stack(twin: Path, patient: int) -> np.ndarray:
    values, _ = load_nifti((twin / "ct_scans" / patient_file(patient)).read_bytes(), "test")
    return display_slices(values)


# --------------------------------------------------------------------------- header index


def test_header_index_has_one_row_per_file_and_round_trips_through_csv_gz(rsna, index, tmp_path):
    files = sorted(p.stem for p in (rsna / pl.RSNA_TRAIN_DIR).iterdir())
    assert tuple(index.columns) == HEADER_COLUMNS
    assert index["id"].tolist() == files
    assert index["problem"].isna().all() and index["modality"].eq("CT").all()
    for path in sorted((rsna / pl.RSNA_TRAIN_DIR).iterdir())[::7]:  # the header, as pydicom reads it
        ds = pydicom.dcmread(path)
        row = index.set_index("id").loc[path.stem]
        assert (row.study, row.series, row.patient) == (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID)
        assert [row.position_x, row.position_y, row.position_z] == [float(v) for v in ds.ImagePositionPatient]
        assert (row.rows, row.columns, row.rescale_intercept) == (ds.Rows, ds.Columns, float(ds.RescaleIntercept))
        assert row.transfer_syntax == ds.file_meta.TransferSyntaxUID
    path = write_header_index(index, tmp_path / "headers.csv.gz")
    assert gzip.decompress(path.read_bytes()).startswith(b"id,study,series")
    back = read_header_index(path)
    pd.testing.assert_frame_equal(back, index)  # dtypes, None for missing, floats to the bit
    assert write_header_index(back, tmp_path / "again.csv.gz").read_bytes() == path.read_bytes()
    (tmp_path / "plain.csv").write_text("id\nx\n")
    one_line_error(lambda: read_header_index(tmp_path / "plain.csv"), "plain.csv", "not a gzip'd CSV")
    one_line_error(lambda: read_header_index(tmp_path / "none.csv.gz"), "none.csv.gz", "does not exist")


def test_a_process_pool_gives_the_same_index(rsna, index):
    # 5 files per task: more tasks than the pool keeps in flight; the dataset root is accepted too.
    pooled = index_headers(rsna, workers=2, chunk_size=5, **QUIET)
    pd.testing.assert_frame_equal(pooled, index)


# --------------------------------------------------------------------------- scans


def test_grouping_recovers_the_twins_scans_order_hu_and_labels(twin, twin_labels, rsna, grouped):
    scans, slices, messages = grouped
    assert messages == []
    assert tuple(scans.columns) == SCAN_COLUMNS and tuple(slices.columns) == SLICE_COLUMNS
    assert len(scans) == twin_labels.PatientNumber.nunique() == SPEC.n_patients
    assert len(slices) == len(twin_labels) and scans["slices"].sum() == len(slices)
    matched = set()
    for scan in scans.itertuples():
        volume, labels = read_rsna_scan(rsna, slices[slices.scan == scan.scan])
        assert volume.name == scan.scan and volume.hu.shape == (scan.slices, 32, 32)
        # The twin patient whose NIfTI stack (in its slice order) the scan is, to 1 HU.
        (patient,) = [p for p in twin_labels.PatientNumber.unique()
                      if _nifti_stack(twin, p).shape == volume.hu.shape
                      and np.abs(_nifti_stack(twin, p) - volume.hu).max() <= 1]
        matched.add(patient)
        assert labels["order"].tolist() == list(range(scan.slices))
        np.testing.assert_allclose(labels["position_mm"], volume.positions, atol=1e-6)
        assert np.all(np.diff(labels["position_mm"]) > 0) and scan.spacing_mm == pytest.approx(5.0, abs=1e-3)
        truth = twin_labels[twin_labels.PatientNumber == patient].sort_values("SliceNumber")
        for theirs, ours in pl.RSNA_TO_SUBTYPE.items():
            assert labels[ours].tolist() == truth[ours].tolist(), (patient, theirs)
            assert getattr(scan, ours) == truth[ours].max()
        assert labels["label"].tolist() == (truth.No_Hemorrhage == 0).astype(int).tolist()
        assert scan.label == int((truth.No_Hemorrhage == 0).any())
        assert (scan.rows, scan.columns) == (32, 32)
    assert matched == set(twin_labels.PatientNumber.unique())
    assert scans["label"].sum() == SPEC.n_positive


def _rewrite(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def test_injected_faults_are_listed_in_one_line_each_and_their_scans_skipped(rsna, grouped, tmp_path):
    scans, slices, _ = grouped
    copy = tmp_path / "rsna"
    shutil.copytree(rsna, copy)
    folder = copy / pl.RSNA_TRAIN_DIR
    a, b, c, d, e, f = scans["scan"]
    ids = {s: slices[slices.scan == s]["id"].tolist() for s in scans["scan"]}  # inferior first
    # a: an inner slice cut short (its pixels truncated): dropped, which leaves a gap.
    truncated = folder / f"{ids[a][4]}.dcm"
    truncated.write_bytes(truncated.read_bytes()[:-900])
    # b: a slice of another size.

    def smaller(ds):
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[:16, :16]).tobytes()
        ds.Rows, ds.Columns = 16, 16

    _rewrite(folder / f"{ids[b][3]}.dcm", smaller)
    # c: a slice at its neighbour's position.
    neighbour = pydicom.dcmread(folder / f"{ids[c][4]}.dcm").ImagePositionPatient
    _rewrite(folder / f"{ids[c][5]}.dcm", lambda ds: setattr(ds, "ImagePositionPatient", neighbour))
    # e: the top slice cut short: dropped, the scan kept one slice shorter.
    top = folder / f"{ids[e][-1]}.dcm"
    top.write_bytes(top.read_bytes()[:300])
    # A file that is no DICOM at all, in no scan.
    (folder / "ID_00000000f.dcm").write_bytes(b"not a DICOM file" * 10)
    # d: a slice without label rows; and label rows for a slice without a file.
    csv_path = copy / pl.RSNA_LABELS
    lines = [line for line in csv_path.read_text().splitlines() if not line.startswith(f"{ids[d][2]}_")]
    lines += [f"ID_0000000aa_{subtype},0" for subtype in pl.RSNA_SUBTYPES]
    csv_path.write_text("\n".join(lines) + "\n")

    index = index_headers(copy, **QUIET)
    assert len(index) == len(slices) + 1
    problems = index.set_index("id")["problem"]
    assert problems[truncated.stem].startswith("unreadable: pixel data truncated")
    assert problems["ID_00000000f"].startswith("unreadable") and problems[top.stem].startswith("unreadable")
    assert problems.notna().sum() == 3
    labels, label_messages = read_rsna_labels(csv_path)
    assert label_messages == []
    kept, kept_slices, messages = group_scans(index, labels)

    assert kept["scan"].tolist() == [e, f]
    assert kept.set_index("scan")["slices"].to_dict() == {e: len(ids[e]) - 1, f: len(ids[f])}
    assert kept_slices[kept_slices.scan == e]["id"].tolist() == ids[e][:-1]
    assert all("\n" not in m for m in messages)
    expected = {  # what each fault's one line says, and the ids it names
        "3 file(s) unreadable, their slices dropped": [truncated.stem, top.stem, "ID_00000000f"],
        "1 labelled slice(s) without a .dcm file": ["ID_0000000aa"],
        "1 scan(s) skipped, mixing slice sizes": [b, ids[b][3], "16x16"],
        "1 scan(s) skipped, with two slices at the same position": [c, ids[c][4], ids[c][5]],
        "1 scan(s) skipped, with slices that have no label rows": [d, ids[d][2]],
        "1 scan(s) skipped, with a gap or uneven spacing": [a, "10.000 mm", ids[a][5]],
    }
    assert len(messages) == len(expected), messages
    for start, names in expected.items():
        (line,) = [m for m in messages if m.startswith(start)]
        assert all(name in line for name in names), (names, line)
    # The kept scan that lost its top slice reads back to the clean scan without it.
    volume, _ = read_rsna_scan(copy, kept_slices[kept_slices.scan == e])
    clean, _ = read_rsna_scan(rsna, slices[slices.scan == e])
    np.testing.assert_array_equal(volume.hu, clean.hu[:-1])
    # Too short a scan is skipped too, counted in one line.
    none, no_slices, short = group_scans(index, labels, min_slices=len(ids[f]) + 1)
    assert none.empty and no_slices.empty
    (line,) = [m for m in short if "fewer slices than" in m]
    assert line.startswith(f"2 scan(s) skipped, with fewer slices than {len(ids[f]) + 1}") and f in line


def test_read_rsna_scan_refuses_two_scans_or_a_missing_file_in_one_line(rsna, grouped, tmp_path):
    _, slices, _ = grouped
    one_line_error(lambda: read_rsna_scan(rsna, slices), "belong to 6 scans")
    first = slices[slices.scan == slices.scan.iloc[0]]
    copy = tmp_path / "rsna"
    shutil.copytree(rsna / pl.RSNA_TRAIN_DIR, copy)
    (copy / f"{first.id.iloc[2]}.dcm").unlink()
    one_line_error(lambda: read_rsna_scan(copy, first), str(copy), first.id.iloc[2], "missing")


# --------------------------------------------------------------------------- labels


GOOD = ["ID,Label"] + [f"ID_{stem}_{subtype},{int(stem == 'ab12' and subtype in ('subdural', 'any'))}"
                       for stem in ("ab12", "cd34") for subtype in pl.RSNA_SUBTYPES]


def test_labels_read_one_row_per_slice_and_report_any_that_disagrees(tmp_path):
    path = tmp_path / "stage_2_train.csv"
    path.write_text("\ufeff" + "\r\n".join(GOOD) + "\r\n", encoding="utf-8")  # a BOM and CRLF do not matter
    labels, messages = read_rsna_labels(path)
    assert labels.index.tolist() == ["ID_ab12", "ID_cd34"] and labels.index.name == "id"
    assert tuple(labels.columns) == pl.RSNA_SUBTYPES and set(labels.dtypes) == {np.dtype(np.int8)}
    assert labels.loc["ID_ab12"].tolist() == [0, 0, 0, 0, 1, 1] and labels.loc["ID_cd34"].sum() == 0
    assert messages == []
    disagree = [line.replace("ID_cd34_any,0", "ID_cd34_any,1") for line in GOOD]
    path.write_text("\n".join(disagree) + "\n")
    labels, messages = read_rsna_labels(path)
    assert labels.loc["ID_cd34", "any"] == 1  # kept as given
    (line,) = messages
    assert "1 slice(s) whose 'any' disagrees" in line and "ID_cd34" in line and str(path) in line


@pytest.mark.parametrize("change, needles", [
    (lambda lines: ["Id,Label", *lines[1:]], ["header 'Id,Label'"]),
    (lambda lines: lines[:1], ["a header but no rows"]),
    (lambda lines: [], ["empty"]),
    (lambda lines: [*lines, "ID_xyz_epidural,0"], ["line 14", "'ID_xyz_epidural' is not ID_<hex>_<subtype>"]),
    (lambda lines: [*lines[:3], "ID_ab12,0", *lines[3:]], ["line 4", "'ID_ab12' is not ID_<hex>_<subtype>"]),
    (lambda lines: [*lines[:5], "ID_ab12_bleed,0", *lines[5:]], ["line 6", "unknown subtype 'bleed'"]),
    (lambda lines: [*lines[:2], "ID_ab12_epidural,2", *lines[3:]], ["line 3", "'2'", "not 0 or 1"]),
    (lambda lines: [*lines[:2], "ID_ab12_epidural,", *lines[3:]], ["line 3", "not 0 or 1"]),
    (lambda lines: [*lines[:2], "ID_ab12_epidural,0,1", *lines[3:]], ["line 3", "3 fields, not 2"]),
    (lambda lines: [*lines, "ID_cd34_subdural,0"], ["ID_cd34_subdural appears 2 times"]),
    (lambda lines: [line for line in lines if line != "ID_cd34_subarachnoid,0"], ["ID_cd34 has no subarachnoid row"]),
])
def test_bad_label_files_are_refused_in_one_line_naming_the_file(tmp_path, change, needles):
    path = tmp_path / "stage_2_train.csv"
    path.write_text("".join(f"{line}\n" for line in change(list(GOOD))))
    one_line_error(lambda: read_rsna_labels(path), str(path), *needles)


def test_a_missing_label_file_or_folder_is_refused_in_one_line(tmp_path):
    one_line_error(lambda: read_rsna_labels(tmp_path / "stage_2_train.csv"), "stage_2_train.csv", "does not exist")
    one_line_error(lambda: read_rsna_labels(tmp_path), str(tmp_path), "is a folder")
    one_line_error(lambda: index_headers(tmp_path, **QUIET), str(tmp_path), "no .dcm files")
