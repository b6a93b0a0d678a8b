"""The per-scan prediction figure (ichseq.inference.figure): what the curve panel draws for a
slice-level and a scan-level model, the title and Grad-CAM labelling, the files it writes, and
one-line refusals of incomplete input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ichseq.errors import DataError
from ichseq.inference.figure import SLICE_COLUMNS, prediction_figure, prediction_figure_object

N_SLICES = 14
REPLICATES = [0, 3, 5]


def slice_table(scan_level: bool = False) -> pd.DataFrame:
    """A scan of 14 slices 5 mm apart whose slice scores peak at slice 9 (three replicates), or
    a scan-level model's table: every replicate column NaN, every other slice read."""
    rng = np.random.default_rng(0)
    numbers = np.arange(N_SLICES)
    table = pd.DataFrame({"slice": numbers, "position_mm": 10.0 + 5.0 * numbers,
                          "read": (numbers % 2 == 0).astype(int) if scan_level else np.ones(N_SLICES, int)})
    peak = np.exp(-(((numbers - 9) / 2.0) ** 2))
    for r in REPLICATES:
        table[f"rep-{r}"] = np.nan if scan_level else np.clip(0.9 * peak + rng.normal(0, 0.05, N_SLICES), 0, 1)
    columns = [f"rep-{r}" for r in REPLICATES]
    table["ensemble"] = table[columns].mean(axis=1)
    table["ensemble_sd"] = table[columns].std(axis=1)
    return table


def images() -> np.ndarray:
    yy, xx = np.mgrid[:40, :40]
    head = (180 * np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / 200.0)).astype(np.uint8)
    return np.repeat(head[None], N_SLICES, axis=0)


def decision(table: pd.DataFrame, **extra) -> dict:
    top = [int(s) for s in table.sort_values("ensemble", ascending=False)["slice"][:3]]
    return {"scan": "patient-049", "model": "convnext", "kind": "slice", "probability": 0.871,
            "probability_sd": 0.042, "decision": "hemorrhage", "rule": "max", "threshold": 0.35,
            "replicates": REPLICATES, "top_slices": top, **extra}


def saliency_of(top) -> dict[int, np.ndarray]:
    heat = np.zeros((5, 5), np.float32)
    heat[1, 3] = 1.0
    return {s: heat for s in top}


def line_with_label(ax, text: str):
    return next(line for line in ax.get_lines() if text in line.get_label())


