"""Behaviour tests for ichseq.data.readers: both CT-ICH layouts, zips, slice order, bad input.

The session fixtures ``nifti_dataset`` (v1.3.1) and ``jpg_dataset`` (v1.0.0, exported from the
same scans) are read-only; a test that damages a dataset works on ``copy_dataset(src)``.
"""

from __future__ import annotations

import codecs
import csv
import io
import shutil
import struct
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ichseq.data.readers import JpgDataset, NiftiDataset, open_dataset, read_diagnosis_csv
from ichseq.data.synthetic import positive_patients, synthesize_scan, volume_to_nifti
from ichseq.data.windowing import brain_window
from ichseq.errors import DataError

# The layouts' published names, spelled out here rather than imported: a change to them is
# a change to what the reader accepts, and should fail these tests.
NIFTI = "nifti-v1.3.1"
JPG = "jpg-v1.0.0"
LAYOUT_FILES = {
    NIFTI: {"fixture": "nifti_dataset", "csv": "hemorrhage_diagnosis_raw_ct.csv"},
    JPG: {"fixture": "jpg_dataset", "csv": "hemorrhage_diagnosis.csv"},
}
# PhysioNet wraps every release in one long-named folder.
PHYSIONET_TOP = "computed-tomography-images-for-intracranial-hemorrhage-detection-and-segmentation-1.3.1"
PATIENT = 49  # first patient of the synthetic cohort (same numbering as the real one)


def scan_location(layout: str, patient: int) -> str:
    """Where a patient's slices live, relative to the dataset root."""
    return f"ct_scans/{patient:03d}.nii" if layout == NIFTI else f"Patients_CT/{patient:03d}/brain"


@pytest.fixture(params=[NIFTI, JPG])
def layout(request) -> str:
    return request.param


@pytest.fixture
def dataset_of(request):
    """``dataset_of(layout)``: the session dataset (read-only) of that layout."""
    return lambda name: request.getfixturevalue(LAYOUT_FILES[name]["fixture"])


# --------------------------------------------------------------------------- helpers


def read_all(ds) -> dict:
    return {p: ds.read_scan(p) for p in ds.patients}


def assert_scans_equal(a, b) -> None:
    assert a.patient == b.patient
    np.testing.assert_array_equal(a.slice_numbers, b.slice_numbers)
    np.testing.assert_allclose(a.positions, b.positions)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)


def assert_same_dataset(a, b) -> None:
    assert a.layout == b.layout
    assert a.patients == b.patients
    pd.testing.assert_frame_equal(a.labels, b.labels)
    for p in a.patients:
        assert_scans_equal(a.read_scan(p), b.read_scan(p))


def snapshot(root: Path) -> dict:
    """Every entry under ``root`` (hidden ones too) with size and modification time."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[p.relative_to(root).as_posix()] = (p.is_dir(), 0 if p.is_dir() else st.st_size, st.st_mtime_ns)
    return out


def csv_rows(path: Path) -> tuple[list[str], list[dict]]:
    """Parse a diagnosis CSV independently of the library (csv module, BOM stripped)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def rewrite_csv(path: Path, edit) -> None:
    """Apply ``edit(rows) -> rows`` (rows[0] is the header) keeping the BOM if there was one."""
    raw = path.read_bytes()
    bom = codecs.BOM_UTF8 if raw.startswith(codecs.BOM_UTF8) else b""
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(edit(rows))
    path.write_bytes(bom + out.getvalue().encode())


def row_index(rows: list[list[str]], patient: int, slice_number: int) -> int:
    header = rows[0]
    ip, isl = header.index("PatientNumber"), header.index("SliceNumber")
    for i, row in enumerate(rows[1:], start=1):
        if int(row[ip]) == patient and int(row[isl]) == slice_number:
            return i
    raise AssertionError(f"no row for patient {patient} slice {slice_number}")


def set_cell(rows, patient, slice_number, column, value):
    rows[row_index(rows, patient, slice_number)][rows[0].index(column)] = value
    return rows


def zip_dataset(src: Path, dest: Path, top: str = PHYSIONET_TOP) -> Path:
    """Zip ``src`` under one extra top-level folder, directory entries included, as PhysioNet does.

    Members are written in reverse name order so that nothing can rely on archive order.
    """
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{top}/", "")
        for p in sorted(src.rglob("*"), reverse=True):
            zf.write(p, f"{top}/{p.relative_to(src).as_posix()}")
    return dest


