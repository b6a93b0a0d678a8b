"""Format twins (issue 26.5): the CT-ICH twin written in CQ500's and RSNA 2019's layouts reads
back, with pydicom and the names of :mod:`ichseq.data.public_layouts`, to the twin's HU, slice
order and labels; the same input and seed give the same bytes; ``ichseq synthetic --layout``."""

from __future__ import annotations

import csv
import hashlib
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import JPEGLosslessSV1
from scipy.ndimage import gaussian_filter

from ichseq.cli import SYNTHETIC_LAYOUTS, build_parser, main
from ichseq.data import public_layouts as pl
from ichseq.data.dicom import read_dicom_series
from ichseq.data.format_twins import (
    BONE_DESCRIPTION,
    LAYOUTS,
    RSNA_ELEMENTS,
    THICK_DESCRIPTIONS,
    THIN_DESCRIPTION,
    THIN_MM,
    cq500_reads,
    write_cq500,
    write_rsna,
)
from ichseq.data.layout import NIFTI_CSV, SUBTYPES, patient_file
from ichseq.data.readers import display_slices, load_nifti
from ichseq.data.synthetic import SYNTHETIC_MARKER, SyntheticSpec, generate_synthetic
from tests.conftest import one_line_error

# 4 patients (2 with hemorrhage), 32 px, 8-10 slices: the thin and bone series are 64-80 slices.
SPEC = SyntheticSpec(n_patients=4, n_positive=2, image_size=32, min_slices=8, max_slices=10, seed=3,
                     generator="cartoon")
SEED = 2  # the format twins' own seed: with it, the readers disagree on two of the four patients
QUIET = {"log": lambda _msg: None}
TILT_DEG = 15.0


pytestmark = pytest.mark.usefixtures("unchecked_dicom_ids")


@pytest.fixture(scope="module")
def twin(small_twins) -> Path:
    return small_twins(SPEC)


@pytest.fixture(scope="module")
def labels(twin) -> pd.DataFrame:
    return pd.read_csv(twin / NIFTI_CSV, encoding="utf-8-sig")


def _nifti_stack(twin: Path, patient: int) -> np.ndarray:
    values, _ = load_nifti((twin / "ct_scans" / patient_file(patient)).read_bytes(), "test")
    return display_slices(values)


@pytest.fixture(scope="module")
def cq500_zips(small_twins) -> Path:
    return small_twins(SPEC, "cq500", seed=SEED)


@pytest.fixture(scope="module")
def cq500_folders(small_twins) -> Path:
    return small_twins(SPEC, "cq500", zipped=False, seed=SEED)


@pytest.fixture(scope="module")
def rsna(small_twins) -> Path:
    return small_twins(SPEC, "rsna", seed=SEED)


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _series(folder: Path) -> tuple[list[pydicom.Dataset], np.ndarray]:
    """A series folder's slices ordered by ImagePositionPatient along the slice normal, and their HU."""
    slices = [pydicom.dcmread(p) for p in folder.iterdir()]
    iop = np.array(slices[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(key=lambda ds: float(np.dot(np.array(ds.ImagePositionPatient, float), normal)))
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])
    return slices, hu


# --------------------------------------------------------------------------- CQ500


def test_cq500_zips_and_folders_are_named_as_the_real_ones(twin, labels, cq500_zips, cq500_folders):
    patients = sorted(labels.PatientNumber.unique())
    zips = sorted(p.name for p in cq500_zips.glob("*.zip"))
    assert sorted(int(pl.CQ500_ZIP.match(z).group(1)) for z in zips) == patients  # the twin's own numbers
    assert {p.name for p in cq500_zips.iterdir()} == {*zips, pl.CQ500_READS, SYNTHETIC_MARKER}
    for name in zips:
        n = int(pl.CQ500_ZIP.match(name).group(1))
        with zipfile.ZipFile(cq500_zips / name) as archive:
            entries = archive.namelist()
            for entry in entries:
                top, study, series, file = entry.split("/")
                assert int(pl.CQ500_PATIENT_DIR.match(top).group(1)) == n and top == pl.cq500_patient_dir(n)
                assert study == pl.CQ500_STUDY_DIR and series.startswith(pl.CQ500_SERIES_PREFIX)
                assert file.startswith("CT") and file.endswith(".dcm") and len(file) == len("CT000000.dcm")
                # The zip holds the extracted layout's files, byte for byte.
                assert archive.read(entry) == (cq500_folders / entry).read_bytes(), entry
            assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert len(entries) == sum(1 for p in (cq500_folders / pl.cq500_patient_dir(n)).rglob("*.dcm"))
    folders = sorted(p.name for p in cq500_folders.iterdir() if p.is_dir())
    assert sorted(int(pl.CQ500_PATIENT_DIR.match(f).group(1)) for f in folders) == patients


