"""The figure of one scored scan: its slice scores along the scan, and its top slices.

Top panel: for a slice-level model (kinds ``slice`` and ``context``: one probability per slice),
each replicate's slice-score curve (thin, grey), the ensemble's (bold) with a band of ± one
standard deviation across the replicates, the slice threshold of the decision rule (dashed)
and the top slices marked; for a scan-level model (kinds ``sequence`` and ``scan``: one
probability per scan, so the replicate columns are all NaN) the scan's probability ± sd as a
horizontal line and band instead, and which slices its clip read. A rug at the bottom marks the
slices the model read in both cases.

Bottom row: the top slices (best first, up to :data:`MAX_TOP_SLICES`) as the model saw them
(brain-windowed, grey), each with its Grad-CAM map (``ichseq.inference.saliency``) over it when
there is one, drawn more opaque where the map is higher.

Built on a :class:`matplotlib.figure.Figure` (no pyplot: no backend is selected and no figure
is left open) and written with :func:`ichseq.analysis.figures.save_figure`, which renders every
file before touching any and keeps the SVG reproducible.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..analysis.figures import save_figure
from ..errors import DataError

#: Columns of the slice table besides the replicates' ``rep-<r>`` ones.
SLICE_COLUMNS = ("slice", "position_mm", "read", "ensemble", "ensemble_sd")
#: A replicate's probability column.
REPLICATE_COLUMN = re.compile(r"^rep-(\d+)$")
#: Keys of the decision the figure reads.
DECISION_KEYS = ("scan", "model", "kind", "probability", "probability_sd", "decision", "rule", "threshold",
                 "replicates", "top_slices")
MAX_TOP_SLICES = 4
#: Characters per line of the title's notice.
TITLE_WIDTH = 110
#: Colormap and highest opacity of the Grad-CAM overlay.
SALIENCY_CMAP = "inferno"
SALIENCY_ALPHA = 0.6
_RC = {"font.size": 9, "axes.titlesize": 9, "figure.titlesize": 11, "legend.fontsize": 8}
_ENSEMBLE_COLOR = "tab:blue"
_TOP_COLOR = "tab:red"


def prediction_figure(slices: pd.DataFrame, images: np.ndarray, decision: dict,
                      saliency: dict[int, np.ndarray] | None, paths: Sequence[str | Path]) -> list[Path]:
    """Draw the figure of one scan (module docstring) and write it to each of ``paths`` (.png,
    .svg: the format from the suffix); return the paths.

    ``slices``: one row per slice in scan order (inferior to superior) with ``slice``,
    ``position_mm``, ``read`` (0/1), one ``rep-<r>`` probability column per replicate (NaN where
    that model scores no slice), ``ensemble`` and ``ensemble_sd``. ``images``: uint8 (S, H, W),
    the windowed slices in the same order. ``decision``: :data:`DECISION_KEYS`. ``saliency``:
    slice number -> map in [0, 1] of any size (drawn over the whole slice), or None."""
    fig = prediction_figure_object(slices, images, decision, saliency)
    try:
        return save_figure(fig, list(paths))
    finally:
        fig.clear()  # a Figure made without pyplot is freed with its last reference; clear it now


def prediction_figure_object(slices: pd.DataFrame, images: np.ndarray, decision: dict,
                             saliency: dict[int, np.ndarray] | None) -> Figure:
    """The :class:`Figure` that :func:`prediction_figure` writes (same arguments, no paths)."""
    replicate_columns = _check(slices, images, decision, saliency)
    top = [int(s) for s in decision["top_slices"]][:MAX_TOP_SLICES]
    row_of = {int(s): i for i, s in enumerate(slices["slice"].to_numpy())}
    slice_level = bool(slices[replicate_columns].notna().to_numpy().any())
    with matplotlib.rc_context(_RC):
        ncols = max(1, len(top))
        # Fixed geometry (no constrained layout, which collapses the image row beside an
        # outside legend): the curve spans the image columns; the last column holds the
        # legend (top) and the Grad-CAM colour bar (bottom).
        width = 2.3 * max(ncols, 3) + 3.4
        image_height = 2.3 if top else 0.0
        title = _title(decision, len(replicate_columns))
        # The title's lines (notice, distribution check) take their own room above the curve.
        title_height = 0.22 * (title.count("\n") + 1) + 0.2
        height = 0.5 + 3.0 + image_height + (0.5 if top else 0.0) + title_height
        fig = Figure(figsize=(width, height))
        grid = fig.add_gridspec(2 if top else 1, ncols + 1, width_ratios=[1.0] * ncols + [0.9 * ncols / max(ncols, 3) + 0.4],
                                height_ratios=[3.0, image_height] if top else [3.0],
                                left=0.07, right=0.97, top=1.0 - title_height / height,
                                bottom=(0.2 if top else 0.55) / height, wspace=0.12, hspace=0.45)
        curve = fig.add_subplot(grid[0, :ncols])
        if slice_level:
            _slice_curve(curve, slices, replicate_columns, decision, top, row_of)
        else:
            _scan_level(curve, slices, decision, top, row_of)
        _legend(fig, grid[0, ncols])
        fig.suptitle(title, y=1.0 - 0.1 / height, va="top")
        overlay = _top_slice_images(fig, grid, slices, images, saliency, top, row_of)
        if top:
            _image_side(fig.add_subplot(grid[1, ncols]), overlay, slice_level)
    return fig


def _legend(fig: Figure, cell) -> None:
    """The legend of every axis of ``fig`` so far, in the grid ``cell`` beside the curve."""
    handles, labels = [], []
    for ax in fig.axes:
        h, l = ax.get_legend_handles_labels()
        handles += h
        labels += l
    legend_ax = fig.add_subplot(cell)
    legend_ax.set_axis_off()
    # Clear of the occlusion axis's labels on the curve's right side, when there is one.
    legend_ax.legend(handles, labels, loc="upper left", frameon=False, borderaxespad=0.0,
                     bbox_to_anchor=(0.0 if len(fig.axes) == 2 else 0.3, 1.0))


def _top_slice_images(fig: Figure, grid, slices: pd.DataFrame, images: np.ndarray,
                      saliency: dict[int, np.ndarray] | None, top: list[int], row_of: dict[int, int]):
    """The ``top`` slices in the grid's second row, each titled with its probability (or its
    occlusion drop) and with its Grad-CAM overlay when given; returns the last overlay drawn
    (for the colour bar), or None."""
    image_axes = [fig.add_subplot(grid[1, i]) for i in range(len(top))]
    overlay = None
    for ax, number in zip(image_axes, top):
        row = row_of[number]
        probability = slices["ensemble"].iat[row]
        ax.imshow(images[row], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        if np.isfinite(probability):
            label = f"slice {number}, p={probability:.2f}"
        elif "occlusion" in slices and np.isfinite(slices["occlusion"].iat[row]):
            label = f"slice {number}, drop {slices['occlusion'].iat[row]:.3g}"
        else:
            label = f"slice {number}"
        ax.set_title(label)
        ax.set_axis_off()
        if saliency is not None and number in saliency:
            overlay = _overlay(ax, np.asarray(saliency[number], dtype=np.float32), images[row].shape)
    return overlay


def _image_side(side, overlay, slice_level: bool) -> None:
    """Beside the slice images: the Grad-CAM colour bar of ``overlay``, or why there is none."""
    side.set_axis_off()
    if overlay is not None:
        bar = side.inset_axes([0.0, 0.05, 0.12, 0.9])
        colorbar = side.figure.colorbar(overlay, cax=bar)
        colorbar.set_label("Grad-CAM (hemorrhage evidence)")
    else:
        why = ("a scan-level model: slices ranked by\nthe drop when blanked (occlusion)"
               if not slice_level else "no map given")
        side.text(0.0, 0.5, f"no Grad-CAM overlay:\n{why}", va="center", fontsize=8, color="0.3")


# --------------------------------------------------------------------------- panels


def _slice_curve(ax, slices: pd.DataFrame, replicate_columns: list[str], decision: dict, top: list[int],
                 row_of: dict[int, int]) -> None:
    x = slices["position_mm"].to_numpy(float)
    for i, column in enumerate(replicate_columns):
        p = slices[column].to_numpy(float)
        scored = np.isfinite(p)
        ax.plot(x[scored], p[scored], color="0.55", lw=0.8, alpha=0.8,
                label="replicates" if i == 0 else None, zorder=2)
    mean = slices["ensemble"].to_numpy(float)
    sd = np.nan_to_num(slices["ensemble_sd"].to_numpy(float))
    scored = np.isfinite(mean)
    n = len(replicate_columns)
    ax.fill_between(x[scored], np.clip(mean - sd, 0, 1)[scored], np.clip(mean + sd, 0, 1)[scored],
                    color=_ENSEMBLE_COLOR, alpha=0.2, lw=0, label="± sd across replicates", zorder=1)
    ax.plot(x[scored], mean[scored], color=_ENSEMBLE_COLOR, lw=2.2, marker="o", ms=2.5,
            label=f"ensemble (mean of {n})", zorder=3)
    _threshold(ax, decision)
    marked = [(x[row_of[s]], mean[row_of[s]], s) for s in top if np.isfinite(mean[row_of[s]])]
    if marked:
        ax.scatter([m[0] for m in marked], [m[1] for m in marked], s=60, facecolors="none", edgecolors=_TOP_COLOR,
                   linewidths=1.5, label="top slices (below)", zorder=4)
        for mx, my, number in marked:
            ax.annotate(str(number), (mx, my), xytext=(0, 6), textcoords="offset points", ha="center",
                        fontsize=7, color=_TOP_COLOR)
    _rug(ax, slices, "slices read")
    _axes(ax, x, "P(hemorrhage) per slice")


def _scan_level(ax, slices: pd.DataFrame, decision: dict, top: list[int], row_of: dict[int, int]) -> None:
    x = slices["position_mm"].to_numpy(float)
    span = (x.min(), x.max()) if len(x) > 1 and x.max() > x.min() else (x.min() - 1.0, x.max() + 1.0)
    p, sd = float(decision["probability"]), _sd(decision["probability_sd"])
    ax.axhspan(max(0.0, p - sd), min(1.0, p + sd), color=_ENSEMBLE_COLOR, alpha=0.2, lw=0,
               label="± sd across replicates")
    ax.hlines(p, *span, color=_ENSEMBLE_COLOR, lw=2.2, label=f"scan probability (mean of {len(decision['replicates'])})")
    ax.text(0.01, 0.97, f"{decision['kind']} model: one score per scan, no slice curve", transform=ax.transAxes,
            va="top", fontsize=8, color="0.3")
    _threshold(ax, decision)
    for i, number in enumerate(top):
        ax.axvline(x[row_of[number]], color=_TOP_COLOR, lw=0.8, ls=":", label="top slices (below)" if i == 0 else None)
    _rug(ax, slices, "slices the clip read")
    _axes(ax, x, "P(hemorrhage) of the scan")
    if "occlusion" in slices and slices["occlusion"].notna().any():
        # How much the scan's probability drops when each slice read is blanked: what the
        # score rests on, on its own axis (drops are small next to the probability scale).
        drop = slices["occlusion"].to_numpy(float)
        shown = np.isfinite(drop)
        twin = ax.twinx()
        twin.plot(x[shown], drop[shown], color="tab:orange", lw=1.4, marker="o", ms=2.5,
                  label="drop in P when a slice\nis blanked (occlusion)")
        twin.axhline(0.0, color="tab:orange", lw=0.6, alpha=0.5)
        twin.set_ylabel("drop in P if blanked", color="tab:orange")
        twin.tick_params(axis="y", colors="tab:orange")
        bound = max(float(np.abs(drop[shown]).max()), 1e-6) * 1.15
        twin.set_ylim(-bound, bound)


def _threshold(ax, decision: dict) -> None:
    # On the probability scale drawn (calibrated since ichseq calibrates: the rule's threshold
    # carried through each replicate's map, their median); older decisions: the rule's own.
    cut = float(decision.get("probability_threshold", decision["threshold"]))
    ax.axhline(cut, color="black", lw=1.0, ls="--", label=f"threshold {cut:.3g} ({decision['rule']})")


def _rug(ax, slices: pd.DataFrame, label: str) -> None:
    x = slices["position_mm"].to_numpy(float)
    read = slices["read"].to_numpy().astype(bool)
    ax.plot(x[~read], np.full((~read).sum(), 0.0), ls="none", marker="|", ms=8, color="0.8", zorder=2)
    ax.plot(x[read], np.full(read.sum(), 0.0), ls="none", marker="|", ms=8, color="0.2", label=label, zorder=2)


def _axes(ax, x: np.ndarray, ylabel: str) -> None:
    ax.set_ylim(-0.04, 1.04)
    if len(x) > 1 and x.max() > x.min():
        pad = 0.02 * (x.max() - x.min())
        ax.set_xlim(x.min() - pad, x.max() + pad)
    ax.set_xlabel("slice position (mm), inferior → superior")
    ax.set_ylabel(ylabel)
    ax.grid(True, color="0.92", lw=0.6)


def _overlay(ax, heat: np.ndarray, shape: tuple[int, int]):
    """The map stretched over the whole image (matplotlib resamples it to the image's extent),
    opaque in proportion to its value, so low-saliency tissue stays visible."""
    h, w = shape
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    return ax.imshow(heat, cmap=SALIENCY_CMAP, vmin=0.0, vmax=1.0, alpha=SALIENCY_ALPHA * heat,
                     extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear")


def _title(decision: dict, n_columns: int) -> str:
    n = len(decision["replicates"]) or n_columns
    sd = _sd(decision["probability_sd"])
    spread = f" ± {sd:.3f}" if n > 1 else ""
    # A partial scan (--allow-partial) says so where the answer is read.
    partial = " (PARTIAL scan: the rest of the head was not read)" if decision.get("partial") else ""
    # What the model was trained on, in the figure as in every other output (a figure travels alone).
    # Wrapped: the notice names the dataset and its settings, wider than the figure.
    notice = "".join(f"\n{line}" for line in textwrap.wrap(decision.get("notice") or "", TITLE_WIDTH))
    inside = decision.get("in_distribution")
    ratio = (decision.get("ood") or {}).get("score_ratio")
    if inside is False:
        notice += f"\nOUT OF DISTRIBUTION: score {ratio:.2f}x the threshold, not reliable"
    elif inside is True:
        notice += f"\nin distribution (score {ratio:.2f} of the threshold)"
    scale = " (calibrated)" if decision.get("calibrated") else ""
    return (f"{decision['scan']}: {decision['decision']}, p = {float(decision['probability']):.3f}{spread}{scale}"
            f"{partial}\n{decision['model']} ({decision['kind']}), {n} replicate{'s' if n != 1 else ''}{notice}")


def _sd(value) -> float:
    value = float(value) if value is not None else math.nan
    return 0.0 if not math.isfinite(value) else value


# --------------------------------------------------------------------------- checks


def _check(slices, images, decision, saliency) -> list[str]:
    """The replicate columns of ``slices``, after checking every argument (one-line DataErrors)."""
    if not isinstance(slices, pd.DataFrame):
        raise DataError(f"prediction figure: slices must be a DataFrame, got {type(slices).__name__}")
    for column in SLICE_COLUMNS:
        if column not in slices.columns:
            raise DataError(f"prediction figure: the slice table lacks column {column!r} "
                            f"(needs {', '.join(SLICE_COLUMNS)} and rep-<r> columns)")
    replicate_columns = sorted((c for c in slices.columns if REPLICATE_COLUMN.match(str(c))),
                               key=lambda c: int(REPLICATE_COLUMN.match(c).group(1)))
    if not replicate_columns:
        raise DataError("prediction figure: the slice table lacks replicate columns 'rep-<r>' (one per replicate)")
    if slices.empty:
        raise DataError("prediction figure: the slice table has no rows (a scan without slices?)")
    if not isinstance(decision, Mapping):
        raise DataError(f"prediction figure: decision must be a mapping, got {type(decision).__name__}")
    for key in DECISION_KEYS:
        if key not in decision:
            raise DataError(f"prediction figure: the decision lacks key {key!r} (needs {', '.join(DECISION_KEYS)})")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) != len(slices):
        raise DataError(f"prediction figure: images must be uint8 (S, H, W) with one slice per table row "
                        f"({len(slices)}), got {images.dtype} {images.shape}")
    numbers = set(int(s) for s in slices["slice"])
    unknown = [s for s in decision["top_slices"] if int(s) not in numbers]
    if unknown:
        raise DataError(f"prediction figure: top slice {unknown[0]} is not a slice of the table")
    if saliency is not None:
        for number, heat in saliency.items():
            if np.asarray(heat).ndim != 2:
                raise DataError(f"prediction figure: the saliency map of slice {number} must be 2-D, "
                                f"got shape {np.shape(heat)}")
    return replicate_columns
