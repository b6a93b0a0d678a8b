"""The light modules of the data subpackage stay light: a Snakemake job that reads the slice
cache or writes the cohort does not pay for torch. (The package-wide import rules -- imports
at module top, no cycle, no private names across modules, no long function -- are checked by
tests/test_import_graph.py.)"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["cache", "cohort", "readers", "volumes", "dicom", "rsna", "cq500", "splits"])
def test_the_light_data_modules_do_not_import_torch(module):
    # Each on its own, in a fresh interpreter: its imports alone decide (and an import cycle
    # closed only by the order of imports would fail here for some module).
    code = f"import sys, ichseq.data.{module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
