"""The comparison stage of a tiny run: a report build without warnings, and statistics and
figures rules that write exactly the files they declare."""

from __future__ import annotations

from pathlib import Path

import pytest

# The tiny configuration and the Snakemake runner of the end-to-end tests, not a copy of them.
from tests.test_workflow import snakemake

pytestmark = pytest.mark.slow


def test_report_build_prints_no_docutils_warning(tiny_run):
    # A category named like the report's own "Statistics" panel made docutils print
    # 'Duplicate explicit target name: "statistics"' once per caption.
    proc = snakemake(tiny_run, "--report", "results/report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if "WARNING/" in line or "ERROR/" in line]
    assert not problems, problems[:3]
    assert "Model comparison" in (tiny_run / "results/report.html").read_text()


def _files(root: Path) -> dict[str, int]:
    """Every file under ``root`` (Snakemake's own bookkeeping aside) with its modification time."""
    return {
        str(path.relative_to(root)): path.stat().st_mtime_ns
        for path in root.rglob("*")
        if path.is_file() and ".snakemake" not in path.relative_to(root).parts
    }


def _declared(workdir: Path, rules: set[str]) -> set[str]:
    """Outputs and logs of ``rules``, as Snakemake lists them (``--summary``)."""
    proc = snakemake(workdir, "--summary")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("output_file\t")))
    declared = set()
    for line in lines[header + 1 :]:
        output, _date, rule, logs, *_ = line.split("\t")
        if rule in rules:
            declared.add(output)
            declared.update(log.strip() for log in logs.split(",") if log.strip() and log.strip() != "-")
    return declared


def test_statistics_and_figures_write_exactly_their_declared_files(tiny_run):
    rules = {"statistics", "figures", "calibration"}
    declared = _declared(tiny_run, rules)
    assert {"results/summary.md", "results/stats/tests.csv", "logs/stats/statistics.log",
            "results/figures/confusion_matrices.svg", "results/figures/reliability.svg",
            "results/stats/calibration.html", "logs/stats/calibration.log"} <= declared  # fmt: skip
    before = _files(tiny_run)
    proc = snakemake(tiny_run, "--forcerun", *sorted(rules))
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = _files(tiny_run)
    # The runner rewrites its config file on every call; nothing else may change undeclared.
    written = {path for path, mtime in after.items() if before.get(path) != mtime} - {"test-config.yaml"}
    assert written - declared == set()
    assert declared - written == set()