def test_slice_level_figure_draws_the_curves_threshold_and_top_slices_with_grad_cam(tmp_path):
    table = slice_table()
    made = decision(table)
    fig = prediction_figure_object(table, images(), made, saliency_of(made["top_slices"]))
    curve = fig.axes[0]
    ensemble = line_with_label(curve, "ensemble")
    assert np.allclose(ensemble.get_ydata(), table["ensemble"]) and np.allclose(ensemble.get_xdata(), table["position_mm"])
    grey = [line for line in curve.get_lines() if line.get_color() == "0.55"]
    assert len(grey) == len(REPLICATES)
    threshold = line_with_label(curve, "threshold")
    assert set(threshold.get_ydata()) == {0.35} and "(max)" in threshold.get_label()
    panels = [ax for ax in fig.axes if ax.get_images()]  # the top slices' panels, best first
    titles = [ax.get_title() for ax in panels]
    assert titles == [f"slice {s}, p={table.ensemble[s]:.2f}" for s in made["top_slices"]]
    # Each top slice's panel: the windowed slice and the Grad-CAM overlay over it.
    assert [len(ax.get_images()) for ax in panels] == [2, 2, 2]
    assert "hemorrhage, p = 0.871 ± 0.042" in fig.get_suptitle()
    assert "convnext (slice), 3 replicates" in fig.get_suptitle()

    paths = prediction_figure(table, images(), made, saliency_of(made["top_slices"]),
                              [tmp_path / "fig.png", tmp_path / "fig.svg"])
    assert paths == [tmp_path / "fig.png", tmp_path / "fig.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 10_000
    svg = paths[1].read_text()
    assert "patient-049: hemorrhage, p = 0.871 ± 0.042" in svg and "Grad-CAM" in svg
    assert f"slice {made['top_slices'][0]}, p=" in svg


def test_scan_level_figure_shows_the_scan_probability_and_the_slices_read(tmp_path):
    table = slice_table(scan_level=True)
    made = decision(table, kind="sequence", model="vivit", decision="no hemorrhage", probability=0.21,
                    probability_sd=0.05, threshold=0.5, rule="scan probability", top_slices=[4, 8])
    fig = prediction_figure_object(table, images(), made, None)
    curve = fig.axes[0]
    texts = " ".join(t.get_text() for t in curve.texts)
    assert "one score per scan, no slice curve" in texts
    scan_line = next(c for c in curve.collections if "scan probability" in c.get_label())
    assert np.allclose(scan_line.get_segments()[0][:, 1], 0.21)
    read = line_with_label(curve, "slices the clip read")
    assert np.allclose(read.get_xdata(), table.position_mm[table.read == 1])
    assert not any("ensemble" in line.get_label() for line in curve.get_lines())  # no slice curve
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["slice 4", "slice 8"]
    assert [len(ax.get_images()) for ax in panels] == [1, 1]  # no overlay

    paths = prediction_figure(table, images(), made, None, [tmp_path / "scan.svg", tmp_path / "scan.png"])
    svg = paths[0].read_text()
    assert "no hemorrhage, p = 0.210 ± 0.050" in svg and "vivit (sequence)" in svg
    assert "Grad-CAM (hemorrhage evidence)" not in svg and "no Grad-CAM overlay" in svg
    assert paths[1].stat().st_size > 10_000


def test_the_same_input_writes_the_same_files(tmp_path):
    table = slice_table()
    made = decision(table)
    first = prediction_figure(table, images(), made, saliency_of(made["top_slices"]),
                              [tmp_path / "a.png", tmp_path / "a.svg"])
    second = prediction_figure(table, images(), made, saliency_of(made["top_slices"]),
                               [tmp_path / "b.png", tmp_path / "b.svg"])
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


@pytest.mark.parametrize("column", SLICE_COLUMNS)
def test_a_table_missing_a_column_is_refused_in_one_line_and_nothing_written(tmp_path, column):
    table = slice_table().drop(columns=column)
    with pytest.raises(DataError, match=f"lacks column '{column}'") as err:
        prediction_figure(table, images(), decision(slice_table()), None, [tmp_path / "f.png", tmp_path / "f.svg"])
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("breaks, match", [
    (lambda t, i, d: (t.drop(columns=[c for c in t if c.startswith("rep-")]), i, d), "lacks replicate columns"),
    (lambda t, i, d: (t, i, {k: v for k, v in d.items() if k != "threshold"}), "lacks key 'threshold'"),
    (lambda t, i, d: (t, i[:-1], d), r"one slice per table row \(14\)"),
    (lambda t, i, d: (t, i, {**d, "top_slices": [99]}), "top slice 99 is not a slice"),
])
def test_other_bad_input_is_refused_in_one_line(tmp_path, breaks, match):
    table = slice_table()
    args = breaks(table, images(), decision(table))
    with pytest.raises(DataError, match=match):
        prediction_figure(*args, None, [tmp_path / "f.png"])
    assert not list(tmp_path.iterdir())


def test_title_wraps_the_notice_and_says_the_distribution_check_and_the_scale():
    from ichseq.inference.figure import TITLE_WIDTH, _title

    table = slice_table()
    notice = "trained on SYNTHETIC data only (" + "a long generator description, " * 8 + "): NOT FOR CLINICAL USE"
    inside = decision(table, notice=notice, calibrated=True, in_distribution=True, ood={"score_ratio": 0.65},
                      probability_threshold=0.547)
    title = _title(inside, 3)
    assert "p = 0.871 ± 0.042 (calibrated)" in title
    assert all(len(line) <= TITLE_WIDTH for line in title.splitlines()[2:])
    assert "NOT FOR CLINICAL USE" in title.replace("\n", " ")
    assert title.splitlines()[-1] == "in distribution (score 0.65 of the threshold)"
    out = _title(decision(table, in_distribution=False, ood={"score_ratio": 2.5}), 3)
    assert "OUT OF DISTRIBUTION: score 2.50x the threshold" in out and "(calibrated)" not in out
    assert "distribution" not in _title(decision(table), 3)  # not checked: nothing said
    # The dashed line is the rule's threshold on the probabilities drawn: the calibrated one.
    fig = prediction_figure_object(table, images(), inside, None)
    assert line_with_label(fig.axes[0], "threshold").get_ydata()[0] == pytest.approx(0.547)
