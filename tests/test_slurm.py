"""The Slurm profile on a real (single-node) Slurm cluster.

Starts the cluster of workflow/tools/slurm_test_cluster.sh (root and apt-get needed: a CI
runner; elsewhere the module is skipped with the reason), runs the default pipeline with
``snakemake --profile profiles/slurm --profile profiles/slurm-test`` exactly as a user
would from a checkout, and checks it against a local run of the same pipeline. Then reruns
one replicate the documented way and checks nothing else moved.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "workflow/tools/slurm_test_cluster.sh"
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
BIN = Path(sys.executable).parent
SLURM_PROFILES = ("--profile", "profiles/slurm", "--profile", "profiles/slurm-test")
# The user's checkout trains 4 replicates (the default's 10 add nothing to what is checked here
# but minutes: the default job runs twice, under Slurm and locally).
REPLICATES = 4
MODELS = ("vivit", "convnext")

pytestmark = pytest.mark.slow


def _why_no_cluster() -> str | None:
    if os.geteuid() != 0:
        return "needs root to start slurmctld, slurmd and munged"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "no Slurm installed and no apt-get to install it"
    if DEFAULT_CONF.exists() and not DEFAULT_CONF.is_symlink():
        return f"this machine has a Slurm of its own ({DEFAULT_CONF})"
    if DEFAULT_CONF.is_symlink():
        other = Path(os.readlink(DEFAULT_CONF)).parent
        pid = other / "slurmctld.pid"
        comm = Path(f"/proc/{pid.read_text().strip()}/comm") if pid.is_file() else None
        if comm and comm.is_file() and comm.read_text().strip() == "slurmctld":
            return f"another test cluster is running from {other} (stop it: ICHSEQ_SLURM_DIR={other} {CLUSTER} stop)"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = _why_no_cluster()
    if reason:
        pytest.skip(f"Slurm test cluster: {reason}")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "ICHSEQ_SLURM_DIR": str(state), "SLURM_CONF": str(state / "slurm.conf")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # the jobs run this venv's snakemake
    if not DEFAULT_CONF.is_symlink():
        # What a test cluster killed before `stop` leaves behind: `start` must replace it.
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.symlink_to(state / "gone" / "slurm.conf")
    proc = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "replacing the stale link" in proc.stdout
    assert os.readlink(DEFAULT_CONF) == str(state / "slurm.conf")
    try:
        yield env
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, text=True, env=env, timeout=60)


def _snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "snakemake"), *args], cwd=workdir, capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def _user_checkout(copy_checkout, folder: Path) -> Path:
    """A user's checkout whose config.yaml pretrains on a smaller cohort, for 1 epoch, and trains
    REPLICATES replicates: the pretrain jobs still run as Slurm jobs, in a fraction of the
    default's minutes."""
    workdir = copy_checkout(folder)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["splits"]["replicates"] = REPLICATES
    # Both cohorts from the cartoon twin: the anatomical default builds a head atlas in each acquire job.
    config["dataset"]["synthetic"]["generator"] = "cartoon"
    config["pretrain"] = {"dataset": {"synthetic": {"n_patients": 24, "n_positive": 12, "generator": "cartoon"}},
                          "training": {"epochs": 1}}
    config["models"]["vivit"]["pretrain"]["epochs"] = 1
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory, copy_checkout):
    workdir = _user_checkout(copy_checkout, tmp_path_factory.mktemp("slurm-run") / "ichseq")
    _snakemake(workdir, *SLURM_PROFILES, env=cluster)
    _snakemake(workdir, *SLURM_PROFILES, "--report", "results/report.html", env=cluster)
    return workdir


@pytest.fixture(scope="module")
def local_run(slurm_run, tmp_path_factory, copy_checkout):
    workdir = _user_checkout(copy_checkout, tmp_path_factory.mktemp("local-run") / "ichseq")
    _snakemake(workdir, "--cores", "2")
    return workdir


