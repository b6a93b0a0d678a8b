"""The anatomical synthetic twin (ichseq.data.twin, on the head atlas of ichseq.data.head_atlas):
tissue Hounsfield units against the published ones, the acquisition geometry and its NIfTI
files, masks against labels and anatomy, determinism, the head check, anatomy where it belongs
(skull ring, skull-base air and petrous bone, atrophy), intraventricular layering, difficulty,
and thin slices through the pipeline's reader.

Every number is measured on generated scans; the atlas (~20-30 s) is built once per process."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from ichseq.data.head_atlas import GRID_ORIGIN_MM, INTRACRANIAL_LABELS, LABELS, TISSUE_HU, head_atlas
from ichseq.data.headcheck import check_head
from ichseq.data.layout import NIFTI_MASK_DIR, NIFTI_SCAN_DIR, SUBTYPES, patient_file
from ichseq.data.readers import open_dataset
from ichseq.data.synthetic import SyntheticSpec, positive_patients, synthesize_scan
from ichseq.data.twin import DIFFICULTIES
from ichseq.data.volumes import read_volume

from tests.conftest import generate_capturing

QUIET = {"log": lambda _msg: None}

# The anatomical twin at moderate difficulty (hard cases included), 5 mm, standard kernel, on a small grid.
DEFAULT = SyntheticSpec(n_patients=6, n_positive=3, image_size=96, min_slices=24, max_slices=30, seed=5,
                        difficulty="moderate")
# All positive, for the bleeds; one cohort per difficulty, same seeds.
POSITIVE = SyntheticSpec(n_patients=12, n_positive=12, image_size=64, min_slices=16, max_slices=22, seed=11)
WRITTEN = SyntheticSpec(n_patients=4, n_positive=2, image_size=64, min_slices=16, max_slices=20, seed=2)
THIN = SyntheticSpec(n_patients=2, n_positive=1, image_size=48, min_slices=180, max_slices=220, seed=3,
                     slice_thickness_mm=0.625)


# --------------------------------------------------------------------------- helpers


def _spacing(scan) -> float:
    return float(np.hypot(scan.affine[0, 0], scan.affine[1, 0]))


def _positions(scan) -> np.ndarray:
    return scan.affine[2, 3] + np.arange(len(scan.hu)) * scan.affine[2, 2]


def _interior(tissue: np.ndarray, label: int) -> np.ndarray:
    """Pixels whose 3x3 in-plane neighbourhood in ``tissue`` is all ``label``."""
    return ndi.binary_erosion(tissue == label, structure=np.ones((1, 3, 3), bool))


def _intracranial(scan) -> np.ndarray:
    return np.isin(scan.tissue, INTRACRANIAL_LABELS)


def _section_ratios(scan) -> tuple[float, float]:
    """Intracranial area of the lowest and of the highest slice, as fractions of the largest."""
    area = _intracranial(scan).sum(axis=(1, 2))
    return float(area[0] / area.max()), float(area[-1] / area.max())


def _mask_volume_ml(scan) -> float:
    return float(scan.mask.sum() * _spacing(scan) ** 2 * scan.affine[2, 2] / 1000.0)


def _ray_peaks(hu: np.ndarray, tissue: np.ndarray, centre, n_rays: int = 72):
    """For rays from ``centre`` (row, col) to the image border: the peak HU along each ray and
    whether the ray leaves the head (reaches outside air, label 0 at < -500 HU, after having
    crossed bone) inside the image."""
    n = hu.shape[0]
    peaks, complete = [], []
    for angle in np.linspace(0.0, 2 * np.pi, n_rays, endpoint=False):
        r = np.arange(0.0, 2.0 * n, 0.25)
        rows, cols = centre[0] + r * np.sin(angle), centre[1] + r * np.cos(angle)
        inside = (rows >= -0.5) & (rows < n - 0.5) & (cols >= -0.5) & (cols < n - 0.5)
        rows, cols = np.rint(rows[inside]).astype(int), np.rint(cols[inside]).astype(int)
        values, labels = hu[rows, cols], tissue[rows, cols]
        bone = np.isin(labels, (LABELS["cortical bone"], LABELS["diploe"]))
        first_bone = int(np.argmax(bone)) if bone.any() else len(labels)
        outside = (labels[first_bone:] == LABELS["air"]) & (values[first_bone:] < -500)
        peaks.append(float(values.max()))
        complete.append(bool(bone.any() and outside.any()))
    return np.array(peaks), np.array(complete)


def _air_in_head(hu_slice: np.ndarray, tissue_slice: np.ndarray) -> np.ndarray:
    """Air (< -500 HU) well inside the head's outline (the tissue map's head, holes filled, less
    2 pixels of scalp): sinuses, mastoid cells, ear canals; not the air around the head, the
    headrest's foam or partial-volume air at the skin."""
    head = ndi.binary_erosion(ndi.binary_fill_holes(tissue_slice != LABELS["air"]), iterations=2)
    return head & (hu_slice < -500)


