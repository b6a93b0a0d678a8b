"""Is a new scan a head CT that a model trained on CT-ICH can read, and how much of the head does it cover?

A model answers for any array of numbers; these checks refuse, in one line naming the scan,
what is not a head CT (a vertebra, a phantom, a 1-pixel volume) before a model is asked, and
return the measurements they made so that ``ichseq predict`` can record them.

* :func:`check_head` - finite values; an in-plane field of view and matrix a head CT can
  have; and, on at least one slice, a skull: calcified tissue (> 130 HU) forming a closed ring
  (after bridging gaps up to about 1 cm) around a region of intracranial size whose content
  is mostly in the brain/CSF/blood range. One such slice suffices, so an open skull on other
  slices (craniectomy, skull base, the vertex) does not matter; everything inside a ring is
  measured together, so streaks, a calcified falx or a clot across the brain split nothing;
  each slice is judged as displayed, so gantry tilt (an oblique, longer cut through the same
  ring), the head's position in the image and a headrest under it do not matter either.
* :func:`scan_coverage` - slices, z extent and slice spacing.
* :func:`check_coverage` - refuses a scan with fewer slices or a shorter z extent than a
  trained model's minimum, or marks it partial when the user allows it.

The thresholds come from anatomy and CT physics, not from any one scan (see the constants);
areas and lengths are in mm from the pixel spacing, so the check reads a 32-pixel synthetic
slice and a 512-pixel clinical one alike. It works on a coarse grid (about 2 mm pixels, at
most ``MAX_SLICES_CHECKED`` slices) to stay fast on a 512 x 512 stack.

This is a plausibility check on HU geometry, not a body-part classifier: it refuses what
is clearly not a head CT and lets through anything with a skull-like ring around brain-like
tissue.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import DataError

# --------------------------------------------------------------------------- thresholds

# The matrix: below 32 x 32 a pixel of a head field of view is over 7 mm, wider than the skull
# (5-8 mm) and most bleeds; 32 is also the smallest size the synthetic twin makes ("so that
# lesions stay visible"). Clinical head CT is 512 x 512.
MIN_MATRIX_PX = 32

# The in-plane field of view. An adult head is about 140-160 mm broad and 180-200 mm long
# (anthropometric surveys, e.g. ANSUR II: head breadth ~150 mm, head length ~195 mm) and head
# CT is displayed at 180-250 mm; a body FOV is 350-500 mm, the largest most scanners
# reconstruct. Bounds well outside those: under 120 mm an adult head does not fit; over
# 500 mm the pixel spacing (or the affine) is wrong or this is not a standard reconstruction.
MIN_FOV_MM = 120.0
MAX_FOV_MM = 500.0

# Bone: calcified tissue above 130 HU, the threshold CT calcium scoring uses (Agatston 1990),
# above any soft tissue, CSF or fresh blood (<= 100 HU). Not the several hundred HU of solid
# skull (cortical bone 1000-2000 HU): where the skull is thinner than a pixel, the pixel is
# part bone, part brain or air (partial volume), and one an eighth filled by 1000 HU skull is
# ~150 HU. The working grid pools pixels by their mean, as a scanner with larger pixels would.
BONE_HU = 130.0

# Intracranial tissue: CSF 0-15 HU, white matter 20-30, grey matter 35-45, acute blood 50-90
# (published CT values), widened by about two noise standard deviations of head CT (5-10 HU).
BRAIN_HU = (-20.0, 100.0)
# "Mostly": on a slice through the brain nearly all of the skull's content is in that range
# (fat, air and bone are not); 70 % leaves room for noise, calcifications, air after surgery
# and pooled pixels at the inner table.
MIN_BRAIN_FRACTION = 0.7

# The area enclosed by the skull on its best slice. An adult's largest intracranial cross-
# section is ~150-200 cm^2 (inside the skull, about 130-150 x 165-185 mm: head breadth and
# length less twice scalp and skull), a newborn's ~70-80 cm^2 (head circumference ~35 cm).
# A vertebral canal is 2-3 cm^2 and a vertebral body 10-15 cm^2; ribs do not close a ring in
# an axial slice. 30 cm^2 (a 6 cm disc) is far above the spine and below any head; 400 cm^2
# is about twice the largest heads (macrocephaly, hydrocephalus included).
MIN_INTRACRANIAL_CM2 = 30.0
MAX_INTRACRANIAL_CM2 = 400.0

# Bone gaps bridged before a ring counts as closed: sutures, fracture lines, partial-volume
# holes in the thin temporal squama and burr holes (10-14 mm) - not a craniectomy (10-15 cm),
# whose slices simply do not count.
CLOSING_RADIUS_MM = 5.0

# Working grid: pixels pooled (mean) to about this size (512 px at 0.45 mm -> 4 x 4 blocks,
# 1.8 mm), ample for a 5 mm skull and a 30 cm^2 region, and 16 times less work.
WORKING_PIXEL_MM = 2.0
# Slices looked at: evenly spread over the scan; enough to find the skull of any head scan.
MAX_SLICES_CHECKED = 64

# Connectivity within a slice, never across slices (each slice is judged on its own).
_IN_PLANE_4 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_4[1] = ndimage.generate_binary_structure(2, 1)
_IN_PLANE_8 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8[1] = True


def _disk(radius_px: int) -> np.ndarray:
    """An in-plane disc (1, 2r+1, 2r+1): the pixels whose centre lies within ``radius_px`` + 1/2
    (at radius 1 the 3x3 square, which bridges a one-pixel gap in any direction)."""
    r = np.arange(-radius_px, radius_px + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2 <= (radius_px + 0.5) ** 2)[None]


def _non_finite(volume) -> None:
    hu = volume.hu
    if np.isfinite(hu).all():
        return
    nan, infinite = int(np.isnan(hu).sum()), int(np.isinf(hu).sum())
    raise DataError(
        f"{volume.source}: {nan} NaN and {infinite} infinite voxel(s); a head check needs finite HU "
        f"(read the scan with ichseq.data.volumes.read_volume, which fills NaN padding and refuses infinities)"
    )


def _field_of_view(volume) -> dict:
    hu = np.asarray(volume.hu)
    if hu.ndim != 3 or 0 in hu.shape:
        raise DataError(f"{volume.source}: not a stack of slices (shape {hu.shape}); not a head CT")
    rows, cols = hu.shape[1:]
    if volume.spacing_mm is None:
        raise DataError(
            f"{volume.source}: no usable PixelSpacing (0028,0030), so its field of view is unknown and it cannot "
            f"be checked as a head CT; re-export the series with its geometry tags"
        )
    row_mm, col_mm = (float(v) for v in volume.spacing_mm)
    fov = (rows * row_mm, cols * col_mm)
    measured = {"matrix": [rows, cols], "pixel_spacing_mm": [round(row_mm, 4), round(col_mm, 4)],
                "fov_mm": [round(fov[0], 1), round(fov[1], 1)]}  # fmt: skip
    if min(rows, cols) < MIN_MATRIX_PX:
        raise DataError(
            f"{volume.source}: slices of {rows}x{cols} pixels, fewer than the {MIN_MATRIX_PX}x{MIN_MATRIX_PX} a skull "
            f"and brain need (head CT is usually 512x512): not a head CT image"
        )
    if not (np.isfinite(fov).all() and MIN_FOV_MM <= min(fov) and max(fov) <= MAX_FOV_MM):
        raise DataError(
            f"{volume.source}: field of view {fov[0]:.0f} x {fov[1]:.0f} mm ({rows}x{cols} pixels of "
            f"{row_mm:g} x {col_mm:g} mm), outside the {MIN_FOV_MM:.0f}-{MAX_FOV_MM:.0f} mm a head CT can have "
            f"(an adult head is about 150 x 190 mm, shown at 180-250 mm): not a head CT, or its pixel spacing is wrong"
        )
    return measured


def _slices_to_check(n: int) -> np.ndarray:
    if n <= MAX_SLICES_CHECKED:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_SLICES_CHECKED).round().astype(int))


def _pooled(hu: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    """The mean of ``hu`` (S, R, C) over blocks of ``factors`` pixels (edges cropped): the
    image a scanner with pixels that size would make (partial volume)."""
    fr, fc = factors
    if fr == fc == 1:
        return hu
    s, r, c = hu.shape
    blocks = hu[:, : r - r % fr, : c - c % fc].reshape(s, r // fr, fr, c // fc, fc)
    return blocks.mean(axis=(2, 4), dtype=np.float32)


def _intracranial_regions(volume, chosen: np.ndarray) -> dict:
    """On the ``chosen`` slices, every closed bone ring and what it encloses: its slice, the
    enclosed area (cm^2) and the fraction of that area in the brain range."""
    row_mm, col_mm = (float(v) for v in volume.spacing_mm)
    factors = (max(1, int(WORKING_PIXEL_MM // row_mm)), max(1, int(WORKING_PIXEL_MM // col_mm)))
    mean = _pooled(np.asarray(volume.hu)[chosen], factors)
    cell_mm = (row_mm * factors[0], col_mm * factors[1])
    bone = mean > BONE_HU
    radius = max(1, int(round(CLOSING_RADIUS_MM / min(cell_mm))))
    closed = ndimage.binary_closing(bone, structure=_disk(radius)) | bone
    # Enclosed: not bone, and not connected (within its slice) to the slice's edge.
    # 4-connectivity, so that a ring of diagonally touching bone pixels still closes.
    outside, _ = ndimage.label(~closed, structure=_IN_PLANE_4)
    edge = np.unique(np.concatenate([outside[:, 0, :].ravel(), outside[:, -1, :].ravel(),
                                     outside[:, :, 0].ravel(), outside[:, :, -1].ravel()]))  # fmt: skip
    enclosed = (outside > 0) & ~np.isin(outside, edge[edge > 0])
    # A ring with everything inside it is one piece, so a bright streak, a calcified falx or
    # a dense clot across the brain splits nothing: the skull's whole content is measured.
    pieces, n = ndimage.label(closed | enclosed, structure=_IN_PLANE_8)
    inside = pieces[enclosed]
    brain = (mean[enclosed] >= BRAIN_HU[0]) & (mean[enclosed] <= BRAIN_HU[1])
    area_px = np.bincount(inside, minlength=n + 1)
    brain_px = np.bincount(inside, weights=brain, minlength=n + 1)
    slice_of = np.zeros(n + 1, dtype=np.int64)
    slice_of[pieces.ravel()] = np.repeat(np.arange(len(chosen)), pieces[0].size)
    rings = np.flatnonzero(area_px[1:]) + 1  # pieces that enclose something
    return {
        "slice": chosen[slice_of[rings]],
        "area_cm2": area_px[rings] * cell_mm[0] * cell_mm[1] / 100.0,
        "brain_fraction": brain_px[rings] / area_px[rings],
        "bone_slices": int(bone.any(axis=(1, 2)).sum()),
    }


def check_head(volume) -> dict:
    """Refuse (:class:`DataError`, one line naming ``volume.source``) a scan that is not a head
    CT a model can read; otherwise return what was measured:

    ``matrix``, ``pixel_spacing_mm`` and ``fov_mm`` ([rows, cols] each), ``slices_checked``,
    ``slices_with_skull`` (checked slices with a skull around brain tissue), ``best_slice``
    (the slice number, as in ``volume.slice_numbers``, with the largest such region),
    ``best_slice_position_mm``, ``intracranial_area_cm2`` (what the skull encloses there) and
    ``brain_tissue_fraction`` (of that area, at -20..100 HU).
    """
    _non_finite(volume)
    measured = _field_of_view(volume)
    chosen = _slices_to_check(len(volume.hu))
    regions = _intracranial_regions(volume, chosen)
    area, fraction = regions["area_cm2"], regions["brain_fraction"]
    brainlike = fraction >= MIN_BRAIN_FRACTION
    skull = brainlike & (area >= MIN_INTRACRANIAL_CM2) & (area <= MAX_INTRACRANIAL_CM2)
    measured["slices_checked"] = int(len(chosen))
    measured["slices_with_skull"] = int(len(np.unique(regions["slice"][skull])))
    if not skull.any():
        checked = f"{len(chosen)} slice(s) checked"
        if regions["bone_slices"] == 0:
            why = f"no skull: no bone (> {BONE_HU:g} HU) on any of its {checked}"
        elif len(area) == 0:
            why = f"no skull: bone on {regions['bone_slices']} of its {checked} but never in a closed ring"
        else:
            # Name the candidate nearest to a head: the largest brain-like one, else the largest.
            i = int(np.argmax(np.where(brainlike, area, -1.0))) if brainlike.any() else int(np.argmax(area))
            why = (
                f"no skull around brain on any of its {checked}: the largest region enclosed by bone is "
                f"{area[i]:.1f} cm^2, {100 * fraction[i]:.0f}% at {BRAIN_HU[0]:g}..{BRAIN_HU[1]:g} HU, where a head's "
                f"is {MIN_INTRACRANIAL_CM2:g}-{MAX_INTRACRANIAL_CM2:g} cm^2 and at least "
                f"{100 * MIN_BRAIN_FRACTION:.0f}% brain, CSF or blood"
            )
        raise DataError(f"{volume.source}: {why}; not a head CT that a head CT model can read")
    best = int(np.argmax(np.where(skull, area, -1.0)))
    k = int(regions["slice"][best])
    measured.update({
        "best_slice": int(volume.slice_numbers[k]),
        "best_slice_position_mm": round(float(volume.positions[k]), 3),
        "intracranial_area_cm2": round(float(area[best]), 1),
        "brain_tissue_fraction": round(float(fraction[best]), 3),
    })  # fmt: skip
    return measured


# --------------------------------------------------------------------------- coverage


def scan_coverage(volume) -> dict:
    """How much of the head the scan covers: ``slices``, ``slice_spacing_mm`` (the median gap
    between slice positions; None for one slice) and ``z_extent_mm`` (the positions' span plus
    one slice spacing, each slice standing for the slab around it). A one-slice scan's extent
    is its DICOM SliceThickness when known, else 0 with a ``note`` saying so."""
    positions = np.asarray(volume.positions, dtype=np.float64)
    coverage: dict = {"slices": int(len(positions))}
    if len(positions) >= 2:
        spacing = float(np.median(np.diff(np.sort(positions))))
        coverage["slice_spacing_mm"] = round(spacing, 3)
        coverage["z_extent_mm"] = round(float(positions.max() - positions.min()) + spacing, 3)
        return coverage
    coverage["slice_spacing_mm"] = None
    thickness = volume.slice_thickness_mm
    if thickness:
        coverage["z_extent_mm"] = round(float(thickness), 3)
    else:
        coverage["z_extent_mm"] = 0.0
        coverage["note"] = "one slice of unknown thickness: its z extent is taken as 0 mm"
    return coverage


def check_coverage(volume, min_slices: int, min_extent_mm: float, allow_partial: bool) -> dict:
    """:func:`scan_coverage` against a trained model's minimum (``min_slices`` slices and
    ``min_extent_mm`` mm along the head, from its saved settings).

    A scan short of either is refused (:class:`DataError`, one line naming ``volume.source``,
    its counts, the minimum and ``--allow-partial``), unless ``allow_partial``: then it is
    returned marked ``"partial": True`` with the ``shortfall`` in words. The returned dict is
    the coverage plus ``min_slices``, ``min_extent_mm`` and ``partial``.
    """
    if int(min_slices) < 1 or not (np.isfinite(min_extent_mm) and min_extent_mm >= 0):
        raise ValueError(f"min_slices must be >= 1 and min_extent_mm >= 0, got {min_slices} and {min_extent_mm}")
    coverage = scan_coverage(volume)
    short = []
    if coverage["slices"] < min_slices:
        short.append(f"{coverage['slices']} slice(s) where the model needs at least {int(min_slices)}")
    if coverage["z_extent_mm"] < min_extent_mm:
        note = f" ({coverage['note']})" if "note" in coverage else ""
        short.append(f"{coverage['z_extent_mm']:g} mm along the head{note} where the model needs at least {min_extent_mm:g} mm")
    result = {**coverage, "min_slices": int(min_slices), "min_extent_mm": float(min_extent_mm), "partial": bool(short)}
    if not short:
        return result
    shortfall = " and ".join(short)
    if not allow_partial:
        raise DataError(
            f"{volume.source}: {shortfall}: too little of the head for a patient-level answer; "
            f"pass --allow-partial to score it anyway, marked partial"
        )
    result["shortfall"] = shortfall
    return result
