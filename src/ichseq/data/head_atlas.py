"""A whole-head CT atlas in MNI space, built from the ICBM 2009 template that nilearn ships.

The anatomical twin (:mod:`ichseq.data.twin`) does not draw a head: it deforms this atlas per
patient and samples it on the patient's scanner grid. The brain comes from real data, the
ICBM 2009a symmetric non-linear template and its grey- and white-matter probability maps
(1 mm; Fonov et al. 2009/2011; bundled in nilearn's wheel, read from the installed package
without importing nilearn). Everything around the brain is built from it:

* the intracranial space: the brain mask closed over its sulci, fissures and the tentorial
  notch, plus a thin subarachnoid layer; what is not brain in it is CSF;
* dura: the falx in the interhemispheric fissure and the tentorium between cerebrum and
  cerebellum, with the superior sagittal and transverse sinuses (venous blood);
* the skull: a shell outside the intracranial space whose thickness varies by region (thin
  temporal squama, thick frontal and occipital bone), cortical inner and outer tables around
  cancellous diploe;
* the skull base on the lowest slices: petrous bones, clivus, sphenoid, the orbits (fat,
  globes, optic nerves), ethmoid, sphenoid and frontal sinuses and mastoid cells (air in bone),
  the external ear canals, and the face and neck soft tissue below;
* scalp (skin, subcutaneous fat) and the temporalis muscles.

Hounsfield values are the published ones for each tissue (:data:`TISSUE_HU`). Positions of the
skull-base structures are MNI coordinates of the anatomy (ICBM 2009 brain surface measured
here: orbital gyri at z = -22 to -32, temporal poles at -50, cerebellum at -64).

Age-related atrophy is built in four levels: the brain is eroded from its surface, sulcal
grey matter gives way to CSF and the ventricles widen, inside a skull that does not change.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy
from scipy import ndimage as ndi

from ..errors import DataError

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}

# Hounsfield units by tissue: published values for non-contrast head CT (e.g. Hounsfield 1980;
# Kalender, "Computed Tomography" 3rd ed.; Osborn's Brain 2nd ed.). `published` is the range
# the table of docs/data.md compares the twin's measured values with.
TISSUE_HU = {
    "air": (-1000.0, (-1010, -990)),  # -1000 by definition; the range allows the noise
    "fat": (-95.0, (-120, -80)),
    "csf": (7.0, (0, 15)),
    "white matter": (26.0, (20, 30)),
    "grey matter": (42.0, (35, 45)),
    "dura": (52.0, (45, 60)),
    "venous blood": (50.0, (40, 60)),
    "soft tissue": (45.0, (30, 60)),
    "muscle": (50.0, (40, 60)),
    "eye": (10.0, (0, 20)),
    "diploe": (550.0, (300, 800)),
    "cortical bone": (1600.0, (1000, 2000)),
    "petrous bone": (2000.0, (1500, 2500)),
}

# Label values of the atlas and of the twin's tissue map (`label` below).
LABELS = {
    "air": 0, "fat": 1, "soft tissue": 2, "muscle": 3, "cortical bone": 4, "diploe": 5,
    "petrous bone": 6, "sinus air": 7, "eye": 8, "csf": 9, "ventricle": 10,
    "grey matter": 11, "white matter": 12, "dura": 13, "venous blood": 14,
}
BRAIN_LABELS = (LABELS["grey matter"], LABELS["white matter"])
INTRACRANIAL_LABELS = (LABELS["csf"], LABELS["ventricle"], LABELS["grey matter"], LABELS["white matter"],
                       LABELS["dura"], LABELS["venous blood"])
ATROPHY_LEVELS = 4  # 0 none, 1 mild, 2 moderate, 3 marked

# The atlas grid, 1 mm, in MNI mm: wide enough for scalp, temporalis, face and the skull base.
GRID_ORIGIN_MM = np.array([-106.0, -140.0, -92.0])
GRID_SHAPE = (213, 262, 213)  # x -106..106, y -140..121, z -92..120 (the template reaches z = 116)
TEMPLATE_ORIGIN_MM = np.array([-98.0, -134.0, -72.0])  # the template's own affine (1 mm, axis-aligned)

BRAIN_CENTRE_MM = np.array([0.0, -18.0, 12.0])

# The template's licence asks for this notice in all copies; the twin's datasets are derived
# from it and carry it (TEMPLATE_NOTICE.txt).
TEMPLATE_NOTICE = """\
The brain anatomy of these synthetic scans is derived from the ICBM 2009a symmetric non-linear
template and its grey/white-matter probability maps (Fonov et al., NeuroImage 2009 and 2011),
as bundled with nilearn:

Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University. Permission to use, copy, modify, and distribute this software
and its documentation for any purpose and without fee is hereby granted, provided that the
above copyright notice appear in all copies. The authors and McGill University make no
representations about the suitability of this software for any purpose. It is provided
"as is" without express or implied warranty.
"""


def template_dir() -> Path:
    """nilearn's bundled data folder, found without importing nilearn (which is slow to import)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the anatomical synthetic twin needs nilearn's bundled ICBM 2009 template: "
                        "pip install nilearn==0.13.1 (requirements.txt), or set dataset.synthetic.generator: cartoon")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    missing = [name for name in TEMPLATE_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder / missing[0]}: not found in the installed nilearn; reinstall nilearn==0.13.1")
    return folder


