"""What the Slurm profiles make each job ask for, read from Snakemake's own dry run; the
profiles installed by name (`ichseq profile install`), and the workflow profile.

A dry run needs no Slurm installed (the plugin only submits when it runs), so these run
everywhere; tests/test_slurm.py runs the profiles on a real Slurm where it can.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ichseq.errors import ConfigError
from ichseq.profiles import PROFILES_DIR, available_profiles, install_profile, snakemake_config_dir

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
ICHSEQ = Path(sys.executable).with_name("ichseq")


@pytest.fixture
def checkout(tmp_path, copy_checkout):
    return copy_checkout(tmp_path)


def planned_jobs(workdir: Path, *args: str, config: dict | None = None, env: dict | None = None
                 ) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run plans, in its order."""
    extra = []
    if config:
        (workdir / "override.yaml").write_text(yaml.safe_dump(config))
        extra = ["--configfile", "override.yaml"]
    # --cores: a dry run caps threads (and so cpus_per_task) at its cores, which a Slurm run does not.
    proc = subprocess.run([str(SNAKEMAKE), "-n", "--cores", "64", *args, *extra], cwd=workdir,
                          capture_output=True, text=True, timeout=300, env=env)
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


@pytest.mark.slow
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


# --------------------------------------------------------------------------- per-rule threads


def test_threads_of_each_rule_come_from_the_config(checkout):
    config = {"threads": {"brain_window": 2, "features": 3, "train_head": 2, "train_full": 5},
              "models": {"convnext": {"training": {"mode": "full"}}}}
    jobs = planned_jobs(checkout, "--profile", "profiles/slurm", config=config)
    assert [res["cpus_per_task"] for res in by_rule(jobs, "brain_window")] == ["2"]
    assert [res["cpus_per_task"] for res in by_rule(jobs, "features")] == ["3"]  # vivit's; convnext trains in full
    train = by_rule(jobs, "train")
    assert sorted(res["cpus_per_task"] for res in train) == ["2"] * 10 + ["5"] * 10
    assert all(res["cpus_per_task"] == "5" for res in train if res["mem_mb"] == "16000")  # the full-mode ones


def test_max_threads_caps_every_job_to_what_a_node_has(checkout):
    jobs = planned_jobs(checkout, "--profile", "profiles/slurm", "--max-threads", "2")
    assert {res["cpus_per_task"] for rule, res in jobs if rule in ("brain_window", "features")} == {"2"}
    assert all(int(res["cpus_per_task"]) <= 2 for _, res in jobs)


# --------------------------------------------------------------------------- ichseq profile install


@pytest.fixture
def repo_profiles(tmp_path):
    """A profiles/ folder like the repository's, to install from without touching the real one."""
    root = tmp_path / "repo-profiles"
    shutil.copytree(PROFILES_DIR, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_install_copies_the_whole_profile_folder_and_a_second_install_changes_nothing(repo_profiles, tmp_path):
    dest = tmp_path / "config"
    target, done = install_profile("slurm", dest, profiles_dir=repo_profiles)
    assert (target, done) == (dest / "slurm", "installed")
    assert not target.is_symlink() and _files(target) == _files(repo_profiles / "slurm")
    assert "site-example/partitions.yaml" in _files(target)  # relative paths keep their files
    stamp = (target / "config.yaml").stat().st_mtime_ns
    assert install_profile("slurm", dest, profiles_dir=repo_profiles) == (target, "unchanged")
    assert (target / "config.yaml").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in dest.iterdir()) == ["slurm"]  # no staging folder left behind


def test_install_link_points_at_the_checkout(repo_profiles, tmp_path):
    target, done = install_profile("local", tmp_path / "config", link=True, profiles_dir=repo_profiles)
    assert done == "installed" and target.is_symlink() and target.resolve() == (repo_profiles / "local").resolve()
    assert install_profile("local", tmp_path / "config", link=True, profiles_dir=repo_profiles)[1] == "unchanged"


def test_a_different_profile_of_that_name_is_kept_unless_forced(repo_profiles, tmp_path):
    dest = tmp_path / "config"
    (dest / "slurm").mkdir(parents=True)
    (dest / "slurm" / "config.yaml").write_text("executor: slurm\njobs: 7\n")
    with pytest.raises(ConfigError) as refused:
        install_profile("slurm", dest, profiles_dir=repo_profiles)
    message = str(refused.value)
    assert "\n" not in message and str(dest / "slurm") in message and "--force" in message and "--name" in message
    assert _files(dest / "slurm") == {"config.yaml": b"executor: slurm\njobs: 7\n"}

    assert install_profile("slurm", dest, as_name="ichseq-slurm", profiles_dir=repo_profiles)[1] == "installed"
    assert install_profile("slurm", dest, force=True, profiles_dir=repo_profiles)[1] == "replaced"
    assert _files(dest / "slurm") == _files(repo_profiles / "slurm")