def _job_ids(workdir: Path, rule: str) -> dict[str, list[int]]:
    """Slurm job ids per model, from the plugin's per-job logs, which
    profiles/slurm-test keeps: .snakemake/slurm_logs/rule_RULE/WILDCARDS/JOBID.log, the
    wildcard values joined by "_" (``vivit`` for features, ``vivit_3`` for train)."""
    ids: dict[str, list[int]] = {}
    for log in (workdir / ".snakemake/slurm_logs" / f"rule_{rule}").rglob("*.log"):
        model = log.parent.name.rsplit("_", 1)[0] if rule == "train" else log.parent.name
        ids.setdefault(model, []).append(int(log.stem))
    return ids


def _slurm_job(env: dict, job_id: int) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, env=env,
                         check=True).stdout  # fmt: skip
    return dict(re.findall(r"(\w[\w/:]*)=(\S*)", out))


def test_training_and_features_ran_as_slurm_jobs_on_the_right_partition(slurm_run, cluster):
    trains = _job_ids(slurm_run, "train")
    assert sorted(trains) == sorted(MODELS)
    assert all(len(ids) == REPLICATES for ids in trains.values()), trains
    for job_id in (i for ids in trains.values() for i in ids):
        job = _slurm_job(cluster, job_id)
        assert job["JobState"] == "COMPLETED", job
        assert job["Partition"] == "cpu" and "gpu" not in job.get("TresPerNode", "")  # head mode: no GPU
    features = _job_ids(slurm_run, "features")
    assert sorted(features) == sorted(MODELS)
    for (job_id,) in features.values():
        job = _slurm_job(cluster, job_id)
        assert job["JobState"] == "COMPLETED", job
        # The rule's gpu=1 became a GPU request, and the partition file sent it to `gpu`.
        assert job["Partition"] == "gpu" and "gpu:1" in job.get("TresPerNode", "") + job.get("TresPerJob", ""), job
    # Both demo models are pretrained, each in a GPU job of its own before its features job.
    pretrain = _job_ids(slurm_run, "pretrain")
    assert sorted(pretrain) == sorted(MODELS)
    for (job_id,) in pretrain.values():
        job = _slurm_job(cluster, job_id)
        assert job["JobState"] == "COMPLETED" and job["Partition"] == "gpu", job
    # Bookkeeping rules ran in the main process, not as jobs.
    slurm_rules = {p.name for p in (slurm_run / ".snakemake/slurm_logs").iterdir()}
    assert slurm_rules == {"rule_acquire_synthetic", "rule_brain_window", "rule_features", "rule_train",
                           "rule_acquire_pretrain_synthetic", "rule_pretrain_window", "rule_pretrain"}


def _comparable(path: Path) -> bytes:
    if path.name == "history.csv":  # wall-clock seconds per epoch differ between any two runs
        return pd.read_csv(path).drop(columns="seconds").to_csv(index=False).encode()
    return path.read_bytes()


def test_outputs_equal_a_local_run(slurm_run, local_run):
    names = ["results/data/cohort.csv", "results/metrics/runs.csv", "results/metrics/predictions.csv",
             "results/stats/tests.csv", "results/stats/summary.csv", "results/stats/confusion.csv",
             "results/stats/tables.md", "results/summary.md"]  # fmt: skip
    names += [f"results/splits/rep-{r}.json" for r in range(REPLICATES)]
    names += [f"results/pretrain/{m}/history.csv" for m in MODELS]
    names += [f"results/runs/{m}/rep-{r}/{f}" for m in MODELS for r in range(REPLICATES)
              for f in ("metrics.json", "predictions.csv", "sample_predictions.csv", "history.csv")]  # fmt: skip
    different = [n for n in names if _comparable(slurm_run / n) != _comparable(local_run / n)]
    assert not different
    assert (slurm_run / "results/report.html").stat().st_size > 1_000_000


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted((root / "results").rglob("*"))
        if p.is_file()
    }