def test_cq500_series_read_back_to_the_twins_hounsfield_units(twin, labels, cq500_folders):
    series_uids = set()
    for patient in sorted(labels.PatientNumber.unique()):
        study = cq500_folders / pl.cq500_patient_dir(patient) / pl.CQ500_STUDY_DIR
        folders = {p.name.removeprefix(pl.CQ500_SERIES_PREFIX): p for p in study.iterdir()}
        (thick_name,) = set(folders) & set(THICK_DESCRIPTIONS)
        assert set(folders) == {thick_name, THIN_DESCRIPTION, BONE_DESCRIPTION}
        read = {name: _series(folder) for name, folder in folders.items()}
        every = [ds for slices, _ in read.values() for ds in slices]
        assert {ds.file_meta.TransferSyntaxUID for ds in every} == {JPEGLosslessSV1}
        assert JPEGLosslessSV1 == "1.2.840.10008.1.2.4.70"
        assert len({ds.StudyInstanceUID for ds in every}) == 1
        assert {ds.PatientID for ds in every} == {pl.cq500_patient_dir(patient).split(" ")[0]}
        for name, (slices, _) in read.items():
            uids = {ds.SeriesInstanceUID for ds in slices}
            assert len(uids) == 1 and not uids & series_uids, name
            series_uids |= uids
            assert {ds.SeriesDescription for ds in slices} == {name}
            # CT000000.dcm ... numbered in slice order
            assert [Path(ds.filename).name for ds in slices] == [f"CT{k:06d}.dcm" for k in range(len(slices))]

        # The 5 mm series is the twin's scan, slice for slice (lossless: every HU).
        thick, thick_hu = read[thick_name]
        np.testing.assert_array_equal(thick_hu, _nifti_stack(twin, patient))
        assert {float(ds.SliceThickness) for ds in thick} == {5.0}
        assert {ds.ConvolutionKernel for ds in thick} == {"STANDARD"}
        # The thin series: 0.625 mm slices over the same extent, HU interpolated between the 5 mm
        # slices' centres (checked here with np.interp on the positions the files give).
        thin, thin_hu = read[THIN_DESCRIPTION]
        assert len(thin) == 8 * len(thick) and {float(ds.SliceThickness) for ds in thin} == {THIN_MM}
        z_thick = np.array([float(ds.ImagePositionPatient[2]) for ds in thick])
        z_thin = np.array([float(ds.ImagePositionPatient[2]) for ds in thin])
        np.testing.assert_allclose(np.diff(z_thin), THIN_MM, atol=1e-4)
        np.testing.assert_allclose([z_thin[0], z_thin[-1]], [z_thick[0] - 2.1875, z_thick[-1] + 2.1875], atol=1e-4)
        flat = thick_hu.reshape(len(thick), -1)
        expected = np.stack([np.interp(z_thin, z_thick, flat[:, i]) for i in range(flat.shape[1])], axis=1)
        assert np.abs(thin_hu.reshape(len(thin), -1) - np.rint(expected)).max() <= 1
        # The bone series: the thin one through a sharper kernel.
        bone, bone_hu = read[BONE_DESCRIPTION]
        assert {ds.ConvolutionKernel for ds in bone} == {"BONE"} and BONE_DESCRIPTION == "BONE"
        assert [ds.ImagePositionPatient for ds in bone] == [ds.ImagePositionPatient for ds in thin]
        sharpened = np.clip(2 * thin_hu - gaussian_filter(thin_hu, sigma=(0, 1, 1), mode="nearest"), -1024, 3071)
        assert np.abs(bone_hu - sharpened).max() <= 1
        edges = lambda hu: np.abs(np.diff(hu, axis=2)).mean()  # noqa: E731
        assert edges(bone_hu) > 1.2 * edges(thin_hu)
        # ichseq's own reader takes every series too, and says the bone one is sharp.
        volume = read_dicom_series(folders[BONE_DESCRIPTION], sorted(folders[BONE_DESCRIPTION].iterdir()))
        assert any("sharp reconstruction kernel" in w for w in volume.warnings)