def expect_data_error(path: Path, *fragments: str, read: bool = True) -> str:
    """Opening ``path`` (and reading every scan) raises a one-line DataError naming ``fragments``.

    Nothing may be written into ``path`` meanwhile. Returns the message.
    """
    before = snapshot(path) if path.is_dir() else (path.read_bytes() if path.exists() else None)
    with pytest.raises(DataError) as info:
        ds = open_dataset(path)
        if read:
            read_all(ds)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert msg.strip(), "empty message"
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not named in: {msg}"
    after = snapshot(path) if path.is_dir() else (path.read_bytes() if path.exists() else None)
    assert after == before, "the dataset was modified while reading it"
    return msg


def replace_bytes(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def truncate_half(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def reverse_slice_axis(path: Path) -> None:
    """Store the volume superior->inferior: slice axis reversed, affine flipped to match.

    Voxel ``k`` of the new file is voxel ``n-1-k`` of the old one and maps to the same world
    point, so the physical anatomy is unchanged; only the storage order and the sign of the
    z step differ.
    """
    img = nib.Nifti1Image.from_bytes(path.read_bytes())
    data = np.asarray(img.dataobj).copy()
    n = data.shape[2]
    flip = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, n - 1], [0, 0, 0, 1]], dtype=float)
    affine = img.affine @ flip
    new = nib.Nifti1Image(np.ascontiguousarray(data[:, :, ::-1]), affine)
    new.set_qform(affine, code=1)
    new.set_sform(affine, code=1)
    nib.save(new, path)


# --------------------------------------------------------------------------- 1. both layouts


def test_layouts_are_detected(nifti_dataset, jpg_dataset):
    before = snapshot(nifti_dataset), snapshot(jpg_dataset)
    n, j = open_dataset(nifti_dataset), open_dataset(jpg_dataset)
    assert (n.layout, j.layout) == (NIFTI, JPG)
    assert isinstance(n, NiftiDataset) and isinstance(j, JpgDataset)
    read_all(n), read_all(j)
    assert (snapshot(nifti_dataset), snapshot(jpg_dataset)) == before, "reading wrote into the dataset"


def test_both_layouts_have_same_patients_and_labels(nifti_dataset, jpg_dataset, tiny_spec):
    n, j = open_dataset(nifti_dataset), open_dataset(jpg_dataset)
    assert n.patients == j.patients == sorted(tiny_spec.patient_numbers())
    pd.testing.assert_frame_equal(n.labels, j.labels)
    # And the labels are what the CSV says (parsed here without the library).
    _header, rows = csv_rows(nifti_dataset / LAYOUT_FILES[NIFTI]["csv"])
    expected = {(int(r["PatientNumber"]), int(r["SliceNumber"])): int(r["No_Hemorrhage"]) for r in rows}
    got = {(int(r.PatientNumber), int(r.SliceNumber)): int(r.No_Hemorrhage) for r in n.labels.itertuples()}
    assert got == expected
    assert {(int(r.PatientNumber), int(r.SliceNumber)): 1 - int(r.label) for r in n.labels.itertuples()} == expected


def test_nifti_scan_is_brain_windowed_hu_in_display_orientation(nifti_dataset, tiny_spec):
    ds = open_dataset(nifti_dataset)
    positives = positive_patients(tiny_spec)
    for p in ds.patients:
        truth = synthesize_scan(p, p in positives, tiny_spec)  # (S, rows, cols), inferior first
        scan = ds.read_scan(p)
        assert scan.patient == p
        np.testing.assert_array_equal(scan.slice_numbers, np.arange(1, len(truth.hu) + 1))
        assert np.all(np.diff(scan.positions) > 0)
        assert scan.images.dtype == np.float32 and scan.images.shape == truth.hu.shape
        expected = np.clip((truth.hu.astype(np.float32) + 20.0) / 120.0, 0.0, 1.0)  # level 40, width 120
        np.testing.assert_allclose(scan.images, expected, atol=1e-6)
        assert scan.masks.dtype == bool
        np.testing.assert_array_equal(scan.masks, truth.mask)
        # Labels line up with the slices: a labelled slice has a mask.
        labels = ds.patient_labels(p).loc[scan.slice_numbers, "label"].to_numpy()
        np.testing.assert_array_equal(labels.astype(bool), truth.mask.any(axis=(1, 2)))


