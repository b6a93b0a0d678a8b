"""Fan-in of run folders into the long tables the statistics read."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from ichseq.analysis.collect import collect
from ichseq.analysis.stats import read_runs
from ichseq.errors import DataError


def make_run(root, model, rep, precision=0.5):
    run = root / model / f"rep-{rep}"
    run.mkdir(parents=True)
    metrics = {"accuracy": 0.75, "precision": precision, "tn": 3, "n_test": 4}
    (run / "metrics.json").write_text(json.dumps({"model": model, "replicate": rep, "metrics": metrics}))
    pd.DataFrame({"patient": [1, 2], "label": [0, 1], "probability": [0.2, 0.9], "prediction": [0, 1]}).to_csv(
        run / "predictions.csv", index=False)
    pd.DataFrame({"epoch": [1, 2], "train_loss": [0.7, 0.6], "val_loss": [0.7, 0.65]}).to_csv(
        run / "history.csv", index=False)
    (run / "cost.json").write_text(json.dumps({"model": model, "replicate": rep, "training_seconds": 1.5}))
    return run


def inputs(runs) -> dict:
    names = {"metrics": "metrics.json", "predictions": "predictions.csv", "history": "history.csv", "cost": "cost.json"}
    return {key: [run / name for run in runs] for key, name in names.items()}


def outputs(folder) -> dict:
    names = {"runs": "runs.csv", "predictions": "predictions.csv", "history": "history.csv", "cost": "cost.csv",
             "runs_html": "runs.html", "cost_html": "cost.html"}
    return {key: folder / name for key, name in names.items()}


def test_collect_writes_long_tables_with_undefined_metrics_empty(tmp_path, html_tables):
    runs = [make_run(tmp_path, "a", 0), make_run(tmp_path, "a", 1, precision=None), make_run(tmp_path, "b", 0)]
    paths = collect(inputs(runs), outputs(tmp_path / "out"))
    table = pd.read_csv(paths["runs"])
    assert list(table.columns) == ["model", "replicate", "metric", "value"]
    assert len(table) == 3 * 4
    row = table[(table.model == "a") & (table.replicate == 1) & (table.metric == "precision")]
    assert math.isnan(row.value.item())
    assert ",precision,\n" in paths["runs"].read_text()  # empty cell, not 0 or "None"
    # The statistics' reader takes the file as it is.
    assert read_runs(paths["runs"]).value.isna().sum() == 1
    predictions = pd.read_csv(paths["predictions"])
    assert list(predictions.columns[:2]) == ["model", "replicate"] and len(predictions) == 6
    assert len(pd.read_csv(paths["history"])) == 6
    assert pd.read_csv(paths["cost"]).training_seconds.tolist() == [1.5] * 3
    # The report's view: one row per run, one column per metric, undefined = empty cell.
    [wide] = html_tables(paths["runs_html"].read_text())
    header, rows = wide[0], wide[1:]
    assert header[:2] == ["model", "replicate"] and set(header[2:]) == set(table.metric)
    assert [r[:2] for r in rows] == [["a", "0"], ["a", "1"], ["b", "0"]]
    assert [r[header.index("precision")] for r in rows] == ["0.500", "", "0.500"]
    [cost] = html_tables(paths["cost_html"].read_text())
    assert [r[cost[0].index("training_seconds")] for r in cost[1:]] == ["1.500"] * 3


def test_broken_metrics_file_names_the_file(tmp_path):
    run = make_run(tmp_path, "a", 0)
    (run / "metrics.json").write_text("{")
    with pytest.raises(DataError, match=r"a/rep-0/metrics.json: unreadable"):
        collect(inputs([run]), outputs(tmp_path / "out"))
    (run / "metrics.json").write_text(json.dumps({"model": "a", "replicate": 0}))
    with pytest.raises(DataError, match="no metrics"):
        collect(inputs([run]), outputs(tmp_path / "out"))


def test_collect_writes_exactly_the_outputs_it_is_given(tmp_path):
    runs = [make_run(tmp_path, "a", 0), make_run(tmp_path, "b", 0)]
    out = tmp_path / "out"
    out.mkdir()
    paths = collect(inputs(runs), {"runs": out / "r.csv", "cost_html": out / "c.html"})
    assert set(paths) == {"runs", "cost_html"}
    assert sorted(p.name for p in out.iterdir()) == ["c.html", "r.csv"]
    with pytest.raises(ValueError, match="unknown output"):
        collect(inputs(runs), {"summary": out / "s.csv"})
    uneven = inputs(runs)
    uneven["cost"] = uneven["cost"][:1]
    with pytest.raises(ValueError, match="differ in number of runs"):
        collect(uneven, outputs(out))