def test_cq500_reads_csv_has_the_real_columns_and_readers_who_mostly_agree(labels, cq500_zips):
    with open(cq500_zips / pl.CQ500_READS, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [dict(zip(header, row)) for row in reader]
    assert tuple(header) == pl.cq500_columns()
    truth = {int(p): int(g[list(SUBTYPES)].to_numpy().max()) for p, g in labels.groupby("PatientNumber")}
    assert [int(pl.CQ500_NAME.match(row["name"]).group(1)) for row in rows] == sorted(truth)
    assert {row["Category"] for row in rows} <= {"B1", "B2", "CQ500"}
    agree, disagree = 0, 0
    for row in rows:
        ich = [int(row[f"{r}:ICH"]) for r in pl.CQ500_READERS]
        for r in pl.CQ500_READERS:  # a reader's ICH is the union of their subtypes
            assert int(row[f"{r}:ICH"]) == max(int(row[f"{r}:{s}"]) for s in pl.CQ500_SUBTYPES)
        agree += int(sum(ich) >= 2) == truth[int(pl.CQ500_NAME.match(row["name"]).group(1))]
        readers = {tuple(row[f"{r}:{f}"] for f in pl.CQ500_FINDINGS) for r in pl.CQ500_READERS}
        disagree += len(readers) > 1
    assert agree >= len(rows) - 1  # the majority is the truth for (nearly) every patient
    assert disagree >= 1  # and the readers do not all say the same


def test_cq500_reads_majority_misses_the_truth_on_a_few_patients_only():
    truth = {}
    for n in range(400):
        findings = dict.fromkeys(pl.CQ500_FINDINGS, 0)
        if n % 2:
            findings.update({"ICH": 1, pl.CQ500_SUBTYPES[n % 5]: 1, "BleedLocation-Left": 1})
        truth[n] = findings
    rows = cq500_reads(truth, seed=0)
    majority = np.array([sum(int(row[f"{r}:ICH"]) for r in pl.CQ500_READERS) >= 2 for row in rows])
    wrong = int((majority != np.array([truth[n]["ICH"] for n in sorted(truth)])).sum())
    assert 1 <= wrong <= 0.1 * len(rows)
    # A patient's reads depend on the seed and that patient alone.
    assert cq500_reads({n: truth[n] for n in (7, 8)}, seed=0) == [rows[7], rows[8]]
    assert cq500_reads(truth, seed=1) != rows


def test_cq500_gantry_tilt_shears_the_positions_and_keeps_the_pixels(twin, labels, tmp_path):
    out = tmp_path / "tilted"
    write_cq500(twin, out, zipped=False, thin_series=False, bone_series=False, tilt_deg=TILT_DEG, seed=SEED, **QUIET)
    patient = int(labels.PatientNumber.min())
    (folder,) = (out / pl.cq500_patient_dir(patient) / pl.CQ500_STUDY_DIR).iterdir()
    slices, hu = _series(folder)
    assert {float(ds.GantryDetectorTilt) for ds in slices} == {TILT_DEG}
    np.testing.assert_array_equal(hu, _nifti_stack(twin, patient))
    volume = read_dicom_series(folder, sorted(folder.iterdir()))
    shift = np.arange(len(hu)) * 5.0 * np.tan(np.radians(TILT_DEG))  # down the rows, per 5 mm slice
    np.testing.assert_allclose(volume.in_plane_offsets_mm[:, 0], shift, atol=1e-3)
    np.testing.assert_allclose(volume.in_plane_offsets_mm[:, 1], 0, atol=1e-3)


# --------------------------------------------------------------------------- RSNA


def test_rsna_one_file_per_slice_and_the_label_file_in_the_real_format(labels, rsna):
    files = sorted((rsna / pl.RSNA_TRAIN_DIR).iterdir())
    assert len(files) == len(labels) and all(pl.RSNA_FILE.match(p.name) for p in files)
    assert all(len(p.stem) == len("ID_") + 9 for p in files)
    text = (rsna / pl.RSNA_LABELS).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == ",".join(pl.RSNA_LABEL_COLUMNS) and not text.startswith("\ufeff")
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 6 * len(files)
    stems = []
    for i in range(0, len(rows), 6):  # per slice six rows, the subtypes in the real order
        group = [pl.RSNA_LABEL_ID.match(rid).groups() for rid, _ in rows[i:i + 6]]
        assert {stem for stem, _ in group} == {group[0][0]}
        assert tuple(subtype for _, subtype in group) == pl.RSNA_SUBTYPES
        values = [int(v) for _, v in rows[i:i + 6]]
        assert set(values) <= {0, 1} and values[-1] == max(values[:-1])  # any = the union
        stems.append(group[0][0])
    assert sorted(stems) == [p.stem for p in files]
    assert sum(int(v) for rid, v in rows if rid.endswith("_any")) == int((labels.No_Hemorrhage == 0).sum())


def test_rsna_series_grouped_and_sorted_by_position_are_the_twins_scans(twin, labels, rsna):
    by_series = defaultdict(list)
    for path in (rsna / pl.RSNA_TRAIN_DIR).iterdir():
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1" and ds.SOPInstanceUID == path.stem
        assert set(ds.dir()) <= set(RSNA_ELEMENTS), set(ds.dir()) - set(RSNA_ELEMENTS)
        by_series[ds.SeriesInstanceUID].append(ds)
    label_rows = dict(tuple(line.split(",")) for line in (rsna / pl.RSNA_LABELS).read_text().splitlines()[1:])
    assert len(by_series) == labels.PatientNumber.nunique()
    matched = set()
    for uid, slices in by_series.items():
        assert len({(ds.StudyInstanceUID, ds.PatientID) for ds in slices}) == 1
        assert pl.RSNA_FILE.match(f"{slices[0].PatientID}.dcm") and uid.startswith("ID_")
        slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
        hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])
        (patient,) = [p for p in labels.PatientNumber.unique()
                      if _nifti_stack(twin, p).shape == hu.shape and np.array_equal(_nifti_stack(twin, p), hu)]
        matched.add(patient)
        twin_rows = labels[labels.PatientNumber == patient].sort_values("SliceNumber")
        for ds, (_, row) in zip(slices, twin_rows.iterrows()):
            for theirs, ours in pl.RSNA_TO_SUBTYPE.items():
                assert int(label_rows[f"{ds.SOPInstanceUID}_{theirs}"]) == row[ours], (patient, theirs)
    assert matched == set(labels.PatientNumber.unique())


