"""What the Slurm profiles make each job ask for, read from Snakemake's own dry run.

A dry run needs no Slurm installed (the plugin only submits when it runs), so these run
everywhere; tests/test_slurm.py runs the profiles on a real Slurm where it can.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


@pytest.fixture
def checkout(tmp_path, copy_checkout):
    return copy_checkout(tmp_path)


def planned_jobs(workdir: Path, *args: str, config: dict | None = None) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run plans, in its order."""
    extra = []
    if config:
        (workdir / "override.yaml").write_text(yaml.safe_dump(config))
        extra = ["--configfile", "override.yaml"]
    # --cores: a dry run caps threads (and so cpus_per_task) at its cores, which a Slurm run does not.
    proc = subprocess.run([str(SNAKEMAKE), "-n", "--cores", "64", *args, *extra], cwd=workdir,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = []
    for block in proc.stdout.split("\n\n"):
        lines = block.strip().splitlines()
        rule = next((ln.split()[-1].rstrip(":") for ln in lines if ln.startswith(("rule ", "localrule "))), None)
        if rule is None or rule == "all":
            continue
        line = next((ln for ln in lines if ln.strip().startswith("resources:")), "resources: ")
        pairs = line.split(":", 1)[1].split(",")
        jobs.append((rule, dict(p.strip().split("=", 1) for p in pairs if "=" in p)))
    return jobs


def by_rule(jobs, rule):
    found = [res for name, res in jobs if name == rule]
    assert found, f"no {rule} job planned"
    return found


def test_slurm_profile_gives_every_job_memory_time_and_cpus_and_gpus_only_to_features(checkout):
    jobs = planned_jobs(checkout, "--profile", "profiles/slurm")
    assert len(by_rule(jobs, "train")) == 20
    for rule, res in jobs:
        assert int(res["mem_mb"]) > 0 and int(res["runtime"]) > 0 and int(res["cpus_per_task"]) >= 1, (rule, res)
    for res in by_rule(jobs, "features"):
        assert res["gpu"] == "1" and res["cpus_per_task"] == "4"
    for res in by_rule(jobs, "train"):  # head mode: a classifier on cached features, no GPU
        assert res["gpu"] == "0" and res["cpus_per_task"] == "1" and res["runtime"] == "30"
    assert not any("slurm_account" in res for _, res in jobs)


def test_site_profile_layers_account_and_gpu_model_over_the_slurm_profile(checkout):
    jobs = planned_jobs(checkout, "--profile", "profiles/slurm", "--profile", "profiles/slurm/site-example")
    for rule, res in jobs:
        assert res.get("slurm_account") == "my_lab_account", rule
        assert int(res["mem_mb"]) > 0 and int(res["runtime"]) > 0, rule  # the layered list keeps these
    for res in by_rule(jobs, "features"):
        assert res["gpu"] == "1" and res["gpu_model"] == "a100"
    assert all("gpu_model" not in res for rule, res in jobs if rule != "features")


def test_full_mode_training_asks_for_a_gpu_and_more_time_and_cpu_only_asks_for_none(checkout):
    config = {"models": {"convnext": {"training": {"mode": "full"}}}}
    jobs = planned_jobs(checkout, "--profile", "profiles/slurm", config=config)
    train = [res for rule, res in jobs if rule == "train"]
    full = [res for res in train if res["mem_mb"] == "16000"]
    assert len(full) == 10  # convnext's replicates; vivit stays in head mode
    assert all(res["gpu"] == "1" and res["runtime"] == "240" and res["cpus_per_task"] == "4" for res in full)
    assert all(res["gpu"] == "0" for res in train if res not in full)
    assert len(by_rule(jobs, "features")) == 1  # full mode trains through the backbone: no cached features

    jobs = planned_jobs(checkout, "--profile", "profiles/slurm", config={"training": {"device": "cpu"}})
    assert all(res.get("gpu", "0") == "0" for _, res in jobs)


def test_a_time_limit_can_be_set_on_the_command_line(checkout):
    jobs = planned_jobs(checkout, "--profile", "profiles/slurm", "--set-resources", "train:runtime=7*attempt")
    assert {res["runtime"] for res in by_rule(jobs, "train")} == {"7"}
