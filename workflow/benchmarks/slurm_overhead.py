"""What Slurm costs the default run: the main job locally and through the Slurm profile, back to back.

    workflow/tools/slurm_test_cluster.sh start      # the single-node test cluster (root)
    .venv/bin/python workflow/benchmarks/slurm_overhead.py [--configfile F ...] [--keep DIR]

Each run starts from a fresh copy of the checkout's tracked files (no results/, resources/ or
.snakemake/) and an empty head-atlas cache, as a first run: first ``snakemake --cores 2``, then
``snakemake --profile profiles/slurm --profile profiles/slurm-test``. Prints both wall times
and their ratio (issue 26's target: Slurm at most 1.5x local), and from the cluster's own log
(slurmctld.log, which records when each job was submitted, started and ended; the test
cluster keeps no accounting database) the Slurm jobs' count, their mean length and how long
the node sat with no job running while the workflow was not finished.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' helpers
from machine import describe  # noqa: E402

SLURM_PROFILES = ("--profile", "profiles/slurm", "--profile", "profiles/slurm-test")
# A job starts by the main scheduler ("sched: Allocate JobId=N") or by backfill
# ("sched/backfill: _start_job: Started JobId=N"); it ends with "_job_complete: JobId=N done".
_EVENT = re.compile(r"^\[([\d\-T:.]+)\] (sched: Allocate|sched/backfill: _start_job: Started|_job_complete:) "
                    r"JobId=(\d+)(.*)$")


def fresh_checkout(parent: Path, name: str) -> Path:
    """The checkout's tracked files (as they are in the working tree) in ``parent/name``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    work = parent / name
    for rel in filter(None, files.decode().split("\0")):
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    return work


def timed(cmd: list[str], work: Path, env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"failed in {work}: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def slurm_jobs(work: Path) -> set[int]:
    """The Slurm job ids of a run: the plugin keeps each job's log as slurm_logs/.../JOBID.log."""
    return {int(p.stem) for p in (work / ".snakemake" / "slurm_logs").rglob("*.log") if p.stem.isdigit()}


def job_spans(log: Path, jobs: set[int]) -> dict[int, tuple[datetime, datetime]]:
    """(start, end) of each of ``jobs`` from slurmctld's log."""
    start, end = {}, {}
    for line in log.read_text(errors="replace").splitlines():
        m = _EVENT.match(line)
        if m and int(m.group(3)) in jobs:
            when, job = datetime.fromisoformat(m.group(1)), int(m.group(3))
            if not m.group(2).startswith("_job_complete"):
                start[job] = when
            elif m.group(4).strip() == "done":
                end[job] = when
    return {j: (start[j], end[j]) for j in jobs if j in start and j in end}


def idle_seconds(spans: list[tuple[datetime, datetime]], begin: datetime, finish: datetime) -> float:
    """Seconds between ``begin`` and ``finish`` during which no job ran."""
    idle, covered = 0.0, begin
    for s, e in sorted(spans):
        if s > covered:
            idle += (s - covered).total_seconds()
        covered = max(covered, e)
    return idle + max(0.0, (finish - covered).total_seconds())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="*", default=[], help="extra config files layered on config.yaml")
    parser.add_argument("--keep", type=Path, help="keep both working directories here instead of deleting them")
    args = parser.parse_args()
    slurm_dir = Path(os.environ.get("ICHSEQ_SLURM_DIR", "/tmp/ichseq-slurm"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SLURM_CONF": str(slurm_dir / "slurm.conf"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # the jobs run this venv's
    if subprocess.run(["sinfo", "-h"], capture_output=True, env=env).returncode != 0:
        sys.exit(f"no Slurm answers at {env['SLURM_CONF']}: run workflow/tools/slurm_test_cluster.sh start first")
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    extra = [str(Path(f).resolve()) for f in args.configfile]
    parent = Path(tempfile.mkdtemp(prefix="ichseq-slurm-overhead-"))
    seconds = {}
    for name, how in (("local", ["--cores", "2"]), ("slurm", list(SLURM_PROFILES))):
        work = fresh_checkout(parent, name)
        run_env = {**env, "ICHSEQ_CACHE_DIR": str(parent / f"atlas-{name}")}  # an empty atlas cache each
        cmd = [snakemake, *how, *(["--configfile", "config.yaml", *extra] if extra else [])]
        began = datetime.now()
        seconds[name] = timed(cmd, work, run_env)
        finished = datetime.now()
    spans = job_spans(slurm_dir / "log" / "slurmctld.log", slurm_jobs(work))
    lengths = [(e - s).total_seconds() for s, e in spans.values()]
    print(f"machine: {describe()}")
    print(f"local {seconds['local'] / 60:.1f} min, Slurm {seconds['slurm'] / 60:.1f} min: "
          f"{seconds['slurm'] / seconds['local']:.2f}x")
    if lengths:
        print(f"Slurm jobs: {len(lengths)}, {sum(lengths) / len(lengths):.1f} s each on average; the node ran no job "
              f"for {idle_seconds(list(spans.values()), began, finished):.0f} s of the {seconds['slurm']:.0f} s")
    if args.keep:
        shutil.copytree(parent, args.keep, dirs_exist_ok=True, symlinks=True)
    shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