def test_jpg_scan_is_close_to_nifti_scan(nifti_dataset, jpg_dataset):
    n, j = open_dataset(nifti_dataset), open_dataset(jpg_dataset)
    n_masked = 0
    for p in n.patients:
        a, b = n.read_scan(p), j.read_scan(p)
        np.testing.assert_array_equal(b.slice_numbers, a.slice_numbers)
        assert b.images.shape == a.images.shape and b.images.dtype == np.float32
        assert b.images.min() >= 0.0 and b.images.max() <= 1.0
        diff = np.abs(b.images - a.images)
        assert diff.max() < 0.1, (p, diff.max())
        assert diff.mean() < 0.01, (p, diff.mean())
        np.testing.assert_array_equal(b.masks, a.masks)
        n_masked += int(a.masks.any(axis=(1, 2)).sum())
    assert n_masked > 0, "the fixture should contain masked slices"


def test_bone_and_mask_files_never_become_slices(jpg_dataset, copy_dataset):
    names = [p.relative_to(jpg_dataset).as_posix() for p in jpg_dataset.rglob("*.jpg")]
    assert any("/bone/" in n for n in names) and any(n.endswith("_HGE_Seg.jpg") for n in names)
    ds = open_dataset(jpg_dataset)
    _header, rows = csv_rows(jpg_dataset / LAYOUT_FILES[JPG]["csv"])
    scans = read_all(ds)
    assert sum(len(s.slice_numbers) for s in scans.values()) == len(rows)
    for p, s in scans.items():
        assert sorted(s.slice_numbers.tolist()) == sorted(int(r["SliceNumber"]) for r in rows if int(r["PatientNumber"]) == p)

    # Extra bone-only and mask-only files change nothing.
    root = copy_dataset(jpg_dataset)
    pdir = root / "Patients_CT" / f"{PATIENT:03d}"
    shutil.copy(pdir / "bone" / "1.jpg", pdir / "bone" / "99.jpg")
    shutil.copy(pdir / "brain" / "1.jpg", pdir / "bone" / "98.jpg")
    shutil.copy(pdir / "brain" / "1.jpg", pdir / "brain" / "97_HGE_Seg.jpg")
    (root / "Patients_CT" / "999" / "bone").mkdir(parents=True)
    shutil.copy(pdir / "bone" / "1.jpg", root / "Patients_CT" / "999" / "bone" / "1.jpg")
    assert_same_dataset(open_dataset(root), ds)


# --------------------------------------------------------------------------- 2. zips


def test_zip_equals_folder(layout, dataset_of, tmp_path):
    src = dataset_of(layout)
    archive = zip_dataset(src, tmp_path / "ct-ich.zip")
    zipped = open_dataset(archive)
    assert zipped.layout == layout
    assert_same_dataset(zipped, open_dataset(src))


def test_zip_error_names_the_member(nifti_dataset, copy_dataset, tmp_path):
    root = copy_dataset(nifti_dataset)
    truncate_half(root / "ct_scans" / "050.nii")
    archive = zip_dataset(root, tmp_path / "broken.zip")
    expect_data_error(archive, "broken.zip", "ct_scans/050.nii")


# --------------------------------------------------------------------------- 3. slice order


def test_nifti_stack_stored_superior_to_inferior_is_reordered(nifti_dataset, copy_dataset):
    before = open_dataset(nifti_dataset).read_scan(PATIENT)
    root = copy_dataset(nifti_dataset)
    for folder in ("ct_scans", "masks"):
        reverse_slice_axis(root / folder / f"{PATIENT:03d}.nii")
    stored = nib.load(root / "ct_scans" / f"{PATIENT:03d}.nii")
    assert stored.affine[2, 2] < 0, "test setup: z step should be negative"
    # The file order really is reversed (otherwise this test would prove nothing).
    first_stored = brain_window(np.asarray(stored.dataobj)[:, :, 0].T.astype(np.float32))
    np.testing.assert_allclose(first_stored, before.images[-1], atol=1e-6)

    after = open_dataset(root).read_scan(PATIENT)
    np.testing.assert_array_equal(after.images, before.images)
    np.testing.assert_array_equal(after.masks, before.masks)
    np.testing.assert_array_equal(after.slice_numbers, before.slice_numbers[::-1])
    assert np.all(np.diff(after.positions) > 0)
    np.testing.assert_allclose(after.positions, before.positions, atol=1e-4)