# --------------------------------------------------------------------------- both


def test_the_same_input_and_seed_give_byte_identical_files(twin, cq500_zips, rsna, tmp_path):
    write_cq500(twin, tmp_path / "cq500", seed=SEED, **QUIET)
    assert _hashes(tmp_path / "cq500") == _hashes(cq500_zips)
    write_rsna(twin, tmp_path / "rsna", seed=SEED, **QUIET)
    assert _hashes(tmp_path / "rsna") == _hashes(rsna)
    write_rsna(twin, tmp_path / "rsna-2", seed=SEED + 1, **QUIET)
    assert not set(_hashes(tmp_path / "rsna-2")) & set(_hashes(rsna)) - {pl.RSNA_LABELS, SYNTHETIC_MARKER}


def test_writers_refuse_a_full_destination_and_a_source_that_is_no_dataset(twin, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    one_line_error(lambda: write_rsna(twin, tmp_path / "full", **QUIET), "not empty")
    one_line_error(lambda: write_cq500(tmp_path / "full", tmp_path / "out", **QUIET), "not a CT-ICH v1.3.1")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- CLI


CLI_OPTIONS = ["--patients", "2", "--positive", "1", "--size", "32", "--min-slices", "8", "--max-slices", "9",
               "--seed", "5", "--generator", "cartoon"]
CLI_SPEC = SyntheticSpec(n_patients=2, n_positive=1, image_size=32, min_slices=8, max_slices=9, seed=5,
                         generator="cartoon")


@pytest.mark.parametrize("layout, extra, writer", [("cq500", [], write_cq500), ("cq500", ["--no-zip"], write_cq500),
                                                   ("rsna", [], write_rsna)])
def test_cli_writes_each_layout_as_the_api_does(layout, extra, writer, tmp_path, capsys):
    assert main(["synthetic", str(tmp_path / "cli"), *CLI_OPTIONS, "--layout", layout, *extra]) == 0
    out = capsys.readouterr().out
    assert "twin written to" in out and str(tmp_path / "cli") in out
    assert [p.name for p in tmp_path.iterdir()] == ["cli"]  # the NIfTI twin's temporary folder is gone
    generate_synthetic(tmp_path / "nifti", CLI_SPEC, **QUIET)
    options = {"zipped": not extra} if layout == "cq500" else {}
    writer(tmp_path / "nifti", tmp_path / "api", seed=CLI_SPEC.seed, **options, **QUIET)
    assert _hashes(tmp_path / "cli") == _hashes(tmp_path / "api")
    if layout == "cq500":
        assert any(pl.CQ500_ZIP.match(p.name) for p in (tmp_path / "cli").iterdir()) == (not extra)


@pytest.mark.parametrize("options, message", [
    (["--layout", "dicom"], "ichseq synthetic: --layout dicom: not one of ctich, cq500, rsna"),
    (["--layout", "rsna", "--no-zip"], "ichseq synthetic: --no-zip applies to --layout cq500 only"),
])
def test_cli_refuses_an_unknown_layout_in_one_line(options, message, tmp_path, capsys):
    assert main(["synthetic", str(tmp_path / "d"), *CLI_OPTIONS, *options]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message), err
    assert not list(tmp_path.iterdir())


def test_cli_layouts_are_the_format_twins_and_say_what_they_are(capsys):
    assert list(SYNTHETIC_LAYOUTS) == list(LAYOUTS)
    action = next(a for a in build_parser()._subparsers._group_actions[0].choices["synthetic"]._actions
                  if a.dest == "layout")
    assert action.default == "ctich" and action.metavar == "{ctich,cq500,rsna}"
    with pytest.raises(SystemExit):
        main(["synthetic", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in ("CQ500-CT-<n>.zip", "stage_2_train", "ct_scans/NNN.nii", "--no-zip"))


def test_the_cq500_reader_reads_the_cq500_twin_end_to_end(twin, labels, cq500_zips, cq500_folders):
    """The twin written in CQ500's layout, read by ichseq.data.cq500 as a real download would be:
    every patient found, labelled by the readers' majority, its plain series chosen and read back
    to the twin's HU."""
    from ichseq.data.cq500 import cq500_inventory, cq500_labels, read_cq500_reads, read_cq500_scan

    table, messages = cq500_inventory(cq500_zips, cq500_zips / pl.CQ500_READS)
    assert messages == []  # every reads.csv row has its scan and every scan its reads
    assert table.use.all() and sorted(table.patient) == sorted(labels.PatientNumber.unique())
    majority = cq500_labels(read_cq500_reads(cq500_zips / pl.CQ500_READS), "majority")
    assert table.set_index("patient").label.to_dict() == majority.label.to_dict()
    assert set(table.description) <= {"5mm", "PLAIN"}  # never the thin or the bone-kernel series
    folders, _ = cq500_inventory(cq500_folders, cq500_folders / pl.CQ500_READS)
    pd.testing.assert_frame_equal(table.drop(columns="location"), folders.drop(columns="location"))
    for row in table.itertuples():
        volume = read_cq500_scan(row.location, row.series_uid)
        np.testing.assert_allclose(volume.hu, _nifti_stack(twin, row.patient), atol=1.0)