def _single_lesion_scans(scans):
    return [s for s in scans if len(s.lesions) == 1 and s.mask.any()]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def default_scans() -> dict:
    """DEFAULT's six patients (three positive), in memory: {patient: AnatomicalScan}."""
    positives = positive_patients(DEFAULT)
    return {p: synthesize_scan(p, p in positives, DEFAULT) for p in DEFAULT.patient_numbers()}


@pytest.fixture(scope="module")
def positive_cohort():
    """A function: difficulty -> POSITIVE's twelve patients at that difficulty (made once each)."""
    made: dict[str, list] = {}

    def cohort(difficulty: str) -> list:
        if difficulty not in made:
            spec = dataclasses.replace(POSITIVE, difficulty=difficulty)
            made[difficulty] = [synthesize_scan(p, True, spec) for p in spec.patient_numbers()]
        return made[difficulty]

    return cohort


def _generate_capturing(dest, spec) -> dict:
    """generate_synthetic(dest, spec), returning the in-memory scans it wrote."""
    return generate_capturing(dest, spec)[0]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """WRITTEN as a v1.3.1 folder, and the scans it holds."""
    dest = tmp_path_factory.mktemp("twin") / "ct-ich"
    return dest, _generate_capturing(dest, WRITTEN)


@pytest.fixture(scope="module")
def thin(tmp_path_factory):
    """THIN (0.625 mm, ~200 slices, 48 px) as a v1.3.1 folder, and the scans it holds."""
    dest = tmp_path_factory.mktemp("thin") / "ct-ich"
    return dest, _generate_capturing(dest, THIN)


# --------------------------------------------------------------------------- 1. tissue HU