def test_jpg_slices_are_ordered_numerically(nifti_dataset, jpg_dataset):
    n, j = open_dataset(nifti_dataset), open_dataset(jpg_dataset)
    checked = 0
    for p in j.patients:
        b = j.read_scan(p)
        count = len(b.slice_numbers)
        assert count >= 12, "the fixture should have two-digit slice numbers"
        np.testing.assert_array_equal(b.slice_numbers, np.arange(1, count + 1))
        a = n.read_scan(p)
        # Each JPG slice is closest to the NIfTI slice at the same index.
        err = np.abs(b.images[:, None] - a.images[None, :]).mean(axis=(2, 3))
        np.testing.assert_array_equal(err.argmin(axis=1), np.arange(count))
        checked += 1
    assert checked == len(n.patients)


# --------------------------------------------------------------------------- 4. bad input: NIfTI files


def _remove(rel):
    return lambda root: (root / rel).unlink()


def _truncate(rel):
    return lambda root: truncate_half(root / rel)


def _garbage_header(rel, n_bytes):
    return lambda root: replace_bytes(root / rel, 0, (b"garbage!" * 64)[:n_bytes])


def _empty_volume(root):
    for folder in ("ct_scans", "masks"):
        nib.save(volume_to_nifti(np.zeros((0, 64, 64), np.int16), np.eye(4)), root / folder / "049.nii")
    assert nib.load(root / "ct_scans" / "049.nii").shape[2] == 0


def _mask_with_other_shape(root):
    img = nib.load(root / "masks" / "049.nii")
    nib.save(volume_to_nifti(np.zeros((3, 64, 64), np.uint8), img.affine), root / "masks" / "049.nii")


def _unlisted_file(folder):
    return lambda root: shutil.copy(root / folder / "049.nii", root / folder / "999.nii")


NIFTI_DAMAGE = {
    "missing-scan": (_remove("ct_scans/049.nii"), ["ct_scans/049.nii"]),
    "missing-mask": (_remove("masks/049.nii"), ["masks/049.nii"]),
    "truncated-scan": (_truncate("ct_scans/050.nii"), ["ct_scans/050.nii"]),
    "truncated-mask": (_truncate("masks/050.nii"), ["masks/050.nii"]),
    "garbage-header": (_garbage_header("ct_scans/051.nii", 64), ["ct_scans/051.nii"]),
    "garbage-header-mask": (_garbage_header("masks/051.nii", 64), ["masks/051.nii"]),
    "empty-volume": (_empty_volume, ["049.nii"]),
    "mask-shape-differs": (_mask_with_other_shape, ["masks/049.nii"]),
    "scan-of-unlisted-patient": (_unlisted_file("ct_scans"), ["ct_scans/999.nii"]),
    "mask-of-unlisted-patient": (_unlisted_file("masks"), ["masks/999.nii"]),
}


@pytest.mark.parametrize("case", list(NIFTI_DAMAGE))
def test_damaged_nifti_raises_data_error(case, nifti_dataset, copy_dataset):
    damage, fragments = NIFTI_DAMAGE[case]
    root = copy_dataset(nifti_dataset)
    damage(root)
    expect_data_error(root, *fragments)


@pytest.mark.parametrize("n_bytes", [4, 16])
def test_garbage_in_first_header_bytes_raises_data_error(n_bytes, nifti_dataset, copy_dataset):
    root = copy_dataset(nifti_dataset)
    _garbage_header("ct_scans/052.nii", n_bytes)(root)
    expect_data_error(root, "ct_scans/052.nii")


# --------------------------------------------------------------------------- 4. bad input: CSV


def _append_row(patient, slice_number):
    def edit(rows):
        values = {c: "0" for c in rows[0]}
        values.update(PatientNumber=str(patient), SliceNumber=str(slice_number), No_Hemorrhage="1")
        return rows + [[values[c] for c in rows[0]]]

    return edit


def _delete_row(patient, slice_number):
    def edit(rows):
        del rows[row_index(rows, patient, slice_number)]
        return rows

    return edit


def _duplicate_row(patient, slice_number):
    return lambda rows: rows + [list(rows[row_index(rows, patient, slice_number)])]


