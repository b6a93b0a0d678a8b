"""Fan-in: every (model, replicate) run folder into the long tables the statistics read.

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
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..atomic import write_csv_atomic, write_text_atomic
from ..errors import DataError
from ..report import htmlpage
from .columns import RUN_COLUMNS


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


def _stack(runs: list[tuple[Path, str, int]], name: str) -> pd.DataFrame:
    """Every run's ``name`` table with ``model, replicate`` in front; ``runs`` holds
    (folder, model, replicate)."""
    frames = []
    for run, model, replicate in runs:
        try:
            table = pd.read_csv(run / name)
        except (OSError, ValueError) as exc:
            raise DataError(f"{run / name}: unreadable ({exc}); rerun the train rule for this run") from None
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


def collect(run_dirs: Iterable[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Write runs.csv, predictions.csv, history.csv, cost.csv, runs.html and cost.html for
    ``run_dirs`` into ``out_dir``; returns their paths keyed by name (``runs_html`` etc.)."""
    run_dirs = [Path(p) for p in run_dirs]
    out = Path(out_dir)
    reports = [(p / "metrics.json", _read_json(p / "metrics.json")) for p in run_dirs]  # each read once
    runs = [(p, *_identity(report, path)) for p, (path, report) in zip(run_dirs, reports)]
    tables = {
        "runs": _runs_table(reports),
        "predictions": _stack(runs, "predictions.csv"),
        "history": _stack(runs, "history.csv"),
        "cost": pd.DataFrame([_read_json(p / "cost.json") for p in run_dirs]),
    }
    paths = {}
    for name, table in tables.items():
        paths[name] = out / f"{name}.csv"
        write_csv_atomic(table, paths[name])
    for name, text in _html_pages(tables).items():
        paths[f"{name}_html"] = out / f"{name}.html"
        write_text_atomic(paths[f"{name}_html"], text)
    return paths
