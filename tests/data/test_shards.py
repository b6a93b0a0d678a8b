"""The sharded slice cache (issue 26.3): an index, one job per shard, a join; the result reads as
the one-job cache does (same manifest, same pixels, same cache.json but the shard list) for
CT-ICH, CQ500 and RSNA; a shard killed mid-way leaves nothing complete and reruns to the same
bytes; bad shard counts and stray shards end in one line; Snakemake plans one job per shard and
trains on the joined cache."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ichseq.data.cache import SliceCache, ShardedRows, WindowSpec, build_cache
from ichseq.data.shard_names import shard_name
from ichseq.data.shards import build_shard, index_cache, join_shards, plan_shards
from ichseq.data.synthetic import SyntheticSpec
from ichseq.errors import ConfigError
from tests.conftest import one_line_error

ROOT = Path(__file__).resolve().parents[2]
# 10 patients (5 with hemorrhage), 32 px, 9-10 slices of 5 mm.
SPEC = SyntheticSpec(n_patients=10, n_positive=5, image_size=32, min_slices=9, max_slices=10, seed=5,
                     generator="cartoon")
SIZE = 32
QUIET = {"log": lambda _msg: None}
SOURCES = ("local", "cq500", "rsna")


pytestmark = pytest.mark.usefixtures("unchecked_dicom_ids")


@pytest.fixture(scope="module")
def datasets(small_twins) -> dict[str, Path]:
    """The same twin in the three layouts a cache reads: CT-ICH NIfTI, CQ500 zips, RSNA files."""
    return {"local": small_twins(SPEC), "cq500": small_twins(SPEC, "cq500", thin_series=False, seed=3),
            "rsna": small_twins(SPEC, "rsna", seed=3)}


def _sharded(src: Path, base: Path, source: str, shards: int = 3, workers: int = 1) -> tuple[Path, list[Path]]:
    index = base / "index"
    index_cache(src, index, WindowSpec(SIZE), shards=shards, source=source, **QUIET)
    dirs = [base / "shards" / f"shard-{shard_name(k, shards)}" for k in range(shards)]
    for k, folder in enumerate(dirs):
        build_shard(index, k, folder, workers=workers, **QUIET)
    join_shards(index, dirs, base / "cache", **QUIET)
    return index, dirs


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("source", list(SOURCES))
def test_a_sharded_cache_reads_as_the_one_job_cache(datasets, source, tmp_path):
    src = datasets[source]
    build_cache(src, tmp_path / "single", WindowSpec(SIZE), source=source, **QUIET)
    _sharded(src, tmp_path, source, workers=2)
    single, sharded = SliceCache(tmp_path / "single"), SliceCache(tmp_path / "cache")
    assert isinstance(sharded.slices, ShardedRows) and len(sharded.meta["shards"]) == 3
    assert sharded.manifest.equals(single.manifest)
    rows = np.arange(len(single.slices))
    assert np.array_equal(sharded.slices[rows], np.asarray(single.slices))
    assert np.array_equal(sharded.masks[rows], np.asarray(single.masks))
    for patient in single.patients:
        assert np.array_equal(sharded.patient_rows(patient), single.patient_rows(patient))
    drop = ("seconds", "shards")
    assert {k: v for k, v in sharded.meta.items() if k not in drop} == \
        {k: v for k, v in single.meta.items() if k not in drop}
    # The dataset's own tables come along (RSNA's header index and scans.csv, CQ500's series choice).
    single_files = {p.name for p in (tmp_path / "single").iterdir()} - {"slices.npy", "masks.npy"}
    assert {p.name for p in (tmp_path / "cache").iterdir()} == single_files
    # Each shard's pixels are its own rows: a patient lies in one shard.
    assert sum(s["slices"] for s in sharded.meta["shards"]) == len(single.slices)


def test_sharded_rows_index_like_one_array():
    parts = [np.arange(k * 100, k * 100 + n * 4).reshape(n, 2, 2) for k, n in enumerate((3, 1, 5))]
    whole = np.concatenate(parts)
    rows = ShardedRows(parts)
    assert rows.shape == whole.shape and len(rows) == 9 and rows.dtype == whole.dtype
    for index in (0, 3, 8, -1, -9):
        assert np.array_equal(rows[index], whole[index])
    for index in (slice(None), slice(2, 7), slice(None, None, -2), np.array([8, 0, 3, 3, 4]),
                  np.array([[1, 5], [7, 2]]), np.array([], dtype=int), whole[:, 0, 0] % 2 == 0):
        assert np.array_equal(rows[index], whole[index]), index
    assert np.array_equal(np.asarray(rows), whole)
    for bad in (9, -10, np.array([2, 9])):
        with pytest.raises(IndexError):
            rows[bad]


def test_shards_are_contiguous_near_equal_blocks_and_never_empty():
    blocks = plan_shards(list(range(1, 11)), 3, "data")
    assert blocks == [[1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert plan_shards([4, 9], 2, "data") == [[4], [9]]
    message = one_line_error(lambda: plan_shards([1, 2, 3], 5, "/data/rsna"), "/data/rsna", "preprocess.shards",
                             "at most 3")
    assert "2 empty" in message
    with pytest.raises(ConfigError, match="preprocess.shards"):
        plan_shards([1, 2], 0, "data")


def test_more_shards_than_scans_is_refused_before_anything_is_written(datasets, tmp_path):
    one_line_error(lambda: index_cache(datasets["rsna"], tmp_path / "index", WindowSpec(SIZE), shards=SPEC.n_patients + 1,
                                       source="rsna", **QUIET), "preprocess.shards", f"at most {SPEC.n_patients}")
    assert not (tmp_path / "index").exists()


def test_join_refuses_a_stray_shard_and_a_missing_one(datasets, tmp_path):
    index, dirs = _sharded(datasets["local"], tmp_path / "a", "local")
    # A shard of another cut of the same dataset (2 shards) does not join into this one.
    _other_index, other_dirs = _sharded(datasets["local"], tmp_path / "b", "local", shards=2)
    one_line_error(lambda: join_shards(index, [dirs[0], other_dirs[1], dirs[2]], tmp_path / "c", **QUIET),
                   str(other_dirs[1]), "another index", "rerun")
    one_line_error(lambda: join_shards(index, dirs[:2], tmp_path / "c", **QUIET), "plans 3 shards, 2 given")
    shutil.rmtree(dirs[1])
    one_line_error(lambda: join_shards(index, dirs, tmp_path / "c", **QUIET), str(dirs[1]), "not a complete shard",
                   "brain_window_shard")
    assert not (tmp_path / "c").exists()
    one_line_error(lambda: build_shard(index, 3, tmp_path / "x", **QUIET), "000-002", "not 3")


_KILLER = textwrap.dedent("""
    import os, signal, sys
    import pydicom
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    import ichseq.data.cache as cache
    from ichseq.data.shards import build_shard
    real, done = cache._process_patient, []
    def dies_on_the_second_scan(*args, **kwargs):
        if done:
            os.kill(os.getpid(), signal.SIGKILL)
        done.append(1)
        return real(*args, **kwargs)
    cache._process_patient = dies_on_the_second_scan
    build_shard(sys.argv[1], 1, sys.argv[2], log=lambda _m: None)