def _drop_column(column):
    def edit(rows):
        k = rows[0].index(column)
        return [r[:k] + r[k + 1 :] for r in rows]

    return edit


def _flip_no_hemorrhage(rows):
    i, k = row_index(rows, 50, 2), rows[0].index("No_Hemorrhage")
    rows[i][k] = str(1 - int(rows[i][k]))
    return rows


CSV_DAMAGE = {
    # name: (edit, [fragments]; "{csv}" and "{scan}" are filled in per layout)
    "row-without-slice": (_append_row(PATIENT, 999), ["{csv}", "999"]),
    "slice-without-row": (_delete_row(PATIENT, 3), ["{scan}"]),
    "duplicate-row": (_duplicate_row(PATIENT, 3), ["{csv}"]),
    "missing-column": (_drop_column("Epidural"), ["{csv}", "Epidural"]),
    "non-integer-cell": (lambda rows: set_cell(rows, 50, 2, "Subdural", "yes"), ["{csv}", "Subdural"]),
    "fractional-cell": (lambda rows: set_cell(rows, 50, 2, "SliceNumber", "2.5"), ["{csv}"]),
    "no-hemorrhage-contradicts-subtypes": (_flip_no_hemorrhage, ["{csv}"]),
}


@pytest.mark.parametrize("case", list(CSV_DAMAGE))
def test_inconsistent_csv_raises_data_error(case, layout, dataset_of, copy_dataset):
    edit, fragments = CSV_DAMAGE[case]
    root = copy_dataset(dataset_of(layout))
    csv_name = LAYOUT_FILES[layout]["csv"]
    rewrite_csv(root / csv_name, edit)
    names = {"csv": csv_name, "scan": scan_location(layout, PATIENT)}
    expect_data_error(root, *(f.format(**names) for f in fragments))


def test_csv_error_names_the_line(nifti_dataset, copy_dataset):
    root = copy_dataset(nifti_dataset)
    csv_name = LAYOUT_FILES[NIFTI]["csv"]
    line = {}

    def edit(rows):
        line["n"] = row_index(rows, 51, 4) + 1  # rows[0] is line 1
        return set_cell(rows, 51, 4, "Intraparenchymal", "x")

    rewrite_csv(root / csv_name, edit)
    expect_data_error(root, csv_name, f"line {line['n']}")


def test_csv_error_line_counts_blank_lines():
    header = "PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,No_Hemorrhage\n"
    body = "49,1,0,0,0,0,0,1\n\n49,2,0,0,0,0,0,x\n"  # the bad cell is on line 4
    with pytest.raises(DataError, match="line 4"):
        read_diagnosis_csv((header + body).encode(), "diag.csv")


def test_missing_csv_is_an_unknown_layout(layout, dataset_of, copy_dataset):
    root = copy_dataset(dataset_of(layout))
    (root / LAYOUT_FILES[layout]["csv"]).unlink()
    msg = expect_data_error(root, str(root))
    assert "layout" in msg.lower()


# --------------------------------------------------------------------------- 4. bad input: JPG files


def _positive_slice(root: Path) -> tuple[int, int]:
    """(patient, slice) of some slice with a mask JPG."""
    seg = sorted((root / "Patients_CT").glob("*/brain/*_HGE_Seg.jpg"))[0]
    return int(seg.parent.parent.name), int(seg.name.split("_")[0])


@pytest.mark.parametrize("kind", ["brain", "mask"])
def test_truncated_jpg_raises_on_read_scan(kind, jpg_dataset, copy_dataset):
    root = copy_dataset(jpg_dataset)
    if kind == "brain":
        patient, rel = PATIENT, f"Patients_CT/{PATIENT:03d}/brain/10.jpg"
    else:
        patient, number = _positive_slice(root)
        rel = f"Patients_CT/{patient:03d}/brain/{number}_HGE_Seg.jpg"
    truncate_half(root / rel)
    before = snapshot(root)
    ds = open_dataset(root)  # file names and CSV still agree
    with pytest.raises(DataError) as info:
        ds.read_scan(patient)
    msg = str(info.value)
    assert rel in msg and "\n" not in msg, msg
    other = next(p for p in ds.patients if p != patient)
    assert len(ds.read_scan(other).slice_numbers) > 0  # the rest of the dataset still reads
    assert snapshot(root) == before


