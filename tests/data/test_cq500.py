"""CQ500 (issue 26.1, the reading half): reads.csv, labels by rule, finding the scans zipped or
extracted, listing and choosing a series, reading it to HU. Inputs are built here with pydicom
in CQ500's layout (16x16 pixels, a few slices), some JPEG-lossless as CQ500's are."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ichseq.data.cq500 import (
    choose_series,
    cq500_inventory,
    cq500_labels,
    find_cq500_patients,
    list_series,
    read_cq500_reads,
    read_cq500_scan,
    write_series_choice,
)
from ichseq.data.dicom import COMPRESSIONS, _compress_file
from ichseq.data.layout import SUBTYPES
from ichseq.data.public_layouts import CQ500_STUDY_DIR, cq500_columns, cq500_patient_dir
from ichseq.data.reformat import Geometry, reformat_volume
from ichseq.errors import ConfigError
from tests.conftest import one_line_error

PATIENT = 7  # the patient on disk


def _hu(seed: int, k: int, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed * 1000 + k)
    return rng.integers(-1000, 1500, (size, size)).astype(np.int32)


def write_series(folder: Path, *, description: str, thickness: float, n: int, spacing: float | None = None,
                 kernel: str = "STANDARD", agent: str | None = None, localizer: bool = False, tilt_mm: float = 0.0,
                 compression: str = "none", seed: int = 0) -> str:
    """A CT series of ``n`` 16x16 slices in ``folder`` (CT000001.dcm ...); its SeriesInstanceUID."""
    folder.mkdir(parents=True, exist_ok=True)
    spacing = thickness if spacing is None else spacing
    uid = generate_uid(entropy_srcs=[str(folder), description])
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop = generate_uid(entropy_srcs=[uid, str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.Modality = "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER" if localizer else "AXIAL"]
        ds.SeriesDescription = description
        ds.SeriesInstanceUID = uid
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(folder.parent)])
        ds.InstanceNumber = k + 1
        ds.SliceThickness = f"{thickness:g}"
        ds.ConvolutionKernel = kernel
        if agent:
            ds.ContrastBolusAgent = agent
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        # Gantry tilt: each slice's origin moves along the rows as it moves along the normal.
        ds.ImagePositionPatient = [-115.0, -115.0 + k * tilt_mm, -40.0 + k * spacing]
        ds.PixelSpacing = [14.375, 14.375]  # 16 px x 14.375 mm = a 230 mm field of view
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
        ds.PixelData = (_hu(seed, k) + 1024).astype("<u2").tobytes()
        path = folder / f"CT{k + 1:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if compression != "none":
            _compress_file(path, COMPRESSIONS[compression])
    return uid


def study(root: Path, patient: int) -> Path:
    return root / cq500_patient_dir(patient) / CQ500_STUDY_DIR


def zip_patient(folder: Path, dest: Path) -> Path:
    """``folder`` (a ``CQ500CT<n> CQ500CT<n>`` folder) as CQ500 zips it: the folder at the top."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return dest


def reads_rows(n: int = 491, **overrides) -> pd.DataFrame:
    """A reads.csv of ``n`` patients CQ500-CT-0 ... all 0, ``overrides``: {'7:R1:ICH': 1}."""
    columns = cq500_columns()
    df = pd.DataFrame(0, index=range(n), columns=columns)
    df["name"] = [f"CQ500-CT-{i}" for i in range(n)]
    df["Category"] = ["B1" if i < 200 else "CQ500" for i in range(n)]
    for key, value in overrides.items():
        patient, column = key.split(":", 1)
        df.loc[int(patient), column] = value
    return df


# Patient 7: ICH by R1 and R2, not R3; a subdural by R1+R2, an intraparenchymal by R1 only;
# a fracture by R3 only. Patient 8: ICH by R3 only.
VOTES = {"7:R1:ICH": 1, "7:R2:ICH": 1, "7:R1:SDH": 1, "7:R2:SDH": 1, "7:R1:IPH": 1, "7:R3:Fracture": 1,
         "8:R3:ICH": 1}