def test_tissue_hounsfield_units_are_the_published_ones(default_scans):
    """Median HU of interior pixels (3x3 of one label, no blood) of each tissue, pooled over
    the cohort, within the published range of TISSUE_HU; the skull (cortical bone and diploe
    together: each table and the diploe are thinner than 3 pixels here) above 700 HU."""
    pooled: dict[str, list] = {}
    for scan in default_scans.values():
        for name, label in (("grey matter", "grey matter"), ("white matter", "white matter"), ("csf", "ventricle"),
                            ("fat", "fat"), ("petrous bone", "petrous bone")):
            pick = _interior(scan.tissue, LABELS[label]) & ~scan.mask
            pooled.setdefault(name, []).append(scan.hu[pick])
        # Outside air in front of the head (the headrest lies behind it).
        n = scan.hu.shape[1]
        air = _interior(scan.tissue, LABELS["air"])
        air[:, n // 2:, :] = False
        pooled.setdefault("air", []).append(scan.hu[air])
        skull = np.isin(scan.tissue, (LABELS["cortical bone"], LABELS["diploe"]))
        pooled.setdefault("skull", []).append(scan.hu[ndi.binary_erosion(skull, structure=np.ones((1, 3, 3), bool))])
    for name, values in pooled.items():
        assert sum(v.size for v in values) >= 50, (name, "too few interior pixels to measure")
    measured = {name: float(np.median(np.concatenate(values))) for name, values in pooled.items()}
    skull = measured.pop("skull")
    outside = {name: (value, TISSUE_HU[name][1]) for name, value in measured.items()
               if not TISSUE_HU[name][1][0] <= value <= TISSUE_HU[name][1][1]}
    assert not outside, f"median HU outside the published range: {outside}"
    assert skull > 700, skull


def test_grey_matter_is_denser_than_white_matter_in_every_patient(default_scans):
    for scan in default_scans.values():
        grey = scan.hu[_interior(scan.tissue, LABELS["grey matter"]) & ~scan.mask]
        white = scan.hu[_interior(scan.tissue, LABELS["white matter"]) & ~scan.mask]
        contrast = float(np.median(grey) - np.median(white))
        # Published grey/white contrast on non-contrast CT: about 6-12 HU.
        assert contrast >= 4, (scan.patient, contrast)


def test_noise_follows_difficulty_and_kernel():
    """Quantum noise, measured in flat outside air in front of the head (3 pixels from anything
    else), is the difficulty's (3 HU easy, 6 HU hard on a 5 mm standard-kernel slice) and
    grows with the bone kernel (x 2.8)."""
    base = SyntheticSpec(n_patients=1, n_positive=0, image_size=64, min_slices=12, max_slices=12, seed=9)

    def noise(**change) -> float:
        scan = synthesize_scan(49, False, dataclasses.replace(base, **change))
        air = ndi.binary_erosion(scan.tissue == LABELS["air"], structure=np.ones((1, 7, 7), bool))
        air[:, scan.hu.shape[1] // 2:, :] = False  # the headrest is behind the head
        return float(np.std(scan.hu[air]))

    easy, hard, bone = noise(difficulty="easy"), noise(difficulty="hard"), noise(difficulty="easy", kernel="bone")
    assert easy == pytest.approx(DIFFICULTIES["easy"].noise_hu, rel=0.15)
    assert hard == pytest.approx(DIFFICULTIES["hard"].noise_hu, rel=0.15)
    assert 2.2 < bone / easy < 3.2, (easy, bone)


# --------------------------------------------------------------------------- 2. geometry


def test_affine_is_a_head_ct_acquisition(default_scans):
    for scan in default_scans.values():
        n = scan.hu.shape[1]
        a = scan.affine
        spacing = _spacing(scan)
        # Columns run patient right -> left (x decreasing), rows anterior -> posterior (y
        # decreasing), slices inferior -> superior (z increasing); square pixels of FOV / size.
        assert a[0, 0] < 0 and a[1, 1] < 0 and a[2, 2] > 0
        assert np.allclose(a[:3, :3] - np.diag(np.diag(a[:3, :3])), 0)
        assert abs(a[1, 1]) == pytest.approx(abs(a[0, 0]))
        assert 200.0 / n <= spacing <= 250.0 / n
        # The in-plane centre of the image is scanner x = y = 0.
        assert (a @ [(n - 1) / 2, (n - 1) / 2, 0, 1])[:2] == pytest.approx([0, 0], abs=1e-6)
        assert scan.slice_thickness_mm == DEFAULT.slice_thickness_mm


def test_geometry_in_mm_matches_a_head(default_scans):
    """Measured with the affine: the largest intracranial cross-section and the cranio-caudal
    extent of the intracranial space are those of an adult head."""
    for scan in default_scans.values():
        intracranial = _intracranial(scan)
        area_cm2 = intracranial.sum(axis=(1, 2)).max() * _spacing(scan) ** 2 / 100
        assert 110 <= area_cm2 <= 220, (scan.patient, area_cm2)
        # Skull base (first slice) to vertex: the scan covers at least ~11 cm of intracranial space.
        z = _positions(scan)[intracranial.any(axis=(1, 2))]
        assert 100 <= z[-1] - z[0] <= 170, (scan.patient, z[-1] - z[0])
        assert len(scan.labels) == len(scan.hu) and DEFAULT.min_slices <= len(scan.hu) <= DEFAULT.max_slices
        lowest, highest = _section_ratios(scan)
        assert lowest <= 0.5 and highest <= 0.05, (scan.patient, lowest, highest)  # posterior fossa to vertex


def test_thin_slices_still_cover_skull_base_to_vertex(thin):
    _, scans = thin
    for scan in scans.values():
        interval = scan.affine[2, 2]
        assert THIN.min_slices <= len(scan.hu) <= THIN.max_slices
        assert 0.5 <= interval <= 1.1, interval  # ~200 slices at 0.625 mm thickness
        span = (len(scan.hu) - 1) * interval
        assert 110 <= span <= 190, span
        assert scan.slice_thickness_mm == 0.625
        lowest, highest = _section_ratios(scan)
        assert lowest <= 0.5 and highest <= 0.05, (lowest, highest)  # posterior fossa to vertex


def test_workers_write_the_same_files(written, tmp_path):
    """Patients generated in two forked processes: byte for byte the files of one process."""
    import filecmp

    from ichseq.data.synthetic import generate_synthetic

    one, _ = written
    two = tmp_path / "two-workers"
    summary = generate_synthetic(two, WRITTEN, log=lambda _msg: None, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file()) == files
    assert len(files) == 2 * WRITTEN.n_patients + 4  # scans, masks, the two CSVs, the template notice, the marker
    assert all(filecmp.cmp(one / f, two / f, shallow=False) for f in files)
    assert summary["patients"] == WRITTEN.n_patients


def test_written_nifti_round_trips(written):
    dest, scans = written
    dataset = open_dataset(dest)
    for patient, scan in scans.items():
        img = nib.load(dest / NIFTI_SCAN_DIR / patient_file(patient))
        stored = np.transpose(np.asanyarray(img.dataobj), (2, 1, 0))
        assert np.array_equal(stored, scan.hu)
        assert np.allclose(img.affine, scan.affine, atol=1e-4)
        mask = np.transpose(np.asanyarray(nib.load(dest / NIFTI_MASK_DIR / patient_file(patient)).dataobj), (2, 1, 0))
        assert np.array_equal(mask > 0, scan.mask)
        # The pipeline's reader orients them the same way and finds the same slice positions.
        numbers, positions, hu, masks = dataset.read_hu(patient)
        assert np.array_equal(numbers, np.arange(1, len(scan.hu) + 1))
        assert np.array_equal(hu, scan.hu.astype(np.float32))
        assert np.array_equal(masks, scan.mask)
        assert np.allclose(positions, _positions(scan), atol=1e-3)
        csv = dataset.patient_labels(patient)
        for row in scan.labels:
            for column in (*SUBTYPES, "No_Hemorrhage", "Fracture_Yes_No"):
                assert csv.loc[row["SliceNumber"], column] == row[column]


# --------------------------------------------------------------------------- 3. masks and labels


def _check_labels_follow_mask(scan):
    assert len(scan.labels) == len(scan.hu)
    shows = scan.mask.any(axis=(1, 2))
    labelled = np.array([row["No_Hemorrhage"] == 0 for row in scan.labels])
    assert np.array_equal(labelled, shows), scan.patient
    for row, flag in zip(scan.labels, labelled):
        assert bool(any(row[s] for s in SUBTYPES)) == flag
    present = {s for row in scan.labels for s in SUBTYPES if row[s]}
    shown = {lesion.subtype for lesion in scan.lesions if lesion.length > 0}
    assert present == shown, (scan.patient, present, shown)
    for lesion in scan.lesions:
        if lesion.length:  # the lesion's first and last shown slices carry its subtype
            assert scan.labels[lesion.first][lesion.subtype] == 1
            assert scan.labels[lesion.first + lesion.length - 1][lesion.subtype] == 1
    for k, row in enumerate(scan.labels):
        for s in SUBTYPES:
            if row[s]:
                assert any(les.subtype == s and les.covers(k) for les in scan.lesions), (scan.patient, k, s)


def test_labels_and_masks_agree(default_scans, positive_cohort):
    positives = positive_patients(DEFAULT)
    for patient, scan in default_scans.items():
        assert scan.mask.any() == (patient in positives), patient
        if patient not in positives:
            assert not scan.lesions and all(row["No_Hemorrhage"] == 1 for row in scan.labels)
        _check_labels_follow_mask(scan)
    for scan in positive_cohort("moderate"):
        assert scan.mask.any(), scan.patient
        _check_labels_follow_mask(scan)


def _inside_fraction(scan) -> float:
    return float(_intracranial(scan)[scan.mask].mean())


def _is_convexity_collection(lesion) -> bool:
    return lesion.params.get("kind") == "convexity" and lesion.params.get("thickness", 0) > 4.0


def test_blood_lies_inside_the_head(positive_cohort):
    """Parenchymal, ventricular, subarachnoid and falx/tentorial blood: the mask is on
    intracranial tissue (the pixel-centre label; 10 % allowed for partial volume)."""
    checked = 0
    for difficulty in ("moderate", "easy"):
        for scan in _single_lesion_scans(positive_cohort(difficulty)):
            if _is_convexity_collection(scan.lesions[0]):
                continue  # test_convexity_collections_lie_inside_the_head
            assert _inside_fraction(scan) >= 0.9, (difficulty, scan.patient, scan.lesions[0].subtype,
                                                   _inside_fraction(scan))
            checked += 1
    assert checked >= 5


def test_convexity_collections_lie_inside_the_head(positive_cohort):
    fractions = []
    for difficulty in ("moderate", "easy"):
        for scan in _single_lesion_scans(positive_cohort(difficulty)):
            if _is_convexity_collection(scan.lesions[0]):
                fractions.append((scan.patient, scan.lesions[0].subtype, round(_inside_fraction(scan), 2)))
    if len(fractions) < 3:
        pytest.fail(f"the cohorts hold only {len(fractions)} single convexity collections")  # not an xfail
    # A collection lies against the inner table, so some mask pixels straddle it (partial
    # volume); before the fix that stopped the mass effect at the table, 10-40% were inside.
    assert all(f >= 0.8 for _, _, f in fractions), fractions


def test_acute_blood_is_hyperdense(positive_cohort):
    """Median HU of the mask >= 40 where every bleed of the patient is acute (>= 55 HU)."""
    checked = 0
    for difficulty in ("moderate", "easy"):
        for scan in positive_cohort(difficulty):
            if scan.mask.sum() < 20 or not all(lesion.params["hu"] >= 55 for lesion in scan.lesions):
                continue
            median = float(np.median(scan.hu[scan.mask]))
            assert median >= 40, (difficulty, scan.patient, [les.subtype for les in scan.lesions], median)
            checked += 1
    assert checked >= 8


# --------------------------------------------------------------------------- 4. determinism


def test_a_patients_scan_is_deterministic_and_independent_of_the_cohort():
    spec = SyntheticSpec(n_patients=3, n_positive=2, image_size=48, min_slices=12, max_slices=14, seed=4)
    first = synthesize_scan(50, True, spec)
    # Another patient (possibly another atrophy level) in between, and a larger cohort.
    synthesize_scan(52, True, spec)
    again = synthesize_scan(50, True, dataclasses.replace(spec, n_patients=9, n_positive=1))
    assert np.array_equal(first.hu, again.hu) and np.array_equal(first.mask, again.mask)
    assert np.array_equal(first.affine, again.affine) and first.labels == again.labels
    other = synthesize_scan(50, True, dataclasses.replace(spec, seed=5))
    assert other.hu.shape != first.hu.shape or not np.array_equal(other.hu, first.hu)


# --------------------------------------------------------------------------- 5. head check


def test_the_head_check_accepts_the_twin(written, thin):
    for dest, scans in (written, thin):
        for patient, scan in scans.items():
            volume = read_volume(dest / NIFTI_SCAN_DIR / patient_file(patient))
            measured = check_head(volume)
            n = scan.hu.shape[1]
            assert measured["matrix"] == [n, n]
            assert measured["fov_mm"] == pytest.approx([_spacing(scan) * n] * 2, abs=0.1)
            assert measured["slices_with_skull"] >= 1


# --------------------------------------------------------------------------- 6. anatomy


def test_a_bone_ring_surrounds_the_brain_at_mid_level(default_scans):
    """On the slice with the largest intracranial section, rays from its centre cross bone
    above 700 HU on their way out, and the skull's peak (its cortical tables) reads as
    cortical bone."""
    for scan in default_scans.values():
        intracranial = _intracranial(scan)
        k = int(np.argmax(intracranial.sum(axis=(1, 2))))
        peaks, complete = _ray_peaks(scan.hu[k], scan.tissue[k], ndi.center_of_mass(intracranial[k]))
        assert complete.sum() >= 36, (scan.patient, int(complete.sum()))
        ring = float((peaks[complete] > 700).mean())
        assert ring >= 0.9, (scan.patient, ring)
        low, high = TISSUE_HU["cortical bone"][1]
        assert low <= np.median(peaks[complete]) <= high, (scan.patient, np.median(peaks[complete]))


def test_skull_base_has_air_cells_and_petrous_bone(default_scans):
    """The lowest quarter of the scan (foramen magnum to the petrous ridges): air enclosed by
    the head (sinuses, mastoid cells) and dense bone (> 1500 HU) on both sides; the upper third
    of the scan (above the frontal sinus) holds no air inside the head."""
    for scan in default_scans.values():
        pixel_cm2 = _spacing(scan) ** 2 / 100
        quarter = max(4, len(scan.hu) // 4)
        low = scan.hu[:quarter].astype(np.float32)
        air_cm2 = sum(_air_in_head(h, t).sum() for h, t in zip(low, scan.tissue[:quarter])) * pixel_cm2
        assert air_cm2 >= 1.0, (scan.patient, air_cm2)
        head_cols = np.nonzero(scan.tissue[:quarter] > 0)[2]
        middle = float(np.median(head_cols))
        dense = low > 1500
        cols = np.nonzero(dense)[2]
        right, left = (cols < middle).sum() * pixel_cm2, (cols > middle).sum() * pixel_cm2
        assert right >= 0.3 and left >= 0.3, (scan.patient, right, left)
        top = 2 * len(scan.hu) // 3
        upper_air = sum(_air_in_head(h, t).sum() for h, t in zip(scan.hu[top:], scan.tissue[top:])) * pixel_cm2
        assert upper_air <= 0.2, (scan.patient, upper_air)


def test_atrophy_widens_the_ventricles_inside_an_unchanged_skull():
    young, old = head_atlas(0), head_atlas(3)
    vent = LABELS["ventricle"]
    # Per axial level through the lateral ventricles (MNI z 0..30 mm), in the atlas grid.
    z0 = int(round(-GRID_ORIGIN_MM[2]))
    for z in range(z0, z0 + 31, 5):
        assert (old.label[:, :, z] == vent).sum() > (young.label[:, :, z] == vent).sum(), z
    assert (old.label == vent).sum() > 2 * (young.label == vent).sum()
    brain = (LABELS["grey matter"], LABELS["white matter"])
    assert np.isin(old.label, brain).sum() < 0.95 * np.isin(young.label, brain).sum()
    # The skull and the intracranial space do not change with age.
    skull = (LABELS["cortical bone"], LABELS["diploe"])
    assert np.array_equal(np.isin(old.label, skull), np.isin(young.label, skull))
    assert np.array_equal(np.isin(old.label, INTRACRANIAL_LABELS), np.isin(young.label, INTRACRANIAL_LABELS))


def test_older_patients_have_more_atrophy(default_scans, positive_cohort):
    scans = list(default_scans.values()) + positive_cohort("moderate")
    ages = np.array([s.age for s in scans])
    levels = np.array([s.atrophy for s in scans])
    assert np.corrcoef(ages, levels)[0, 1] > 0.5, list(zip(ages, levels))


def test_the_scan_starts_at_the_bottom_of_the_posterior_fossa(default_scans):
    ratios = {scan.patient: round(_section_ratios(scan)[0], 2) for scan in default_scans.values()}
    assert all(r <= 0.2 for r in ratios.values()), f"lowest slice's intracranial section / largest: {ratios}"


def test_the_whole_skull_is_inside_the_field_of_view(default_scans):
    cut = {}
    for scan in default_scans.values():
        cranium = np.isin(scan.tissue, (*INTRACRANIAL_LABELS, LABELS["cortical bone"], LABELS["diploe"]))
        border = np.zeros(cranium.shape[1:], bool)
        border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
        slices = int(cranium[:, border].any(axis=1).sum())
        if slices:
            cut[scan.patient] = slices
    assert not cut, f"slices with skull or intracranial tissue on the image border, by patient: {cut}"


# --------------------------------------------------------------------------- 7. intraventricular blood


@pytest.fixture(scope="module")
def ivh_scan():
    """The first patient of a small all-positive cohort whose only bleed is intraventricular."""
    spec = SyntheticSpec(n_patients=80, n_positive=80, image_size=48, min_slices=12, max_slices=16, seed=0,
                         difficulty="easy")
    for patient in spec.patient_numbers():
        scan = synthesize_scan(patient, True, spec)
        if len(scan.lesions) == 1 and scan.lesions[0].subtype == "Intraventricular" and scan.mask.sum() >= 4:
            return scan
    pytest.fail("no patient with an intraventricular bleed alone among 80")


def test_intraventricular_blood_layers_posteriorly(ivh_scan):
    """Supine, blood sinks to the dependent (posterior: larger row) part of the ventricles: on
    each slice behind the ventricles' centre, and over the scan no higher than the lesion's
    depth above the most posterior ventricle pixel."""
    scan = ivh_scan
    vent = scan.tissue == LABELS["ventricle"]
    assert vent[scan.mask].mean() >= 0.7  # the blood is in the ventricles
    rows = np.arange(scan.hu.shape[1])
    for k in np.nonzero(scan.mask.any(axis=(1, 2)))[0]:
        if vent[k].sum() < 4:
            continue
        blood_row = np.nonzero(scan.mask[k])[0].mean()
        vent_row = np.nonzero(vent[k])[0].mean()
        assert blood_row > vent_row, (k, blood_row, vent_row)
    # The layer is no deeper than the lesion's depth (plus a pixel) above the most posterior
    # ventricle pixel of the whole scan, whichever slice it is on.
    spacing = _spacing(scan)
    floor = int(rows[np.nonzero(vent.any(axis=(0, 2)))[0]].max())
    top = int(np.nonzero(scan.mask.any(axis=(0, 2)))[0].min())
    assert (floor - top) * spacing <= scan.lesions[0].params["depth"] + spacing, (floor, top, spacing)
    # Half the ventricle pixels of the scan lie in front of its blood, none of them in the mask.
    assert (np.nonzero(vent)[1] < top).mean() >= 0.5


# --------------------------------------------------------------------------- 8. difficulty


def test_easy_bleeds_are_larger_than_hard_ones(positive_cohort):
    easy = [_mask_volume_ml(s) for s in positive_cohort("easy")]
    hard = [_mask_volume_ml(s) for s in positive_cohort("hard")]
    assert min(easy) > 0 and min(hard) > 0  # every positive patient shows blood
    assert np.mean(easy) > 2 * np.mean(hard), (np.round(easy, 1), np.round(hard, 1))
    hard_flags = [les.hard for s in positive_cohort("hard") for les in s.lesions]
    assert not any(les.hard for s in positive_cohort("easy") for les in s.lesions)
    assert np.mean(hard_flags) >= 0.3


# --------------------------------------------------------------------------- 9. thin slices


def test_thin_slices_load_through_the_reader(thin):
    dest, scans = thin
    dataset = open_dataset(dest)
    assert dataset.patients == sorted(scans)
    for patient, scan in scans.items():
        numbers, positions, hu, masks = dataset.read_hu(patient)
        steps = np.diff(positions)
        assert np.all(steps > 0)
        assert steps == pytest.approx(np.full(len(steps), scan.affine[2, 2]), abs=1e-3)
        assert 0.5 <= steps.mean() <= 1.1  # mm, not slice numbers
        assert hu.shape == scan.hu.shape and np.array_equal(masks, scan.mask)
        labels = dataset.patient_labels(patient)
        assert np.array_equal(labels.loc[numbers, "No_Hemorrhage"].to_numpy() == 0, masks.any(axis=(1, 2)))
        brain = dataset.read_scan(patient)
        assert brain.images.shape == hu.shape and 0.0 <= brain.images.min() and brain.images.max() <= 1.0
