"""Fan-in: every (model, replicate) run's files into the long tables the statistics read.

The collect_runs rule passes its inputs (per run: metrics, predictions, history, cost, in the
same run order) and its outputs, by name:

* ``runs.csv``         ``model,replicate,metric,value`` from every ``metrics.json`` (an empty
                       value is an undefined metric);
* ``predictions.csv``  every run's test predictions with ``model,replicate`` in front;
* ``history.csv``      every run's per-epoch history, likewise;
* ``cost.csv``         one row per run from ``cost.json``;
* ``runs.html``, ``cost.html``  the per-run metrics (one row per run, one column per
                       metric) and the cost table as pages the Snakemake report shows inline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..atomic import write_csv_atomic, write_text_atomic
from ..errors import DataError
from ..report import htmlpage
from ..columns import RUN_COLUMNS


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); rerun the train rule for this run") from None


def _identity(report: dict, path: Path) -> tuple[str, int]:
    try:
        return str(report["model"]), int(report["replicate"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: lacks model/replicate; rerun the train rule for this run") from None


def _runs_table(reports: list[tuple[Path, dict]]) -> pd.DataFrame:
    """The long table of every run's metrics; undefined metrics stay NaN (empty in the CSV)."""
    rows = []
    for path, report in reports:
        model, replicate = _identity(report, path)
        metrics = report.get("metrics")
        if not isinstance(metrics, dict) or not metrics:
            raise DataError(f"{path}: no metrics; rerun the train rule for this run")
        rows += [(model, replicate, k, float("nan") if v is None else float(v)) for k, v in metrics.items()]
    if not rows:
        raise DataError("no metrics.json to collect")
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def _stack(files: list[Path], runs: list[tuple[str, int]], name: str) -> pd.DataFrame:
    """Every run's table ``files[i]`` with ``model, replicate`` (``runs[i]``) in front."""
    frames = []
    for path, (model, replicate) in zip(files, runs):
        try:
            table = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable ({exc}); rerun the train rule for this run") from None
        table.insert(0, "replicate", replicate)
        table.insert(0, "model", model)
        frames.append(table)
    if not frames:
        raise DataError(f"no {name} to collect")
    return pd.concat(frames, ignore_index=True)


def runs_wide(runs: pd.DataFrame) -> pd.DataFrame:
    """The long runs table as one row per (model, replicate) and one column per metric, in the
    order the metrics first appear."""
    wide = runs.pivot(index=["model", "replicate"], columns="metric", values="value")
    return wide[list(dict.fromkeys(runs["metric"]))].reset_index().rename_axis(columns=None)


def _html_pages(tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    undefined = "An empty cell is an undefined metric (e.g. precision with no positive prediction)."
    return {
        "runs": htmlpage.page("Test-set metrics of every run",
                              [htmlpage.note(undefined), htmlpage.frame_table(runs_wide(tables["runs"]))]),
        "cost": htmlpage.page("Cost of every run", [htmlpage.frame_table(tables["cost"])]),
    }


#: What collect reads per run, and what it writes, by the collect_runs rule's input/output names.
INPUT_NAMES = ("metrics", "predictions", "history", "cost")
OUTPUT_NAMES = ("runs", "predictions", "history", "cost", "runs_html", "cost_html")


def collect(inputs, outputs) -> dict[str, Path]:
    """Write the long tables of every run: ``inputs`` maps each of :data:`INPUT_NAMES` to the
    runs' files (one per run, the same run order in each), ``outputs`` maps names of
    :data:`OUTPUT_NAMES` to the paths to write (any subset; nothing else is written). Returns the
    written paths by name."""
    try:
        files = {key: [Path(p) for p in inputs[key]] for key in INPUT_NAMES}
    except (KeyError, AttributeError) as exc:
        raise ValueError(f"collect: inputs must name {', '.join(INPUT_NAMES)} (missing {exc})") from None
    unknown = [key for key in outputs.keys() if key not in OUTPUT_NAMES]
    if unknown:
        raise ValueError(f"collect: unknown output(s) {', '.join(unknown)}; known: {', '.join(OUTPUT_NAMES)}")
    if len({len(v) for v in files.values()}) != 1:
        raise ValueError("collect: inputs " + ", ".join(f"{k} {len(v)}" for k, v in files.items())
                         + " differ in number of runs")
    reports = [(path, _read_json(path)) for path in files["metrics"]]  # each read once
    runs = [_identity(report, path) for path, report in reports]
    tables = {
        "runs": _runs_table(reports),
        "predictions": _stack(files["predictions"], runs, "predictions"),
        "history": _stack(files["history"], runs, "history"),
        "cost": pd.DataFrame([_read_json(p) for p in files["cost"]]),
    }
    pages = _html_pages(tables)
    paths = {}
    for key in OUTPUT_NAMES:
        if key not in outputs.keys():
            continue
        paths[key] = Path(outputs[key])
        if key.endswith("_html"):
            write_text_atomic(paths[key], pages[key.removesuffix("_html")])
        else:
            write_csv_atomic(tables[key], paths[key])
    return paths