@pytest.fixture(scope="module")
def cq500(tmp_path_factory):
    """``(extracted root, zipped root, reads.csv, {description: uid})``: one patient (7) with
    five series, beside a 491-row reads.csv; do not modify."""
    base = tmp_path_factory.mktemp("cq500")
    extracted = base / "extracted"
    s = study(extracted, PATIENT)
    uids = {
        "PRE CONTRAST THIN": write_series(s / "CT PRE CONTRAST THIN", description="PRE CONTRAST THIN",
                                          thickness=0.625, n=16, seed=1),
        "5mm": write_series(s / "CT 5mm", description="5mm", thickness=5, n=4, tilt_mm=1.5,
                            compression="jpeg-lossless", seed=2),
        "BONE 5mm": write_series(s / "CT BONE 5mm", description="BONE 5mm", thickness=5, n=5, kernel="BONE", seed=3),
        "POST CONTRAST": write_series(s / "CT POST CONTRAST", description="POST CONTRAST", thickness=5, n=5,
                                      agent="OMNIPAQUE", seed=4),
        "4mm": write_series(s / "CT 4mm", description="4mm", thickness=4, n=3, seed=5),
    }
    zipped = base / "zipped"
    zipped.mkdir()
    zip_patient(extracted / cq500_patient_dir(PATIENT), zipped / f"CQ500-CT-{PATIENT}.zip")
    reads = base / "reads.csv"
    reads_rows(**VOTES).to_csv(reads, index=False)
    return extracted, zipped, reads, uids


def test_labels_follow_the_rule(cq500):
    reads = read_cq500_reads(cq500[2])
    assert len(reads) == 491 and reads.index[0] == 0 and reads.at[490, "name"] == "CQ500-CT-490"
    majority, anyone, r3 = (cq500_labels(reads, rule) for rule in ("majority", "any", "R3"))
    assert list(majority.columns) == ["label", *SUBTYPES, "fracture"]
    assert majority.at[7, "label"] == 1 and anyone.at[7, "label"] == 1 and r3.at[7, "label"] == 0
    assert majority.at[8, "label"] == 0 and anyone.at[8, "label"] == 1 and r3.at[8, "label"] == 1
    assert majority.at[7, "Subdural"] == 1 and majority.at[7, "Intraparenchymal"] == 0
    assert anyone.at[7, "Intraparenchymal"] == 1 and r3.at[7, "Subdural"] == 0
    assert (majority.at[7, "fracture"], anyone.at[7, "fracture"], r3.at[7, "fracture"]) == (0, 1, 1)
    assert majority["label"].sum() == 1 and anyone["label"].sum() == 2
    with pytest.raises(ConfigError, match="R4"):
        cq500_labels(reads, "R4")


def test_a_bom_and_another_column_order_read_the_same(cq500, tmp_path):
    df = reads_rows(**VOTES)
    shuffled = df[list(reversed(df.columns))]
    raw = b"\xef\xbb\xbf" + shuffled.to_csv(index=False).encode()
    (tmp_path / "reads.csv").write_bytes(raw)
    pd.testing.assert_frame_equal(read_cq500_reads(tmp_path / "reads.csv"), read_cq500_reads(cq500[2]))
    pd.testing.assert_frame_equal(read_cq500_reads(raw, "upload.csv"), read_cq500_reads(cq500[2]))


