"""A deterministic synthetic twin of CT-ICH v1.3.1, written in the real layout.

The real dataset is restricted (PhysioNet data-use agreement), so the pipeline's default
input is this generator. It writes exactly what the v1.3.1 release contains::

    ct_scans/NNN.nii  masks/NNN.nii  hemorrhage_diagnosis_raw_ct.csv  Patient_demographics.csv

Two generators write it (``SyntheticSpec.generator``):

``anatomical`` (the default; :mod:`ichseq.data.twin`)
    Real anatomy from the ICBM 2009 template in a built skull and skull base, every patient
    deformed, posed and acquired like a real scan, bleeds where and as they occur, hard cases
    and negative mimics; ``difficulty``, ``slice_thickness_mm`` and ``kernel`` apply to it.

``cartoon`` (this module; fast, for tests)
    Crude but CT-like, in Hounsfield units: air, scalp, a skull ring (> 700 HU), grey/white
    parenchyma (20-45 HU), CSF ventricles (~5 HU), partial-volume blur and noise. Hemorrhages
    are hyperdense (50-90 HU) regions of the five subtypes spanning 2-15 consecutive slices.
    Single-slice *mimics* (calcifications of 100-400 HU whose blurred rims fall in the blood
    range, and streak artifacts whose bright bands do too) appear in negative and positive
    scans. A bleed always spans at least two consecutive slices while a mimic never does, so
    a model that sees neighbouring slices can tell them apart.

In both, masks and the CSV labels are derived from the same pixels, so they agree by
construction, and everything is drawn from ``numpy.random.default_rng([seed, patient])``,
so a patient's scan does not depend on which other patients are generated.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from ..atomic import atomic_dir
from ..config import section_defaults
from .head_atlas import ATROPHY_LEVELS, TEMPLATE_NOTICE, head_atlas
from .layout import (
    DEMOGRAPHICS_CSV,
    DIAGNOSIS_COLUMNS,
    NIFTI_CSV,
    NIFTI_MASK_DIR,
    NIFTI_SCAN_DIR,
    REAL_PATIENT_NUMBERS,
    SUBTYPES,
    SYNTHETIC_MARKER,
    patient_file,
)
from .twin import DIFFICULTIES, KERNELS, synthesize_anatomical_scan

FIELD_OF_VIEW_MM = 230.0  # the real scans: 512 px at ~0.45 mm
SLICE_THICKNESS_MM = 5.0
AIR_HU = -1000.0


GENERATORS = ("anatomical", "cartoon")

# SYNTHETIC_MARKER, the file every synthetic dataset carries, is ichseq.data.layout's (imported
# above, so ichseq.data.synthetic.SYNTHETIC_MARKER still names it).


_DEFAULTS = section_defaults("synthetic")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. The defaults mirror the real cohort's size and composition.

    ``generator``: ``anatomical`` (:mod:`ichseq.data.twin`: the ICBM 2009 brain in a built
    skull, real acquisitions, bleeds where they occur, hard cases; ``difficulty``, the slice
    thickness and the kernel apply to it) or ``cartoon`` (this module's ellipse head: fast,
    for tests)."""

    # The defaults are dataset.synthetic's, written in the schema only.
    n_patients: int = _DEFAULTS["n_patients"]
    n_positive: int = _DEFAULTS["n_positive"]
    image_size: int = _DEFAULTS["image_size"]
    min_slices: int = _DEFAULTS["min_slices"]
    max_slices: int = _DEFAULTS["max_slices"]
    seed: int = _DEFAULTS["seed"]
    mimics_per_scan: float = _DEFAULTS["mimics_per_scan"]  # Poisson mean of single-slice mimics per scan
    # Not a config key: the cartoon's noise (the anatomical twin's follows difficulty, kernel and thickness).
    noise_hu: float = 5.0
    generator: str = _DEFAULTS["generator"]
    difficulty: str = _DEFAULTS["difficulty"]
    slice_thickness_mm: float = _DEFAULTS["slice_thickness_mm"]
    kernel: str = _DEFAULTS["kernel"]

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise ValueError(f"generator must be one of {', '.join(GENERATORS)}")
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}")
        if not 0.5 <= self.slice_thickness_mm <= 10.0:
            raise ValueError("slice_thickness_mm must be between 0.5 and 10")
        if self.n_patients < 1:
            raise ValueError("n_patients must be >= 1")
        if not 0 <= self.n_positive <= self.n_patients:
            raise ValueError("n_positive must be between 0 and n_patients")
        if self.image_size < 32:
            raise ValueError("image_size must be >= 32 so that lesions stay visible")
        if not 8 <= self.min_slices <= self.max_slices:
            raise ValueError("need 8 <= min_slices <= max_slices")
        if not self.mimics_per_scan >= 0:  # also refuses NaN
            raise ValueError("mimics_per_scan must be >= 0")

    def patient_numbers(self) -> list[int]:
        """The real numbering (49-130 without 59-65), continued past 130 if more are asked for."""
        numbers = list(REAL_PATIENT_NUMBERS[: self.n_patients])
        nxt = REAL_PATIENT_NUMBERS[-1] + 1
        while len(numbers) < self.n_patients:
            numbers.append(nxt)
            nxt += 1
        return numbers