""")


def test_a_shard_killed_mid_way_leaves_nothing_complete_and_reruns_to_the_same_bytes(datasets, tmp_path):
    index, dirs = _sharded(datasets["rsna"], tmp_path, "rsna")
    before = _digest(dirs[1])
    shutil.rmtree(dirs[1])
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(index), str(dirs[1])], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not dirs[1].exists()
    leftovers = [p for p in dirs[1].parent.iterdir() if p.name not in {d.name for d in dirs}]
    assert leftovers and all("ichseq-tmp" in p.name for p in leftovers)
    build_shard(index, 1, dirs[1], **QUIET)
    assert _digest(dirs[1]) == before
    # The dead job's temporary folder is swept by the rerun writing beside it.
    assert sorted(p.name for p in dirs[1].parent.iterdir()) == sorted(d.name for d in dirs)
    join_shards(index, dirs, tmp_path / "again", **QUIET)
    assert (tmp_path / "again/manifest.csv").read_bytes() == (tmp_path / "cache/manifest.csv").read_bytes()


# --------------------------------------------------------------------------- workflow


@pytest.mark.slow
def test_snakemake_runs_one_job_per_shard_trains_on_the_joined_cache_and_reruns_a_lost_shard_alone(datasets, tmp_path):
    from tests.test_workflow import TINY, snakemake

    config = {**json.loads(json.dumps(TINY)), "dataset": {"source": "rsna", "rsna": {"path": str(datasets["rsna"])}},
              "preprocess": {"image_size": SIZE, "shards": 3}, "splits": {"replicates": 2, "test_fraction": 0.3,
                                                                             "val_fraction": 0.25}}
    proc = snakemake(tmp_path, "-n", "--quiet", "rules", config=config)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = {line.split()[0]: line.split()[1] for line in out.splitlines() if len(line.split()) == 2
              and line.split()[1].isdigit()}
    assert counts["brain_window_shard"] == "3" and counts["cache_index"] == "1" and counts["brain_window"] == "1"
    targets = ["results/runs/convnext/rep-0/metrics.json", "results/runs/vivit/rep-1/metrics.json"]
    proc = snakemake(tmp_path, *targets, config=config)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    meta = json.loads((tmp_path / "results/data/cache/cache.json").read_text())
    assert [s["path"] for s in meta["shards"]] == [f"../shards/shard-{k:03d}" for k in range(3)]
    assert not (tmp_path / "results/data/cache/slices.npy").exists()
    for target in targets:
        assert json.loads((tmp_path / target).read_text())["metrics"]["n_test"] > 0
    shard = tmp_path / "results/data/shards/shard-001"
    before = _digest(shard)
    # Killed mid-way: the job's shard is missing and the join never ran; the others are done.
    shutil.rmtree(shard)
    shutil.rmtree(tmp_path / "results/data/cache")
    again = snakemake(tmp_path, "results/data/cache", "--quiet", "rules", config=config)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    ran = re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", out)
    assert sorted(ran) == ["brain_window", "brain_window_shard"], out[-3000:]
    assert _digest(shard) == before
    assert "shard 001 written" in (tmp_path / "logs/data/brain_window/shard-001.log").read_text()


@pytest.mark.slow
def test_slurm_dry_run_plans_one_bounded_cache_job_per_shard(datasets, tmp_path, copy_checkout):
    from tests.test_profiles import by_rule, planned_jobs

    checkout = copy_checkout(tmp_path / "ichseq")
    config = {"dataset": {"source": "rsna", "rsna": {"path": str(datasets["rsna"])}}, "preprocess": {"shards": 5}}
    jobs = planned_jobs(checkout, "--profile", "profiles/slurm", config=config)
    shards = by_rule(jobs, "brain_window_shard")
    assert len(shards) == 5 and all(res["mem_mb"] == "2000" for res in shards)
    assert len(by_rule(jobs, "cache_index")) == 1 and len(by_rule(jobs, "brain_window")) == 1
    # One shard: the one-job rule, as before.
    jobs = planned_jobs(checkout, "--profile", "profiles/slurm", config={**config, "preprocess": {"shards": 1}})
    assert len(by_rule(jobs, "brain_window")) == 1 and not [r for r, _ in jobs if r in ("cache_index",
                                                                                         "brain_window_shard")]