@pytest.mark.parametrize("damage, needles", [
    (lambda df: df.drop(columns=["R2:SAH", "R3:EDH"]), ["missing columns R2:SAH, R3:EDH", "CQ500's reads.csv"]),
    (lambda df: df.assign(Extra=0), ["unknown column Extra", "CQ500's reads.csv"]),
    (lambda df: df.rename(columns={"R1:ICH": "R1: ICH bleed"}), ["missing column R1:ICH", "unknown column R1: ICH bleed"]),
    (lambda df: df.assign(name=df["name"].where(df.index != 3, "patient 3")), ["row 5", "'patient 3'", "CQ500-CT-<n>"]),
    (lambda df: df.assign(**{"R2:IVH": df["R2:IVH"].where(df.index != 10, 2)}), ["CQ500-CT-10", "R2:IVH", "'2'", "0 or 1"]),
    (lambda df: df.assign(**{"R1:SDH": df["R1:SDH"].astype(object).where(df.index != 4, "")}), ["CQ500-CT-4", "R1:SDH", "''"]),
    (lambda df: df.assign(name=df["name"].where(df.index != 5, "CQ500-CT-4")), ["rows 6 and 7", "CQ500-CT-4"]),
    (lambda df: df.iloc[:0], ["no patients"]),
])
def test_a_bad_reads_csv_is_one_line_naming_the_file(tmp_path, damage, needles):
    path = tmp_path / "my_reads.csv"
    damage(reads_rows(20)).to_csv(path, index=False)
    one_line_error(lambda: read_cq500_reads(path), str(path), *needles)


def test_a_missing_empty_or_binary_reads_csv_is_one_line(tmp_path):
    one_line_error(lambda: read_cq500_reads(tmp_path / "reads.csv"), str(tmp_path / "reads.csv"), "does not exist")
    (tmp_path / "empty.csv").write_bytes(b"")
    one_line_error(lambda: read_cq500_reads(tmp_path / "empty.csv"), "empty.csv", "empty")
    one_line_error(lambda: read_cq500_reads(b"\x00\xff\xfe binary", "x.bin"), "x.bin", "CQ500's reads.csv")


def test_list_series_reads_the_headers_of_every_series(cq500):
    extracted, zipped, _, uids = cq500
    folder = list_series(extracted / cq500_patient_dir(PATIENT))
    in_zip = list_series(zipped / f"CQ500-CT-{PATIENT}.zip")
    assert (folder["patient"] == PATIENT).all()
    pd.testing.assert_frame_equal(folder.drop(columns="location"), in_zip.drop(columns="location"))
    by = folder.set_index("description")
    assert set(by.index) == set(uids) and all(by.at[d, "series_uid"] == u for d, u in uids.items())
    assert by.at["PRE CONTRAST THIN", "files"] == 16 and by.at["PRE CONTRAST THIN", "spacing_mm"] == 0.625
    assert by.at["5mm", "spacing_mm"] == 5.0  # along the normal, though tilted
    assert by.at["5mm", "folder"] == f"{CQ500_STUDY_DIR}/CT 5mm"  # inside the patient folder, zipped or not
    assert by["sharp"].to_dict() == {d: d == "BONE 5mm" for d in uids}
    assert by["contrast"].to_dict() == {d: d == "POST CONTRAST" for d in uids}  # "PRE CONTRAST" is plain
    assert not by["localizer"].any() and (by["problem"] == "").all()


def test_the_5mm_soft_tissue_series_is_chosen_over_thin_bone_and_contrast(cq500):
    extracted, _, _, uids = cq500
    pick = choose_series(list_series(extracted / cq500_patient_dir(PATIENT))).loc[PATIENT]
    assert pick["series_uid"] == uids["5mm"] and pick["slices"] == 4 and not pick["reformat"]
    assert "nearest 5 mm" in pick["reason"] and "'BONE 5mm'" in pick["reason"] and "sharp kernel" in pick["reason"]
    assert "contrast-enhanced" in pick["reason"]
    # Nearest 4 mm: the 4 mm one; nearest 1 mm: the thin one, which would then be kept slice for slice.
    assert choose_series(list_series(extracted / cq500_patient_dir(PATIENT)), prefer_mm=4).at[PATIENT, "series_uid"] == uids["4mm"]
    thin = choose_series(list_series(extracted / cq500_patient_dir(PATIENT)), prefer_mm=0.6).loc[PATIENT]
    assert thin["series_uid"] == uids["PRE CONTRAST THIN"] and not thin["reformat"]


