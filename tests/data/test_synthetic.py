"""The synthetic CT-ICH twin: layout, file formats, cohort composition, anatomy, lesions,
mimics (and the per-slice vs. neighbour-aware property they exist for), determinism and
atomic writing."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import asdict, replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from ichseq.data.layout import (
    DEMOGRAPHICS_CSV,
    NIFTI_CSV,
    NIFTI_MASK_DIR,
    NIFTI_SCAN_DIR,
    SUBTYPES,
    patient_file,
)
from ichseq.data.synthetic import SyntheticSpec, generate_synthetic, positive_patients, synthesize_scan
from ichseq.errors import DataError
from tests.conftest import fail_on_call, generate_capturing
from tests.test_atomic import killed_child

QUIET = {"log": lambda _msg: None}
CSV_HEADER = (
    "PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,"
    "No_Hemorrhage,Fracture_Yes_No"
)
REAL_NUMBERS = [p for p in range(49, 131) if not 59 <= p <= 65]
# This module tests the cartoon generator (the anatomical one: tests/data/test_twin.py). CARTOON is the
# default spec with it; patient numbers and who bleeds do not depend on the generator.
CARTOON = replace(SyntheticSpec(), generator="cartoon")
SMALL = SyntheticSpec(n_patients=6, n_positive=3, image_size=32, min_slices=10, max_slices=14, seed=3,
                      generator="cartoon")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def default_cohort(tmp_path_factory):
    """The default spec with the cartoon generator, generated once (~4 s); the in-memory scans are
    captured on the way."""
    dest = tmp_path_factory.mktemp("default") / "ct-ich"
    scans, summary = generate_capturing(dest, CARTOON)
    return dest, scans, summary


@pytest.fixture(scope="module")
def default_dir(default_cohort):
    return default_cohort[0]


@pytest.fixture(scope="module")
def default_scans(default_cohort) -> dict:
    return default_cohort[1]


@pytest.fixture(scope="module")
def default_csv(default_dir) -> pd.DataFrame:
    return pd.read_csv(default_dir / NIFTI_CSV, encoding="utf-8-sig")


def _files(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- HU-only helpers


def brain_region(hu: np.ndarray) -> np.ndarray:
    """Pixels inside the skull of one HU slice, with a 2-pixel margin from the bone.

    Found from the image alone: the head is everything above -500 HU; the skull is the
    large connected bone (> 150 HU) structure (small dense spots inside the brain, i.e.
    calcifications, are kept as brain); scalp is removed by eroding the head by 4 pixels.
    """
    head = ndi.binary_fill_holes(hu > -500)
    dense = hu > 150
    labels, _ = ndi.label(dense)
    big = np.bincount(labels.ravel()) >= 30
    big[0] = False
    skull = big[labels]
    return ndi.binary_erosion(head, iterations=4) & ~ndi.binary_dilation(skull, iterations=2)


def bright_counts(hu_stack: np.ndarray, threshold: float = 55.0) -> np.ndarray:
    """Per slice: number of in-brain pixels brighter than ``threshold`` HU (blood range)."""
    return np.array([int(((h > threshold) & brain_region(h)).sum()) for h in hu_stack.astype(np.int32)])


def slice_labels(scan) -> np.ndarray:
    return np.array([1 - row["No_Hemorrhage"] for row in scan.labels])


# --------------------------------------------------------------------------- spec / cohort numbering


def test_default_patient_numbers_are_the_real_cohort():
    numbers = SyntheticSpec().patient_numbers()
    assert numbers == REAL_NUMBERS
    assert len(numbers) == 75
    assert numbers[0] == 49 and numbers[-1] == 130
    assert not set(range(59, 66)) & set(numbers)


def test_patient_numbers_continue_past_130():
    numbers = SyntheticSpec(n_patients=78, n_positive=10).patient_numbers()
    assert numbers[:75] == REAL_NUMBERS
    assert numbers[75:] == [131, 132, 133]
    assert SyntheticSpec(n_patients=4, n_positive=1).patient_numbers() == [49, 50, 51, 52]


def test_default_positive_patients_without_generating():
    spec = SyntheticSpec()
    positives = positive_patients(spec)
    assert len(positives) == 36
    assert positives <= set(REAL_NUMBERS)
    assert positive_patients(SyntheticSpec()) == positives  # deterministic
    assert positive_patients(SyntheticSpec(seed=1)) != positives


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_patients": 0},
        {"n_patients": 4, "n_positive": 5},
        {"n_positive": -1},
        {"image_size": 16},
        {"min_slices": 7},
        {"min_slices": 30, "max_slices": 20},
        {"generator": "voxel"},
        {"difficulty": "extreme"},
        {"kernel": "sharp"},
        {"slice_thickness_mm": 0.4},
        {"slice_thickness_mm": 12.0},
    ],
)
def test_spec_rejects_impossible_values(kwargs):
    with pytest.raises(ValueError):
        SyntheticSpec(**kwargs)


# --------------------------------------------------------------------------- layout and formats


def test_layout_is_exactly_the_v131_file_set(default_dir):
    """The release's files, plus the marker that says what made them (a model trained on them
    then says it was trained on synthetic data)."""
    import json

    from ichseq.data.synthetic import SYNTHETIC_MARKER

    marker = json.loads((default_dir / SYNTHETIC_MARKER).read_text())
    assert marker["generator"] == "ichseq synthetic" and marker["spec"]["n_patients"] == len(REAL_NUMBERS)
    expected = {NIFTI_CSV, DEMOGRAPHICS_CSV, SYNTHETIC_MARKER}
    for p in REAL_NUMBERS:
        expected |= {f"{NIFTI_SCAN_DIR}/{p:03d}.nii", f"{NIFTI_MASK_DIR}/{p:03d}.nii"}
    found = {p.relative_to(default_dir).as_posix() for p in default_dir.rglob("*") if p.is_file()}
    assert found == expected
    dirs = {p.relative_to(default_dir).as_posix() for p in default_dir.rglob("*") if p.is_dir()}
    assert dirs == {NIFTI_SCAN_DIR, NIFTI_MASK_DIR}
    # Nothing left beside it either (the temporary folder was renamed, not copied).
    assert [p.name for p in default_dir.parent.iterdir()] == [default_dir.name]


def test_diagnosis_csv_has_bom_and_the_exact_header(default_dir):
    raw = (default_dir / NIFTI_CSV).read_bytes()
    assert raw[:3] == b"\xef\xbb\xbf"
    assert raw[3:].decode("utf-8").splitlines()[0] == CSV_HEADER
    assert raw.count(b"\xef\xbb\xbf") == 1


def test_diagnosis_csv_rows_cover_every_slice_of_every_scan(default_dir, default_csv):
    assert default_csv.PatientNumber.unique().tolist() == REAL_NUMBERS
    for patient, g in default_csv.groupby("PatientNumber"):
        n = nib.load(default_dir / NIFTI_SCAN_DIR / patient_file(patient)).shape[2]
        assert g.SliceNumber.tolist() == list(range(1, n + 1))
    # Every value is 0/1 and No_Hemorrhage is the complement of "any subtype".
    flags = default_csv[[*SUBTYPES, "No_Hemorrhage", "Fracture_Yes_No"]]
    assert set(np.unique(flags)) == {0, 1}
    assert (default_csv[list(SUBTYPES)].max(axis=1) == 1 - default_csv.No_Hemorrhage).all()


def test_nifti_dtypes_values_and_affines(default_dir, default_scans):
    size = SyntheticSpec().image_size
    for patient in REAL_NUMBERS:
        scan_img = nib.load(default_dir / NIFTI_SCAN_DIR / patient_file(patient))
        mask_img = nib.load(default_dir / NIFTI_MASK_DIR / patient_file(patient))
        assert scan_img.get_data_dtype() == np.int16
        assert scan_img.dataobj.slope in (1.0, None) and scan_img.dataobj.inter in (0.0, None)
        mask = np.asanyarray(mask_img.dataobj)
        assert set(np.unique(mask)) <= {0, 255}
        assert scan_img.shape == mask_img.shape == (size, size, len(default_scans[patient].labels))
        # A proper RAS affine: qform == sform, both coded, 5 mm slices, radiological in-plane.
        for img in (scan_img, mask_img):
            hdr = img.header
            assert int(hdr["qform_code"]) > 0 and int(hdr["sform_code"]) > 0
            np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-4)
            np.testing.assert_allclose(img.affine, scan_img.affine, atol=1e-6)
        assert nib.aff2axcodes(scan_img.affine) == ("L", "P", "S")
        np.testing.assert_allclose(scan_img.header.get_zooms()[:3], (230 / size, 230 / size, 5.0), rtol=1e-5)
        rot = scan_img.affine[:3, :3] / np.array([230 / size, 230 / size, 5.0])
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-6)  # orthonormal, no shear
    # The stored volume is the in-memory stack in (cols, rows, slices) order.
    scan = default_scans[49]
    data = np.asanyarray(nib.load(default_dir / NIFTI_SCAN_DIR / "049.nii").dataobj)
    np.testing.assert_array_equal(data.transpose(2, 1, 0), scan.hu)


def test_positive_patients_masks_use_255(default_dir, default_csv):
    positives = default_csv.groupby("PatientNumber").No_Hemorrhage.min().eq(0)
    patient = int(positives[positives].index[0])
    mask = np.asanyarray(nib.load(default_dir / NIFTI_MASK_DIR / patient_file(patient)).dataobj)
    assert set(np.unique(mask)) == {0, 255}


def test_demographics_agree_with_the_diagnosis_csv(default_dir, default_csv):
    demo = pd.read_csv(default_dir / DEMOGRAPHICS_CSV)
    assert demo["Patient Number"].tolist() == REAL_NUMBERS
    per_patient = default_csv.groupby("PatientNumber")[[*SUBTYPES, "Fracture_Yes_No"]].max()
    for s in SUBTYPES:
        assert demo[s].tolist() == per_patient[s].tolist(), s
    assert demo["Fracture (yes 1/no 0)"].tolist() == per_patient["Fracture_Yes_No"].tolist()
    assert demo["Age (years)"].between(18, 85).all()
    assert set(demo["Gender"]) <= {"M", "F"}


# --------------------------------------------------------------------------- cohort composition


def test_default_cohort_composition(default_csv, default_cohort):
    per_scan = default_csv.groupby("PatientNumber").size()
    assert per_scan.between(24, 57).all()
    assert per_scan.max() - per_scan.min() >= 20  # scans really vary in length
    positive_slices = (default_csv.No_Hemorrhage == 0).mean()
    assert 0.08 <= positive_slices <= 0.15
    positive = default_csv.groupby("PatientNumber").No_Hemorrhage.min().eq(0)
    assert int(positive.sum()) == 36
    assert set(positive[positive].index) == positive_patients(SyntheticSpec())
    summary = default_cohort[2]
    assert summary["slices"] == len(default_csv)
    assert summary["positive_slices"] == int((default_csv.No_Hemorrhage == 0).sum())
    assert summary["positive_patients"] == 36


def test_every_subtype_occurs_in_the_default_cohort(default_csv):
    for s in SUBTYPES:
        patients = default_csv.loc[default_csv[s] == 1, "PatientNumber"].nunique()
        assert patients >= 2, s
    assert default_csv.Fracture_Yes_No.sum() > 0


def test_masks_and_csv_agree_slice_by_slice(default_dir, default_csv):
    for patient, g in default_csv.groupby("PatientNumber"):
        mask = np.asanyarray(nib.load(default_dir / NIFTI_MASK_DIR / patient_file(patient)).dataobj)
        nonempty = mask.reshape(-1, mask.shape[2]).any(axis=0)  # per slice (third axis)
        labelled = (g.sort_values("SliceNumber").No_Hemorrhage == 0).to_numpy()
        np.testing.assert_array_equal(nonempty, labelled, err_msg=f"patient {patient}")


def test_positive_slices_come_in_runs_of_at_least_two(default_csv):
    for patient, g in default_csv.groupby("PatientNumber"):
        for s in SUBTYPES:
            flags = g.sort_values("SliceNumber")[s].to_numpy()
            if not flags.any():
                continue
            edges = np.diff(np.concatenate([[0], flags, [0]]))
            lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
            assert lengths.min() >= 2, (patient, s, lengths)


def test_every_lesion_spans_2_to_15_consecutive_labelled_slices(default_scans):
    n_lesions = 0
    for scan in default_scans.values():
        n_slices = len(scan.labels)
        for lesion in scan.lesions:
            n_lesions += 1
            assert 2 <= lesion.length <= 15
            assert 0 <= lesion.first and lesion.first + lesion.length <= n_slices
            for k in range(lesion.first, lesion.first + lesion.length):
                assert scan.labels[k][lesion.subtype] == 1
                assert scan.mask[k].any()
        # A slice is labelled with a subtype exactly where a lesion of it is.
        for s in SUBTYPES:
            covered = [any(les.subtype == s and les.covers(k) for les in scan.lesions) for k in range(n_slices)]
            assert [bool(row[s]) for row in scan.labels] == covered
        assert (len(scan.lesions) > 0) == bool(slice_labels(scan).any())
    assert n_lesions >= 36
    lengths = Counter(les.length for scan in default_scans.values() for les in scan.lesions)
    assert min(lengths) <= 4 and max(lengths) >= 12  # short and long bleeds both occur


def test_lesions_stay_inside_the_brain(default_scans):
    for scan in default_scans.values():
        for k in np.flatnonzero(scan.mask.reshape(len(scan.mask), -1).any(axis=1)):
            # Mask pixels are never in the air and never on solid bone's core.
            assert (scan.hu[k][scan.mask[k]] > -100).all()


# --------------------------------------------------------------------------- anatomy (HU)


@pytest.mark.parametrize("patient", [49, 80, 100, 130])
def test_anatomy_hu_ranges(default_scans, patient):
    scan = default_scans[patient]
    hu = scan.hu.astype(np.int32)
    n_slices, size, _ = hu.shape
    # Air in the corners is exactly -1000 HU (no noise in air).
    corners = np.concatenate([hu[:, :6, :6], hu[:, :6, -6:], hu[:, -6:, :6], hu[:, -6:, -6:]], axis=1)
    assert (corners == -1000).all()
    assert (hu >= -1024).all() and (hu <= 3071).all()
    # Every slice has a skull (> 700 HU).
    assert ((hu > 700).reshape(n_slices, -1).sum(axis=1) >= 20).all()
    # Parenchyma: median of the brain (lesions excluded) between 20 and 45 HU on every slice.
    for k in range(n_slices):
        brain = brain_region(hu[k]) & ~scan.mask[k]
        assert brain.sum() > 200
        assert 20 <= np.median(hu[k][brain]) <= 45, k
    # Ventricles (~5 HU) in the middle of the head on mid-height slices.
    mid = n_slices // 2
    smooth = ndi.gaussian_filter(hu[mid].astype(float), 1.0)
    c = size // 2
    centre = np.zeros_like(smooth, dtype=bool)
    centre[c - size // 5 : c + size // 5, c - size // 5 : c + size // 5] = True
    csf = centre & brain_region(hu[mid]) & (smooth > -5) & (smooth < 15)
    assert csf.sum() >= 10
    assert abs(np.median(hu[mid][csf]) - 5) <= 6


def test_hemorrhage_pixels_are_in_the_blood_range(default_scans):
    blood = np.concatenate([s.hu[s.mask] for s in default_scans.values() if s.mask.any()]).astype(np.int32)
    assert 50 <= np.median(blood) <= 90
    # Most labelled pixels lie in the blood range, not in bone or parenchyma.
    assert np.mean((blood >= 45) & (blood <= 100)) > 0.8


def test_each_patients_hemorrhage_median_is_in_the_blood_range(default_scans):
    medians = {p: float(np.median(s.hu[s.mask])) for p, s in default_scans.items() if s.mask.any()}
    outside = {p: m for p, m in medians.items() if not 50 <= m <= 90}
    assert not outside, outside


# --------------------------------------------------------------------------- mimics


def test_mimics_occur_in_negative_and_positive_scans(default_scans):
    negative = [s for s in default_scans.values() if not s.lesions]
    positive = [s for s in default_scans.values() if s.lesions]
    assert sum(bool(s.mimic_slices) for s in negative) >= len(negative) // 2
    assert sum(bool(s.mimic_slices) for s in positive) >= len(positive) // 2
    per_scan = np.mean([len(s.mimic_slices) for s in default_scans.values()])
    assert 3.0 <= per_scan <= 5.0  # Poisson mean 4
    kinds = Counter(kind for s in default_scans.values() for kind in s.mimic_slices.values())
    assert set(kinds) == {"calcification", "streak"}
    for scan in default_scans.values():
        assert all(0 <= k < len(scan.labels) for k in scan.mimic_slices)
        # A mimic is not a label: mimic slices of negative scans stay negative.
        if not scan.lesions:
            assert not slice_labels(scan).any()
            assert not scan.mask.any()


def test_no_mimics_when_disabled():
    spec = SyntheticSpec(n_patients=6, n_positive=3, image_size=32, min_slices=10, max_slices=12, mimics_per_scan=0,
                         generator="cartoon")
    for p in spec.patient_numbers():
        assert synthesize_scan(p, p in positive_patients(spec), spec).mimic_slices == {}


def test_mimic_brightness_is_confined_to_its_slice(default_scans):
    """Bright in-brain content of a mimic is there on its slice and gone on the next."""
    checked = 0
    for scan in default_scans.values():
        if scan.lesions:
            continue
        counts = bright_counts(scan.hu)
        for k in scan.mimic_slices:
            for j in (k - 1, k + 1):
                if 0 <= j < len(counts) and j not in scan.mimic_slices:
                    assert counts[j] <= 3, (scan.patient, k, j, counts[j])
                    checked += 1
    assert checked > 50


def test_mimics_are_never_on_adjacent_slices(default_scans):
    pairs = [
        (s.patient, k) for s in default_scans.values() for k in s.mimic_slices if k + 1 in s.mimic_slices
    ]
    assert not pairs


def test_calcification_mimics_reach_100_to_400_hu(default_scans):
    calc_max, plain_max = [], []
    for scan in default_scans.values():
        for k in range(len(scan.labels)):
            kind = scan.mimic_slices.get(k)
            if kind == "streak" or (kind is None and scan.mask[k].any()):
                continue
            hu = scan.hu[k].astype(np.int32)
            brain = brain_region(hu) & ~scan.mask[k]
            (calc_max if kind == "calcification" else plain_max).append(hu[brain].max())
    calc_max, plain_max = np.array(calc_max), np.array(plain_max)
    assert len(calc_max) > 50
    assert np.mean(calc_max > 100) >= 0.9  # blur can shrink a 1-pixel spot below 100
    assert calc_max.max() <= 400 + 25  # drawn at 100-400 HU, blur only lowers, noise 5 HU
    assert plain_max.max() < 100  # nothing else in the brain is that dense


# --------------------------------------------------------------------------- the property mimics exist for


def test_per_slice_detector_is_fooled_more_than_a_neighbour_aware_one(default_scans):
    """A hand-written blood detector: >5 in-brain pixels above 55 HU.

    per-slice rule:       this slice fires
    neighbour-aware rule: this slice fires AND an adjacent slice fires

    On scans without hemorrhage every firing is a false positive (mimics, noise). Bleeds
    span >= 2 slices so the neighbour rule keeps them; single-slice mimics it drops.
    """
    threshold_pixels = 5
    patients = sorted(default_scans)[:30]
    fp_single = fp_neighbour = neg_slices = 0
    tp_single = tp_neighbour = pos_slices = 0
    for p in patients:
        scan = default_scans[p]
        fires = bright_counts(scan.hu) > threshold_pixels
        neighbour = np.zeros_like(fires)
        neighbour[1:] |= fires[:-1]
        neighbour[:-1] |= fires[1:]
        both = fires & neighbour
        labels = slice_labels(scan).astype(bool)
        if scan.lesions:
            tp_single += int((fires & labels).sum())
            tp_neighbour += int((both & labels).sum())
            pos_slices += int(labels.sum())
        else:
            fp_single += int(fires.sum())
            fp_neighbour += int(both.sum())
            neg_slices += len(labels)
    assert pos_slices > 50 and neg_slices > 300
    # Mimics really fool the per-slice rule...
    assert fp_single >= 20
    # ...clearly more than the rule that looks at neighbouring slices.
    assert fp_single >= 3 * max(fp_neighbour, 1), (fp_single, fp_neighbour)
    # Both still find most of the bleeding slices.
    assert tp_single / pos_slices >= 0.8
    assert tp_neighbour / pos_slices >= 0.8


# --------------------------------------------------------------------------- determinism


def test_same_spec_gives_byte_identical_files(tmp_path):
    generate_synthetic(tmp_path / "a", SMALL, **QUIET)
    generate_synthetic(tmp_path / "b", SMALL, **QUIET)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert a == b


def test_different_seed_gives_different_data(tmp_path):
    generate_synthetic(tmp_path / "a", SMALL, **QUIET)
    other = SyntheticSpec(**{**SMALL.__dict__, "seed": SMALL.seed + 1})
    generate_synthetic(tmp_path / "b", other, **QUIET)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    for p in SMALL.patient_numbers():
        assert a[f"{NIFTI_SCAN_DIR}/{p:03d}.nii"] != b[f"{NIFTI_SCAN_DIR}/{p:03d}.nii"], p
    assert a[NIFTI_CSV] != b[NIFTI_CSV]


def test_synthesize_scan_is_deterministic(tiny_spec):
    a = synthesize_scan(50, True, tiny_spec)
    b = synthesize_scan(50, True, tiny_spec)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.labels == b.labels and a.mimic_slices == b.mimic_slices


def test_a_patients_scan_does_not_depend_on_cohort_size(tmp_path):
    four = SyntheticSpec(n_patients=4, n_positive=2, image_size=32, min_slices=10, max_slices=14, generator="cartoon")
    eight = SyntheticSpec(n_patients=8, n_positive=4, image_size=32, min_slices=10, max_slices=14, generator="cartoon")
    for positive in (False, True):
        a, b = synthesize_scan(49, positive, four), synthesize_scan(49, positive, eight)
        np.testing.assert_array_equal(a.hu, b.hu)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.labels == b.labels
    generate_synthetic(tmp_path / "four", four, **QUIET)
    generate_synthetic(tmp_path / "eight", eight, **QUIET)
    a, b = _files(tmp_path / "four"), _files(tmp_path / "eight")
    # Which patients bleed is a cohort-level draw; patients with the same status match exactly.
    same = [p for p in four.patient_numbers() if (p in positive_patients(four)) == (p in positive_patients(eight))]
    assert 49 in same
    for p in same:
        for folder in (NIFTI_SCAN_DIR, NIFTI_MASK_DIR):
            assert a[f"{folder}/{p:03d}.nii"] == b[f"{folder}/{p:03d}.nii"], (folder, p)
    rows_a = list(csv.DictReader(io.StringIO(a[NIFTI_CSV].decode("utf-8-sig"))))
    rows_b = list(csv.DictReader(io.StringIO(b[NIFTI_CSV].decode("utf-8-sig"))))
    for p in same:
        assert [r for r in rows_a if r["PatientNumber"] == str(p)] == [r for r in rows_b if r["PatientNumber"] == str(p)]


def test_shortest_allowed_scans_can_be_generated():
    spec = SyntheticSpec(n_patients=30, n_positive=10, image_size=32, min_slices=8, max_slices=8,
                         generator="cartoon")
    positives = positive_patients(spec)
    for p in spec.patient_numbers():
        scan = synthesize_scan(p, p in positives, spec)
        assert len(scan.labels) == 8


# --------------------------------------------------------------------------- atomic writing


def test_refuses_a_non_empty_destination(tmp_path):
    dest = tmp_path / "ds"
    dest.mkdir()
    (dest / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="ds"):
        generate_synthetic(dest, SMALL, **QUIET)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert (dest / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_accepts_an_existing_empty_destination(tmp_path):
    dest = tmp_path / "ds"
    dest.mkdir()
    generate_synthetic(dest, SMALL, **QUIET)
    assert (dest / NIFTI_CSV).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_failure_midway_leaves_no_dataset_and_no_temp_folder(tmp_path, monkeypatch):
    calls = fail_on_call(monkeypatch, nib, "save", 5, OSError("disk full (injected)"))
    dest = tmp_path / "ds"
    with pytest.raises(OSError, match="injected"):
        generate_synthetic(dest, SMALL, **QUIET)
    assert len(calls) == 5
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_killed_run_leaves_a_temp_folder_that_the_next_run_sweeps(tmp_path):
    killed_child(f"""
        import nibabel as nib
        from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
        saved = []
        real_save = nib.save
        def save(*args, **kwargs):
            saved.append(args)
            if len(saved) == 5:  # killed partway, some scans written
                die()
            return real_save(*args, **kwargs)
        nib.save = save
        generate_synthetic({str(tmp_path / "ds")!r}, SyntheticSpec(**{asdict(SMALL)!r}), log=lambda _msg: None)
    """)
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".ds.")
    generate_synthetic(tmp_path / "ds", SMALL, **QUIET)
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    assert not [p for p in (tmp_path / "ds").rglob(".*")]  # no marker or temporary inside the dataset


def test_a_file_in_the_place_of_the_dataset_is_one_line(tmp_path):
    dest = tmp_path / "ds"
    dest.write_text("a user's file")
    with pytest.raises(DataError, match=r"ds: is a file, not a folder"):
        generate_synthetic(dest, SMALL, **QUIET)
    assert dest.read_text() == "a user's file"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
