"""Reformatting a new scan to the geometry a model was trained on (``ichseq predict``).

A model trained on 5 mm slices at a 230 mm field of view has learnt what a bleed looks like in a
5 mm slab with pixels of 230/128 mm. A thin series (CQ500's and RSNA's 0.625 mm) or another
field of view shows it something else: blood averaged over 8x less tissue, a head drawn at
another scale. :func:`reformat_volume` puts a scan into the training geometry before the
model's own preprocessing (window, resize), in three steps, each recorded in the report that
``decision.json`` keeps:

1. **Gantry tilt.** A tilted acquisition stores slices whose ImagePositionPatient moves within
   the slice plane from one slice to the next (the stack is sheared, not stacked): each slice is
   shifted back by its in-plane offset, so the stack is a straight one (the slices stay oblique
   to the head, as a tilted scan's are; the model was trained on heads pitched by up to 20°).
   A scan whose offsets are unknown is left as it is, and the report says so.
2. **Slabs.** Slices thinner than 0.75x the training thickness are averaged into slabs of the
   training thickness (a box profile, as a thick reconstruction of the same raw data is to a
   first approximation): slab centres every thickness from the first slice, each the mean of
   the slices whose centres fall in it. Missing slices (a gap a whole number of spacings long)
   shorter than a slab are bridged, the slabs around them averaging the slices that are there,
   and listed; a longer gap is refused, as an incomplete series. A series about as thick as the
   training's is kept slice for slice (a gap in it is refused). The slice cache averages a
   thin-slice training cohort the same way (``preprocess.slab_mm``): :func:`plan_slabs` and
   :class:`Slabs` serve both.
3. **Field of view.** A field of view more than 10% off the training one is cropped or
   padded (air) about its centre to the training field of view in mm, so the model's resize to its image size gives pixels of the
   training size in mm, not whatever the scan's matrix and field of view make of them.

Geometry comes from the run's ``ichseq.json`` (``geometry``: ``slice_spacing_mm``,
``field_of_view_mm``, ``image_size``; :func:`ichseq.training.runs.training_geometry`); a run
trained before it was recorded, or on a dataset without geometry (JPG), is not reformatted, and
the report says so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..errors import DataError
from .volumes import CTVolume

AIR_HU = -1024.0  # what padding and shifting bring in: the value scanners store outside the field
#: Slices thinner than this share of the training thickness are averaged into slabs.
SLAB_BELOW = 0.75
#: A slice offset in the plane smaller than this (pixels) is no tilt worth correcting.
TILT_MIN_PIXELS = 0.25
#: A field of view within this share of the training one is kept as it is: training cohorts
#: span such a range themselves (the twin 215-250 mm, head CT 220-250 mm), so the model has seen
#: it, and a scan already at the model's pixel count would only be blurred by resampling.
FOV_TOLERANCE = 0.10


@dataclass(frozen=True)
class Geometry:
    """The acquisition a model was trained on (from ichseq.json's ``geometry``)."""

    slice_spacing_mm: float | None
    field_of_view_mm: float | None
    image_size: int

    @classmethod
    def from_info(cls, geometry: dict | None, image_size: int) -> "Geometry | None":
        if not isinstance(geometry, dict):
            return None
        return cls(_positive(geometry.get("slice_spacing_mm")), _positive(geometry.get("field_of_view_mm")),
                   int(geometry.get("image_size") or image_size))


def _positive(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def reformat_volume(volume: CTVolume, target: Geometry | None) -> tuple[CTVolume, dict]:
    """``volume`` in the ``target`` geometry, and the report of what was done (for
    decision.json): ``tilt``, ``slabs``, ``gaps`` (bridged), ``field_of_view`` and ``notes``.
    Refuses (one-line :class:`DataError`) a gap longer than a slab."""
    report: dict = {"target": dataclasses.asdict(target) if target else None, "notes": []}
    if target is None:
        report["notes"].append("the model's training geometry is not recorded (a run trained before ichseq recorded "
                               "it, or on a dataset without geometry): the scan is read as it is")
        _check_even(volume)
        return volume, report
    volume, report["tilt"] = _untilt(volume)
    volume, report["slabs"], report["gaps"] = _slabs(volume, target.slice_spacing_mm)
    volume, report["field_of_view"] = _field_of_view(volume, target.field_of_view_mm)
    if report["tilt"].get("note"):
        report["notes"].append(report["tilt"]["note"])
    if report["field_of_view"].get("note"):
        report["notes"].append(report["field_of_view"]["note"])
    return volume, report


def gap_warnings(report: dict) -> list[str]:
    """One line per bridged gap, for the log and the CLI."""
    return [f"gap of {g['gap_mm']:.2f} mm ({g['missing_slices']} missing slice(s)) between {g['before']} and "
            f"{g['after']} bridged by the {g['slab_mm']:.2f} mm slabs around it" for g in report.get("gaps") or []]


# --------------------------------------------------------------------------- spacing


def _spacing(positions: np.ndarray) -> float:
    gaps = np.diff(positions)
    return float(np.median(gaps)) if len(gaps) else 0.0


def _label(volume: CTVolume, k: int) -> str:
    if volume.files:
        return volume.files[k].rsplit("/", 1)[-1]
    return f"slice {int(volume.slice_numbers[k])}"


def series_gaps(positions, name=None) -> list[dict]:
    """Where consecutive slices at ``positions`` (mm, ascending) are further apart than the
    series' spacing (missing slices): ``before``/``after`` (``name(k)`` of the slices around the
    gap; default ``slice k+1``), ``gap_mm``, ``missing_slices``, ``from_mm``, ``to_mm``."""
    positions = np.asarray(positions, float)
    name = name or (lambda k: f"slice {k + 1}")
    step = _spacing(positions)
    out = []
    if step <= 0:
        return out
    for i in np.flatnonzero(np.diff(positions) > 1.5 * step):
        gap = float(positions[i + 1] - positions[i])
        out.append({"before": name(int(i)), "after": name(int(i) + 1), "gap_mm": round(gap, 3),
                    "missing_slices": int(round(gap / step)) - 1, "from_mm": round(float(positions[i]), 3),
                    "to_mm": round(float(positions[i + 1]), 3)})
    return out


def _gaps(volume: CTVolume) -> list[dict]:
    """Where consecutive slices are further apart than the series' spacing (missing slices)."""
    return series_gaps(volume.positions, lambda k: _label(volume, k))


def _check_even(volume: CTVolume) -> None:
    """No reformatting: a gap is refused as the reader refuses it without --no-reformat."""
    gaps = _gaps(volume)
    if gaps:
        g = gaps[0]
        raise DataError(f"{volume.source}: slice spacing is not uniform: {g['gap_mm']:.3f} mm between {g['before']} "
                        f"and {g['after']} where the series' spacing is {_spacing(volume.positions):.3f} mm (a "
                        f"missing slice?); export the complete series")


@dataclass(frozen=True)
class Slabs:
    """Which slab of ``thickness`` mm each slice of a stack falls in (:func:`plan_slabs`): the one
    slab routine of ``ichseq predict`` (:func:`reformat_volume`) and of the slice cache
    (``preprocess.slab_mm``, :func:`ichseq.data.cache.build_cache`)."""

    thickness: float  # mm, the slabs' thickness and the spacing of their centres
    step: float  # mm, the series' own spacing (median between consecutive slices)
    index: np.ndarray  # int (S,): the slab (0-based) of each slice; non-decreasing
    counts: np.ndarray  # int (n,): slices per slab, none 0
    centres: np.ndarray  # float (n,): each slab's centre, mm
    gaps: list[dict]  # the missing slices bridged (:func:`series_gaps` entries, with ``slab_mm``)

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def first(self) -> np.ndarray:
        """int (n,): the first slice of each slab."""
        return np.searchsorted(self.index, np.arange(len(self)))

    def mean(self, stack: np.ndarray) -> np.ndarray:
        """float32 (n, ...): each slab the mean of its slices of ``stack`` (S, ...), summed in float64.
        For CT, average Hounsfield units, never windowed values: a window clips, so the mean of
        clipped values is not the window of the mean."""
        stack = np.asarray(stack)
        total = np.add.reduceat(stack, self.first, axis=0, dtype=np.float64)
        return (total / self.counts.reshape((-1,) + (1,) * (stack.ndim - 1))).astype(np.float32)

    def any(self, values: np.ndarray) -> np.ndarray:
        """(n, ...), the dtype of ``values`` (S, ...): each slab the maximum of its slices, so for
        0/1 labels or boolean masks, set where any of its slices is."""
        return np.maximum.reduceat(np.asarray(values), self.first, axis=0)


def plan_slabs(positions, thickness: float | None, source: str, name=None, reads: str = "the model reads",
               fix: str = "export the complete series") -> Slabs | None:
    """How slices at ``positions`` (mm, ascending) are averaged into slabs of ``thickness`` mm, or
    None where they are kept slice for slice: ``thickness`` unknown, fewer than two slices, or a
    spacing of at least :data:`SLAB_BELOW` x ``thickness`` (about as thick already).

    Slab edges run every ``thickness`` from half a spacing below the first slice; the last slab
    must be at least half full; each slab holds the slices whose centres fall in it. Missing
    slices shorter than a slab are bridged (the slabs around them hold the slices that are
    there) and listed in ``gaps``; a longer gap is refused with a one-line :class:`DataError`
    naming ``source``, the slices around it (``name(k)``, default ``slice k+1``), the slabs
    ``reads`` ("the {thickness} mm slabs {reads}") and ``fix``."""
    positions = np.asarray(positions, float)
    step = _spacing(positions)
    if thickness is None or len(positions) < 2 or step >= SLAB_BELOW * thickness:
        return None
    gaps = series_gaps(positions, name)
    long = [g for g in gaps if g["gap_mm"] - step > thickness]
    if long:
        g = long[0]
        raise DataError(f"{source}: a gap of {g['gap_mm']:.2f} mm between {g['before']} and {g['after']} "
                        f"({g['missing_slices']} missing slices) is longer than the {thickness:.2f} mm slabs {reads}; "
                        f"{fix}")
    # Slab edges from half a spacing below the first slice; the last slab must be at least half full.
    start = positions[0] - step / 2
    extent = positions[-1] + step / 2 - start
    n = max(1, int(np.floor(extent / thickness + 0.5)))
    index = np.minimum(np.floor((positions - start) / thickness).astype(int), n - 1)
    counts = np.bincount(index, minlength=n)
    if (counts == 0).any():  # pragma: no cover - excluded by the gap check above
        raise DataError(f"{source}: a slab of {thickness:.2f} mm holds no slice; {fix}")
    for g in gaps:
        g["slab_mm"] = thickness
    return Slabs(float(thickness), step, index, counts, start + (np.arange(n) + 0.5) * thickness, gaps)


def _slabs(volume: CTVolume, thickness: float | None) -> tuple[CTVolume, dict, list[dict]]:
    slabs = plan_slabs(volume.positions, thickness, volume.source, lambda k: _label(volume, k))
    if slabs is None:
        step = _spacing(np.asarray(volume.positions, float))
        gaps = _gaps(volume)
        if gaps:  # thick slices: a missing one is a hole a slab cannot cover
            g = gaps[0]
            raise DataError(f"{volume.source}: {g['gap_mm']:.2f} mm between {g['before']} and {g['after']} where the "
                            f"series' spacing is {step:.2f} mm ({g['missing_slices']} missing slice(s)) in "
                            f"{step:.2f} mm slices: nothing can fill it; export the complete series")
        why = ("the training slice spacing is unknown" if thickness is None else
               f"its {step:.2f} mm slices are about the training {thickness:.2f} mm")
        return volume, {"applied": False, "reason": why, "source_spacing_mm": round(step, 4)}, []
    n = len(slabs)
    slabbed = dataclasses.replace(volume, hu=slabs.mean(volume.hu), positions=slabs.centres,
                                  slice_numbers=np.arange(1, n + 1, dtype=np.int64), files=None,
                                  slice_thickness_mm=thickness, in_plane_offsets_mm=None)
    info = {"applied": True, "source_spacing_mm": round(slabs.step, 4), "slab_mm": round(thickness, 4), "slabs": n,
            "source_slices": int(len(volume.positions)),
            "slices_per_slab": {"min": int(slabs.counts.min()), "max": int(slabs.counts.max())},
            "first_source_slice": [_label(volume, int(k)) for k in slabs.first]}
    return slabbed, info, slabs.gaps


# --------------------------------------------------------------------------- tilt


def _untilt(volume: CTVolume) -> tuple[CTVolume, dict]:
    offsets = volume.in_plane_offsets_mm
    if offsets is None:
        return volume, {"corrected": False, "note": "the slices' in-plane offsets are unknown (NIfTI without them): "
                                                    "any gantry tilt is not corrected"}
    offsets = np.asarray(offsets, float)
    spacing = np.asarray(volume.spacing_mm or (1.0, 1.0), float)
    pixels = offsets / spacing
    if np.abs(pixels).max() < TILT_MIN_PIXELS:
        return volume, {"corrected": False, "tilt_deg": 0.0}
    along = np.asarray(volume.positions, float) - float(volume.positions[0])
    drift = np.hypot(*(np.polyfit(along, offsets[:, i], 1)[0] for i in range(2))) if np.ptp(along) > 0 else 0.0
    hu = np.empty_like(volume.hu)
    for k, plane in enumerate(volume.hu):
        # The content of slice k sits ``offset`` further along rows/columns than slice 0's:
        # shifting it back by the offset aligns the stack.
        hu[k] = ndi.shift(plane, shift=(-pixels[k, 0], -pixels[k, 1]), order=1, mode="constant", cval=AIR_HU)
    untilted = dataclasses.replace(volume, hu=hu, in_plane_offsets_mm=np.zeros_like(offsets))
    return untilted, {"corrected": True, "tilt_deg": round(float(np.degrees(np.arctan(drift))), 2),
                      "max_shift_mm": round(float(np.abs(offsets).max()), 3)}


# --------------------------------------------------------------------------- field of view


def _field_of_view(volume: CTVolume, target_mm: float | None) -> tuple[CTVolume, dict]:
    rows, cols = volume.hu.shape[1:]
    if target_mm is None:
        return volume, {"applied": False, "note": "the training field of view is unknown: slices resized by pixel count"}
    if volume.spacing_mm is None:
        return volume, {"applied": False, "note": "the scan has no pixel spacing: its field of view is unknown, slices "
                                                  "resized by pixel count"}
    spacing = np.asarray(volume.spacing_mm, float)
    source_mm = np.array([rows, cols]) * spacing
    if np.all(np.abs(source_mm - target_mm) <= FOV_TOLERANCE * target_mm):
        return volume, {"applied": False, "source_mm": [round(float(v), 2) for v in source_mm],
                        "target_mm": round(target_mm, 2)}
    want = np.maximum(1, np.rint(target_mm / spacing).astype(int))  # rows, cols at the scan's own pixel size
    out = np.full((len(volume.hu), int(want[0]), int(want[1])), AIR_HU, np.float32)
    src, dst = [], []
    for have, need in zip((rows, cols), want):
        if need <= have:  # crop about the centre
            lo = (have - need) // 2
            src.append(slice(lo, lo + need))
            dst.append(slice(0, need))
        else:  # pad with air about the centre
            lo = (need - have) // 2
            src.append(slice(0, have))
            dst.append(slice(lo, lo + have))
    out[:, dst[0], dst[1]] = volume.hu[:, src[0], src[1]]
    kind = "cropped" if np.all(want <= [rows, cols]) else "padded" if np.all(want >= [rows, cols]) else "cropped/padded"
    info = {"applied": True, "source_mm": [round(float(v), 2) for v in source_mm], "target_mm": round(target_mm, 2),
            "how": f"{kind} about the centre to {int(want[0])}x{int(want[1])} pixels of the scan's own size"}
    return dataclasses.replace(volume, hu=out), info