def test_empty_jpg_raises_data_error(jpg_dataset, copy_dataset):
    root = copy_dataset(jpg_dataset)
    (root / "Patients_CT" / "050" / "brain" / "3.jpg").write_bytes(b"")
    expect_data_error(root, "Patients_CT/050/brain/3.jpg")


def test_missing_jpg_patient_folder(jpg_dataset, copy_dataset):
    root = copy_dataset(jpg_dataset)
    shutil.rmtree(root / "Patients_CT" / f"{PATIENT:03d}")
    expect_data_error(root, f"Patients_CT/{PATIENT:03d}")


def test_jpg_patient_folder_not_in_csv(jpg_dataset, copy_dataset):
    root = copy_dataset(jpg_dataset)
    shutil.copytree(root / "Patients_CT" / f"{PATIENT:03d}", root / "Patients_CT" / "999")
    expect_data_error(root, "Patients_CT/999")


# --------------------------------------------------------------------------- 4. bad input: paths


def test_unknown_layout(tmp_path):
    root = tmp_path / "not-ct-ich"
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text("hello\n")
    (root / "data.csv").write_text("a,b\n1,2\n")
    (root / "sub" / "001.nii").write_bytes(b"\0" * 400)
    msg = expect_data_error(root, str(root))
    assert "layout" in msg.lower()


def test_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "nowhere" / "ct-ich"
    expect_data_error(missing, str(missing))
    assert not missing.exists() and not missing.parent.exists()


def test_file_that_is_not_a_zip(tmp_path):
    fake = tmp_path / "ct-ich.zip"
    fake.write_bytes(b"this is not a zip archive\n" * 10)
    expect_data_error(fake, str(fake))


# --------------------------------------------------------------------------- 5. diagnosis CSV


HEADER = "PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,No_Hemorrhage"
ROWS = ["50,2,0,0,0,0,1,0", "50,1,0,0,0,0,0,1", "49,1,1,0,1,0,0,0"]


@pytest.mark.parametrize("fracture", [True, False])
def test_read_diagnosis_csv_with_bom(fracture):
    header, rows = HEADER, list(ROWS)
    if fracture:
        header += ",Fracture_Yes_No"
        rows = [r + f",{i % 2}" for i, r in enumerate(rows)]
    data = ("\n".join([header, *rows]) + "\n").encode("utf-8-sig")
    assert data.startswith(codecs.BOM_UTF8)
    df = read_diagnosis_csv(data, "diag.csv")
    assert df.columns[0] == "PatientNumber"
    assert [(int(r.PatientNumber), int(r.SliceNumber)) for r in df.itertuples()] == [(49, 1), (50, 1), (50, 2)]
    assert df["label"].tolist() == [1, 0, 1]
    assert df["Subdural"].tolist() == [0, 0, 1]
    if fracture:
        by_slice = {(int(r.PatientNumber), int(r.SliceNumber)): int(r.Fracture_Yes_No) for r in df.itertuples()}
        assert by_slice == {(50, 2): 0, (50, 1): 1, (49, 1): 0}
    elif "Fracture_Yes_No" in df.columns:
        assert (df["Fracture_Yes_No"] == 0).all()


def test_dataset_without_fracture_column(nifti_dataset, copy_dataset):
    assert (nifti_dataset / LAYOUT_FILES[NIFTI]["csv"]).read_bytes().startswith(codecs.BOM_UTF8)
    root = copy_dataset(nifti_dataset)
    rewrite_csv(root / LAYOUT_FILES[NIFTI]["csv"], _drop_column("Fracture_Yes_No"))
    without = open_dataset(root)
    original = open_dataset(nifti_dataset)
    assert without.patients == original.patients
    cols = ["PatientNumber", "SliceNumber", "No_Hemorrhage", "label"]
    pd.testing.assert_frame_equal(without.labels[cols], original.labels[cols])
    assert_scans_equal(without.read_scan(PATIENT), original.read_scan(PATIENT))


# --------------------------------------------------------------------------- 6. Hounsfield units


SCAN_051 = "ct_scans/051.nii"


