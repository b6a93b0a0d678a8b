"""What the anatomical synthetic twin looks like, and whether its Hounsfield units are right.

* :func:`twin_levels_figure`: one patient at each difficulty level, read as a radiologist
  reads a head CT: axial slices from the skull base to the vertex in the brain window, the
  hemorrhage mask outlined in red, and the skull base once more in the bone window.
* :func:`tissue_hu_table` and :func:`blood_hu_table`: the HU the twin's scans actually
  contain, per tissue and per bleed, measured after acquisition (partial volume, kernel blur,
  noise, beam hardening: everything a model sees), next to the value the atlas uses and the
  published range for non-contrast head CT (:data:`ichseq.data.head_atlas.TISSUE_HU`).
  :func:`hu_tables` gives both from one pass over the scans.

Measurements are pooled from per-label HU histograms (HU are integers from -1024 to 3071), so
a whole cohort costs a few kB however many pixels it has, and the median and quartiles are
exact. A tissue's pixels are its *interior* ones: the pixel and its eight in-plane
neighbours carry the same label in the scan's tissue map, so does the same pixel on the
slices above and below (the map is the label at the pixel's centre but the HU average the
slice's thickness), and no hemorrhage-mask pixel is among them or next to them; so a thin
structure's partial volume with its neighbours is left out (the value used in the atlas is
what is asked of a pixel that is all one tissue).

Pure functions of the synthetic spec: nothing here imports Snakemake.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import ndimage as ndi

from ..analysis.figures import save_figure
from ..data.head_atlas import LABELS, TISSUE_HU
from ..data.synthetic import positive_patients
from ..data.twin import DIFFICULTIES, synthesize_anatomical_scan
from ..errors import DataError
from . import htmlpage

#: Where the figure's slices are taken, as fractions of the scan from its first (skull base)
#: to its last (vertex) slice: the same fractions in every row.
LEVEL_FRACTIONS = (0.08, 0.2, 0.33, 0.46, 0.6, 0.74, 0.88)
BRAIN_WINDOW = (40.0, 120.0)  # level, width
BONE_WINDOW = (500.0, 2500.0)
#: Figure width in inches and its resolution: about 1400 px, a README-sized image.
FIGURE_WIDTH_IN = 9.4
FIGURE_DPI = 150

SUBTYPE_ABBREVIATIONS = {"Epidural": "EDH", "Subdural": "SDH", "Intraparenchymal": "IPH", "Subarachnoid": "SAH",
                         "Intraventricular": "IVH"}
#: Published HU of blood on non-contrast CT (e.g. Osborn's Brain 2nd ed.; Parizel et al. 2001):
#: acute clot 50-90 HU, a subacute subdural isodense to grey matter (30-45), a chronic one
#: near CSF (0-25). A mixed subdural (chronic with a fresh dependent layer) spans both: no range.
ACUTE_BLOOD_HU = (50, 90)
SUBDURAL_STAGE_HU = {"acute": ACUTE_BLOOD_HU, "subacute": (30, 45), "chronic": (0, 25), "mixed": None}

#: Tissue-map labels that TISSUE_HU has no entry of its own for, and the entry they are read
#: against: ventricles hold CSF, sinus and mastoid air is air.
LABEL_REFERENCE = {"ventricle": "csf", "sinus air": "air"}

_HU_MIN, _HU_BINS = -1024, 4096  # the int16 range the twin writes: -1024 to 3071


# --------------------------------------------------------------------------- scans


def _anatomical(spec) -> None:
    if spec.generator != "anatomical":
        raise DataError(f"dataset.synthetic.generator: {spec.generator}: the twin figure and HU tables are "
                        "of the anatomical generator only")


def _scan(spec, patient: int, positive: bool, difficulty: str | None = None):
    _anatomical(spec)
    if difficulty is not None:
        spec = dataclasses.replace(spec, difficulty=difficulty)
    return synthesize_anatomical_scan(patient, positive, spec)


def _slice_indices(n_slices: int, fractions: Sequence[float]) -> list[int]:
    return [int(round(f * (n_slices - 1))) for f in fractions]


#: What :func:`showcase_patient` looks for, in order: a focal bleed a reader finds at once.
SHOWCASE_SUBTYPES = (("Intraparenchymal",), ("Epidural",), tuple(SUBTYPE_ABBREVIATIONS))


def showcase_patient(spec, fractions: Sequence[float] = LEVEL_FRACTIONS, min_slices_shown: int = 2) -> int:
    """The patient :func:`twin_levels_figure` shows by default: the first positive patient of
    ``spec`` (in patient order) whose scan, at the spec's difficulty, has a bleed that is not a
    deliberately hard one, of the first subtypes of :data:`SHOWCASE_SUBTYPES` that any patient
    offers (an intraparenchymal haematoma, else an epidural, else any), shown on at least
    ``min_slices_shown`` of the figure's slice levels, while at least one level shows no blood
    (a collection on every level hides the normal anatomy); for an intraparenchymal one, the
    blood must also show on a level at the other difficulties (the rows are compared); the
    first positive patient if none."""
    positives = sorted(positive_patients(spec))
    if not positives:
        raise DataError("dataset.synthetic.n_positive: 0: the twin figure needs a patient with a hemorrhage")
    shown_by = {}
    for patient in positives:
        scan = _scan(spec, patient, True)
        levels = _slice_indices(scan.hu.shape[0], fractions)
        if all(scan.mask[k].any() for k in levels):
            continue
        shown_by[patient] = {lesion.subtype for lesion in scan.lesions
                             if not lesion.hard and sum(lesion.covers(k) for k in levels) >= min_slices_shown}
        if shown_by[patient] & set(SHOWCASE_SUBTYPES[0]) and _shown_at_every_level(spec, patient, fractions):
            return patient
    for subtypes in SHOWCASE_SUBTYPES[1:]:
        for patient, shown in shown_by.items():
            if shown & set(subtypes):
                return patient
    return positives[0]


def _shown_at_every_level(spec, patient: int, fractions: Sequence[float]) -> bool:
    """Whether the patient's blood shows on one of the figure's levels at every difficulty (the
    figure compares the rows; a row without blood shows nothing to compare)."""
    for difficulty in DIFFICULTIES:
        if difficulty == spec.difficulty:
            continue
        scan = _scan(spec, patient, True, difficulty)
        if not any(scan.mask[k].any() for k in _slice_indices(scan.hu.shape[0], fractions)):
            return False
    return True


# --------------------------------------------------------------------------- the figure


def _lesion_text(lesion) -> str:
    p = lesion.params
    detail = [SUBTYPE_ABBREVIATIONS.get(lesion.subtype, lesion.subtype)]
    if p.get("stage"):
        detail.append(str(p["stage"]))
    if p.get("kind") not in (None, "convexity"):  # along the falx or the tentorium
        detail.append(str(p["kind"]))
    if p.get("site"):
        detail.append(str(p["site"]))
    if lesion.hard:
        detail.append("hard")
    return " ".join(detail)


def _window(level: float, width: float) -> dict:
    return {"vmin": level - width / 2, "vmax": level + width / 2, "cmap": "gray", "interpolation": "antialiased"}


def skull_base_slice(scan) -> int:
    """The slice of the figure's bone-window column: the one with the most petrous bone (the
    skull base proper: petrous ridges, mastoids, sphenoid); slice 0 if none shows it."""
    petrous = (scan.tissue == LABELS["petrous bone"]).sum(axis=(1, 2))
    return int(np.argmax(petrous)) if petrous.any() else 0


def _slice_z(scan, k: int) -> float:
    """Table position of slice ``k`` (mm, scanner z: about 0 at the level of the anterior commissure)."""
    return float(scan.affine[2, 3] + k * scan.affine[2, 2])


def levels_figure(scans: Sequence[tuple[str, object]], fractions: Sequence[float] = LEVEL_FRACTIONS) -> Figure:
    """The figure of :func:`twin_levels_figure` from ``(difficulty, AnatomicalScan)`` rows."""
    n_cols = len(fractions) + 1
    left, right, top, bottom = 1.3, 0.05, 0.45, 0.05  # inches
    panel = (FIGURE_WIDTH_IN - left - right) / n_cols
    title_h = 0.34
    height = top + bottom + len(scans) * (panel + title_h)
    fig = Figure(figsize=(FIGURE_WIDTH_IN, height), facecolor="black")
    for row, (difficulty, scan) in enumerate(scans):
        indices = _slice_indices(scan.hu.shape[0], fractions)
        y0 = height - top - row * (panel + title_h) - title_h - panel
        for col, k in enumerate(indices + [skull_base_slice(scan)]):
            ax = fig.add_axes([(left + col * panel) / FIGURE_WIDTH_IN, y0 / height, panel / FIGURE_WIDTH_IN * 0.97,
                               panel / height * 0.97])
            ax.set_facecolor("black")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            label = scan.labels[k]
            present = [SUBTYPE_ABBREVIATIONS[s] for s in SUBTYPE_ABBREVIATIONS if label.get(s)]
            if col < len(indices):
                ax.imshow(scan.hu[k], **_window(*BRAIN_WINDOW))
                if scan.mask[k].any():
                    ax.contour(scan.mask[k].astype(np.float32), levels=[0.5], colors="#ff3030", linewidths=0.6)
                status = ("ICH " + "+".join(present)) if present else "no ICH"
                colour = "#ff6060" if present else "#b8c0c8"
                ax.set_title(f"#{k + 1}  z {_slice_z(scan, k):+.0f} mm\n{status}", fontsize=6.5, color=colour,
                             pad=2, linespacing=1.1)
            else:  # the skull base, in the bone window
                ax.imshow(scan.hu[k], **_window(*BONE_WINDOW))
                ax.set_title(f"#{k + 1}  bone window\nL{BONE_WINDOW[0]:.0f} W{BONE_WINDOW[1]:.0f}", fontsize=6.5,
                             color="#e0c070", pad=2, linespacing=1.1)
            if col == 0:
                ax.text(0.03, 0.97, "R", transform=ax.transAxes, color="white", fontsize=6, va="top", ha="left")
                lesions = [textwrap.fill(_lesion_text(lesion), 18, subsequent_indent="  ")
                           for lesion in scan.lesions] or ["no bleed"]
                text = (f"{difficulty}\nage {scan.age} {scan.sex}, atrophy {scan.atrophy}\n"
                        f"{scan.slice_thickness_mm:g} mm x {scan.hu.shape[0]}\n" + "\n".join(lesions))
                fig.text((left - 0.08) / FIGURE_WIDTH_IN, (y0 + panel / 2) / height, text, color="white",
                         fontsize=6.5, ha="right", va="center", linespacing=1.25)
    fig.text(0.5, 1 - 0.06 / height,
             f"Anatomical synthetic twin, patient {scans[0][1].patient} at each difficulty: brain window "
             f"L{BRAIN_WINDOW[0]:.0f} W{BRAIN_WINDOW[1]:.0f}, hemorrhage mask outlined in red\n"
             "slices from the skull base (left) to the vertex, the same fractions of the scan in every row; "
             "radiological view (patient's right on the left); z: table position",
             color="white", fontsize=7.5, ha="center", va="top", linespacing=1.3)
    return fig


def twin_levels_figure(spec, patient: int, out_png: str | Path,
                       difficulties: Iterable[str] = ("easy", "moderate", "hard"),
                       fractions: Sequence[float] = LEVEL_FRACTIONS) -> Path:
    """Write a PNG of ``patient`` (drawn positive, with ``spec``'s seed) at each of
    ``difficulties`` (rows): brain-window slices at ``fractions`` of the scan (columns, skull
    base to vertex), the mask outlined, and the skull base (:func:`skull_base_slice`) in the
    bone window.

    The patient's anatomy comes from the same random stream in every row, but the bleeds
    drawn at each difficulty consume it differently, so the heads may differ slightly between
    rows (age, pose and field of view are drawn first and are the same)."""
    scans = [(d, _scan(spec, patient, True, d)) for d in difficulties]
    if not scans:
        raise ValueError("twin_levels_figure: no difficulty levels")
    fig = levels_figure(scans, fractions)
    return save_figure(fig, [out_png], dpi=FIGURE_DPI)[0]


# --------------------------------------------------------------------------- HU measurements


@dataclasses.dataclass
class _Histograms:
    """Per-key HU histograms (bin i = HU -1024 + i) pooled over scans."""

    counts: dict = dataclasses.field(default_factory=dict)
    lesions: dict = dataclasses.field(default_factory=dict)  # key -> number of bleeds measured

    def add(self, key, values: np.ndarray) -> None:
        if values.size == 0:
            return
        hist = np.bincount(np.clip(values.astype(np.int64) - _HU_MIN, 0, _HU_BINS - 1), minlength=_HU_BINS)
        if key in self.counts:
            self.counts[key] += hist
        else:
            self.counts[key] = hist


def _stats(hist: np.ndarray | None) -> dict:
    """Pixels, median, quartiles, mean and SD of a histogram (NaN when empty)."""
    n = int(hist.sum()) if hist is not None else 0
    if n == 0:
        return {"pixels": 0, "median": np.nan, "q1": np.nan, "q3": np.nan, "mean": np.nan, "sd": np.nan}
    values = np.arange(_HU_BINS) + _HU_MIN
    cum = np.cumsum(hist)

    def nth(i: int) -> float:  # the i-th smallest value (0-based)
        return float(values[int(np.searchsorted(cum, i, side="right"))])

    def quantile(q: float) -> float:  # linear between neighbours, as np.quantile's default
        pos = q * (n - 1)
        lo, frac = int(np.floor(pos)), pos - np.floor(pos)
        return nth(lo) + frac * (nth(min(lo + 1, n - 1)) - nth(lo))

    mean = float((hist * values).sum() / n)
    sd = float(np.sqrt(max((hist * (values - mean) ** 2).sum() / n, 0.0)))
    return {"pixels": n, "median": quantile(0.5), "q1": quantile(0.25), "q3": quantile(0.75), "mean": mean, "sd": sd}


def _measure(scan, tissues: _Histograms, blood: _Histograms) -> None:
    hu, tissue, mask = scan.hu, scan.tissue, scan.mask
    footprint = (1, 3, 3)
    interior = ndi.minimum_filter(tissue, size=footprint) == ndi.maximum_filter(tissue, size=footprint)
    # The tissue map is the label at the pixel's centre, the HU the average over the slice's
    # thickness: the same label on the slices above and below keeps out a pixel whose slab
    # reaches into the next tissue (CSF under the skull near the vertex, say).
    interior[0] = interior[-1] = False
    interior[1:-1] &= (tissue[:-2] == tissue[1:-1]) & (tissue[2:] == tissue[1:-1])
    interior &= ~ndi.maximum_filter(mask, size=(3, 3, 3))
    for value in np.unique(tissue[interior]):
        tissues.add(int(value), hu[interior & (tissue == value)])

    if not mask.any():
        return
    inner = ndi.minimum_filter(mask, size=footprint)  # mask pixels whose 3x3 neighbourhood is all blood
    for lesion in scan.lesions:
        if lesion.length == 0:
            continue
        # A bleed's pixels: the mask on the slices where it is the only bleed shown.
        alone = [k for k in range(lesion.first, lesion.first + lesion.length)
                 if not any(other is not lesion and other.covers(k) for other in scan.lesions)]
        if not alone:
            continue
        keys = [("subtype", lesion.subtype)]
        if lesion.subtype == "Subdural":
            keys.append(("stage", lesion.params.get("stage", "acute")))
        for key in keys:
            blood.add(key, hu[alone][mask[alone]])
            blood.add(key + ("inner",), hu[alone][inner[alone]])
            blood.lesions[key] = blood.lesions.get(key, 0) + 1


def _in_range(median: float, published) -> object:
    if published is None or np.isnan(median):
        return pd.NA
    return bool(published[0] <= median <= published[1])


def _measure_patients(spec, patients: Iterable[int] | None) -> tuple[_Histograms, _Histograms, int]:
    _anatomical(spec)
    patients = list(spec.patient_numbers() if patients is None else patients)
    positives = positive_patients(spec)
    tissues, blood = _Histograms(), _Histograms()
    for patient in patients:
        _measure(_scan(spec, patient, patient in positives), tissues, blood)
    return tissues, blood, len(patients)


TISSUE_COLUMNS = ("tissue", "reference", "label", "pixels", "median", "q1", "q3", "mean", "sd", "value_used",
                  "published_lo", "published_hi", "median_in_range")
BLOOD_COLUMNS = ("group", "bleed", "bleeds", "pixels", "median", "q1", "q3", "inner_pixels", "inner_median",
                 "published_lo", "published_hi", "median_in_range")


def _tissue_frame(hists: _Histograms) -> pd.DataFrame:
    rows = []
    order = [name for name in TISSUE_HU] + [name for name in LABEL_REFERENCE]
    for name in order:
        label = LABELS.get(name)
        if label is None or label not in hists.counts:
            continue
        reference = LABEL_REFERENCE.get(name, name)
        used, published = TISSUE_HU[reference]
        stats = _stats(hists.counts[label])
        rows.append({"tissue": name if reference == name else f"{name} ({reference})", "reference": reference,
                     "label": label, **stats,
                     "value_used": used, "published_lo": published[0], "published_hi": published[1],
                     "median_in_range": _in_range(stats["median"], published)})
    return pd.DataFrame(rows, columns=list(TISSUE_COLUMNS))


def _blood_frame(hists: _Histograms) -> pd.DataFrame:
    rows = []
    keys = [("subtype", s) for s in SUBTYPE_ABBREVIATIONS] + [("stage", s) for s in SUBDURAL_STAGE_HU]
    for key in keys:
        if key not in hists.counts:
            continue
        group, name = key
        published = ACUTE_BLOOD_HU if group == "subtype" and name != "Subdural" else \
            SUBDURAL_STAGE_HU.get(name) if group == "stage" else None
        stats = _stats(hists.counts[key])
        inner = _stats(hists.counts.get(key + ("inner",)))
        rows.append({"group": group, "bleed": name if group == "subtype" else f"Subdural, {name}",
                     "bleeds": hists.lesions.get(key, 0), "pixels": stats["pixels"], "median": stats["median"],
                     "q1": stats["q1"], "q3": stats["q3"], "inner_pixels": inner["pixels"],
                     "inner_median": inner["median"],
                     "published_lo": published[0] if published else np.nan,
                     "published_hi": published[1] if published else np.nan,
                     "median_in_range": _in_range(stats["median"], published)})
    return pd.DataFrame(rows, columns=list(BLOOD_COLUMNS))


def hu_tables(spec, patients: Iterable[int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(:func:`tissue_hu_table`, :func:`blood_hu_table`) of the same scans, each generated once."""
    tissues, blood, n = _measure_patients(spec, patients)
    tissue_df, blood_df = _tissue_frame(tissues), _blood_frame(blood)
    for df in (tissue_df, blood_df):
        df.attrs["patients"] = n
    return tissue_df, blood_df


def tissue_hu_table(spec, patients: Iterable[int] | None = None) -> pd.DataFrame:
    """Measured HU per tissue of ``patients``' scans (default: every patient of ``spec``; each
    drawn positive or not as in the dataset): one row per tissue of
    :data:`~ichseq.data.head_atlas.TISSUE_HU` that has interior pixels (ventricles and sinus
    air are read against CSF and air: ``reference`` names the entry), with the pixel count,
    median, quartiles, mean and SD, the value the atlas uses, the published range and whether
    the median lies in it."""
    return hu_tables(spec, patients)[0]


def blood_hu_table(spec, patients: Iterable[int] | None = None) -> pd.DataFrame:
    """Measured HU of the hemorrhage-mask pixels of ``patients``' scans: one row per subtype
    (``group`` "subtype") and per subdural stage (``group`` "stage"), with the number of bleeds,
    the pixels, median and quartiles, the median of the mask's inner pixels (3x3 all blood: no
    partial volume with the neighbouring brain or bone), the published range (acute blood
    50-90 HU; subdural by stage; none for a mixed subdural) and whether the median lies in it.
    Only slices where one bleed alone is shown count (two bleeds' pixels are not told apart)."""
    return hu_tables(spec, patients)[1]


# --------------------------------------------------------------------------- writing


def _display(df: pd.DataFrame) -> pd.DataFrame:
    """Rounded, with the range as one column and yes/no flags: for Markdown and HTML."""
    out = df.copy()
    for column in ("median", "q1", "q3", "mean", "sd", "inner_median"):
        if column in out:
            out[column] = out[column].round(1)
    out["published"] = [f"{lo:g} to {hi:g}" if pd.notna(lo) else "" for lo, hi in zip(out["published_lo"],
                                                                                          out["published_hi"])]
    out["in range"] = ["" if pd.isna(v) else "yes" if v else "no" for v in out["median_in_range"]]
    return out.drop(columns=["published_lo", "published_hi", "median_in_range", "label", "group", "reference"],
                    errors="ignore")


def hu_markdown(tissue_df: pd.DataFrame, blood_df: pd.DataFrame | None = None) -> str:
    """The tables as Markdown (README-ready)."""
    parts = [_display(tissue_df).to_markdown(index=False)]
    if blood_df is not None and len(blood_df):
        parts.append(_display(blood_df).to_markdown(index=False))
    return "\n\n".join(parts) + "\n"


HU_NOTE = ("Hounsfield units measured in the generated scans after acquisition (slice partial volume, kernel "
           "blur, noise, beam hardening). A tissue's pixels are those whose 3x3 in-plane neighbourhood, and the same "
           "pixel on the slices above and below, are all that tissue in the scan's tissue map, with no "
           "hemorrhage-mask pixel among them or next to them; median, quartiles (q1, q3), mean "
           "and SD over all of them, pooled over the patients. value_used: the atlas's value; published: the range "
           "for non-contrast head CT; in range: whether the measured median lies in it.")
BLOOD_NOTE = ("Pixels of the hemorrhage mask (at least half of the pixel is blood), on the slices where one bleed "
              "alone is shown; inner: mask pixels whose 3x3 neighbourhood is all mask (no partial volume with "
              "brain or bone). Published: acute blood 50-90 HU; a subacute subdural is isodense (30-45), a chronic "
              "one near CSF (0-25); a mixed subdural (chronic with a dependent fresh layer) spans both.")


def hu_html(tissue_df: pd.DataFrame, blood_df: pd.DataFrame | None = None,
            title: str = "Synthetic twin: Hounsfield units") -> str:
    """One self-contained page with both tables (:mod:`ichseq.report.htmlpage`)."""
    n = tissue_df.attrs.get("patients")
    parts = [htmlpage.note(f"{n} patients. {HU_NOTE}" if n else HU_NOTE), htmlpage.heading("Tissues"),
             htmlpage.frame_table(_display(tissue_df))]
    if blood_df is not None:
        parts += [htmlpage.heading("Blood"), htmlpage.note(BLOOD_NOTE),
                  htmlpage.frame_table(_display(blood_df)) if len(blood_df) else htmlpage.note("(no bleeds)")]
    return htmlpage.page(title, parts)