def test_rerun_of_one_replicate_touches_nothing_else(slurm_run, cluster):
    run = "results/runs/vivit/rep-3"
    before = _snapshot(slurm_run)
    jobs_before = _job_ids(slurm_run, "train")

    # The command of docs/slurm.md (Rerun one replicate): the target before --forcerun (which takes several values).
    _snakemake(slurm_run, *SLURM_PROFILES, f"{run}/metrics.json", "--forcerun", "train", env=cluster)
    after_rerun = _snapshot(slurm_run)
    changed = {k for k in before if after_rerun.get(k) != before[k]}
    assert changed and all(k.startswith(run + "/") for k in changed), sorted(changed)
    new_jobs = {m: sorted(set(ids) - set(jobs_before[m])) for m, ids in _job_ids(slurm_run, "train").items()}
    assert len(new_jobs["vivit"]) == 1 and new_jobs["convnext"] == []
    assert _slurm_job(cluster, new_jobs["vivit"][0])["JobState"] == "COMPLETED"

    # The normal run refreshes the fan-in only.
    proc = _snakemake(slurm_run, *SLURM_PROFILES, env=cluster)
    ran = set(re.findall(r"^\s*(?:local)?rule (\w+):", proc.stdout + proc.stderr, flags=re.M)) - {"all"}
    assert ran == {"collect_runs", "statistics", "figures", "calibration", "comparison"}, ran
    after = _snapshot(slurm_run)
    fan_in = ("results/metrics/", "results/stats/", "results/figures/", "results/summary.md")
    for key, (digest, mtime) in before.items():
        if key.startswith(run + "/"):
            continue
        if key.startswith(fan_in) and "pretraining_curves" not in key:  # the pretraining is not rerun
            assert after[key][1] != mtime, f"{key} was not refreshed"
        else:
            assert after[key] == (digest, mtime), f"{key} changed"
    # On the CPU the rerun reproduces the first run.
    for name in ("metrics.json", "predictions.csv", "sample_predictions.csv"):
        assert after[f"{run}/{name}"][0] == before[f"{run}/{name}"][0], name
    assert after["results/stats/tests.csv"][0] == before["results/stats/tests.csv"][0]


def test_a_batch_of_new_scans_is_predicted_as_slurm_jobs(slurm_run, cluster):
    # The batch example of docs/predicting.md: a predict.yaml listing a folder of new scans (here a NIfTI scan
    # and the same scan as a DICOM series), then `snakemake --profile ... predict --configfile
    # predict.yaml`: one GPU job per (model, scan), every replicate of each model, nothing retrained.
    from ichseq.cli import main

    scans = slurm_run / "incoming"
    scans.mkdir()
    nifti = sorted((slurm_run / "resources").rglob("ct_scans/*.nii"))[0]
    shutil.copy(nifti, scans / "scan_a.nii")
    assert main(["to-dicom", str(nifti), str(scans / "scan_a_dicom")]) == 0
    (slurm_run / "predict.yaml").write_text(yaml.safe_dump({"predict": {"scans": ["incoming"]}}))
    trains_before = _job_ids(slurm_run, "train")
    proc = _snakemake(slurm_run, *SLURM_PROFILES, "predict", "--configfile", "predict.yaml", env=cluster)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert _job_ids(slurm_run, "train") == trains_before
    jobs = {}
    for log in (slurm_run / ".snakemake/slurm_logs/rule_predict_scan").rglob("*.log"):
        jobs[log.parent.name] = int(log.stem)
    assert sorted(jobs) == sorted(f"{m}_{s}" for m in MODELS for s in ("scan_a", "scan_a_dicom")), jobs
    for job_id in jobs.values():
        job = _slurm_job(cluster, job_id)
        assert job["JobState"] == "COMPLETED" and job["Partition"] == "gpu", job
        assert "gpu:1" in job.get("TresPerNode", "") + job.get("TresPerJob", ""), job
    for model in MODELS:
        a, b = (yaml.safe_load((slurm_run / f"results/predict/{model}/{s}/decision.json").read_text())
                for s in ("scan_a", "scan_a_dicom"))
        assert a["replicates"] == list(range(REPLICATES)) and abs(a["probability"] - b["probability"]) < 1e-5