def stored_values(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A scan's values after its header's scaling, in storage order, and its affine."""
    img = nib.load(path)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def write_scan(path: Path, data: np.ndarray, affine: np.ndarray, slope: float = 1.0, inter: float = 0.0) -> None:
    """Write ``data`` (storage order) with exactly this dtype and this scl_slope / scl_inter."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    # nibabel picks its own scaling on save; the header's two floats are set here instead.
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(path.read_bytes()[:348]))
    endian = "<" if header.endianness == "<" else ">"
    replace_bytes(path, 112, struct.pack(f"{endian}ff", slope, inter))
    loaded = nib.load(path)
    assert loaded.get_data_dtype() == data.dtype and loaded.dataobj.slope == slope and loaded.dataobj.inter == inter


def window_to_uint8(root: Path, rels: list[str]) -> None:
    """Export scans as many viewers do: the brain window as 0-255 uint8, no HU left."""
    for rel in rels:
        hu, affine = stored_values(root / rel)
        write_scan(root / rel, np.rint(brain_window(hu) * 255).astype(np.uint8), affine)


def test_scan_already_windowed_to_0_255_is_refused_naming_the_file(nifti_dataset, copy_dataset):
    root = copy_dataset(nifti_dataset)
    window_to_uint8(root, [SCAN_051])
    msg = expect_data_error(root, SCAN_051, "values 0..255", "nothing below -200", "dataset.prewindowed: true")
    assert "already windowed to 0-255" in msg and "Hounsfield" in msg


def test_prewindowed_dataset_is_read_as_0_255_display_values(nifti_dataset, copy_dataset):
    root = copy_dataset(nifti_dataset)
    ds_hu = open_dataset(nifti_dataset)
    window_to_uint8(root, [f"ct_scans/{p:03d}.nii" for p in ds_hu.patients])
    ds = open_dataset(root, prewindowed=True)
    for p in ds.patients:
        scan, reference = ds.read_scan(p), ds_hu.read_scan(p)
        stored, _ = stored_values(root / f"ct_scans/{p:03d}.nii")
        # Display orientation and position order exactly as for the HU file; values / 255.
        np.testing.assert_array_equal(scan.slice_numbers, reference.slice_numbers)
        np.testing.assert_array_equal(scan.images, stored.transpose(2, 1, 0)[scan.slice_numbers - 1] / np.float32(255))
        np.testing.assert_allclose(scan.images, reference.images, atol=0.5 / 255 + 1e-6)
        np.testing.assert_array_equal(scan.masks, reference.masks)


def test_prewindowed_option_refuses_hounsfield_units(nifti_dataset):
    with pytest.raises(DataError) as info:
        open_dataset(nifti_dataset, prewindowed=True).read_scan(PATIENT)
    msg = str(info.value)
    assert f"ct_scans/{PATIENT:03d}.nii" in msg and "Hounsfield" in msg and "dataset.prewindowed" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("padding", [-1024, -2048, -3024])
def test_hounsfield_scan_with_ct_padding_is_accepted(padding, nifti_dataset, copy_dataset):
    root = copy_dataset(nifti_dataset)
    hu, affine = stored_values(root / SCAN_051)
    padded = hu.astype(np.int16)
    padded[:4], padded[-4:] = padding, padding  # outside the reconstruction circle, as scanners store it
    write_scan(root / SCAN_051, padded, affine)
    scan = open_dataset(root).read_scan(51)
    expected = brain_window(padded.astype(np.float32)).transpose(2, 1, 0)[scan.slice_numbers - 1]
    np.testing.assert_array_equal(scan.images, expected)


def test_the_header_scaling_is_applied_before_the_units_check(nifti_dataset, copy_dataset):
    # Stored unsigned 0..4095 with scl_inter -1024 (as scanners export) is HU; without the
    # intercept the same numbers have no air and are refused.
    root = copy_dataset(nifti_dataset)
    hu, affine = stored_values(root / SCAN_051)
    stored = (hu + 1024).astype(np.uint16)
    write_scan(root / SCAN_051, stored, affine, inter=-1024.0)
    np.testing.assert_array_equal(open_dataset(root).read_scan(51).images, open_dataset(nifti_dataset).read_scan(51).images)
    write_scan(root / SCAN_051, stored, affine)
    msg = expect_data_error(root, SCAN_051, "nothing below -200", "rescale intercept")
    assert "dataset.prewindowed" not in msg  # 0..4095 is not a 0-255 export; the option would not help


def test_synthetic_twin_is_hounsfield_units(nifti_dataset):
    ds = open_dataset(nifti_dataset)
    for p in ds.patients:
        _numbers, _positions, hu, _masks = ds.read_hu(p)
        assert hu.min() < -200


