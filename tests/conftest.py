"""Shared fixtures: tiny synthetic datasets in both published layouts.

Session-scoped and read-only: a test that wants to damage a dataset copies it first
(``copy_dataset``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

# Never let a test reach for the Hugging Face hub (a lookup hangs ~23 s before failing).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The head atlas of the anatomical twin is built once for the whole session (its processes and
# the workflows' jobs inherit this) and cached in a temporary folder, not the user's ~/.cache.
SESSION_CACHE = None if "ICHSEQ_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="ichseq-test-cache-")
if SESSION_CACHE:
    os.environ["ICHSEQ_CACHE_DIR"] = SESSION_CACHE

import pytest

from ichseq.data.convert import export_jpg_layout
from ichseq.data.synthetic import SyntheticSpec, generate_synthetic

ROOT = Path(__file__).resolve().parents[1]

# 8 patients, 4 with hemorrhage, 64x64 pixels, 12-16 slices, the cartoon generator: generated in well
# under a second. The test suite keeps to the cartoon twin; the anatomical one has tests of its own.
TINY_SPEC = SyntheticSpec(n_patients=8, n_positive=4, image_size=64, min_slices=12, max_slices=16, seed=7,
                          generator="cartoon")


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", dest="run_all",
                     help="run every test, the slow ones too (end-to-end Snakemake runs, the report, Slurm): "
                          "what CI runs")


def pytest_collection_modifyitems(config, items):
    # Plain `pytest` is the fast loop: the unit tests. The slow tests run with --all, with a
    # marker expression of one's own (-m slow), or when named (a file, folder or test id).
    named = config.args_source != pytest.Config.ArgsSource.TESTPATHS
    if config.getoption("run_all") or config.getoption("markexpr") or named:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def pytest_sessionfinish(session, exitstatus):
    if SESSION_CACHE:  # ~0.5 GB of atlas levels
        shutil.rmtree(SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_spec() -> SyntheticSpec:
    return TINY_SPEC


@pytest.fixture(scope="session")
def nifti_dataset(tmp_path_factory):
    """A tiny synthetic dataset in the v1.3.1 (NIfTI) layout; do not modify it."""
    dest = tmp_path_factory.mktemp("nifti") / "ct-ich"
    generate_synthetic(dest, TINY_SPEC, log=lambda _msg: None)
    return dest


@pytest.fixture(scope="session")
def jpg_dataset(nifti_dataset, tmp_path_factory):
    """The same scans in the v1.0.0 (JPG) layout; do not modify it."""
    dest = tmp_path_factory.mktemp("jpg") / "ct-ich-jpg"
    return export_jpg_layout(nifti_dataset, dest)


@pytest.fixture
def copy_dataset(tmp_path):
    """Copy a session dataset into this test's tmp_path so the test may damage it."""

    def _copy(src):
        dest = tmp_path / src.name
        shutil.copytree(src, dest)
        return dest

    return _copy


def _copy_checkout(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("workflow", "profiles"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.fixture(scope="session")
def copy_checkout():
    """A function: folder -> that folder holding the files of a user's checkout that the
    pipeline needs (Snakefile, config, workflow, profiles), without any results."""
    return _copy_checkout


class _TableParser(HTMLParser):
    """Every ``<table>`` of a page as a list of rows of cell texts (header row first)."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture
def html_tables():
    """A function: HTML text -> its tables, each a list of rows of cell texts."""

    def parse(text: str) -> list[list[list[str]]]:
        parser = _TableParser()
        parser.feed(text)
        return parser.tables

    return parse


#: The train rule's outputs by name, as files of one run folder (train_run writes what it is given).
RUN_FILES = {"metrics": "metrics.json", "predictions": "predictions.csv", "sample_predictions": "sample_predictions.csv",
             "history": "history.csv", "cost": "cost.json", "model": "model"}


def generate_capturing(dest, spec) -> tuple[dict, dict]:
    """``generate_synthetic(dest, spec)`` quietly, returning the in-memory scans it wrote (by
    patient) and its summary."""
    from ichseq.data import synthetic

    scans: dict = {}
    original = synthetic.synthesize_scan

    def capture(patient, positive, spec_):
        scans[patient] = original(patient, positive, spec_)
        return scans[patient]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synthetic, "synthesize_scan", capture)
        summary = generate_synthetic(dest, spec, log=lambda _msg: None)
    return scans, summary


def run_outputs(folder) -> dict[str, Path]:
    """train_run's ``outputs`` for a run folder laid out as the train rule lays it out."""
    return {key: Path(folder) / name for key, name in RUN_FILES.items()}


def fail_on_call(monkeypatch, owner, name: str, call: int, error: BaseException) -> list:
    """Make ``owner.name`` raise ``error`` on its ``call``-th call; the calls before run as usual.

    Injects a failure partway through a job (a full disk, a corrupt file) to check that it leaves
    nothing that looks complete. Returns the list of calls' arguments, filled as they happen."""
    original = getattr(owner, name)
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == call:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)
    return calls


@pytest.fixture(scope="session")
def tiny_run_source(tmp_path_factory):
    """The end-to-end run of the tiny configuration, made once per test session."""
    from tests.test_workflow import snakemake

    workdir = tmp_path_factory.mktemp("tiny-run")
    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def tiny_run(tiny_run_source, tmp_path_factory):
    """A test module's own copy of the tiny run (its tests may force reruns or break files)."""
    dest = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(tiny_run_source, dest, symlinks=True)
    return dest


@contextmanager
def mounted_tmpfs(path, size: str = "1m", read_only: bool = False):
    """A real small filesystem at ``path`` (made if needed), for full-disk and read-only tests:
    a tmpfs of ``size`` bytes ("1m", "300k"), mounted read-only when asked. Needs root (as CI and
    the development machines run); skipped, saying why, where mounting is not permitted."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def one_line_error(call, *needles) -> str:
    """The message of the DataError ``call()`` raises, checked to be one line holding each of
    ``needles``."""
    from ichseq.errors import DataError

    with pytest.raises(DataError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message
