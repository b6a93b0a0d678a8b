"""Figures: written as PNG + SVG atomically and reproducibly, from validated tables, showing
what the data say (undefined values left out, hand-checkable means, skipped ROC runs named)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgb
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

from ichseq.analysis import figures
from ichseq.columns import RUN_COLUMNS
from ichseq.analysis.figures import (
    COST_COLUMNS,
    HISTORY_COLUMNS,
    PREDICTIONS_COLUMNS,
    confusion_matrices_figure,
    confusion_summary,
    cost_plot_figure,
    interpolate_roc,
    metric_boxplot_figure,
    metric_figures,
    model_palette,
    paired_plot_figure,
    roc_curves_figure,
    figure_paths,
    save_figure,
    training_curves_figure,
)
from ichseq.errors import DataError

MODELS = ("vivit", "convnext")  # deliberately not sorted
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# --------------------------------------------------------------------------- synthetic tables


def make_runs(n_reps: int = 4, metrics=("accuracy", "recall", "precision", "roc_auc")) -> pd.DataFrame:
    """Counts tn/fp/fn/tp per run plus rate metrics; values differ by model and replicate."""
    rows = []
    for m_i, model in enumerate(MODELS):
        for r in range(n_reps):
            counts = {"tn": 10 + r, "fp": 2 + m_i, "fn": 3 - m_i, "tp": 8 + r % 2}
            counts["n_test"] = sum(counts.values())
            for metric, value in counts.items():
                rows.append((model, r, metric, float(value)))
            for k, metric in enumerate(metrics):
                rows.append((model, r, metric, round(0.5 + 0.1 * m_i + 0.03 * r + 0.01 * k, 4)))
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def make_predictions(n_reps: int = 3, n_patients: int = 12) -> pd.DataFrame:
    rows = []
    for m_i, model in enumerate(MODELS):
        for r in range(n_reps):
            for p in range(n_patients):
                label = p % 2
                probability = ((p * 7 + r * 3 + m_i) % n_patients) / n_patients * 0.6 + 0.3 * label
                rows.append((model, r, p, label, round(probability, 4), int(probability >= 0.5)))
    return pd.DataFrame(rows, columns=list(PREDICTIONS_COLUMNS))


def make_history(n_reps: int = 3) -> pd.DataFrame:
    rows = []
    for m_i, model in enumerate(MODELS):
        for r in range(n_reps):
            n_epochs = 5 + r  # runs stop at different epochs (early stopping)
            for e in range(n_epochs):
                train = 1.0 / (e + 1) + 0.1 * m_i
                val = 1.2 / (e + 1) + 0.05 * e
                rows.append((model, r, e, train, val, 0.7, 0.6, 0.001, 2.0, int(e == 2 + r % 2)))
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


def make_cost(n_reps: int = 3) -> pd.DataFrame:
    rows = []
    for model in MODELS:
        for r in range(n_reps):
            if model == "vivit":
                rows.append((model, r, "head", "weighted", 88_600_000, 1_538, 0.0, 30.0 + r, 100.0 + 10 * r, 20, 7, 0, "cpu"))
            else:
                rows.append((model, r, "full", "none", 27_800_000, 27_800_000, 120.0, 60.0 + 2 * r, 50.0, 9, 9, 0, "cpu"))
    return pd.DataFrame(rows, columns=list(COST_COLUMNS))


# Each writer with an input table that it accepts.
WRITERS = {
    "metric_boxplot": (figures.metric_boxplot, make_runs),
    "confusion_matrices": (figures.confusion_matrices, make_runs),
    "paired_plot": (figures.paired_plot, make_runs),
    "roc_curves": (figures.roc_curves, make_predictions),
    "reliability_diagram": (figures.reliability_diagram, make_predictions),
    "training_curves": (figures.training_curves, make_history),
    "cost_plot": (figures.cost_plot, make_cost),
}


def check_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        dpi = image.info.get("dpi")
    assert 300 <= width <= 8000 and 200 <= height <= 8000
    assert dpi is not None and dpi[0] == pytest.approx(figures.DPI, abs=1)


def check_svg(path) -> ET.Element:
    root = ET.fromstring(path.read_bytes())
    assert root.tag.endswith("svg")
    return root


def svg_text(path) -> str:
    return " ".join(t.strip() for t in check_svg(path).itertext() if t.strip())


def axis_titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_visible()]


def tick_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def strip_points(ax) -> np.ndarray:
    """y values of all scatter points (run points) of an axes."""
    pts = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    pts = [np.asarray(p) for p in pts if len(p)]
    return np.concatenate(pts)[:, 1] if pts else np.empty(0)


# --------------------------------------------------------------------------- every writer


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_writer_produces_valid_reproducible_png_and_svg(tmp_path, name):
    writer, make = WRITERS[name]
    np.random.seed(1)  # the caller's global random state must not matter
    paths = writer(make(), figure_paths(tmp_path / "fig"))
    assert paths == [tmp_path / "fig.png", tmp_path / "fig.svg"]
    check_png(paths[0])
    check_svg(paths[1])
    # Nothing else (no temporary file) is left in the folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "fig.svg"]
    # The same input again gives byte-identical files.
    np.random.seed(2)
    again = writer(make(), figure_paths(tmp_path / "again"))
    for first, second in zip(paths, again):
        assert first.read_bytes() == second.read_bytes(), first.suffix


def test_svg_has_no_date_and_keeps_text(tmp_path):
    _, svg = figures.confusion_matrices(make_runs(), figure_paths(tmp_path / "cm"))
    content = svg.read_text()
    assert "<dc:date>" not in content
    assert "vivit" in svg_text(svg) and "convnext" in svg_text(svg)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_missing_column_names_the_column_and_the_table(tmp_path, name):
    writer, make = WRITERS[name]
    table = {"roc_curves": "predictions", "reliability_diagram": "predictions", "training_curves": "history", "cost_plot": "cost"}
    df = make()
    column = df.columns[2]
    with pytest.raises(DataError, match=rf"{table.get(name, 'runs')} table lacks column\(s\) {column}"):
        writer(df.drop(columns=[column]), figure_paths(tmp_path / "fig"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_empty_table_is_an_error(tmp_path, name):
    writer, make = WRITERS[name]
    with pytest.raises(DataError, match="is empty"):
        writer(make().iloc[0:0], figure_paths(tmp_path / "fig"))
    assert list(tmp_path.iterdir()) == []


def test_figures_leave_pyplot_numpy_and_rcparams_untouched(tmp_path):
    rc_before = dict(matplotlib.rcParams)
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    figures.metric_boxplot(make_runs(), figure_paths(tmp_path / "box"))  # seaborn's stripplot jitter
    figures.confusion_matrices(make_runs(), figure_paths(tmp_path / "cm"))  # seaborn's heatmap
    assert plt.get_fignums() == []
    assert dict(matplotlib.rcParams) == rc_before
    # stripplot's jitter is seeded locally; the caller's random stream goes on unchanged.
    assert np.random.random() == expected_next


# --------------------------------------------------------------------------- save_figure


def test_failure_while_rendering_leaves_no_file(tmp_path, monkeypatch):
    def broken(self, fname, *args, **kwargs):
        # Half a PNG reaches the target, then the renderer dies.
        if hasattr(fname, "write"):
            fname.write(PNG_SIGNATURE)
        else:
            with open(fname, "wb") as fh:
                fh.write(PNG_SIGNATURE)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        figures.metric_boxplot(make_runs(), figure_paths(tmp_path / "box"))
    assert list(tmp_path.iterdir()) == []


def test_failure_while_rendering_keeps_the_previous_files(tmp_path, monkeypatch):
    png, svg = figures.paired_plot(make_runs(), figure_paths(tmp_path / "paired"))
    before = png.read_bytes(), svg.read_bytes()
    real = matplotlib.figure.Figure.savefig

    def svg_breaks(self, fname, *args, format=None, **kwargs):
        if format == "svg":
            raise RuntimeError("svg writer broke")
        return real(self, fname, *args, format=format, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", svg_breaks)
    with pytest.raises(RuntimeError, match="svg writer broke"):
        figures.paired_plot(make_runs(n_reps=2), figure_paths(tmp_path / "paired"))
    assert (png.read_bytes(), svg.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paired.png", "paired.svg"]


def test_failure_while_writing_leaves_no_half_pair(tmp_path, monkeypatch):
    real = figures.write_bytes_atomic

    def svg_write_fails(path, data):
        if path.suffix == ".svg":
            raise OSError("no space left on device")
        real(path, data)

    monkeypatch.setattr(figures, "write_bytes_atomic", svg_write_fails)
    fig = confusion_matrices_figure(make_runs())
    with pytest.raises(OSError, match="no space"):
        save_figure(fig, figure_paths(tmp_path / "cm"))
    assert list(tmp_path.iterdir()) == []


def test_save_figure_writes_the_formats_its_paths_name_and_refuses_others(tmp_path):
    fig = confusion_matrices_figure(make_runs())
    paths = save_figure(fig, [tmp_path / "a.pdf", tmp_path / "b.png"])
    assert paths[0].read_bytes().startswith(b"%PDF") and paths[1].read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf", "b.png"]
    with pytest.raises(ValueError, match="must end in .png, .svg, .pdf"):
        save_figure(fig, [tmp_path / "c.jpg"])
    with pytest.raises(TypeError, match="list of files"):
        save_figure(fig, tmp_path / "d.png")


def test_stem_with_a_dot_keeps_its_name_and_folders_are_created(tmp_path):
    fig = confusion_matrices_figure(make_runs())
    paths = save_figure(fig, figure_paths(tmp_path / "sub" / "rep.1"))
    assert [p.name for p in paths] == ["rep.1.png", "rep.1.svg"]
    assert all(p.is_file() for p in paths)


# --------------------------------------------------------------------------- validation


def test_duplicate_run_rows_are_an_error():
    runs = make_runs()
    runs = pd.concat([runs, runs.iloc[[0]]], ignore_index=True)
    with pytest.raises(DataError, match="runs table has more than one row for model=vivit, replicate=0"):
        metric_boxplot_figure(runs)


def test_non_numeric_value_names_the_column():
    runs = make_runs()
    runs["value"] = runs["value"].astype(object)
    runs.loc[5, "value"] = "n/a"
    with pytest.raises(DataError, match=r"runs table: column value holds a non-numeric value 'n/a'"):
        paired_plot_figure(runs)


def test_unknown_metric_is_named():
    with pytest.raises(DataError, match="no rows for metric\\(s\\) sensitivity"):
        metric_boxplot_figure(make_runs(), metrics=["accuracy", "sensitivity"])


def test_runs_without_rate_metrics_are_an_error():
    runs = make_runs()
    counts_only = runs[runs["metric"].isin(figures.COUNT_METRICS)]
    with pytest.raises(DataError, match="no metric to plot, only the counts fn, fp, n_test, tn, tp"):
        metric_boxplot_figure(counts_only)


def test_confusion_matrices_need_all_four_counts():
    runs = make_runs()
    with pytest.raises(DataError, match=r"metric\(s\) fn.*confusion"):
        confusion_summary(runs[runs["metric"] != "fn"])


def test_not_a_dataframe_is_an_error():
    with pytest.raises(DataError, match="runs table must be a pandas DataFrame"):
        metric_boxplot_figure([("vivit", 0, "accuracy", 0.5)])


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("label", 2, "column label must hold 0 or 1, found 2"),
        ("probability", 1.5, r"column probability must lie in \[0, 1\], found 1.5"),
        ("probability", np.nan, "column probability has an empty"),
    ],
)
def test_bad_predictions_are_named(column, value, message):
    predictions = make_predictions()
    predictions[column] = predictions[column].astype(float)
    predictions.loc[3, column] = value
    with pytest.raises(DataError, match=f"predictions table: {message}"):
        roc_curves_figure(predictions)


# --------------------------------------------------------------------------- box plots


def test_boxplot_has_one_panel_per_rate_metric_in_canonical_order():
    fig = metric_boxplot_figure(make_runs(metrics=("roc_auc", "accuracy", "recall")))
    assert axis_titles(fig) == ["Accuracy", "Recall (sensitivity)", "ROC AUC"]
    # Models in sorted order whatever the row order.
    assert tick_labels(fig.axes[0]) == ["convnext", "vivit"]


def test_boxplot_draws_every_run_as_a_point():
    runs = make_runs(n_reps=5)
    fig = metric_boxplot_figure(runs, metrics=["accuracy"])
    expected = np.sort(runs.loc[runs["metric"] == "accuracy", "value"].to_numpy())
    np.testing.assert_allclose(np.sort(strip_points(fig.axes[0])), expected)


def test_boxplot_leaves_out_undefined_values_and_counts_them(tmp_path):
    runs = make_runs(n_reps=4)
    undefined = (runs["model"] == "convnext") & (runs["metric"] == "precision") & (runs["replicate"] < 2)
    runs.loc[undefined, "value"] = np.nan
    fig = metric_boxplot_figure(runs, metrics=["precision", "accuracy"])
    precision, accuracy = fig.axes[0], fig.axes[1]
    assert len(strip_points(precision)) == 8 - 2
    assert not np.isnan(strip_points(precision)).any()
    assert tick_labels(precision) == ["convnext\n(2 undefined)", "vivit"]
    assert tick_labels(accuracy) == ["convnext", "vivit"]
    _, svg = save_figure(fig, figure_paths(tmp_path / "box"))
    assert "(2 undefined)" in svg_text(svg)


def test_boxplot_keeps_a_model_whose_metric_is_always_undefined():
    runs = make_runs(n_reps=3)
    runs.loc[(runs["model"] == "vivit") & (runs["metric"] == "precision"), "value"] = np.nan
    fig = metric_boxplot_figure(runs, metrics=["precision"])
    assert tick_labels(fig.axes[0]) == ["convnext", "vivit\n(3 undefined)"]
    assert len(strip_points(fig.axes[0])) == 3


def test_boxplot_of_a_metric_undefined_everywhere_says_so():
    runs = make_runs(n_reps=3)
    runs.loc[runs["metric"] == "precision", "value"] = np.nan
    fig = metric_boxplot_figure(runs, metrics=["precision"])
    ax = fig.axes[0]
    assert len(strip_points(ax)) == 0
    assert "no defined value" in [t.get_text() for t in ax.texts]
    assert tick_labels(ax) == ["convnext\n(3 undefined)", "vivit\n(3 undefined)"]


def test_points_take_the_model_colour():
    fig = metric_boxplot_figure(make_runs(), metrics=["accuracy"])
    palette = model_palette(MODELS)
    colours = {
        tuple(np.round(to_rgb(c.get_facecolor()[0]), 6))
        for c in fig.axes[0].collections
        if isinstance(c, PathCollection) and len(c.get_offsets())
    }
    assert colours == {tuple(np.round(palette[m], 6)) for m in MODELS}


def test_metrics_may_be_one_name():
    fig = metric_boxplot_figure(make_runs(), metrics="recall")
    assert axis_titles(fig) == ["Recall (sensitivity)"]


def test_metrics_of_other_names_are_drawn_after_the_known_ones():
    # Another study's table: names this package does not know, no counts; the statistics
    # test every such metric, so the figures draw them too, in order of first appearance.
    runs = make_runs(metrics=("dice", "accuracy", "sensitivity"))
    runs = runs[~runs["metric"].isin(figures.COUNT_METRICS)]
    for make in (metric_boxplot_figure, paired_plot_figure):
        assert axis_titles(make(runs)) == ["Accuracy", "dice", "sensitivity"], make.__name__


# --------------------------------------------------------------------------- palette


def test_palette_is_fixed_by_the_sorted_names():
    a = model_palette(["vivit", "convnext", "gru"])
    b = model_palette(["gru", "convnext", "vivit", "vivit"])
    assert a == b
    assert list(a) == ["convnext", "gru", "vivit"]
    assert len(set(a.values())) == 3


# --------------------------------------------------------------------------- confusion matrices


def test_confusion_summary_mean_and_sd_by_hand():
    rows = []
    for r, (tn, fp, fn, tp) in enumerate([(10, 2, 1, 7), (12, 0, 3, 5)]):
        for metric, value in zip(("tn", "fp", "fn", "tp"), (tn, fp, fn, tp)):
            rows.append(("m", r, metric, value))
    summary = confusion_summary(pd.DataFrame(rows, columns=list(RUN_COLUMNS)))
    cell = summary.set_index(["true", "predicted"])
    assert cell.loc[(0, 0), "mean"] == 11.0 and cell.loc[(0, 1), "mean"] == 1.0
    assert cell.loc[(1, 0), "mean"] == 2.0 and cell.loc[(1, 1), "mean"] == 6.0
    # sample sd of (10, 12) is sqrt(2)
    assert cell.loc[(0, 0), "sd"] == pytest.approx(np.sqrt(2.0))
    assert set(cell["n"]) == {2}


def test_confusion_panels_are_annotated_mean_pm_sd_in_matrix_layout():
    rows = []
    for r, (tn, fp, fn, tp) in enumerate([(10, 2, 1, 7), (12, 0, 3, 5)]):
        for metric, value in zip(("tn", "fp", "fn", "tp"), (tn, fp, fn, tp)):
            rows.append(("b", r, metric, value))
            rows.append(("a", r, metric, value + 1))
    fig = confusion_matrices_figure(pd.DataFrame(rows, columns=list(RUN_COLUMNS)))
    assert axis_titles(fig) == ["a (mean of 2 runs)", "b (mean of 2 runs)"]
    ax = fig.axes[1]
    # Heatmap annotations run row by row: (true no, pred no), (no, yes), (yes, no), (yes, yes).
    assert [t.get_text() for t in ax.texts] == ["11.0 ± 1.4", "1.0 ± 1.4", "2.0 ± 1.4", "6.0 ± 1.4"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["no hemorrhage", "hemorrhage"]
    assert ax.get_ylabel() == "true" and ax.get_xlabel() == "predicted"


def test_confusion_of_a_single_run_shows_no_sd():
    runs = make_runs(n_reps=1)
    fig = confusion_matrices_figure(runs)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts and all("±" not in t for t in texts)


# --------------------------------------------------------------------------- paired plot


def test_paired_plot_joins_each_replicate_and_marks_the_means():
    runs = make_runs(n_reps=4)
    runs.loc[(runs["model"] == "vivit") & (runs["metric"] == "recall") & (runs["replicate"] == 1), "value"] = np.nan
    fig = paired_plot_figure(runs, metrics=["recall"])
    ax = fig.axes[0]
    replicate_lines = [ln for ln in ax.lines if ln.get_label() != "mean"]
    assert len(replicate_lines) == 4
    recall = runs[runs["metric"] == "recall"].pivot(index="replicate", columns="model", values="value")
    for r, line in enumerate(replicate_lines):
        np.testing.assert_allclose(line.get_ydata(), recall.loc[r, ["convnext", "vivit"]].to_numpy())
    (mean_line,) = [ln for ln in ax.lines if ln.get_label() == "mean"]
    np.testing.assert_allclose(mean_line.get_ydata(), recall[["convnext", "vivit"]].mean().to_numpy())
    assert len(strip_points(ax)) == 7  # the undefined value is not drawn
    assert tick_labels(ax) == ["convnext", "vivit\n(1 undefined)"]


# --------------------------------------------------------------------------- ROC


def test_interpolate_roc_takes_the_top_of_vertical_steps_and_is_linear_between():
    fpr, tpr = [0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0]
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    np.testing.assert_allclose(interpolate_roc(fpr, tpr, grid), [0.5, 0.75, 1.0, 1.0, 1.0])


def test_interpolation_of_an_sklearn_curve_with_ties():
    # Tied scores make diagonal segments, several positives at one FPR vertical steps.
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.9, 0.65, 0.2, 0.8])
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    steps = np.unique(fpr)
    tops = np.array([tpr[fpr == f].max() for f in steps])
    bottoms = np.array([tpr[fpr == f].min() for f in steps])
    # At each FPR of the curve: the highest TPR reached there.
    np.testing.assert_allclose(interpolate_roc(fpr, tpr, steps), tops)
    # Half-way between two FPRs: half-way from the top of one step to the foot of the next.
    middles = (steps[:-1] + steps[1:]) / 2
    np.testing.assert_allclose(
        interpolate_roc(fpr, tpr, middles), (tops[:-1] + bottoms[1:]) / 2
    )


@pytest.mark.parametrize(
    ("fpr", "tpr"),
    [([0.0, 0.6, 0.4, 1.0], [0.0, 0.5, 0.7, 1.0]), ([0.1, 1.0], [0.0, 1.0]), ([0.0], [0.0])],
)
def test_interpolate_roc_rejects_curves_that_are_not_roc_curves(fpr, tpr):
    with pytest.raises(ValueError):
        interpolate_roc(fpr, tpr, [0.0, 1.0])


def test_roc_legend_gives_mean_and_sd_of_the_runs_auc():
    predictions = make_predictions(n_reps=3)
    fig = roc_curves_figure(predictions)
    assert axis_titles(fig) == ["convnext", "vivit"]
    for ax, model in zip(fig.axes, ["convnext", "vivit"]):
        aucs = [
            roc_auc_score(run["label"], run["probability"])
            for _, run in predictions[predictions["model"] == model].groupby("replicate")
        ]
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        expected = f"mean (AUC {np.mean(aucs):.2f} ± {np.std(aucs, ddof=1):.2f})"
        assert texts == ["3 runs", expected]


def test_roc_mean_curve_is_the_vertical_average_of_the_runs():
    predictions = make_predictions(n_reps=3)
    fig = roc_curves_figure(predictions)
    runs = predictions[predictions["model"] == "vivit"]
    curves = [roc_curve(run["label"], run["probability"])[:2] for _, run in runs.groupby("replicate")]
    expected = np.mean([interpolate_roc(f, t, figures.ROC_GRID) for f, t in curves], axis=0)
    ax = fig.axes[1]
    bold = [ln for ln in ax.lines if ln.get_linewidth() > 2]
    assert len(bold) == 1
    np.testing.assert_allclose(bold[0].get_ydata(), expected)


def test_roc_skips_single_class_runs_and_names_them(tmp_path):
    predictions = make_predictions(n_reps=3)
    one_class = (predictions["model"] == "vivit") & (predictions["replicate"] == 1)
    predictions.loc[one_class, "label"] = 0
    fig = roc_curves_figure(predictions)
    assert axis_titles(fig) == ["convnext", "vivit\nreplicate(s) 1 skipped: one class only"]
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()][0] == "2 runs"


def test_roc_of_a_model_without_any_two_class_run_does_not_crash():
    predictions = make_predictions(n_reps=2)
    predictions.loc[predictions["model"] == "convnext", "label"] = 1
    fig = roc_curves_figure(predictions)
    ax = fig.axes[0]
    assert "no run has both classes" in [t.get_text() for t in ax.texts]
    assert ax.get_title() == "convnext\nreplicate(s) 0, 1 skipped: one class only"


def test_duplicate_patient_in_a_run_is_an_error():
    predictions = make_predictions()
    predictions = pd.concat([predictions, predictions.iloc[[4]]], ignore_index=True)
    with pytest.raises(DataError, match="predictions table has more than one row for model=vivit, replicate=0, patient=4"):
        roc_curves_figure(predictions)


# --------------------------------------------------------------------------- training curves


def test_training_curves_mark_the_chosen_epoch_on_the_validation_loss():
    history = make_history(n_reps=3)
    fig = training_curves_figure(history)
    assert axis_titles(fig) == ["convnext (3 runs)", "vivit (3 runs)"]
    best = history[(history["model"] == "vivit") & (history["best"] == 1)]
    stars = np.asarray(fig.axes[1].collections[0].get_offsets())
    np.testing.assert_allclose(stars, best[["epoch", "val_loss"]].to_numpy())


def test_training_mean_is_over_the_runs_that_reached_the_epoch():
    history = make_history(n_reps=3)  # runs last 5, 6 and 7 epochs
    fig = training_curves_figure(history)
    ax = fig.axes[0]  # convnext
    (mean_train,) = [ln for ln in ax.lines if ln.get_linewidth() >= 2 and ln.get_linestyle() == "-"]
    sub = history[history["model"] == "convnext"]
    expected = sub.groupby("epoch")["train_loss"].mean()
    np.testing.assert_allclose(mean_train.get_xdata(), expected.index.to_numpy())
    np.testing.assert_allclose(mean_train.get_ydata(), expected.to_numpy())


def test_training_curves_without_validation_loss_mark_on_the_training_loss(tmp_path):
    history = make_history(n_reps=2)
    history["val_loss"] = np.nan
    history["val_roc_auc"] = np.nan
    fig = training_curves_figure(history)
    best = history[(history["model"] == "convnext") & (history["best"] == 1)]
    stars = np.asarray(fig.axes[0].collections[0].get_offsets())
    np.testing.assert_allclose(stars, best[["epoch", "train_loss"]].to_numpy())
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["train loss (mean)", "chosen epoch"]
    paths = save_figure(fig, figure_paths(tmp_path / "train"))
    check_png(paths[0])


def test_duplicate_epoch_is_an_error():
    history = make_history()
    history = pd.concat([history, history.iloc[[1]]], ignore_index=True)
    with pytest.raises(DataError, match="history table has more than one row for model=vivit, replicate=0, epoch=1"):
        training_curves_figure(history)


# --------------------------------------------------------------------------- cost


def test_cost_bars_are_means_and_labels_carry_parameter_counts():
    cost = make_cost(n_reps=3)
    fig = cost_plot_figure(cost)
    training, features, throughput = fig.axes[:3]
    heights = [p.get_height() for p in training.patches]
    assert heights == pytest.approx([62.0, 31.0])  # convnext, vivit
    assert [p.get_height() for p in features.patches] == pytest.approx([120.0, 0.0])
    assert [p.get_height() for p in throughput.patches] == pytest.approx([50.0, 110.0])
    assert tick_labels(training) == [
        "convnext\n27.8 M params\n27.8 M trainable",
        "vivit\n88.6 M params\n1.5 k trainable",
    ]
    assert fig.get_suptitle().endswith("on cpu (mean ± sd over runs)")


def test_cost_names_devices_per_model_when_they_differ():
    cost = make_cost(n_reps=2)
    cost.loc[cost["model"] == "vivit", "device"] = "cuda"
    fig = cost_plot_figure(cost)
    assert tick_labels(fig.axes[0])[1].endswith("\non cuda")
    assert " on " not in fig.get_suptitle()


def test_cost_non_numeric_is_named():
    cost = make_cost()
    cost["training_seconds"] = cost["training_seconds"].astype(object)
    cost.loc[0, "training_seconds"] = "fast"
    with pytest.raises(DataError, match="cost table: column training_seconds holds a non-numeric value 'fast'"):
        cost_plot_figure(cost)


# --------------------------------------------------------------------------- metric_figures


def test_metric_figures_writes_the_three_figures(tmp_path):
    out = tmp_path / "figures"
    paths = metric_figures(make_runs(n_reps=3), out)
    names = [p.name for p in paths]
    assert names == [
        "metrics_boxplot.png",
        "metrics_boxplot.svg",
        "confusion_matrices.png",
        "confusion_matrices.svg",
        "paired_runs.png",
        "paired_runs.svg",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for p in paths[::2]:
        check_png(p)
    for p in paths[1::2]:
        check_svg(p)


@pytest.mark.parametrize("absent", [("tn", "fp", "fn", "tp"), ("fn",)])
def test_metric_figures_without_counts_skips_the_confusion_figure_with_one_line(tmp_path, absent):
    out = tmp_path / "figures"
    metric_figures(make_runs(n_reps=3), out, log=lambda _line: None)
    assert (out / "confusion_matrices.png").exists()  # from an earlier, complete table
    runs = make_runs(n_reps=3)
    lines = []
    paths = metric_figures(runs[~runs["metric"].isin(absent)], out, log=lines.append)
    assert [line for line in lines if not line.startswith("figures: ")] == [
        f"Confusion-matrix figure skipped: the runs table has no rows for {', '.join(absent)}, which it needs."
    ]
    names = ["metrics_boxplot.png", "metrics_boxplot.svg", "paired_runs.png", "paired_runs.svg"]
    assert [p.name for p in paths] == names
    # No confusion figure of the earlier table is left to pass for one of this table.
    assert sorted(p.name for p in out.iterdir()) == sorted(names)


def test_metric_figures_writes_nothing_when_the_table_is_unusable(tmp_path):
    runs = make_runs()
    with pytest.raises(DataError, match="no metric to plot"):
        metric_figures(runs[runs["metric"].isin(figures.COUNT_METRICS)], tmp_path / "figures")
    assert not (tmp_path / "figures").exists()


def test_critical_difference_without_a_defined_test_says_why():
    """With too few replicates no Friedman test is defined: the declared figure is still drawn,
    and says why, instead of failing the comparison rule."""
    fig = figures.critical_difference_figure({}, {"roc_auc": "2 replicate(s) with a value for every model, fewer than 3"})
    text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "Friedman test is undefined" in text and "fewer than 3" in text
    with pytest.raises(DataError):
        figures.critical_difference_figure({})