def test_forcing_a_copy_over_a_link_leaves_the_linked_checkout_alone(repo_profiles, tmp_path):
    dest = tmp_path / "config"
    before = _files(repo_profiles / "slurm")
    install_profile("slurm", dest, link=True, profiles_dir=repo_profiles)
    with pytest.raises(ConfigError, match="differs"):  # a link is not the copy that was asked for
        install_profile("slurm", dest, profiles_dir=repo_profiles)
    assert install_profile("slurm", dest, force=True, profiles_dir=repo_profiles)[1] == "replaced"
    assert not (dest / "slurm").is_symlink() and _files(dest / "slurm") == before
    assert _files(repo_profiles / "slurm") == before
    # and back, over a copy and over a link whose checkout is gone
    assert install_profile("slurm", dest, link=True, force=True, profiles_dir=repo_profiles)[1] == "replaced"
    (dest / "slurm").unlink()
    (dest / "slurm").symlink_to(tmp_path / "moved-checkout")
    assert install_profile("slurm", dest, link=True, force=True, profiles_dir=repo_profiles)[1] == "replaced"
    assert (dest / "slurm").resolve() == (repo_profiles / "slurm").resolve()


@pytest.mark.parametrize(("name", "message"), [
    ("nope", "no profile 'nope' in"),
    ("default", "profiles/default is the workflow profile"),
])
def test_unknown_profile_names_the_available_ones(repo_profiles, tmp_path, name, message):
    with pytest.raises(ConfigError, match=message) as refused:
        install_profile(name, tmp_path / "config", profiles_dir=repo_profiles)
    assert "local, slurm, slurm-test" in str(refused.value)
    assert not (tmp_path / "config").exists()


def test_default_destination_is_where_snakemake_looks_and_follows_xdg_config_home(monkeypatch, tmp_path):
    from snakemake.common import get_appdirs

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert snakemake_config_dir() == tmp_path / "xdg" / "snakemake"
    assert snakemake_config_dir() == Path(get_appdirs().user_config_dir)


@pytest.mark.slow
def test_snakemake_finds_the_installed_profile_by_name(tmp_path, copy_checkout):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    checkout = copy_checkout(tmp_path / "checkout")
    expected = planned_jobs(checkout, "--profile", "profiles/slurm", env=env)
    # Only the installed copy can answer: the checkout's own Slurm profile is gone.
    shutil.rmtree(checkout / "profiles" / "slurm")
    before = subprocess.run([str(SNAKEMAKE), "-n", "--profile", "slurm"], cwd=checkout, env=env,
                            capture_output=True, text=True, timeout=300)
    assert before.returncode != 0 and "profile directory given (slurm)" in before.stderr

    installed = subprocess.run([str(ICHSEQ), "profile", "install", "slurm"], env=env,
                               capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout == (f"{tmp_path / 'xdg/snakemake/slurm'}: a copy of profiles/slurm, installed; "
                                f"use it with: snakemake --profile slurm\n")
    # Sorted, resources too: a dry run lists independent jobs, and each job's resources, in no fixed order.
    def canonical(jobs):
        return sorted((rule, sorted(resources.items())) for rule, resources in jobs)

    assert canonical(planned_jobs(checkout, "--profile", "slurm", env=env)) == canonical(expected)
    # The site template inside the installed copy, with its partition file relative to it
    # (a dry run stops if that file is not found).
    jobs = planned_jobs(checkout, "--profile", "slurm", "--profile", "slurm/site-example", env=env)
    assert {res.get("slurm_account") for _, res in jobs} == {"my_lab_account"}

    again = subprocess.run([str(ICHSEQ), "profile", "install", "slurm", "--link"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert again.stderr.startswith(f"ichseq profile install: {tmp_path / 'xdg/snakemake/slurm'} already exists")


# --------------------------------------------------------------------------- workflow profile


def test_workflow_profile_overrides_nothing_the_other_profiles_set_differently():
    workflow_profile = yaml.safe_load((PROFILES_DIR / "default" / "config.yaml").read_text())
    assert workflow_profile["show-failed-logs"] is True
    # Machine-dependent keys, and lists a workflow profile would replace wholesale.
    assert not set(workflow_profile) & {"cores", "jobs", "executor", "default-resources", "set-resources",
                                        "max-threads", "resources"}
    for name in available_profiles():
        profile = yaml.safe_load((PROFILES_DIR / name / "config.yaml").read_text())
        for key, value in workflow_profile.items():
            assert profile.get(key, value) == value, (name, key)


@pytest.mark.slow
def test_a_failed_jobs_error_line_reaches_the_console(tmp_path, copy_checkout, nifti_dataset, copy_dataset):
    checkout = copy_checkout(tmp_path / "checkout")
    data = copy_dataset(nifti_dataset)
    scan = next(iter(sorted((data / "ct_scans").iterdir())))
    scan.write_bytes(scan.read_bytes()[: scan.stat().st_size // 2])
    # The demo models' pretraining cohort, should its job run before the failing one: the fast cartoon twin.
    broken = {"dataset": {"source": "local", "local": {"path": str(data)}},
              "pretrain": {"dataset": {"synthetic": {"generator": "cartoon"}}}}
    (checkout / "broken.yaml").write_text(yaml.safe_dump(broken))
    proc = subprocess.run([str(SNAKEMAKE), "--cores", "1", "--configfile", "broken.yaml"], cwd=checkout,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    # Snakemake's own report of the failure, which is all a Slurm user sees (the job's stderr
    # goes to its Slurm log), carries the job's one-line error.
    report = (proc.stdout + proc.stderr).split("Error in rule brain_window:", 1)[1]
    assert f"{scan.name}: truncated NIfTI" in report, report