@dataclass(frozen=True)
class HeadAtlas:
    """One atrophy level of the head, on the 1 mm MNI grid (x, y, z)."""

    hu: np.ndarray  # float32 Hounsfield units
    label: np.ndarray  # uint8, LABELS
    csf: np.ndarray  # uint8, CSF fraction x 255 inside the intracranial space (where SAH can lie)
    inner_depth: np.ndarray  # float32, mm below the inner table inside the intracranial space, 0 outside (shared by the levels)
    tentorium_z: np.ndarray  # (x, y) float32 MNI z of the tentorium over each column, NaN where there is none
    atrophy: int

    @property
    def origin_mm(self) -> np.ndarray:
        return GRID_ORIGIN_MM

    def to_index(self, mni_mm: np.ndarray) -> np.ndarray:
        """MNI mm (3, ...) -> fractional grid indices (3, ...)."""
        return mni_mm - GRID_ORIGIN_MM.reshape((3,) + (1,) * (mni_mm.ndim - 1))


def _grid_coords() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axes = [np.arange(n, dtype=np.float32) + np.float32(o) for n, o in zip(GRID_SHAPE, GRID_ORIGIN_MM)]
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def _ellipsoid(x, y, z, centre, semi, yaw_deg: float = 0.0) -> np.ndarray:
    """Normalised radius (< 1 inside) of an ellipsoid turned by ``yaw_deg`` about the z axis."""
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    if yaw_deg:
        c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    return np.sqrt((dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2)


def _smooth_noise(shape, sigma: float, seed: int, where: np.ndarray | None = None) -> np.ndarray:
    """Zero-mean, unit-SD smooth random field (fixed seed: the atlas is the same everywhere).
    Wide fields are made on a coarse grid and interpolated up: the same field, much faster;
    with ``where``, only those voxels are filled (0 elsewhere)."""
    factor = max(1, int(sigma // 2))
    coarse = tuple(-(-n // factor) + 1 for n in shape) if factor > 1 else tuple(shape)
    field = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal(coarse).astype(np.float32), sigma / factor)
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    if factor == 1:
        return field if where is None else np.where(where, field, 0).astype(np.float32)
    if where is None:
        return ndi.zoom(field, factor, order=1)[tuple(slice(0, n) for n in shape)]
    out = np.zeros(shape, np.float32)
    points = np.nonzero(where)
    out[points] = ndi.map_coordinates(field, np.stack(points).astype(np.float32) / factor, order=1, mode="nearest")
    return out


def falx_edge(y):
    """MNI z of the falx's free edge at MNI y: above the corpus callosum, lower in front (to the
    crista galli) and behind (down to the tentorium, never into the cerebellar vermis)."""
    return np.where(y > 30, 32.0 - 1.2 * (y - 30), np.where(y < -40, np.maximum(32.0 + 1.6 * (y + 40), -4.0), 32.0))


def _crop_around(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Index slices of ``mask``'s bounding box grown by ``margin`` voxels."""
    slices = ndi.find_objects(mask.astype(np.uint8))[0]
    return tuple(slice(max(sl.start - margin, 0), min(sl.stop + margin, n)) for sl, n in zip(slices, mask.shape))


@functools.lru_cache(maxsize=1)
def _brain_surface_depth() -> np.ndarray:
    """mm from each brain voxel to the brain's surface (0 outside): shared by every atrophy level."""
    brain = _template()[0]
    crop = _crop_around(brain, 2)
    depth = np.zeros(GRID_SHAPE, np.float32)
    depth[crop] = ndi.distance_transform_edt(brain[crop])
    return depth


@functools.lru_cache(maxsize=1)
def _template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brain mask and GM/WM probabilities on the atlas grid."""
    folder = template_dir()
    arrays = {}
    for key, name in TEMPLATE_FILES.items():
        img = nib.load(folder / name)
        if not np.allclose(np.diag(img.affine)[:3], 1.0) or not np.allclose(img.affine[:3, 3], TEMPLATE_ORIGIN_MM):
            raise DataError(f"{folder / name}: not the 1 mm ICBM 2009 grid this twin is built on")
        arrays[key] = np.asarray(img.dataobj)
    offset = (TEMPLATE_ORIGIN_MM - GRID_ORIGIN_MM).astype(int)
    sl = tuple(slice(o, o + n) for o, n in zip(offset, arrays["t1"].shape))
    brain = np.zeros(GRID_SHAPE, bool)
    grey = np.zeros(GRID_SHAPE, np.float32)
    white = np.zeros(GRID_SHAPE, np.float32)
    brain[sl] = arrays["t1"] > 0
    grey[sl] = arrays["gm"] / np.float32(255)
    white[sl] = arrays["wm"] / np.float32(255)
    total = grey + white
    over = total > 1
    grey[over] /= total[over]
    white[over] /= total[over]
    grey[~brain] = 0
    white[~brain] = 0
    return brain, grey, white


@functools.lru_cache(maxsize=1)
def _skull_and_face() -> dict:
    """Everything that does not change with age: the intracranial space, dura, skull, skull base,
    face and scalp. Returns HU and label volumes plus the maps the brain levels need."""
    brain, grey, white = _template()
    x, y, z = _grid_coords()
    outside_dist, intracranial, inner_depth, skull_dist = _intracranial_space(brain)
    # Where skull and scalp can be (their smooth random variations are only computed there).
    shell = (skull_dist > 0) & (skull_dist <= 30.0)
    ux, thickness = _skull_thickness(x, y, z, shell)
    calvarium = _calvarium_and_scalp(x, y, z, skull_dist, shell, ux, thickness)
    base_tissue = _face_and_neck(x, y, z, intracranial, calvarium["bone"])

    hu = np.full(GRID_SHAPE, TISSUE_HU["air"][0], np.float32)
    label = np.zeros(GRID_SHAPE, np.uint8)
    hu[base_tissue] = TISSUE_HU["muscle"][0]
    label[base_tissue] = LABELS["muscle"]
    for name, tissue in (("scalp", "soft tissue"), ("muscle", "muscle"), ("fat_layer", "fat")):
        hu[calvarium[name]] = TISSUE_HU[tissue][0]
        label[calvarium[name]] = LABELS[tissue]
    for name, tissue, values in (("bone", "cortical bone", calvarium["cortical_hu"]),
                                 ("diploe", "diploe", calvarium["diploe_hu"])):
        hu[calvarium[name]] = values[calvarium[name]]
        label[calvarium[name]] = LABELS[tissue]

    # Skull-base structures may fill the closed-over notches of the intracranial space (the
    # petrous ridge lies between temporal lobe and cerebellum) but never the brain or the 1 mm
    # of CSF around it.
    painter = _SkullBasePainter(hu, label, (x, y, z), keep_clear=outside_dist <= 1.0)
    for side in (-1, 1):
        _paint_lateral_skull_base(painter, side, calvarium["trabecular"], calvarium["cortical_hu"])
    _paint_midline_skull_base(painter, calvarium["trabecular"], calvarium["cortical_hu"])
    intracranial = intracranial & ~painter.painted
    return {
        "hu": hu, "label": label, "intracranial": intracranial, "inner_depth": inner_depth,
        "outside_dist": outside_dist, **_dura_and_sinuses(brain, intracranial, inner_depth, x, y, z),
    }


def _intracranial_space(brain: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(mm outside the brain, intracranial space, mm below the inner table, mm outside the
    intracranial space)`` on the grid."""
    # Intracranial space: close the brain over sulci, fissures and the tentorial notch (8 mm),
    # then add a subarachnoid/dural layer of 1.5 mm. Distances near the brain are computed in
    # its bounding box (12 mm margin): half the grid, the atlas's slowest step.
    crop = _crop_around(brain, 12)
    outside_dist = np.full(GRID_SHAPE, 99.0, np.float32)
    outside_dist[crop] = ndi.distance_transform_edt(~brain[crop])
    dilated = outside_dist <= 8.0
    inside_dilated = np.zeros(GRID_SHAPE, np.float32)
    inside_dilated[crop] = ndi.distance_transform_edt(dilated[crop])
    intracranial = (inside_dilated > 8.0 - 1.5) | brain
    inner_depth = np.zeros(GRID_SHAPE, np.float32)
    inner_depth[crop] = ndi.distance_transform_edt(intracranial[crop])
    skull_dist = ndi.distance_transform_edt(~intracranial).astype(np.float32)
    return outside_dist, intracranial, inner_depth, skull_dist


def _skull_thickness(x, y, z, shell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(left-right component of the direction from the brain's centre, skull thickness in mm)``:
    the thickness is regional, 3-10 mm, varied smoothly over the ``shell``."""
    # Direction from the brain's centre: regional skull thickness (mm), 3-10 mm.
    dx, dy, dz = x - BRAIN_CENTRE_MM[0], y - BRAIN_CENTRE_MM[1], z - BRAIN_CENTRE_MM[2]
    r = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-3
    ux, uy, uz = dx / r, dy / r, dz / r
    # Published adult means: frontal ~6-7 mm, parietal ~5-6, occipital ~7-8 (thickest at the
    # inion), temporal squama ~3 (Lynnerup 2005; Moreira-Gonzalez 2006).
    thickness = (5.2
                 + 1.5 * np.clip(uy, 0, None)  # frontal bone
                 + 3.0 * np.clip(-uy - 0.45, 0, None) / 0.55 * np.exp(-((z + 2.0) / 22.0) ** 2)  # occipital, inion
                 - 2.6 * np.clip(np.abs(ux) - 0.6, 0, None) / 0.4 * (z < 35)  # temporal squama
                 + 0.8 * np.clip(uz, 0, None))
    thickness = thickness + 0.7 * _smooth_noise(GRID_SHAPE, 12.0, 2024, where=shell)
    return ux, np.clip(thickness, 3.0, 10.0).astype(np.float32)


def _calvarium_and_scalp(x, y, z, skull_dist, shell, ux, thickness) -> dict[str, np.ndarray]:
    """The skull vault and what covers it: masks ``bone``, ``diploe`` (between the two cortical
    tables), ``scalp``, ``muscle`` (temporalis) and ``fat_layer``; the ``trabecular`` texture and
    the ``cortical_hu`` and ``diploe_hu`` it gives."""
    bone = (skull_dist > 0) & (skull_dist <= thickness)
    table = 1.6  # each cortical table, mm
    diploe = bone & (skull_dist > table) & (skull_dist < thickness - table) & (thickness > 2 * table + 0.8)
    trabecular = _smooth_noise(GRID_SHAPE, 1.2, 77)
    cortical_hu = TISSUE_HU["cortical bone"][0] + 120.0 * trabecular
    diploe_hu = TISSUE_HU["diploe"][0] + 160.0 * trabecular

    # Scalp: 5-7 mm of skin and subcutaneous fat over the calvarium; the temporalis muscle
    # laterally above the zygoma.
    scalp_thick = (5.5 + 1.0 * _smooth_noise(GRID_SHAPE, 15.0, 11, where=shell)).clip(4.0, 8.0)
    temporalis = np.clip(np.abs(ux) - 0.55, 0, None) / 0.45 * np.exp(-((y + 12.0) / 30.0) ** 2)
    temporalis_thick = 7.0 * temporalis * np.exp(-((z - 5.0) / 28.0) ** 2)
    beyond = skull_dist - thickness
    scalp = (beyond > 0) & (beyond <= scalp_thick + temporalis_thick)
    muscle = scalp & (beyond <= temporalis_thick)
    fat_layer = scalp & ~muscle & (beyond - temporalis_thick > 0.35 * scalp_thick) & \
        (beyond - temporalis_thick < 0.75 * scalp_thick)
    return {"bone": bone, "diploe": diploe, "trabecular": trabecular, "cortical_hu": cortical_hu,
            "diploe_hu": diploe_hu, "scalp": scalp, "muscle": muscle, "fat_layer": fat_layer}


def _face_and_neck(x, y, z, intracranial: np.ndarray, bone: np.ndarray) -> np.ndarray:
    """Below the cranial floor: the face and the neck, solid soft tissue (fat in the orbits etc.
    is carved out by the skull base painted over it)."""
    # The floor is the lowest intracranial voxel of each column.
    column_has = intracranial.any(axis=2)
    floor_z = np.where(column_has, np.argmax(intracranial, axis=2) + GRID_ORIGIN_MM[2], 0.0).astype(np.float32)
    # Around the floor's outline the soft tissue tapers up and outwards (no vertical walls).
    outline_dist, nearest = ndi.distance_transform_edt(~column_has, return_indices=True)
    floor_z = floor_z[nearest[0], nearest[1]] - 1.5 * outline_dist
    footprint = outline_dist <= 10.0
    face = (np.abs(x) < 48) & (y > 20) & (y < 92) & (z > -92) & (z < -20) & \
        (_ellipsoid(x, y, z, (0, 40, -62), (50, 56, 52)) < 1)
    nose = (_ellipsoid(x, y, z, (0, 88, -55), (11, 22, 20)) < 1)
    below_floor = footprint[:, :, None] & (z < floor_z[:, :, None] - 3.0)
    return (below_floor | face | nose) & ~intracranial & ~bone


class _SkullBasePainter:
    """Paints skull-base structures into the atlas's ``hu`` and ``label`` volumes, each evaluated
    only in its own box of the grid, never over ``keep_clear``; ``painted`` marks what was."""

    def __init__(self, hu: np.ndarray, label: np.ndarray, coords, keep_clear: np.ndarray):
        self.hu, self.label, self.keep_clear = hu, label, keep_clear
        self.x, self.y, self.z = coords
        self.painted = np.zeros(GRID_SHAPE, bool)

    def box(self, lo, hi):
        """Index slices of the MNI box lo..hi (mm) and its local sparse coordinates: each
        structure is evaluated only where it can be."""
        first = np.clip(np.floor(np.array(lo) - GRID_ORIGIN_MM).astype(int), 0, None)
        last = np.minimum(np.ceil(np.array(hi) - GRID_ORIGIN_MM).astype(int) + 1, GRID_SHAPE)
        sl = tuple(slice(a, b) for a, b in zip(first, last))
        return sl, (self.x[sl[0], :, :], self.y[:, sl[1], :], self.z[:, :, sl[2]])

    def paint(self, sl, region, name, hu_value, label_name=None):
        region = region & ~self.keep_clear[sl]
        self.hu[sl][region] = hu_value[sl][region] if isinstance(hu_value, np.ndarray) else hu_value
        self.label[sl][region] = LABELS[label_name or name]
        self.painted[sl][region] = True

    def ellipsoid(self, centre, semi, yaw_deg=0.0):
        reach = max(semi)
        sl, (bx, by, bz) = self.box(np.subtract(centre, reach), np.add(centre, reach))
        return sl, _ellipsoid(bx, by, bz, centre, semi, yaw_deg) < 1


def _paint_lateral_skull_base(painter: _SkullBasePainter, side: int, trabecular, cortical_hu) -> None:
    """One side's (``side`` -1 or 1) petrous bone, mastoid and ear canal, orbit, maxillary sinus,
    zygomatic arch and mandible."""
    paint, ellipsoid, box = painter.paint, painter.ellipsoid, painter.box
    air = TISSUE_HU["air"][0]
    # Petrous bones: dense ridges from the mastoid region to the apex beside the clivus.
    paint(*ellipsoid((side * 35, -26, -40), (24, 8, 9), side * -40), "petrous bone",
          TISSUE_HU["petrous bone"][0] + 150.0 * trabecular)
    # Mastoid air cells: bone honeycombed with air, behind the ear canal.
    sl, mastoid = ellipsoid((side * 52, -36, -47), (10, 12, 13))
    paint(sl, mastoid, "cortical bone", cortical_hu * 0.8)
    paint(sl, mastoid & (trabecular[sl] > 0.1), "sinus air", air)
    sl, (bx, by, bz) = box((side * 55 - 25, -26, -49), (side * 55 + 25, -18, -41))
    paint(sl, (np.abs(bx) > 55) & (np.abs(bx) < 80) & (np.abs(by + 22) < 4) & (np.abs(bz + 45) < 4),
          "sinus air", air)  # external ear canal
    # Orbit: bony walls, fat, the globe and the optic nerve.
    paint(*ellipsoid((side * 31, 46, -38), (18, 25, 17)), "cortical bone", cortical_hu * 0.9)
    paint(*ellipsoid((side * 31, 48, -38), (16, 23, 15)), "fat", TISSUE_HU["fat"][0])
    paint(*ellipsoid((side * 32, 58, -38), (12, 12, 12)), "eye", TISSUE_HU["eye"][0])
    sl, (bx, by, bz) = box((side * 23 - 12, 25, -40), (side * 23 + 12, 48, -32))
    t = np.clip((by - 25.0) / 23.0, 0, 1)  # optic nerve from the apex to the globe
    paint(sl, np.sqrt((bx - side * (14 + 18 * t)) ** 2 + (bz + 36) ** 2) < 2.5, "soft tissue",
          TISSUE_HU["soft tissue"][0] - 10.0)
    # Maxillary sinus (lowest slices only): air in a thin bony wall.
    paint(*ellipsoid((side * 27, 48, -72), (15, 18, 17)), "cortical bone", cortical_hu * 0.7)
    paint(*ellipsoid((side * 27, 48, -72), (13, 16, 15)), "sinus air", air)
    # Zygomatic arch (lateral bar at the level of the ear canal), mandibular condyle and
    # ramus in front of the ear.
    sl, (bx, by, bz) = box((side * 64 - 4, -18, -50), (side * 64 + 4, 30, -42))
    paint(sl, (np.abs(bx - side * 64) < 2.5) & (np.abs(bz + 46) < 3.5), "cortical bone", cortical_hu * 0.9)
    paint(*ellipsoid((side * 50, -8, -70), (5, 8, 22)), "cortical bone", cortical_hu * 0.9)


def _paint_midline_skull_base(painter: _SkullBasePainter, trabecular, cortical_hu) -> None:
    """The clivus, the foramen magnum and upper cervical canal, the pharynx, and the sphenoid,
    ethmoid, nasal and frontal sinuses."""
    paint, ellipsoid, box = painter.paint, painter.ellipsoid, painter.box
    air = TISSUE_HU["air"][0]
    # Clivus: a bone slab from the dorsum sellae down to the foramen magnum, in front of the
    # brainstem, narrow at the top (the dorsum is a thin plate) and wider below.
    sl, (bx, by, bz) = box((-11, -34, -66), (11, -2, -34))
    slope = np.clip((bz + 34.0) / -32.0, 0, 1)
    paint(sl, (np.abs(bx) < 5 + 6 * slope) & (np.abs(by - (-10.0 - 18.0 * slope)) < 3 + 3 * slope), "cortical bone",
          cortical_hu * 0.8)
    # Foramen magnum and the upper cervical canal: the cord in CSF inside a bony ring (below the
    # medulla, where the template ends), and the airway of the naso- and oropharynx in front.
    sl, (bx, by, bz) = box((-20, -58, -92), (20, -14, -62))
    radius = np.sqrt(bx**2 + ((by + 36.0) / 1.15) ** 2)
    paint(sl, (radius < 19) & (radius >= 15), "cortical bone", cortical_hu * 0.8)
    paint(sl, radius < 15, "csf", TISSUE_HU["csf"][0])
    paint(sl, radius < 6, "white matter", TISSUE_HU["white matter"][0] + 8.0)
    paint(*ellipsoid((0, 18, -78), (12, 9, 16)), "sinus air", air)
    # Sphenoid body and sinus, ethmoid cells, nasal cavity, frontal sinus.
    paint(*ellipsoid((0, 12, -48), (16, 16, 13)), "cortical bone", cortical_hu * 0.8)
    paint(*ellipsoid((0, 13, -48), (13, 13, 10)), "sinus air", air)
    sl, _ = box((-11, 30, -52), (11, 66, -28))
    paint(sl, np.ones(trabecular[sl].shape, bool), "cortical bone", cortical_hu * 0.5)
    paint(sl, trabecular[sl] > -0.3, "sinus air", air)  # ethmoid cells
    sl, _ = box((-13, 35, -92), (13, 92, -52))
    paint(sl, trabecular[sl] > -0.6, "sinus air", air)  # nasal cavity around the turbinates
    paint(*ellipsoid((0, 80, 4), (15, 5, 12)), "sinus air", air)  # frontal sinus


def _dura_and_sinuses(brain, intracranial, inner_depth, x, y, z) -> dict[str, np.ndarray]:
    """Masks of the falx (``falx_zone``: where it may lie, ``falx``: the membrane), the
    ``tentorium`` and the venous ``sinus``es, inside the intracranial space."""
    # Dura: the falx in the interhemispheric fissure (down to its free edge above the corpus
    # callosum) and the tentorium in the gap between cerebrum and cerebellum.
    edge = falx_edge(y)
    falx_zone = intracranial & (np.abs(x) <= 2.2) & (z > edge)
    falx = intracranial & (np.abs(x) <= 0.8) & (z > edge)
    gap = intracranial & ~brain & (y < -35) & (z > -35) & (z < 15)
    near_above = np.zeros(GRID_SHAPE, bool)  # brain within 5 mm above / below
    near_below = np.zeros(GRID_SHAPE, bool)
    for step in range(1, 6):
        near_above[:, :, :-step] |= brain[:, :, step:]
        near_below[:, :, step:] |= brain[:, :, :-step]
    tentorium = gap & near_above & near_below
    # Venous sinuses: superior sagittal (a triangle under the vertex midline) and transverse
    # (along the occipital inner table at the tentorium's attachment).
    sss = intracranial & (inner_depth <= 7.0) & (np.abs(x) <= (7.0 - inner_depth) * 0.75) & (z > -5) & (y < 55)
    transverse = intracranial & (inner_depth <= 5.0) & (y < -55) & (np.abs(z + 8.0 + 0.15 * np.abs(x)) < 4.0) & \
        (np.abs(x) > 4)
    return {"falx_zone": falx_zone, "falx": falx, "tentorium": tentorium, "sinus": sss | transverse}


@functools.lru_cache(maxsize=ATROPHY_LEVELS)
def head_atlas(atrophy: int = 0) -> HeadAtlas:
    """The whole head at one atrophy level (0-3), read-only: memory-mapped from the on-disk
    cache (:func:`atlas_cache_dir`) when it holds this version of the atlas, else built (about
    15 s for the first level, 1-2 s for each other) and written there for the next process."""
    if not 0 <= atrophy < ATROPHY_LEVELS:
        raise ValueError(f"atrophy level must be 0..{ATROPHY_LEVELS - 1}")
    folder = atlas_cache_dir()
    if folder is not None:
        cached = _load_cached(folder, atrophy)
        if cached is not None:
            return cached
    atlas = _build_head_atlas(atrophy)
    for array in _atlas_arrays(atlas).values():
        array.setflags(write=False)  # built or mapped, the atlas is never written to
    if folder is not None:
        _store_cached(folder, atlas)
    return atlas


# --------------------------------------------------------------------------- on-disk cache

ATLAS_FIELDS = ("hu", "label", "csf", "inner_depth", "tentorium_z")


def _atlas_arrays(atlas: HeadAtlas) -> dict[str, np.ndarray]:
    return {name: getattr(atlas, name) for name in ATLAS_FIELDS}


def atlas_cache_dir() -> Path | None:
    """Where built atlases are kept, like Hugging Face's or nilearn's download caches:
    ``$ICHSEQ_CACHE_DIR/head-atlas/<version>``, else ``$XDG_CACHE_HOME/ichseq/...``, else
    ``~/.cache/ichseq/...``; ``ICHSEQ_CACHE_DIR=off`` builds in memory every time. The version
    is a digest of this module's source, the template files and numpy/scipy's versions, so a
    changed atlas never reads an old one (old versions can be deleted by hand, ~0.5 GB each)."""
    root = os.environ.get("ICHSEQ_CACHE_DIR")
    if root and root.strip().lower() == "off":
        return None
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = str(Path(xdg) / "ichseq") if xdg else str(Path.home() / ".cache" / "ichseq")
    return Path(root) / "head-atlas" / _atlas_version()


@functools.lru_cache(maxsize=1)
def _atlas_version() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    folder = template_dir()
    for name in sorted(TEMPLATE_FILES.values()):
        digest.update(f"{name}:{(folder / name).stat().st_size}".encode())
    digest.update(f"numpy {np.__version__} scipy {scipy.__version__}".encode())
    return digest.hexdigest()[:16]


def _load_cached(folder: Path, atrophy: int) -> HeadAtlas | None:
    """The cached level, memory-mapped (processes share its pages), or None when absent or
    unreadable (then it is built again)."""
    level = folder / f"level{atrophy}"
    try:
        # Plain read-only arrays over the mapping (a memmap's own indexing is slow).
        arrays = {name: np.asarray(np.load(level / f"{name}.npy", mmap_mode="r")) for name in ATLAS_FIELDS}
    except (OSError, ValueError):
        return None
    expected = {"tentorium_z": GRID_SHAPE[:2]}
    if any(array.shape != expected.get(name, GRID_SHAPE) for name, array in arrays.items()):
        return None
    return HeadAtlas(atrophy=atrophy, **arrays)


def _store_cached(folder: Path, atlas: HeadAtlas) -> None:
    """Write a level into a private folder, then rename it into place: a level folder is
    complete or absent, and processes building the same level at once do not clash. A cache
    that cannot be written is skipped with a warning (the atlas is still returned)."""
    level = folder / f"level{atlas.atrophy}"
    if level.is_dir():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".level{atlas.atrophy}-", dir=folder))
        for name, array in _atlas_arrays(atlas).items():
            np.save(staging / f"{name}.npy", array)
        try:
            staging.rename(level)
        except OSError:  # another process put the same level there first
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as err:
        warnings.warn(f"{folder}: cannot cache the head atlas there ({err.strerror or err}); "
                      "set ICHSEQ_CACHE_DIR to a writable folder, or to off", stacklevel=3)


def _build_head_atlas(atrophy: int) -> HeadAtlas:
    brain, grey, white = _template()
    base = _skull_and_face()
    intracranial = base["intracranial"]
    grey, white = grey.copy(), white.copy()
    a = atrophy / (ATROPHY_LEVELS - 1)

    # Ventricles: CSF-dominant brain voxels far from the brain surface.
    csf_in_brain = brain & (grey + white < 0.5)
    surface_depth = _brain_surface_depth()
    ventricles = csf_in_brain & (surface_depth > 9.0)
    ventricles = ndi.binary_opening(ventricles, iterations=1)
    if a > 0:
        # Widen the ventricles (up to 3.5 mm), erode the brain surface (up to 2 mm) and open the
        # sulci: grey matter next to sulcal CSF gives way to CSF.
        widened = np.zeros(GRID_SHAPE, bool)
        crop = _crop_around(ventricles, 6)
        widened[crop] = ndi.distance_transform_edt(~ventricles[crop]) <= 3.5 * a
        ventricles = widened & brain
        grey[ventricles] = 0
        white[ventricles] = 0
        eroded = brain & (surface_depth <= 2.0 * a)
        grey[eroded] = 0
        white[eroded] = 0
        sulcal = ndi.gaussian_filter((brain & (grey + white < 0.5)).astype(np.float32), 1.5)
        grey *= np.clip(1.0 - 1.2 * a * sulcal, 0, 1)
    csf = np.where(intracranial, np.clip(1.0 - grey - white, 0, 1), 0).astype(np.float32)

    hu = base["hu"].copy()
    label = base["label"].copy()
    brain_hu = (grey * TISSUE_HU["grey matter"][0] + white * TISSUE_HU["white matter"][0]
                + csf * TISSUE_HU["csf"][0])
    hu[intracranial] = brain_hu[intracranial]
    tissue = np.where(grey >= white, LABELS["grey matter"], LABELS["white matter"]).astype(np.uint8)
    tissue[csf >= np.maximum(grey, white)] = LABELS["csf"]
    label[intracranial] = tissue[intracranial]
    label[ventricles] = LABELS["ventricle"]
    # Dura and sinuses on top (the falx splits the hemispheres, with CSF either side).
    zone = base["falx_zone"]
    hu[zone] = TISSUE_HU["csf"][0]
    label[zone] = LABELS["csf"]
    csf[zone] = 1.0
    for region, name in ((base["falx"] | base["tentorium"], "dura"), (base["sinus"], "venous blood")):
        hu[region] = TISSUE_HU[name][0]
        label[region] = LABELS[name]
        csf[region] = 0.0
    return HeadAtlas(
        hu=hu,
        label=label,
        csf=np.rint(csf * 255).astype(np.uint8),
        inner_depth=base["inner_depth"],
        tentorium_z=_tentorium_height(base["tentorium"]),
        atrophy=atrophy,
    )


def _tentorium_height(tentorium: np.ndarray) -> np.ndarray:
    """Mean MNI z of the tentorium in each (x, y) column; NaN where the column has none."""
    count = tentorium.sum(axis=2)
    z = np.arange(GRID_SHAPE[2], dtype=np.float32) + np.float32(GRID_ORIGIN_MM[2])
    total = (tentorium * z[None, None, :]).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def slab_atlas(atrophy: int, thickness_mm: float) -> np.ndarray:
    """The atlas HU averaged over a slice's thickness along z (the slice-sensitivity profile,
    a box of the nominal thickness): sampling it at a slice's centre gives the partial volume
    of a thick slice in one look-up. Thin slices (< 1.5 mm) use the 1 mm atlas as it is."""
    hu = head_atlas(atrophy).hu
    width = int(round(thickness_mm))
    if width < 2:
        return hu
    return ndi.uniform_filter1d(hu, size=width, axis=2, mode="nearest")