def test_the_thin_series_is_chosen_when_no_thick_one_is_acceptable(tmp_path):
    s = study(tmp_path, 3)
    thin = write_series(s / "CT PLAIN THIN", description="PLAIN THIN", thickness=0.625, n=8)
    write_series(s / "CT BONE", description="BONE", thickness=5, n=4, kernel="H70h")
    write_series(s / "CT 5mm CONTRAST", description="5mm CONTRAST", thickness=5, n=4)
    pick = choose_series(list_series(tmp_path / cq500_patient_dir(3))).loc[3]
    assert pick["series_uid"] == thin and pick["reformat"]
    assert "reformatted" in pick["reason"] and "5 mm slabs" in pick["reason"]


def test_ties_go_to_more_slices_then_description_order(tmp_path):
    s = study(tmp_path, 4)
    write_series(s / "CT B", description="B", thickness=5, n=4)
    more = write_series(s / "CT C", description="C", thickness=5, n=6)
    assert choose_series(list_series(tmp_path / cq500_patient_dir(4))).at[4, "series_uid"] == more
    shutil.rmtree(s / "CT C")
    first = write_series(s / "CT A", description="A", thickness=5, n=4)
    assert choose_series(list_series(tmp_path / cq500_patient_dir(4))).at[4, "series_uid"] == first


def test_a_pinned_series_wins(cq500):
    extracted, _, _, uids = cq500
    series = list_series(extracted / cq500_patient_dir(PATIENT))
    by_text = choose_series(series, choice={PATIENT: "bone"}).loc[PATIENT]
    assert by_text["series_uid"] == uids["BONE 5mm"] and "pinned" in by_text["reason"]
    assert "the pin wins" in by_text["reason"]
    by_uid = choose_series(series, choice={f"CQ500-CT-{PATIENT}": uids["PRE CONTRAST THIN"]}).loc[PATIENT]
    assert by_uid["series_uid"] == uids["PRE CONTRAST THIN"] and by_uid["reformat"]
    assert choose_series(series, choice={PATIENT: "5mm"}).at[PATIENT, "series_uid"] == uids["5mm"]  # exact beats part
    for pin, needle in (("LUNG", "matches none"), ("CONTRAST", "matches 2 series")):
        with pytest.raises(ConfigError) as err:
            choose_series(series, choice={PATIENT: pin})
        assert f"CQ500-CT-{PATIENT}" in str(err.value) and needle in str(err.value) and "\n" not in str(err.value)


def test_zipped_and_extracted_give_the_same_inventory_and_hounsfield_units(cq500, tmp_path):
    extracted, zipped, reads, uids = cq500
    tables = {}
    for name, root in (("extracted", extracted), ("zipped", zipped)):
        table, messages = cq500_inventory(root, reads)
        assert len(table) == 491 and table["patient"].tolist() == list(range(491))
        assert messages == [f"490 of 491 reads.csv rows have no scan under {root}: CQ500-CT-0, CQ500-CT-1, "
                            f"CQ500-CT-2, CQ500-CT-3, CQ500-CT-4, ... (485 more)"]
        tables[name] = table
    a, b = (t.drop(columns="location").drop(columns="reason") for t in tables.values())
    pd.testing.assert_frame_equal(a, b)
    row = tables["zipped"].set_index("patient").loc[PATIENT]
    assert row["use"] and row["series_uid"] == uids["5mm"] and row["description"] == "5mm"
    assert row["label"] == 1 and row["Subdural"] == 1 and row["thickness_mm"] == 5.0 and row["slices"] == 4
    assert row["location"].endswith(f"CQ500-CT-{PATIENT}.zip")
    assert not tables["zipped"].set_index("patient").loc[0, "use"]
    assert tables["zipped"].set_index("patient")["label"].isna().sum() == 0
    volumes = [read_cq500_scan(row["location"], row["series_uid"], row["folder"]),
               read_cq500_scan(extracted / cq500_patient_dir(PATIENT), uids["5mm"])]  # the folder looked up
    for volume in volumes:
        assert volume.name == f"CQ500-CT-{PATIENT}" and volume.hu.shape == (4, 16, 16)
        np.testing.assert_array_equal(volume.hu, np.stack([_hu(2, k) for k in range(4)]).astype(np.float32))
        np.testing.assert_allclose(volume.in_plane_offsets_mm[:, 0], [0, 1.5, 3.0, 4.5])  # the tilt, kept
    np.testing.assert_array_equal(volumes[0].positions, volumes[1].positions)
    assert volumes[0].source.startswith(str(zipped)) and volumes[0].files[0].endswith("CT 5mm/CT000001.dcm")
    path = write_series_choice(tables["zipped"], tmp_path / "series_choice.csv")
    back = pd.read_csv(path)
    assert len(back) == 491 and back.loc[PATIENT, "series_uid"] == uids["5mm"]


