"""The anatomical synthetic twin: one patient's head CT from the ICBM-derived head atlas.

Each patient is the atlas (:mod:`ichseq.data.head_atlas`) at the atrophy level of their age,
scaled, deformed (a smooth random displacement field) and posed on the table (rotation,
gantry tilt, position on the headrest), then *acquired*: sampled on a scanner grid with true
mm geometry (in-plane pixels from the field of view, slices of a nominal thickness at an
interval that spans skull base to vertex), with the partial volume of the slice thickness,
the blur and noise of the reconstruction kernel and beam-hardening bands between the petrous
bones.

Bleeds are placed where they occur and drawn in atlas space, so they deform with the head and
take the slice's partial volume: epidural lenses against the inner table, subdural crescents
along the convexity or the falx (acute, subacute isodense, chronic hypodense, mixed),
intraparenchymal haematomas with oedema and mass effect at the typical sites, intraventricular
blood layering in the dependent (posterior) horns with a level that is horizontal in the
*scanner*, and subarachnoid blood in the CSF of sulci, fissures and basal cisterns. A pixel is
in the mask when at least half of it is blood; labels come from the mask.

Hard cases and negative mimics are made on purpose: small, thin, isodense and juxta-osseous
bleeds; physiological calcifications (pineal, choroid plexus, falx, basal ganglia) and
calcified granulomas; dense venous sinuses; beam hardening; partial-volume bone at the base.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi

from .head_atlas import (
    ATROPHY_LEVELS,
    BRAIN_CENTRE_MM,
    GRID_ORIGIN_MM,
    GRID_SHAPE,
    LABELS,
    TISSUE_HU,
    falx_edge,
    head_atlas,
    slab_atlas,
)
from .layout import SUBTYPES

AIR_HU = -1000.0


@dataclass(frozen=True)
class Difficulty:
    """How hard the twin's bleeds are to see. ``hard_fraction`` of the bleeds are drawn small,
    thin, isodense or against bone; ``size`` scales the others; noise is the brain's SD in HU
    on a 5 mm standard-kernel slice."""

    name: str
    size: float
    hard_fraction: float
    noise_hu: float
    calcified_granulomas: float  # Poisson mean per scan, besides the physiological calcifications


DIFFICULTIES = {
    "easy": Difficulty("easy", size=1.4, hard_fraction=0.0, noise_hu=3.0, calcified_granulomas=0.5),
    "moderate": Difficulty("moderate", size=1.0, hard_fraction=0.35, noise_hu=4.5, calcified_granulomas=1.0),
    "hard": Difficulty("hard", size=0.75, hard_fraction=0.7, noise_hu=6.0, calcified_granulomas=2.0),
}

# Share of each subtype among drawn bleeds (a trauma cohort like CT-ICH: epidural, contusions and
# subdurals dominate).
SUBTYPE_WEIGHTS = {"Epidural": 0.25, "Subdural": 0.22, "Intraparenchymal": 0.28, "Subarachnoid": 0.15,
                   "Intraventricular": 0.10}
# Reconstruction kernels: in-plane PSF (FWHM, mm) and noise relative to the standard kernel.
KERNELS = {"standard": (0.9, 1.0), "bone": (0.5, 2.8)}


# --------------------------------------------------------------------------- geometry


def _rotation(pitch: float, roll: float, yaw: float) -> np.ndarray:
    """Rotation (degrees) about x (pitch: chin down is positive), y (roll) and z (yaw)."""
    a, b, c = np.radians([pitch, roll, yaw])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Pose:
    """Scanner (RAS mm) = rotation @ (scale * (MNI + elastic(MNI))) + shift."""

    rotation: np.ndarray
    scale: np.ndarray
    shift: np.ndarray
    elastic: np.ndarray  # (3, gx, gy, gz) displacement (mm) on a coarse grid over the atlas
    elastic_step: float

    def to_scanner(self, mni: np.ndarray) -> np.ndarray:
        """(3, n) MNI -> (3, n) scanner, elastic field included."""
        return self.rotation @ (self.scale[:, None] * (mni + self.displacement(mni))) + self.shift[:, None]

    def to_mni(self, scanner: np.ndarray) -> np.ndarray:
        """(3, ...) scanner -> (3, ...) MNI (the elastic field inverted to first order)."""
        shape = scanner.shape
        flat = scanner.reshape(3, -1)
        undeformed = ((self.rotation.T @ (flat - self.shift[:, None])) / self.scale[:, None]).astype(np.float32)
        return (undeformed - self.displacement(undeformed)).reshape(shape)

    def grid_to_mni(self, grid: np.ndarray, step: int = 8) -> np.ndarray:
        """:meth:`to_mni` of a slice grid (3, S, N, N) (pixel centres evenly spaced in rows and
        columns): exact on a coarse grid about ``step`` pixels apart, interpolated bilinearly in
        between (the pose's affine part is linear in the pixel position, so it stays exact). The
        elastic field between those points is a smooth field of its own, within 1.3 mm of
        :meth:`to_mni`'s (99% of pixels within 0.5 mm at 128 px); everything in a scan is drawn
        through this one mapping, so the anatomy and the bleeds stay consistent."""
        n = grid.shape[-1]
        m = max(2, int(np.ceil((n - 1) / step)) + 1)
        pos = np.linspace(0.0, n - 1.0, m)
        first, dcol, drow = grid[:, :, 0, 0], grid[:, 0, 0, 1] - grid[:, 0, 0, 0], grid[:, 0, 1, 0] - grid[:, 0, 0, 0]
        coarse = (first[:, :, None, None] + drow[:, None, None, None] * pos[None, None, :, None]
                  + dcol[:, None, None, None] * pos[None, None, None, :]).astype(np.float32)
        coarse_mni = torch.from_numpy(np.ascontiguousarray(self.to_mni(coarse), np.float32))
        with torch.no_grad():  # pixel centres at the coarse points' positions: align_corners
            full = torch.nn.functional.interpolate(coarse_mni.reshape(1, -1, m, m), size=(n, n), mode="bilinear",
                                                   align_corners=True)
        return full.reshape(grid.shape).numpy()

    def slice_normal_in_mni(self) -> np.ndarray:
        """MNI displacement per mm along the scanner's z (for sub-samples across a slice)."""
        return (self.rotation.T @ np.array([0.0, 0.0, 1.0])) / self.scale

    def displacement(self, mni: np.ndarray) -> np.ndarray:
        idx = (mni - GRID_ORIGIN_MM[:, None]) / self.elastic_step
        return np.stack([ndi.map_coordinates(self.elastic[i], idx, order=1, mode="nearest") for i in range(3)])


def _draw_pose(rng: np.random.Generator, sex: str) -> Pose:
    # The ICBM 2009 brain is larger than a typical adult's (it was registered to MNI305 space,
    # itself ~5-10% larger than Talairach's brain): scaled to an adult head of about
    # 185-195 mm glabella to opisthocranion (men) and a few % less (women).
    size = rng.normal(0.93 if sex == "M" else 0.90, 0.03)
    scale = size * rng.normal(1.0, 0.025, size=3)
    # Head flexion on the headrest and the gantry tilt chosen by the radiographer both tilt the
    # slice against the head (orbitomeatal line +- 20 degrees); small roll and yaw.
    pitch = rng.normal(0.0, 7.0) + (rng.uniform(-20.0, 20.0) if rng.random() < 0.3 else 0.0)
    rotation = _rotation(pitch, rng.normal(0, 3.0), rng.normal(0, 4.0))
    step = 24.0
    shape = tuple(int(np.ceil(n / step)) + 2 for n in (213, 262, 213))
    elastic = np.stack([ndi.gaussian_filter(rng.normal(0, 1, size=shape), 1.0) for _ in range(3)])
    elastic *= 2.5 / max(float(elastic.std()), 1e-6)  # a few mm of shape difference
    pose = Pose(rotation=rotation, scale=scale.astype(np.float32), shift=np.zeros(3), elastic=elastic.astype(np.float32),
                elastic_step=step)
    # Centre the head (the brain's centre is also the head's, front to back) in the field of
    # view, give or take the radiographer's few mm.
    centre = pose.to_scanner(BRAIN_CENTRE_MM.reshape(3, 1).astype(np.float32))[:, 0]
    pose.shift = np.array([rng.normal(0, 4.0) - centre[0], rng.normal(0, 4.0) - centre[1], -centre[2]])
    return pose


# --------------------------------------------------------------------------- lesions


@dataclass
class Lesion:
    subtype: str
    params: dict
    hard: bool = False
    first: int = 0  # first and one-past-last slice where the mask shows it (after acquisition)
    length: int = 0

    def covers(self, k: int) -> bool:
        return self.first <= k < self.first + self.length


def _sample(volume: np.ndarray, mni: np.ndarray, order: int, cval: float = 0.0) -> np.ndarray:
    """``volume`` at MNI points: nearest (order 0, the volume's dtype) or linear (float32: an
    integer volume's interpolation is not truncated)."""
    idx = mni - GRID_ORIGIN_MM.reshape((3,) + (1,) * (mni.ndim - 1))
    if order == 0:
        return ndi.map_coordinates(volume, idx, order=0, mode="constant", cval=cval, prefilter=False)
    return _trilinear(volume, idx.reshape(3, -1), cval).reshape(idx.shape[1:])


def _trilinear(volume: np.ndarray, idx: np.ndarray, cval: float) -> np.ndarray:
    """Linear interpolation of ``volume`` at fractional indices (3, n): the same values as
    ``map_coordinates(order=1)`` inside the volume (``cval`` within a voxel of its border and
    beyond), about twice as fast, which is most of a scan's generation time."""
    shape = np.array(volume.shape)
    first = np.floor(idx).astype(np.int64)
    inside = np.all((first >= 0) & (first < shape[:, None] - 1), axis=0)
    first = np.where(inside, first, 0)
    frac = (idx - first).astype(np.float32)
    step_x, step_y = volume.shape[1] * volume.shape[2], volume.shape[2]
    base = first[0] * step_x + first[1] * step_y + first[2]
    flat = volume.reshape(-1)
    fx, fy, fz = frac
    out = np.zeros(idx.shape[1], np.float32)
    for dx in (0, 1):
        wx = fx if dx else 1 - fx
        for dy in (0, 1):
            weight = wx * (fy if dy else 1 - fy)
            corner = base + dx * step_x + dy * step_y
            out += weight * ((1 - fz) * flat[corner] + fz * flat[corner + 1])
    return np.where(inside, out, np.float32(cval))


@functools.lru_cache(maxsize=8)
def _slab_tensor(level: int, thickness_mm: float) -> torch.Tensor:
    """:func:`slab_atlas` less air's HU as a (1, 1, x, y, z) tensor: grid_sample's zero padding
    is then air outside the atlas."""
    return torch.from_numpy(slab_atlas(level, thickness_mm) - np.float32(AIR_HU))[None, None]


def _sample_slab_hu(level: int, thickness_mm: float, mni: np.ndarray) -> np.ndarray:
    """The slab atlas's HU at MNI points (3, n), trilinear: every pixel of a scan is one look-up,
    the largest single cost of a scan, so it goes through torch's grid_sample (about twice as
    fast as :func:`_trilinear` on one thread, and multi-threaded)."""
    scale = (2.0 / (np.array(GRID_SHAPE, np.float32) - 1.0))[:, None]
    normalised = (mni - GRID_ORIGIN_MM[:, None]).astype(np.float32) * scale - np.float32(1.0)
    # grid_sample's last axis is (W, H, D) = the volume's axes (z, y, x), each in [-1, 1].
    points = torch.from_numpy(np.ascontiguousarray(normalised[::-1].T)).view(1, 1, 1, -1, 3)
    with torch.no_grad():
        out = torch.nn.functional.grid_sample(_slab_tensor(level, thickness_mm), points, mode="bilinear",
                                              padding_mode="zeros", align_corners=True)
    return out.view(-1).numpy() + np.float32(AIR_HU)


def _inner_table_point(direction: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Where a ray from ``start`` leaves the intracranial space (MNI mm)."""
    atlas = head_atlas(0)
    steps = np.arange(0.0, 140.0, 0.5)
    points = start[:, None] + direction[:, None] * steps[None, :]
    depth = _sample(atlas.inner_depth, points, order=0)
    inside = np.nonzero(depth > 0)[0]
    last = inside[inside == np.arange(len(inside))].max() if inside.size and inside[0] == 0 else 0
    return points[:, last]


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _draw_lesion(rng: np.random.Generator, subtype: str, difficulty: Difficulty, hard: bool) -> Lesion:
    """One bleed of ``subtype`` (``hard``: drawn small, thin or isodense). Each subtype's
    parameters are drawn by its own step, in a fixed order from ``rng``: the same seed gives the
    same twin."""
    size = difficulty.size
    p: dict = {"hu": rng.uniform(58.0, 80.0)}
    if subtype in ("Epidural", "Subdural"):
        _draw_extra_axial(rng, p, subtype, size, hard)
    elif subtype == "Intraparenchymal":
        _draw_intraparenchymal(rng, p, size, hard)
    elif subtype == "Intraventricular":
        p.update(depth=rng.uniform(2.5, 5.0) if hard else rng.uniform(7.0, 20.0) * size, hu=rng.uniform(50, 75))
    else:  # Subarachnoid: basal cisterns, Sylvian fissure or convexity sulci
        _draw_subarachnoid(rng, p, size, hard)
    return Lesion(subtype, p, hard)


def _draw_extra_axial(rng: np.random.Generator, p: dict, subtype: str, size: float, hard: bool) -> None:
    """An epidural or subdural collection's parameters, into ``p``: where along the dura it lies
    (a subdural also along the falx or tentorium), its extent and, for a subdural, its age."""
    along_dura = str(rng.choice(["convexity", "falx", "tentorium"], p=[0.76, 0.14, 0.10])) \
        if subtype == "Subdural" else "convexity"
    if along_dura == "tentorium":
        side = rng.choice([-1.0, 1.0])
        p.update(kind="tentorium", centre=np.array([side * rng.uniform(10, 35), rng.uniform(-80, -45), 0.0]),
                 radius=rng.uniform(12, 20) if hard else rng.uniform(20, 35) * size,
                 thickness=(rng.uniform(1.5, 3.0) if hard else rng.uniform(2.5, 6.0)))
    elif along_dura == "falx":
        p.update(kind="falx", y0=rng.uniform(-60, 30), half_length=rng.uniform(15, 40) * size,
                 thickness=(rng.uniform(1.5, 3.0) if hard else rng.uniform(2.5, 5.0)))
    else:
        side = rng.choice([-1.0, 1.0])
        # Convexity: mostly temporal/parietal for epidurals, fronto-parietal for subdurals.
        direction = _unit([side * rng.uniform(0.5, 1.0), rng.uniform(-0.8, 0.7), rng.uniform(-0.25, 0.75)])
        centre = _inner_table_point(direction, BRAIN_CENTRE_MM.astype(float))
        if subtype == "Epidural":
            radius = (rng.uniform(9, 14) if hard else rng.uniform(18, 32) * size)
            thickness = (rng.uniform(2.5, 4.5) if hard else rng.uniform(7, 18) * size)
        else:
            radius = (rng.uniform(20, 35) if hard else rng.uniform(40, 75) * size)
            thickness = (rng.uniform(1.5, 3.5) if hard else rng.uniform(4, 14) * size)
        p.update(kind="convexity", centre=centre, normal=direction, radius=radius, thickness=thickness,
                 lens=subtype == "Epidural")
    if subtype == "Subdural":
        # Age of the collection: acute hyperdense, subacute isodense (hard), chronic
        # hypodense, or chronic with a dependent acute layer.
        stage = rng.choice(["acute", "subacute", "chronic", "mixed"], p=[0.55, 0.2, 0.1, 0.15])
        if hard and rng.random() < 0.5:
            stage = "subacute"
        p["stage"] = str(stage)
        p["hu"] = {"acute": rng.uniform(55, 78), "subacute": rng.uniform(32, 46), "chronic": rng.uniform(8, 22),
                   "mixed": rng.uniform(10, 24)}[stage]
        p["layer_hu"] = rng.uniform(55, 70)


def _draw_intraparenchymal(rng: np.random.Generator, p: dict, size: float, hard: bool) -> None:
    """An intraparenchymal bleed's parameters, into ``p``: a hypertensive site (putamen,
    thalamus, cerebellum, pons) or a lobar one, its size, shape and oedema."""
    site = rng.choice(["putamen", "thalamus", "lobar", "cerebellum", "pons"], p=[0.3, 0.15, 0.4, 0.1, 0.05])
    side = rng.choice([-1.0, 1.0])
    centre = {"putamen": (side * 24, 2, 2), "thalamus": (side * 12, -18, 6), "cerebellum": (side * 24, -62, -32),
              "pons": (0, -28, -32)}.get(str(site))
    if centre is None:  # lobar / contusion: frontal and temporal poles, beneath the cortex
        centre = (side * rng.uniform(15, 50), rng.uniform(-70, 50), rng.uniform(-25, 50))
    radius = np.exp(rng.uniform(np.log(2.5), np.log(5.0))) if hard else np.exp(rng.uniform(np.log(5), np.log(22))) * size
    if site == "pons":
        radius = min(radius, 9.0)
    p.update(centre=np.asarray(centre, float) + rng.normal(0, 4, 3), radius=float(radius),
             axes=rng.uniform(0.75, 1.25, 3), phases=rng.uniform(0, 2 * np.pi, 4),
             oedema=float(rng.uniform(0.2, 0.6)), hu=rng.uniform(50, 62) if hard else rng.uniform(60, 85))


def _draw_subarachnoid(rng: np.random.Generator, p: dict, size: float, hard: bool) -> None:
    """A subarachnoid bleed's parameters, into ``p``: in the basal cisterns, a Sylvian fissure
    or the convexity sulci, and its extent."""
    site = str(rng.choice(["cisterns", "sylvian", "convexity"], p=[0.35, 0.3, 0.35]))
    side = rng.choice([-1.0, 1.0])
    if site == "cisterns":
        centre = np.array([0.0, -8.0, -16.0])
    elif site == "sylvian":
        centre = np.array([side * 42.0, 6.0, -4.0])
    else:
        direction = _unit([side * rng.uniform(0.2, 1.0), rng.uniform(-0.8, 0.8), rng.uniform(0.1, 0.9)])
        centre = _inner_table_point(direction, BRAIN_CENTRE_MM.astype(float)) - 10.0 * direction
    p.update(site=site, centre=centre + rng.normal(0, 3, 3),
             radius=rng.uniform(6, 10) if hard else rng.uniform(14, 28) * size,
             hu=rng.uniform(45, 58) if hard else rng.uniform(58, 80))


def _lesion_support(lesion: Lesion, mass_effect: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MNI bounding box (lo, hi) of a lesion, or of the tissue its mass effect moves."""
    p = lesion.params
    if lesion.subtype == "Intraventricular":
        return np.array([-40.0, -70.0, -20.0]), np.array([40.0, 40.0, 40.0])
    if p.get("kind") == "falx":
        return np.array([-8.0, p["y0"] - p["half_length"] - 5, -10.0]), np.array([8.0, p["y0"] + p["half_length"] + 5, 90.0])
    if p.get("kind") == "tentorium":
        reach = p["radius"] + 3.0
        return (np.array([p["centre"][0] - reach, p["centre"][1] - reach, -45.0]),
                np.array([p["centre"][0] + reach, p["centre"][1] + reach, 25.0]))
    if lesion.subtype == "Intraparenchymal":
        reach = p["radius"] * (4.0 if mass_effect else 1.35 * max(p["axes"]) + 0.6) + 2.0
    else:
        reach = p["radius"] * (1.8 if mass_effect else 1.0) + p.get("thickness", 0) + 6.0
        if mass_effect:
            reach = max(reach, 90.0)
    return p["centre"] - reach, p["centre"] + reach


def _occupancy(lesion: Lesion, mni: np.ndarray, scanner_y: np.ndarray, atlas, vent_level: float) -> np.ndarray:
    """Fraction (0-1) of blood at MNI points (3, n)."""
    p = lesion.params
    x, y, z = mni
    if lesion.subtype == "Intraventricular":
        label = _sample(atlas.label, mni, order=0)
        return ((label == LABELS["ventricle"]) & (scanner_y < vent_level)).astype(np.float32)
    if lesion.subtype == "Subarachnoid":
        inside = np.sum((mni - p["centre"][:, None]) ** 2, axis=0) < p["radius"] ** 2
        csf = _sample(atlas.csf, mni, order=0).astype(np.float32) / 255.0
        label = _sample(atlas.label, mni, order=0)
        sulcal = (label != LABELS["ventricle"]) & (label != LABELS["dura"]) & (label != LABELS["venous blood"])
        return np.where(inside & sulcal, np.clip(1.6 * csf, 0, 1), 0.0).astype(np.float32)
    if lesion.subtype == "Intraparenchymal":
        d = (mni - p["centre"][:, None]) / (p["radius"] * p["axes"][:, None])
        r = np.sqrt(np.sum(d * d, axis=0)) + 1e-6
        theta, phi = np.arccos(np.clip(d[2] / r, -1, 1)), np.arctan2(d[1], d[0])
        wobble = 1 + 0.12 * np.cos(2 * phi + p["phases"][0]) * np.sin(theta) + 0.1 * np.cos(3 * theta + p["phases"][1])
        label = _sample(atlas.label, mni, order=0)
        brain = np.isin(label, (LABELS["grey matter"], LABELS["white matter"], LABELS["csf"], LABELS["ventricle"]))
        return ((r < wobble) & brain).astype(np.float32)
    depth = _sample(atlas.inner_depth, mni, order=1)
    if p.get("kind") == "tentorium":
        # A layer over (above) the tentorium, thinning towards its edges.
        tz = ndi.map_coordinates(np.nan_to_num(atlas.tentorium_z, nan=-999.0),
                                 (x - GRID_ORIGIN_MM[0], y - GRID_ORIGIN_MM[1]), order=0, mode="constant", cval=-999.0)
        r2 = ((x - p["centre"][0]) ** 2 + (y - p["centre"][1]) ** 2) / p["radius"] ** 2
        h = p["thickness"] * np.sqrt(np.clip(1 - r2, 0, 1))
        label = _sample(atlas.label, mni, order=0)
        return ((tz > -900) & (z >= tz - 0.5) & (z < tz + h) & (depth > 0.5)
                & (label != LABELS["venous blood"])).astype(np.float32)
    if p.get("kind") == "falx":
        edge = falx_edge(y)
        along = np.clip(1 - ((y - p["y0"]) / p["half_length"]) ** 2, 0, 1)
        return ((np.abs(x) < 0.8 + p["thickness"] * np.sqrt(along)) & (z > edge) & (depth > 0.5)).astype(np.float32)
    rel = mni - p["centre"][:, None]
    normal = p["normal"][:, None]
    along = np.sum(rel * normal, axis=0)
    tangential = np.sqrt(np.maximum(np.sum(rel * rel, axis=0) - along**2, 0))
    u = np.clip(1 - (tangential / p["radius"]) ** 2, 0, 1)
    profile = u if p["lens"] else np.sqrt(u)  # a lens for epidurals, a flatter crescent for subdurals
    # Only the cap of the head under the collection (not the far side of the cylinder along its
    # normal), on its own side of the falx.
    cap = (along > -(p["thickness"] + 12.0)) & (x * np.sign(p["normal"][0]) > -1.0)
    return ((depth > 0.5) & (depth < p["thickness"] * profile) & (u > 0) & cap).astype(np.float32)


def _mass_effect(lesion: Lesion, mni: np.ndarray, atlas) -> np.ndarray:
    """Where the atlas is read from so that tissue is pushed away from a space-occupying bleed
    (volume-preserving radial push for haematomas, inward push for extra-axial collections,
    which also shifts the midline of a large one). Returns new MNI points (3, n)."""
    p = lesion.params
    if lesion.subtype == "Intraparenchymal" and p["radius"] > 6.0:
        rel = mni - p["centre"][:, None]
        r = np.sqrt(np.sum(rel * rel, axis=0)) + 1e-6
        radius = p["radius"] * 0.9
        original = np.cbrt(np.maximum(r**3 - radius**3, 0.0))
        factor = np.where(r < 4 * radius, original / r, 1.0)
        return p["centre"][:, None] + rel * factor
    if p.get("kind") == "convexity" and p["thickness"] > 4.0:
        depth = _sample(atlas.inner_depth, mni, order=1)
        rel = mni - p["centre"][:, None]
        normal = p["normal"][:, None]
        along = np.sum(rel * normal, axis=0)  # negative inside, from the collection inwards
        tangential = np.sqrt(np.maximum(np.sum(rel * rel, axis=0) - along**2, 0))
        reach = np.clip(1 - (tangential / (1.8 * p["radius"])) ** 2, 0, 1)
        # Decays over 90 mm inwards from the collection: a large one shifts the midline; the
        # far side of the head is not touched.
        push = p["thickness"] * 0.8 * reach * np.clip(1 + along / 90.0, 0, 1) * (depth > 0)
        # Never read from beyond the inner table: what lies under the collection is brain that
        # came from nearer the surface, not the skull (the push is at most the depth).
        push = np.minimum(push, np.maximum(depth - 0.5, 0.0))
        return mni + normal * push
    return mni


# --------------------------------------------------------------------------- the scan


@dataclass
class AnatomicalScan:
    patient: int
    hu: np.ndarray  # (S, N, N) int16, rows anterior->posterior, columns patient right->left
    mask: np.ndarray  # (S, N, N) bool
    tissue: np.ndarray  # (S, N, N) uint8, head_atlas.LABELS at each pixel centre (0 outside)
    labels: list[dict]
    affine: np.ndarray
    lesions: list[Lesion]
    mimic_slices: dict[int, str]
    age: int
    sex: str
    atrophy: int
    slice_thickness_mm: float


def _slice_grid(size: int, spacing: float, positions: np.ndarray) -> np.ndarray:
    """Scanner points (3, S, N, N) of every pixel centre."""
    half = (size - 1) / 2 * spacing
    cols = half - np.arange(size, dtype=np.float32) * spacing  # x: patient right -> left
    rows = half - np.arange(size, dtype=np.float32) * spacing  # y: anterior -> posterior
    grid = np.empty((3, len(positions), size, size), np.float32)
    grid[0] = cols[None, None, :]
    grid[1] = rows[None, :, None]
    grid[2] = positions.astype(np.float32)[:, None, None]
    return grid


def synthesize_anatomical_scan(patient: int, positive: bool, spec, difficulty: Difficulty | None = None) -> AnatomicalScan:
    """One patient's scan, mask, tissue map and per-slice labels (deterministic per seed and patient)."""
    difficulty = difficulty or DIFFICULTIES[spec.difficulty]
    rng = np.random.default_rng([spec.seed, patient])
    age = int(rng.integers(18, 86))
    sex = "M" if rng.random() < 0.55 else "F"
    atrophy_score = np.clip((age - 35) / 50.0 + rng.normal(0, 0.15), 0, 1)
    level = int(round(atrophy_score * (ATROPHY_LEVELS - 1)))
    atlas = head_atlas(level)
    pose = _draw_pose(rng, sex)
    size = spec.image_size
    spacing, thickness, positions = _acquisition(rng, spec, pose)
    n_slices = len(positions)
    interval = float(positions[1] - positions[0])

    grid = _slice_grid(size, spacing, positions)
    shape = grid.shape[1:]
    mni = pose.grid_to_mni(grid).reshape(3, -1)

    # A positive patient must show blood somewhere: a bleed too small or thin to fill half a
    # pixel is not in the mask, so if none shows, the bleeds are drawn again (not hard).
    lesions = _draw_lesions(rng, difficulty, allow_hard=True) if positive else []
    for attempt in range(6):
        hu, tissue, mask, per_lesion_masks = _render(lesions, atlas, level, pose, grid, mni, thickness, rng)
        if not positive or mask.any():
            break
        lesions = _draw_lesions(rng, difficulty, allow_hard=attempt < 2)
    else:  # pragma: no cover - six draws of visible-sized bleeds never all vanish
        raise AssertionError(f"patient {patient}: no visible bleed after six draws")

    hu = hu.reshape(shape)
    tissue = tissue.reshape(shape)
    mask = mask.reshape(shape)
    mimic_slices = _add_calcifications(hu, mni.reshape((3,) + shape), tissue, rng, age, difficulty, spec.mimics_per_scan)
    fracture = _add_fracture(hu, tissue, mni.reshape((3,) + shape), lesions, rng)
    _add_headrest(hu, grid, pose, rng)
    _beam_hardening(hu, tissue, spacing, rng)
    hu = _reconstruct(hu, spacing, thickness, difficulty.noise_hu, spec.kernel, rng)
    labels = _slice_labels(patient, n_slices, lesions, per_lesion_masks, fracture)

    half = (size - 1) / 2 * spacing
    affine = np.array([[-spacing, 0, 0, half], [0, -spacing, 0, half], [0, 0, interval, positions[0]], [0, 0, 0, 1]])
    return AnatomicalScan(patient=patient, hu=hu, mask=mask, tissue=tissue, labels=labels, affine=affine,
                          lesions=lesions, mimic_slices=mimic_slices, age=age, sex=sex, atrophy=level,
                          slice_thickness_mm=thickness)


def _acquisition(rng: np.random.Generator, spec, pose: Pose) -> tuple[float, float, np.ndarray]:
    """``(pixel spacing, slice thickness, slice positions)`` in mm of the scan: a head CT's
    field of view and slices from skull base to vertex."""
    fov = rng.uniform(215.0, 250.0)  # display field of view of a head scan
    spacing = fov / spec.image_size
    thickness = float(spec.slice_thickness_mm)
    n_slices = int(rng.integers(spec.min_slices, spec.max_slices + 1))
    # From the foramen magnum (the bottom of the posterior fossa) to the vertex.
    base = pose.to_scanner(np.array([[0.0], [-20.0], [rng.uniform(-72.0, -62.0)]]))[2, 0]
    vertex = pose.to_scanner(np.array([[0.0], [-20.0], [rng.uniform(84.0, 92.0)]]))[2, 0]
    return spacing, thickness, np.linspace(base, vertex, n_slices)


def _draw_lesions(rng: np.random.Generator, difficulty: Difficulty, allow_hard: bool) -> list[Lesion]:
    """One to three bleeds of subtypes drawn by :data:`SUBTYPE_WEIGHTS`; with ``allow_hard``,
    each is hard (small, thin, isodense, against bone) with the difficulty's chance."""
    drawn = []
    n_lesions = 1 + int(rng.random() < 0.3) + int(rng.random() < 0.1)
    names = list(SUBTYPE_WEIGHTS)
    weights = np.array(list(SUBTYPE_WEIGHTS.values()))
    for _ in range(n_lesions):
        subtype = str(rng.choice(names, p=weights / weights.sum()))
        hard = allow_hard and bool(rng.random() < difficulty.hard_fraction)
        drawn.append(_draw_lesion(rng, subtype, difficulty, hard))
    return drawn


def _slice_labels(patient: int, n_slices: int, lesions: list[Lesion], per_lesion_masks: list[np.ndarray],
                  fracture: np.ndarray) -> list[dict]:
    """The CSV rows of the scan's slices (a subtype is present where its bleed is in the mask),
    and each bleed's ``first``/``length`` set to the slices its mask spans."""
    labels = []
    for k in range(n_slices):
        present = {s: 0 for s in SUBTYPES}
        for lesion, lesion_mask in zip(lesions, per_lesion_masks):
            if lesion_mask[k].any():
                present[lesion.subtype] = 1
        any_bleed = int(any(present.values()))
        labels.append({"PatientNumber": patient, "SliceNumber": k + 1, **present, "No_Hemorrhage": 1 - any_bleed,
                       "Fracture_Yes_No": int(fracture[k])})
    for lesion, lesion_mask in zip(lesions, per_lesion_masks):
        shown = np.nonzero(lesion_mask.any(axis=(1, 2)))[0]
        if shown.size:
            lesion.first, lesion.length = int(shown[0]), int(shown[-1] - shown[0] + 1)
    return labels


def _render(lesions, atlas, level, pose, grid, mni, thickness, rng):
    """Sample the atlas for every pixel (with the bleeds' mass effect) and paint the bleeds.
    Returns flat HU, tissue, mask and each bleed's mask (S, N, N)."""
    shape = grid.shape[1:]
    read_at = _displaced_by_bleeds(lesions, mni, atlas)
    hu = _sample_slab_hu(level, thickness, read_at)
    tissue = _sample(atlas.label, read_at, order=0)
    hu += _tissue_offsets(rng)[tissue]

    # Bleeds: blood fraction of each pixel from sub-samples across the slice thickness.
    n_sub = max(1, int(np.ceil(thickness / 1.0)))
    offsets = (np.arange(n_sub) + 0.5) / n_sub * thickness - thickness / 2 if n_sub > 1 else np.zeros(1)
    mask = np.zeros(hu.shape, bool)
    per_lesion_masks = []
    ventricles_y = _ventricle_floor(pose, atlas)
    for lesion in lesions:
        lo, hi = _lesion_support(lesion)
        near = np.nonzero(np.all((mni >= lo[:, None] - thickness) & (mni <= hi[:, None] + thickness), axis=0))[0]
        if "thickness" in lesion.params:
            # An extra-axial collection lies within its thickness of the inner table: only
            # pixels whose centre is that close (give or take half a slice), or in the bone
            # beside it, can hold any of it. Most of a large collection's box is not.
            depth = _sample(atlas.inner_depth, mni[:, near], order=0)
            limit = lesion.params["thickness"] + thickness / 2 + 1.5
            bone = np.isin(tissue[near], (LABELS["cortical bone"], LABELS["diploe"]))
            near = near[((depth > 0) & (depth <= limit)) | bone]
        frac = np.zeros(near.size, np.float32)
        vent_level = ventricles_y + lesion.params.get("depth", 0.0)
        normal = pose.slice_normal_in_mni().astype(np.float32)[:, None]
        centres = mni[:, near]
        scanner_y = grid.reshape(3, -1)[1, near]
        for off in offsets:
            frac += _occupancy(lesion, centres + normal * off, scanner_y, atlas, vent_level)
        frac /= len(offsets)
        blood = _blood_hu(lesion, grid.reshape(3, -1)[:, near], rng)
        background = hu[near].copy()
        hu[near] = background * (1 - frac) + blood * frac
        if lesion.subtype == "Intraparenchymal":  # perihaematomal oedema, hypodense, not in the mask
            rim = _oedema(lesion, mni[:, near]) * (frac < 0.5) * np.isin(tissue[near], (LABELS["grey matter"], LABELS["white matter"]))
            hu[near] -= 9.0 * rim
        lesion_mask = np.zeros(hu.shape, bool)
        # In the mask: at least half the pixel is blood, and the rest is not bone (a pixel that
        # straddles the inner table reads as bone, and a reader would not outline it).
        lesion_mask[near] = (frac >= 0.5) & (background < 200.0)
        per_lesion_masks.append(lesion_mask.reshape(shape))
        mask |= lesion_mask

    return hu, tissue, mask, per_lesion_masks


def _displaced_by_bleeds(lesions, mni: np.ndarray, atlas) -> np.ndarray:
    """Mass effect: the points (3, P) at which to read the atlas, ``mni`` displaced near the
    space-occupying bleeds."""
    read_at = mni.copy()
    for lesion in lesions:
        lo, hi = _lesion_support(lesion, mass_effect=True)
        near = np.all((mni >= lo[:, None]) & (mni <= hi[:, None]), axis=0)
        if near.any():
            read_at[:, near] = _mass_effect(lesion, read_at[:, near], atlas)
    return read_at


def _tissue_offsets(rng: np.random.Generator) -> np.ndarray:
    """HU added per tissue label (256,): the patient's scanner calibration of grey/white, the
    haematocrit of venous blood (a dense sinus is a subdural mimic), bone mineral density."""
    delta = np.zeros(256, np.float32)
    delta[LABELS["grey matter"]] = rng.normal(0, 1.5)
    delta[LABELS["white matter"]] = delta[LABELS["grey matter"]] + rng.normal(0, 1.0)
    delta[LABELS["venous blood"]] = rng.uniform(-6.0, 14.0)  # up to ~64 HU: a dense sinus
    delta[LABELS["cortical bone"]] = delta[LABELS["diploe"]] = rng.normal(0, 80.0)
    return delta


def _ventricle_floor(pose: Pose, atlas) -> float:
    """Scanner y (mm) of the most dependent (posterior) point of the lateral ventricles."""
    points = _ventricle_points(atlas.atrophy)
    return float(pose.to_scanner(points)[1].min())


@functools.lru_cache(maxsize=ATROPHY_LEVELS)
def _ventricle_points(level: int) -> np.ndarray:
    """MNI points (3, n) of every 7th ventricle voxel of an atrophy level."""
    idx = np.array(np.nonzero(head_atlas(level).label == LABELS["ventricle"]), float)
    return idx[:, ::7] + GRID_ORIGIN_MM[:, None]


def _blood_hu(lesion: Lesion, scanner: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """HU of the blood at scanner points: clot texture, and the haematocrit level of a mixed
    subdural (the dependent, posterior part denser)."""
    p = lesion.params
    hu = np.full(scanner.shape[1], p["hu"], np.float32) + rng.normal(0, 2.0, scanner.shape[1]).astype(np.float32)
    if p.get("stage") == "mixed":
        level = np.quantile(scanner[1], 0.4) if scanner.shape[1] else 0.0
        hu = np.where(scanner[1] < level, p["layer_hu"], hu)
    return hu


def _oedema(lesion: Lesion, mni: np.ndarray) -> np.ndarray:
    p = lesion.params
    r = np.sqrt(np.sum((mni - p["centre"][:, None]) ** 2, axis=0))
    outer = p["radius"] * (1 + p["oedema"]) + 2.0
    return np.clip((outer - r) / max(outer - p["radius"], 1e-3), 0, 1).astype(np.float32)


def _add_calcifications(hu, mni, tissue, rng, age, difficulty, extra_mean) -> dict[int, str]:
    """Physiological calcifications (prevalence rising with age) and calcified granulomas: dense
    spots whose partial-volume rims fall in the blood range. Returns slice -> kind."""
    older = np.clip((age - 20) / 50.0, 0, 1)
    spots = []
    if rng.random() < 0.25 + 0.5 * older:
        spots.append(("pineal", np.array([0.0, -30.0, 2.0]), rng.uniform(2.0, 4.0)))
    if rng.random() < 0.15 + 0.6 * older:
        for side in (-1, 1):
            spots.append(("choroid plexus", np.array([side * 27.0, -40.0, 16.0]) + rng.normal(0, 2, 3), rng.uniform(2.0, 4.5)))
    if rng.random() < 0.1 + 0.1 * older:
        spots.append(("falx", np.array([0.0, rng.uniform(-40, 30), rng.uniform(40, 65)]), rng.uniform(1.5, 3.5)))
    if rng.random() < 0.02 + 0.06 * older:
        for side in (-1, 1):
            spots.append(("basal ganglia", np.array([side * 19.0, -2.0, 0.0]) + rng.normal(0, 2, 3), rng.uniform(2.0, 4.0)))
    # mimics_per_scan (4 by default) scales the difficulty's granulomas: 0 turns them off.
    for _ in range(int(rng.poisson(difficulty.calcified_granulomas * extra_mean / 4.0))):
        spots.append(("granuloma", np.array([rng.uniform(-55, 55), rng.uniform(-80, 50), rng.uniform(-10, 60)]),
                      rng.uniform(1.0, 2.5)))
    slices: dict[int, str] = {}
    for kind, centre, radius in spots:
        lo = centre - radius - 2
        hi = centre + radius + 2
        inbox = np.all((mni >= lo[:, None, None, None]) & (mni <= hi[:, None, None, None]), axis=0)
        if not inbox.any():
            continue
        d = np.sqrt(np.sum((mni[:, inbox] - centre[:, None]) ** 2, axis=0))
        weight = np.clip((radius + 0.8 - d) / 1.6, 0, 1)  # a soft edge: partial volume
        brainy = np.isin(tissue[inbox], (LABELS["grey matter"], LABELS["white matter"], LABELS["csf"],
                                         LABELS["ventricle"], LABELS["dura"]))
        dense = rng.uniform(150.0, 600.0)
        values = hu[inbox]
        hu[inbox] = np.where(brainy, values + weight * (dense - values), values)
        for k in np.unique(np.nonzero(inbox)[0][weight > 0.3]):
            slices.setdefault(int(k), "calcification")
    return slices


def _add_fracture(hu, tissue, mni, lesions, rng) -> np.ndarray:
    """A linear skull fracture (a 1-2 mm lucent line through the bone), usually over an
    epidural. Returns the per-slice flag."""
    epidural = [les for les in lesions if les.subtype == "Epidural" and les.params.get("kind") == "convexity"]
    flags = np.zeros(hu.shape[0], bool)
    if not ((epidural and rng.random() < 0.6) or (not epidural and rng.random() < 0.05)):
        return flags
    if epidural:
        centre, normal = epidural[0].params["centre"], epidural[0].params["normal"]
    else:
        normal = _unit(rng.normal(0, 1, 3) * [1, 1, 0.3] + [0, 0, 0.4])
        centre = _inner_table_point(normal, BRAIN_CENTRE_MM.astype(float))
    along = _unit(np.cross(normal, rng.normal(0, 1, 3)))
    plane = _unit(np.cross(normal, along))  # the fracture plane contains the normal and `along`
    rel = mni - centre[:, None, None, None]
    dist_plane = np.abs(np.tensordot(plane, rel, axes=1))
    dist_along = np.abs(np.tensordot(along, rel, axes=1))
    bone = np.isin(tissue, (LABELS["cortical bone"], LABELS["diploe"]))
    line = bone & (dist_plane < 0.9) & (dist_along < rng.uniform(15, 35)) & (np.tensordot(normal, rel, axes=1) > -3)
    hu[line] = TISSUE_HU["soft tissue"][0]
    flags[:] = line.any(axis=(1, 2))
    return flags


def _add_headrest(hu, grid, pose, rng) -> None:
    """The scanner's head holder under the occiput: a curved carbon-fibre shell (~150 HU) with
    foam padding (~ -850 HU) between it and the scalp, drawn in scanner coordinates."""
    back = float(pose.to_scanner(np.array([[0.0], [-118.0], [10.0]]))[1, 0])  # the occipital scalp
    radius = rng.uniform(95.0, 115.0)
    pad = rng.uniform(4.0, 9.0)
    centre_y = back - pad + radius
    x, y = grid[0, 0], grid[1, 0]
    r = np.sqrt(x**2 + (y - centre_y) ** 2)
    lower = y < centre_y - 0.35 * radius
    shell = lower & (r >= radius + pad) & (r < radius + pad + rng.uniform(3.0, 6.0))
    foam = lower & (r >= radius) & (r < radius + pad)
    air = hu <= -900.0
    hu[:, shell] = np.where(air[:, shell], rng.uniform(120.0, 220.0), hu[:, shell])
    hu[:, foam] = np.where(air[:, foam], -850.0, hu[:, foam])


def _beam_hardening(hu, tissue, spacing, rng) -> None:
    """Hounsfield bar: a dark band across the posterior fossa between dense petrous bones,
    proportional to how much dense bone the slice holds on both sides."""
    strength = rng.uniform(0.5, 1.5)
    n = hu.shape[1]
    for k in range(hu.shape[0]):
        dense = (tissue[k] == LABELS["petrous bone"]) & (hu[k] > 1000)
        left, right = dense[:, : n // 2], dense[:, n // 2:]
        area = min(left.sum(), right.sum()) * spacing**2
        if area < 20.0:
            continue
        (ly, lx), (ry, rx) = ndi.center_of_mass(left), ndi.center_of_mass(right)
        rx += n // 2
        yy, xx = np.mgrid[0:n, 0:n]
        direction = np.array([ry - ly, rx - lx])
        direction /= np.linalg.norm(direction) + 1e-6
        dist = np.abs((yy - ly) * direction[1] - (xx - lx) * direction[0]) * spacing
        between = (xx >= min(lx, rx)) & (xx <= max(lx, rx))
        band = np.exp(-((dist / 5.0) ** 2)) * between
        brain = np.isin(tissue[k], (LABELS["grey matter"], LABELS["white matter"], LABELS["csf"]))
        hu[k] -= (strength * min(area / 60.0, 1.0) * 28.0 * band * brain).astype(np.float32)


def _reconstruct(hu, spacing, thickness, noise_hu, kernel, rng) -> np.ndarray:
    """In-plane blur of the kernel (plus the pixel's own footprint) and correlated quantum
    noise; noise grows as the slice thins (SD ~ 1/sqrt(thickness))."""
    fwhm, noise_factor = KERNELS[kernel]
    sigma_px = np.sqrt((fwhm / 2.355) ** 2 + (0.3 * spacing) ** 2) / spacing
    hu = ndi.gaussian_filter(hu, sigma=(0, sigma_px, sigma_px))
    sd = noise_hu * noise_factor * np.sqrt(5.0 / thickness)
    noise = ndi.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), sigma=(0, 0.6, 0.6))
    noise *= sd / max(float(noise.std()), 1e-6)
    hu += noise
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