@dataclass
class Lesion:
    subtype: str
    first: int  # first slice index (0-based, inferior to superior)
    length: int
    params: dict = field(default_factory=dict)

    def covers(self, k: int) -> bool:
        return self.first <= k < self.first + self.length


@dataclass
class SyntheticScan:
    patient: int
    hu: np.ndarray  # (S, N, N) int16, rows = anterior->posterior, cols = patient right->left
    mask: np.ndarray  # (S, N, N) bool
    labels: list[dict]  # one dict per slice with the CSV columns
    affine: np.ndarray
    lesions: list[Lesion]
    mimic_slices: dict[int, str]  # slice index -> "calcification" | "streak"
    age: int
    sex: str


# --------------------------------------------------------------------------- geometry


def _ellipse_radius(x: np.ndarray, y: np.ndarray, a: float, b: float) -> np.ndarray:
    """Normalised elliptical radius: < 1 inside the ellipse with semi-axes a (x), b (y)."""
    return np.sqrt((x / a) ** 2 + (y / b) ** 2)


def _angle_diff(phi: np.ndarray, theta: float) -> np.ndarray:
    return np.angle(np.exp(1j * (phi - theta)))


class _Head:
    """Per-patient head shape; slice ``k`` gives the cross-section at that height."""

    def __init__(self, rng: np.random.Generator, n_slices: int, size: int):
        self.n_slices = n_slices
        self.spacing = FIELD_OF_VIEW_MM / size
        coords = (np.arange(size) - (size - 1) / 2.0) * self.spacing
        self.x, self.y = np.meshgrid(coords, coords)  # x: columns, y: rows (posterior +)
        self.a = rng.uniform(66.0, 74.0)
        self.b = rng.uniform(84.0, 94.0)
        self.skull = rng.uniform(5.5, 8.0)
        self.cx, self.cy = rng.uniform(-4.0, 4.0, size=2)
        self.ventricle_dx = rng.uniform(7.0, 10.0)
        self.ventricle_len = rng.uniform(14.0, 20.0)
        # Low-frequency parenchymal texture shared by all slices, shifted per slice.
        self.texture = gaussian_filter(rng.normal(size=(size, size)), sigma=size / 16.0)
        self.texture /= max(np.abs(self.texture).max(), 1e-6)

    def height(self, k: int) -> float:
        return (k + 0.5) / self.n_slices

    def scale(self, k: int) -> float:
        t = self.height(k)
        return float(np.clip(np.sqrt(max(1.0 - ((t - 0.42) / 0.68) ** 2, 0.0)), 0.5, 1.0))

    def inner_axes(self, k: int) -> tuple[float, float]:
        s = self.scale(k)
        return self.a * s - self.skull, self.b * s - self.skull

    def local(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x - self.cx, self.y - self.cy

    def has_ventricles(self, k: int) -> bool:
        return 0.3 <= self.height(k) <= 0.75

    def ventricle_mask(self, k: int) -> np.ndarray:
        x, y = self.local()
        t = self.height(k)
        # Lateral ventricles are longest mid-way up the scan.
        grow = np.sqrt(max(1.0 - ((t - 0.52) / 0.24) ** 2, 0.05))
        length = self.ventricle_len * grow
        width = 4.5 * grow + 1.5
        left = _ellipse_radius(x - self.ventricle_dx, y - 2.0, width, length) < 1
        right = _ellipse_radius(x + self.ventricle_dx, y - 2.0, width, length) < 1
        return left | right


def _anatomy(head: _Head, k: int, rng: np.random.Generator) -> np.ndarray:
    x, y = head.local()
    s = head.scale(k)
    ao, bo = head.a * s, head.b * s
    ai, bi = head.inner_axes(k)
    r_out = _ellipse_radius(x, y, ao, bo)
    r_in = _ellipse_radius(x, y, ai, bi)
    r_scalp = _ellipse_radius(x, y, ao + 4.0, bo + 4.0)

    img = np.full(x.shape, AIR_HU, dtype=np.float32)
    img[r_scalp < 1] = 35.0  # scalp and soft tissue
    skull = (r_out < 1) & (r_in >= 1)
    img[skull] = 1000.0 + 250.0 * np.roll(head.texture, k, axis=0)[skull]
    brain = r_in < 1
    # Cortex (grey matter, ~38 HU) near the inner table, white matter (~27 HU) deeper.
    depth = 1.0 - r_in
    parenchyma = np.where(depth < 0.12, 38.0, 27.0) + 3.0 * np.roll(head.texture, 2 * k, axis=1)
    img[brain] = parenchyma[brain]
    if head.has_ventricles(k):
        img[head.ventricle_mask(k) & brain] = 5.0
    # A few sulci: thin CSF clefts at the surface.
    phi = np.arctan2(y, x)
    sulci = brain & (depth < 0.08) & (np.abs(np.sin(9 * phi + 0.7 * k)) < 0.12)
    img[sulci] = 8.0
    return img


# --------------------------------------------------------------------------- lesions


def _lesion_region(head: _Head, lesion: Lesion, k: int) -> np.ndarray:
    """Boolean region of ``lesion`` on slice ``k`` (inside the brain by construction)."""
    x, y = head.local()
    ai, bi = head.inner_axes(k)
    r_in = _ellipse_radius(x, y, ai, bi)
    brain = r_in < 1
    u = (k - lesion.first + 0.5) / lesion.length
    profile = 0.55 + 0.45 * np.sqrt(max(1.0 - (2 * u - 1) ** 2, 0.0))
    p = lesion.params
    phi = np.arctan2(y / bi, x / ai)

    if lesion.subtype == "Epidural":
        # Biconvex lens: a disk pushed out through the inner table, clipped by the skull.
        theta = p["theta"]
        px, py = ai * np.cos(theta), bi * np.sin(theta)
        normal = np.array([px / ai**2, py / bi**2])
        normal /= np.linalg.norm(normal)
        radius = p["radius"] * profile
        depth = p["thickness"] * profile
        cx = px + normal[0] * (radius - depth)
        cy = py + normal[1] * (radius - depth)
        region = brain & ((x - cx) ** 2 + (y - cy) ** 2 < radius**2)
    elif lesion.subtype == "Subdural":
        # Crescent along the inner table, thickest in the middle of its arc.
        d = _angle_diff(phi, p["theta"])
        half = p["arc"] / 2
        along = np.clip(np.cos(np.pi / 2 * d / half), 0.0, 1.0) * (np.abs(d) < half)
        thickness = p["thickness"] * profile * along / ((ai + bi) / 2)
        region = brain & (r_in > 1 - thickness) & (along > 0)
    elif lesion.subtype == "Intraparenchymal":
        cx, cy = p["cx"] * ai, p["cy"] * bi
        c, s = np.cos(p["angle"]), np.sin(p["angle"])
        dx, dy = x - cx, y - cy
        xr, yr = c * dx + s * dy, -s * dx + c * dy
        wobble = 1.0 + 0.15 * np.cos(3 * np.arctan2(yr, xr) + p["angle"])
        region = brain & (_ellipse_radius(xr, yr, p["ra"] * profile, p["rb"] * profile) < wobble)
    elif lesion.subtype == "Intraventricular":
        # Blood layers in the dependent (posterior) part of the lateral ventricles.
        vent = head.ventricle_mask(k)
        ys = y[vent]
        cut = np.quantile(ys, 1.0 - p["fill"] * profile) if ys.size else np.inf
        region = brain & vent & (y >= cut)
    elif lesion.subtype == "Subarachnoid":
        # Thin hyperdense lines in surface sulci over a sector, plus the falx region.
        d = _angle_diff(phi, p["theta"])
        sector = np.abs(d) < p["arc"] / 2 * profile
        sulcal = (np.abs(np.sin(p["freq"] * np.arctan2(y, x) + p["phase"])) < 0.3) & (r_in > 0.78)
        fissure = (np.abs(x) < 1.6) & (y < 0) & (r_in > 0.35) & p["fissure"]
        region = brain & ((sector & sulcal) | fissure)
    else:  # pragma: no cover - the subtype list is closed
        raise ValueError(lesion.subtype)

    if region.sum() < 4:
        # The tapering end of a small bleed can fall below a pixel on a coarse grid; keep
        # it visible (a 2.5 mm dot at the lesion's anchor) so the label stays truthful.
        ax, ay = p.get("anchor", (0.0, 0.0))
        region = brain & ((x - ax * ai) ** 2 + (y - ay * bi) ** 2 < max(2.5, head.spacing * 1.6) ** 2)
    return region


def _draw_lesions(rng: np.random.Generator, n_slices: int, head: _Head) -> list[Lesion]:
    lesions = []
    n = 1 if rng.random() < 0.7 else 2
    vent = [k for k in range(n_slices) if head.has_ventricles(k)]
    for _ in range(n):
        subtype = SUBTYPES[rng.integers(len(SUBTYPES))]
        length = int(rng.integers(2, 16))
        if subtype == "Intraventricular":
            length = min(length, len(vent))
            first = int(rng.integers(vent[0], vent[-1] - length + 2))
        else:
            length = min(length, n_slices - 4)
            first = int(rng.integers(2, n_slices - length - 1))
        theta = rng.uniform(-np.pi, np.pi)
        params = {
            "theta": theta,
            "anchor": (0.9 * np.cos(theta), 0.9 * np.sin(theta)),
            "radius": rng.uniform(22.0, 32.0),
            "thickness": rng.uniform(8.0, 14.0),
            "arc": rng.uniform(np.pi / 4, np.pi / 2),
            "angle": rng.uniform(0, np.pi),
            "ra": rng.uniform(6.0, 14.0),
            "rb": rng.uniform(5.0, 10.0),
            "fill": rng.uniform(0.35, 0.6),
            "freq": int(rng.integers(8, 14)),
            "phase": rng.uniform(0, np.pi),
            "fissure": bool(rng.random() < 0.5),
            "hu": rng.uniform(58.0, 82.0),
        }
        if subtype == "Subdural":
            params["thickness"] = rng.uniform(5.0, 9.0)
        if subtype == "Intraparenchymal":
            rad = rng.uniform(0.1, 0.55)
            params["cx"], params["cy"] = rad * np.cos(theta), rad * np.sin(theta)
            params["anchor"] = (params["cx"], params["cy"])
        if subtype == "Intraventricular":
            params["anchor"] = (0.0, 0.1)
        lesions.append(Lesion(subtype, first, length, params))
    return lesions


def _add_mimic(img: np.ndarray, head: _Head, k: int, kind: str, rng: np.random.Generator) -> None:
    x, y = head.local()
    ai, bi = head.inner_axes(k)
    brain = _ellipse_radius(x, y, ai, bi) < 1
    if kind == "calcification":
        for _ in range(int(rng.integers(1, 4))):
            rad = rng.uniform(0.0, 0.6)
            ang = rng.uniform(-np.pi, np.pi)
            cx, cy = rad * ai * np.cos(ang), rad * bi * np.sin(ang)
            r = rng.uniform(1.5, 3.5)
            spot = brain & ((x - cx) ** 2 + (y - cy) ** 2 < r**2)
            img[spot] = rng.uniform(100.0, 400.0)
    else:  # streak: alternating bright/dark bands through the brain (beam hardening)
        ang = rng.uniform(0, np.pi)
        offset = rng.uniform(-20.0, 20.0)
        dist = x * np.sin(ang) - y * np.cos(ang) - offset
        for j, amp in enumerate((45.0, -30.0, 40.0)):
            band = brain & (np.abs(dist - 6.0 * j) < max(1.0, head.spacing * 0.6))
            img[band] += amp


def _place_mimics(
    rng: np.random.Generator, n_slices: int, lesions: list[Lesion], mean: float
) -> dict[int, str]:
    """Pick isolated slices for mimics: never next to another mimic or to a bleed's first or
    last slice, so that a mimic is always a one-slice event along the head axis."""
    blocked: set[int] = set()
    for les in lesions:
        blocked |= {les.first - 1, les.first + les.length}
    wanted = int(rng.poisson(mean))
    chosen: list[int] = []
    for k in rng.permutation(n_slices):
        if len(chosen) == wanted:
            break
        if k not in blocked and all(abs(int(k) - c) > 1 for c in chosen):
            chosen.append(int(k))
    return {k: ("calcification" if rng.random() < 0.6 else "streak") for k in sorted(chosen)}


# --------------------------------------------------------------------------- scans


def synthesize_scan(patient: int, positive: bool, spec: SyntheticSpec):
    """Generate one patient's scan, mask and per-slice labels (deterministic), with the
    spec's generator: a :class:`SyntheticScan` (cartoon) or a
    :class:`ichseq.data.twin.AnatomicalScan`; both carry hu, mask, labels, affine,
    mimic_slices, age and sex."""
    if spec.generator == "anatomical":
        return synthesize_anatomical_scan(patient, positive, spec)
    rng = np.random.default_rng([spec.seed, patient])
    size = spec.image_size
    n_slices = int(rng.integers(spec.min_slices, spec.max_slices + 1))
    head = _Head(rng, n_slices, size)
    lesions = _draw_lesions(rng, n_slices, head) if positive else []
    fracture_slices, fracture_theta = _draw_fracture(rng, n_slices, lesions)
    mimic_slices = _place_mimics(rng, n_slices, lesions, spec.mimics_per_scan)

    hu = np.empty((n_slices, size, size), dtype=np.int16)
    mask = np.zeros((n_slices, size, size), dtype=bool)
    labels = []
    for k in range(n_slices):
        hu[k], mask[k], present = _cartoon_slice(head, k, rng, lesions, fracture_theta if k in fracture_slices else None,
                                                 mimic_slices.get(k), spec.noise_hu)
        any_bleed = int(any(present.values()))
        labels.append(
            {
                "PatientNumber": patient,
                "SliceNumber": k + 1,
                **present,
                "No_Hemorrhage": 1 - any_bleed,
                "Fracture_Yes_No": int(k in fracture_slices),
            }
        )
        if any_bleed and not mask[k].any():  # pragma: no cover - guarded by _lesion_region
            raise AssertionError(f"empty mask on a labelled slice (patient {patient}, slice {k + 1})")

    affine = _axial_affine(FIELD_OF_VIEW_MM / size, size, z0=rng.uniform(-40.0, 0.0))
    return SyntheticScan(
        patient=patient,
        hu=hu,
        mask=mask,
        labels=labels,
        affine=affine,
        lesions=lesions,
        mimic_slices=mimic_slices,
        age=int(rng.integers(18, 86)),
        sex="M" if rng.random() < 0.55 else "F",
    )


def _draw_fracture(rng: np.random.Generator, n_slices: int, lesions: list[Lesion]) -> tuple[set[int], float]:
    """``(slices, angle)`` of a skull fracture: most epidurals lie under one (on the bleed's
    first slices, at its angle), and a few scans without one have one anywhere."""
    fracture_slices: set[int] = set()
    epidural = [les for les in lesions if les.subtype == "Epidural"]
    if (epidural and rng.random() < 0.6) or (not epidural and rng.random() < 0.12):
        first = epidural[0].first if epidural else int(rng.integers(2, max(3, n_slices - 6)))
        fracture_slices = set(range(first, first + int(rng.integers(2, 6))))
    fracture_theta = epidural[0].params["theta"] if epidural else rng.uniform(-np.pi, np.pi)
    return fracture_slices, fracture_theta


def _cartoon_slice(head: _Head, k: int, rng: np.random.Generator, lesions: list[Lesion], fracture_theta: float | None,
                   mimic: str | None, noise_hu: float) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Slice ``k``: ``(HU int16, bleed mask, {subtype: 0/1})``; ``fracture_theta`` is the angle
    of a fracture through this slice (None: none), ``mimic`` the kind of mimic on it (None: none)."""
    img = _anatomy(head, k, rng)
    if fracture_theta is not None:
        x, y = head.local()
        s = head.scale(k)
        ring = _ellipse_radius(x, y, head.a * s, head.b * s) < 1
        gap = ring & (np.abs(_angle_diff(np.arctan2(y, x), fracture_theta)) < 0.05)
        gap &= img > 500
        img[gap] = 40.0
    if mimic is not None:
        _add_mimic(img, head, k, mimic, rng)
    # Partial-volume blur of anatomy and mimics (a calcification's rim falls in the
    # blood range). Bleeds are painted after it, so a thin subdural against the skull
    # never picks up bone HU: every mask pixel is 50-90 HU before noise.
    img = gaussian_filter(img, sigma=0.6)
    mask = np.zeros(img.shape, dtype=bool)
    present = {s: 0 for s in SUBTYPES}
    for les in lesions:
        if les.covers(k):
            region = _lesion_region(head, les, k)
            texture = 4.0 * np.roll(head.texture, 3 * k, axis=0)
            img[region] = np.clip(les.params["hu"] + texture[region], 50.0, 90.0)
            mask |= region
            present[les.subtype] = 1
    # Quantum noise in the tissue (air stays air).
    body = img > -900
    img[body] += rng.normal(0.0, noise_hu, size=int(body.sum()))
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16), mask, present


def _axial_affine(spacing: float, size: int, z0: float) -> np.ndarray:
    """RAS affine of a radiologically displayed axial stack: columns run patient right ->
    left (x decreasing), rows anterior -> posterior (y decreasing), slices inferior ->
    superior (z increasing), the first slice at ``z0``."""
    half = (size - 1) / 2 * spacing
    return np.array(
        [
            [-spacing, 0, 0, half],
            [0, -spacing, 0, half],
            [0, 0, SLICE_THICKNESS_MM, z0],
            [0, 0, 0, 1],
        ]
    )


def volume_to_nifti(stack: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """``(S, rows, cols)`` stack -> NIfTI volume ``(cols, rows, S)`` as the release stores it."""
    data = np.ascontiguousarray(np.transpose(stack, (2, 1, 0)))
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_slope_inter(1.0, 0.0)
    return img


def positive_patients(spec: SyntheticSpec) -> set[int]:
    numbers = spec.patient_numbers()
    rng = np.random.default_rng([spec.seed, 0xC0407])
    chosen = rng.choice(len(numbers), size=spec.n_positive, replace=False)
    return {numbers[i] for i in chosen}


def _write_patient(folder: Path, spec: SyntheticSpec, patient: int, positive: bool) -> tuple[list[dict], int, dict]:
    """Generate one patient, write its scan and mask into ``folder``; return its CSV rows, its
    count of mimic slices and its demographics row."""
    scan = synthesize_scan(patient, positive, spec)
    nib.save(volume_to_nifti(scan.hu, scan.affine), folder / NIFTI_SCAN_DIR / patient_file(patient))
    mask = scan.mask.astype(np.uint8) * 255
    nib.save(volume_to_nifti(mask, scan.affine), folder / NIFTI_MASK_DIR / patient_file(patient))
    flags = {s: int(any(r[s] for r in scan.labels)) for s in SUBTYPES}
    demo = {
        "Patient Number": patient,
        "Age (years)": scan.age,
        "Gender": scan.sex,
        **flags,
        "Fracture (yes 1/no 0)": int(any(r["Fracture_Yes_No"] for r in scan.labels)),
        "Note1": "synthetic",
    }
    return scan.labels, len(scan.mimic_slices), demo


def _write_patients(args) -> list[tuple[list[dict], int, dict]]:
    folder, spec, patients, positives = args
    return [_write_patient(folder, spec, patient, patient in positives) for patient in patients]


def _single_threaded() -> None:
    """A worker's initialiser: one torch thread per worker process (the workers are the
    parallelism), so no OpenMP pool inherited across the fork is ever used."""
    torch.set_num_threads(1)


def generate_synthetic(dest: str | Path, spec: SyntheticSpec = SyntheticSpec(), log=print, workers: int = 1) -> dict:
    """Write the synthetic dataset to ``dest`` (v1.3.1 layout) and return a summary.

    The files are written into a temporary sibling folder that is renamed to ``dest`` only
    when complete, so an interrupted run never leaves a folder that looks like a dataset.
    ``workers`` > 1 generates the patients in that many processes (the same files: each
    patient is drawn from its own seed); the anatomical twin's atlas is made ready first, so
    the workers map the cached copy instead of each building it.
    """
    dest = Path(dest)
    if dest.is_dir() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: already exists and is not empty; remove it first")
    workers = max(1, min(int(workers), spec.n_patients))
    # Never a folder with anything in it, even one filled while this ran; a file at dest is a
    # one-line DataError. The temporary folder is ichseq's by name: one a killed run left is
    # swept by the next run beside it.
    with atomic_dir(dest, owned=lambda _folder: False, owned_by="synthetic data goes only into a new or empty "
                    "folder") as tmp:
        (tmp / NIFTI_SCAN_DIR).mkdir()
        (tmp / NIFTI_MASK_DIR).mkdir()
        positives = positive_patients(spec)
        written = _write_all_patients(tmp, spec, spec.patient_numbers(), positives, workers)
        rows = [row for labels, _, _ in written for row in labels]
        n_mimics = sum(count for _, count, _ in written)
        _write_dataset_files(tmp, spec, rows, [d for _, _, d in written])
    n_pos_slices = sum(1 - r["No_Hemorrhage"] for r in rows)
    summary = {
        "spec": asdict(spec),
        "patients": spec.n_patients,
        "positive_patients": len(positives),
        "slices": len(rows),
        "positive_slices": n_pos_slices,
        "mimic_slices": n_mimics,
    }
    log(
        f"synthetic CT-ICH written to {dest}: {summary['patients']} patients "
        f"({summary['positive_patients']} with hemorrhage), {summary['slices']} slices "
        f"({n_pos_slices} positive, {100 * n_pos_slices / len(rows):.1f}%), "
        + (f"{n_mimics} single-slice mimics" if spec.generator == "cartoon" else
           f"{n_mimics} slices with calcifications; {spec.generator} twin, difficulty {spec.difficulty}, "
           f"{spec.slice_thickness_mm:g} mm slices, {spec.kernel} kernel")
    )
    return summary


def _write_all_patients(folder: Path, spec: SyntheticSpec, numbers: list[int], positives: set[int],
                        workers: int) -> list[tuple[list[dict], int, dict]]:
    """Every patient written into ``folder``: :func:`_write_patient`'s results in ``numbers``'
    order, made here or, with ``workers`` > 1, in that many forked processes."""
    if workers == 1:
        return _write_patients((folder, spec, numbers, positives))
    if spec.generator == "anatomical":
        for level in range(ATROPHY_LEVELS):  # built (and cached) once, here
            head_atlas(level)
    # Forked workers (a spawned one would run a Snakemake script's body again), each on
    # one thread.
    chunks = [numbers[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_single_threaded) as pool:
        parts = list(pool.map(_write_patients, [(folder, spec, chunk, positives) for chunk in chunks]))
    by_patient = {n: r for chunk, part in zip(chunks, parts) for n, r in zip(chunk, part)}
    return [by_patient[n] for n in numbers]


def _write_dataset_files(folder: Path, spec: SyntheticSpec, rows: list[dict], demo: list[dict]) -> None:
    """The files beside the scans: the template's notice (anatomical), the synthetic marker,
    the diagnosis CSV (``rows``) and the demographics CSV (``demo``)."""
    if spec.generator == "anatomical":
        (folder / "TEMPLATE_NOTICE.txt").write_text(TEMPLATE_NOTICE, encoding="utf-8")
    # What made these files: a model trained on them says so on every prediction.
    (folder / SYNTHETIC_MARKER).write_text(json.dumps({"generator": "ichseq synthetic", "spec": asdict(spec)},
                                                      indent=2) + "\n", encoding="utf-8")
    # The release's diagnosis CSV starts with a UTF-8 byte-order mark; so does ours.
    with open(folder / NIFTI_CSV, "w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(DIAGNOSIS_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    with open(folder / DEMOGRAPHICS_CSV, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(demo[0]))
        writer.writeheader()
        writer.writerows(demo)