def test_intercept_advice_for_a_nifti_names_its_header_field(nifti_dataset, copy_dataset):
    root = copy_dataset(nifti_dataset)
    hu, affine = stored_values(root / SCAN_051)
    write_scan(root / SCAN_051, (hu + 1024).astype(np.uint16), affine)
    msg = expect_data_error(root, SCAN_051, "scl_inter")
    assert "RescaleIntercept" not in msg  # a DICOM tag means nothing in a NIfTI header


def test_the_dataset_path_advice_stays_for_a_dataset_that_is_not_a_zip(tmp_path):
    fake = tmp_path / "ct-ich.zip"
    fake.write_bytes(b"this is not a zip archive\n" * 10)
    expect_data_error(fake, str(fake), "dataset.local.path")


# --------------------------------------------------------------------------- 7. non-finite voxels
# NaN means "no data" (resampling tools' padding): a minority becomes -1024 HU; a volume that
# is mostly NaN, and any infinity, is refused. The cache's reader and `ichseq predict` agree.


def _with_voxels(root: Path, value: float, fraction: float, seed: int = 0) -> np.ndarray:
    """Set ``fraction`` of scan 051's voxels (at random) to ``value``, stored as float32; the
    mask of those voxels, in storage order."""
    hu, affine = stored_values(root / SCAN_051)
    chosen = np.random.default_rng(seed).random(hu.shape) < fraction
    chosen.flat[0] = True  # at least one
    data = hu.astype(np.float32)
    data[chosen] = value
    write_scan(root / SCAN_051, data, affine)
    return chosen


def test_a_few_nan_voxels_are_read_as_air_padding(nifti_dataset, copy_dataset):
    root = copy_dataset(nifti_dataset)
    nan_voxels = _with_voxels(root, np.nan, 0.001)
    numbers, _positions, hu, _masks = open_dataset(root).read_hu(51)
    _, _, original, _ = open_dataset(nifti_dataset).read_hu(51)
    filled = nan_voxels.transpose(2, 1, 0)[numbers - 1]  # display orientation, position order
    assert np.isfinite(hu).all()
    np.testing.assert_array_equal(hu[filled], -1024.0)
    np.testing.assert_array_equal(hu[~filled], original[~filled])
    # The brain window of -1024 is 0, like any air.
    images = open_dataset(root).read_scan(51).images
    np.testing.assert_array_equal(images[filled], 0.0)


@pytest.mark.parametrize("fraction", [0.6, 1.0])
def test_a_mostly_nan_scan_is_refused_saying_nan_and_how_much(fraction, nifti_dataset, copy_dataset):
    root = copy_dataset(nifti_dataset)
    chosen = _with_voxels(root, np.nan, fraction)
    percent = f"{100 * chosen.mean():.0f}%"
    msg = expect_data_error(root, SCAN_051, "NaN", percent, f"{int(chosen.sum())} of {chosen.size}")
    assert "nan..nan" not in msg


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_an_infinite_voxel_is_refused_with_its_count(value, nifti_dataset, copy_dataset):
    root = copy_dataset(nifti_dataset)
    chosen = _with_voxels(root, value, 0.0)
    assert chosen.sum() == 1
    expect_data_error(root, SCAN_051, "1 infinite voxel")


def test_nan_padding_in_a_prewindowed_scan_is_black(nifti_dataset, copy_dataset):
    root = copy_dataset(nifti_dataset)
    window_to_uint8(root, [SCAN_051])
    values, affine = stored_values(root / SCAN_051)
    data = values.astype(np.float32)
    data[:3] = np.nan  # three columns of padding
    write_scan(root / SCAN_051, data, affine)
    scan = open_dataset(root, prewindowed=True).read_scan(51)
    np.testing.assert_array_equal(scan.images[:, :, :3], 0.0)
    assert np.isfinite(scan.images).all()


def test_to_jpg_refuses_a_destination_inside_its_source(nifti_dataset, copy_dataset, capsys):
    from ichseq.cli import main

    src = copy_dataset(nifti_dataset)
    before = sorted(src.rglob("*"))
    assert main(["to-jpg", str(src), str(src / "jpg")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "lies inside the input" in err
    assert sorted(src.rglob("*")) == before