def test_a_thin_series_from_a_zip_reformats_to_5mm_slabs(cq500):
    _, zipped, _, uids = cq500
    volume = read_cq500_scan(zipped / f"CQ500-CT-{PATIENT}.zip", uids["PRE CONTRAST THIN"])
    assert volume.hu.shape == (16, 16, 16) and volume.slice_thickness_mm == 0.625
    slabbed, report = reformat_volume(volume, Geometry(5.0, 230.0, 16))
    assert report["slabs"]["applied"] and slabbed.hu.shape == (2, 16, 16)
    expected = np.stack([_hu(1, k) for k in range(16)]).astype(np.float64)
    np.testing.assert_allclose(slabbed.hu, [expected[:8].mean(0), expected[8:].mean(0)], rtol=1e-6)


def test_unusable_patients_are_skipped_with_their_reason(cq500, tmp_path):
    extracted, _, reads, uids = cq500
    root = tmp_path / "root"
    shutil.copytree(extracted, root)
    with zipfile.ZipFile(root / "CQ500-CT-12.zip", "w") as zf:  # no DICOM in it
        zf.writestr("CQ500CT12 CQ500CT12/Unknown Study/CT 5mm/readme.txt", "not an image")
    write_series(study(root, 13) / "CT SCOUT", description="SCOUT", thickness=1, n=2, localizer=True)
    (root / "CQ500-CT-14.zip").write_bytes(b"PK\x03\x04 truncated")
    write_series(study(root, 600) / "CT 5mm", description="5mm", thickness=5, n=3)  # not in reads.csv
    (study(root, PATIENT) / "CT 5mm" / "SR000001.dcm").write_bytes(  # a DICOM file without an image
        b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x08\x001.2.3.4\0")
    table, messages = cq500_inventory(root, reads)
    by = table.set_index("patient")
    assert by.loc[PATIENT, "use"] and by.loc[PATIENT, "series_uid"] == uids["5mm"]
    assert not by.loc[[12, 13, 14, 600], "use"].any()
    assert "no DICOM series" in by.at[12, "reason"] and "skipped" in by.at[12, "reason"]
    assert "localizer" in by.at[13, "reason"] and "skipped" in by.at[13, "reason"] and by.at[13, "series_uid"] == ""
    assert "not a readable zip" in by.at[14, "reason"]
    assert by.at[600, "on_disk"] and not by.at[600, "in_reads"] and pd.isna(by.at[600, "label"])
    assert len(messages) == 3 and messages[0].startswith("487 of 491 reads.csv rows")
    assert messages[1].startswith("1 scan(s)") and "CQ500-CT-600" in messages[1]
    assert messages[2].startswith("3 patient(s) with no usable series") and "CQ500-CT-12, CQ500-CT-13, CQ500-CT-14" in messages[2]
    assert all("\n" not in m for m in messages)


def test_discovery_accepts_nested_wrapped_and_duplicate_layouts(cq500, tmp_path):
    extracted, zipped, reads, _ = cq500
    patient_dir = extracted / cq500_patient_dir(PATIENT)
    root = tmp_path / "downloads"
    (root / "cq500").mkdir(parents=True)
    shutil.copy(zipped / f"CQ500-CT-{PATIENT}.zip", root / "cq500" / f"CQ500-CT-{PATIENT}.zip")  # nested one level
    shutil.copytree(patient_dir, root / "CQ500-CT-20" / cq500_patient_dir(20))  # unzipped into a folder of its name
    shutil.copytree(patient_dir, root / "cq500" / cq500_patient_dir(PATIENT))  # and extracted beside its zip
    found = find_cq500_patients(root)
    assert found == {PATIENT: root / "cq500" / cq500_patient_dir(PATIENT), 20: root / "CQ500-CT-20" / cq500_patient_dir(20)}
    assert find_cq500_patients(patient_dir) == {PATIENT: patient_dir}  # the patient's own folder
    assert find_cq500_patients(extracted) == {PATIENT: patient_dir}  # its parent
    _, messages = cq500_inventory(root, reads)
    (twice,) = [m for m in messages if "more than once" in m]
    assert "CQ500-CT-7" in twice and "extracted folder before a zip" in twice
    one_line_error(lambda: find_cq500_patients(tmp_path / "nowhere"), "nowhere", "does not exist")


def test_pydicoms_compressed_ct_files_list_through_the_cq500_layout(tmp_path):
    """pydicom's bundled CT slices (uncompressed, JPEG 2000 lossy and lossless) and a
    JPEG-lossless copy of CT_small written by the project's helper, as CQ500 series folders,
    extracted and zipped."""
    s = study(tmp_path, 5)
    names = {"CT_small.dcm": "CT SMALL", "693_J2KI.dcm": "CT J2KI", "J2K_pixelrep_mismatch.dcm": "CT J2K"}
    for name, folder in names.items():
        (s / folder).mkdir(parents=True)
        shutil.copy(get_testdata_file(name), s / folder / "CT000001.dcm")
    (s / "CT SMALL JPEG").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), s / "CT SMALL JPEG" / "CT000001.dcm")
    _compress_file(s / "CT SMALL JPEG" / "CT000001.dcm", COMPRESSIONS["jpeg-lossless"])
    assert pydicom.dcmread(s / "CT SMALL JPEG" / "CT000001.dcm").file_meta.TransferSyntaxUID == COMPRESSIONS["jpeg-lossless"]
    extracted = list_series(tmp_path / cq500_patient_dir(5))
    in_zip = list_series(zip_patient(tmp_path / cq500_patient_dir(5), tmp_path / "CQ500-CT-5.zip"))
    pd.testing.assert_frame_equal(extracted.drop(columns="location"), in_zip.drop(columns="location"))
    by = extracted.set_index("description")
    assert set(by.index) == {"SMALL", "J2KI", "J2K", "SMALL JPEG"} and (by["files"] == 1).all()
    assert by.at["SMALL", "contrast"] and by.at["SMALL JPEG", "contrast"]  # ISOVUE300/100
    assert not by.at["J2KI", "contrast"] and by.at["J2KI", "series_description"] == "5/5mm Plain"
    assert by.at["SMALL", "thickness_mm"] == 5.0 and by.at["SMALL", "kernel"] == "STANDARD"
    assert (by["modality"] == "CT").all() and not by["sharp"].any()
    assert by.at["SMALL", "series_uid"] == by.at["SMALL JPEG", "series_uid"]  # one UID, two folders: two rows
    reasons = choose_series(extracted).at[5, "reason"]  # single images and contrast: nothing to read
    assert reasons.startswith("no acceptable series") and "a single image" in reasons
