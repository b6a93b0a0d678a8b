"""RSNA 2019 at scale (issue 26.6): header indexing, windowing, a shard job's memory, the Slurm
plan for the full 21,700 scans, and the default models end to end on a twin of 2,000 scans.

    .venv/bin/python workflow/benchmarks/rsna_scale.py --work /tmp/rsna-scale            # everything (~30 min on 2 cores, ~7 GB)
    .venv/bin/python workflow/benchmarks/rsna_scale.py --work /tmp/rsna-scale --quick    # a smoke run (60 scans)
    .venv/bin/python workflow/benchmarks/rsna_scale.py --work DIR --steps index,window   # some steps

Steps (each measurement in a fresh Python process, as a Snakemake job is; figures printed as
each finishes and written to DIR/rsna_scale.json):

gen     the RSNA-layout twin: ``--scans`` anatomical twin scans at ``--size`` px (128: the 2,000
        scans fit in ~7 GB), written by ``ichseq synthetic --layout rsna``; and a 512 px subset
        (``--scans-512`` scans) twice, uncompressed as RSNA's files are and JPEG-lossless;
index   header indexing (:func:`ichseq.data.rsna.index_headers`) of the large twin's files, one
        process and ``--workers``, against the floor: plain ``pydicom.dcmread`` of the same files
        (headers only, ``stop_before_pixels``) in one process;
window  windowing throughput of a shard job (:func:`ichseq.data.shards.build_shard`, one worker:
        read, HU, brain window, resize, write) on the 512 px subset, uncompressed and
        JPEG-lossless, against the floor: ``pydicom.dcmread`` + ``pixel_array`` of the same files;
memory  a shard job's peak memory (its process and its workers) for shards of about 1/40 and 1/4
        of the large twin, and one 512 px shard;
dryrun  the Slurm profile's dry run for RSNA's full size: jobs per rule with ``preprocess.shards``
        for 21,700 scans at ``--scans-per-shard`` (the plan depends on the shard count, not on the
        files, so the twin's folder stands in for the download);
run     the default models (config.yaml: ViViT and ConvNeXt, each pretrained as by default) end
        to end on the large twin with ``--shards`` shards and ``--replicates`` replicates, timed
        per rule from the jobs' logs;
kill    on that run: a shard's files and the cache removed, the cache asked for again and the
        shard's job SIGKILLed (as the OOM killer or a failing node would) once its temporary
        folder holds pixels; then the pipeline run again: which jobs ran, whether the shard's
        files are byte-identical to the uninterrupted build and the dead job's folder swept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' helpers
from machine import describe  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
RSNA_FULL_SCANS = 21_700
QUIET_DICOM = ("import pydicom; pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE; "
               "pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE\n")


def child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh Python; it prints one JSON line last. Adds the process's peak
    memory (its own and its children's, which a pool's workers are) in MB."""
    wrapper = QUIET_DICOM + textwrap.dedent(code) + textwrap.dedent("""
        import json, resource
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        RESULT["peak_mb"] = round(peak / 1024, 1)
        print(json.dumps(RESULT))
    """)
    proc = subprocess.run([PYTHON, "-c", wrapper, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def step_gen(work: Path, scans: int, size: int, scans_512: int) -> dict:
    out = {}
    for name, n, px, compression in (("rsna", scans, size, "none"), ("rsna512", scans_512, 512, "none"),
                                     ("rsna512-jpegls", scans_512, 512, "jpeg-lossless")):
        if (work / name).is_dir():
            out[name] = "present"
            continue
        out[name] = child("""
            import sys, time, shutil
            from pathlib import Path
            from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
            from ichseq.data.format_twins import write_rsna
            work, n, px, compression = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
            nifti = work / (sys.argv[5] + "-nifti")
            t0 = time.perf_counter()
            if not nifti.is_dir():
                generate_synthetic(nifti, SyntheticSpec(n_patients=n, n_positive=round(0.45 * n), image_size=px,
                                                        seed=26), workers=2, log=lambda m: None)
            t1 = time.perf_counter()
            summary = write_rsna(nifti, work / sys.argv[5], seed=26, compression=compression, log=lambda m: None)
            t2 = time.perf_counter()
            RESULT = {**summary, "generate_s": round(t1 - t0, 1), "write_s": round(t2 - t1, 1)}
        """, str(work), str(n), str(px), compression, name)
        print(f"gen {name}: {out[name]}", flush=True)
    for name in ("rsna-nifti", "rsna512-nifti", "rsna512-jpegls-nifti"):
        shutil.rmtree(work / name, ignore_errors=True)
    return out


def step_index(work: Path, workers: int) -> dict:
    out = {}
    for n_workers in sorted({1, workers}):
        out[f"index_{n_workers}"] = child("""
            import sys, time
            from pathlib import Path
            from ichseq.data.rsna import index_headers
            t0 = time.perf_counter()
            index = index_headers(Path(sys.argv[1]) / "stage_2_train", workers=int(sys.argv[2]), log=lambda m: None)
            s = time.perf_counter() - t0
            RESULT = {"files": len(index), "seconds": round(s, 2), "files_per_s": round(len(index) / s)}
        """, str(work / "rsna"), str(n_workers))
        print(f"index, {n_workers} process(es): {out[f'index_{n_workers}']}", flush=True)
    out["floor"] = child("""
        import os, sys, time
        from pathlib import Path
        import pydicom
        files = sorted(Path(sys.argv[1], "stage_2_train").iterdir())
        t0 = time.perf_counter()
        for f in files:
            pydicom.dcmread(f, stop_before_pixels=True)
        s = time.perf_counter() - t0
        RESULT = {"files": len(files), "seconds": round(s, 2), "files_per_s": round(len(files) / s)}
    """, str(work / "rsna"))
    out["ratio_one_process_to_floor"] = round(out["index_1"]["files_per_s"] / out["floor"]["files_per_s"], 2)
    print(f"index floor (pydicom headers, 1 process): {out['floor']}; ratio {out['ratio_one_process_to_floor']}",
          flush=True)
    return out


_SHARD = """
    import sys, time
    from pathlib import Path
    from ichseq.data.cache import WindowSpec
    from ichseq.data.shards import build_shard, index_cache
    src, tmp, shards, shard, size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    if not (tmp / "index").is_dir():
        index_cache(src, tmp / "index", WindowSpec(size), shards=shards, source="rsna", log=lambda m: None)
    t0 = time.perf_counter()
    meta = build_shard(tmp / "index", shard, tmp / f"shard-{shard}", workers=1, log=lambda m: None)
    s = time.perf_counter() - t0
    RESULT = {"scans": meta["patients"], "slices": meta["slices"], "seconds": round(s, 2),
              "slices_per_s": round(meta["slices"] / s, 1)}
"""


def step_window(work: Path) -> dict:
    out = {}
    for name in ("rsna512", "rsna512-jpegls"):
        tmp = work / f"window-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        # 128 px cache (the default image size) from the 512 px files.
        shard = child(_SHARD, str(work / name), str(tmp), "1", "0", "128")
        floor = child("""
            import sys, time
            from pathlib import Path
            import pydicom
            files = sorted(Path(sys.argv[1], "stage_2_train").iterdir())
            t0 = time.perf_counter()
            for f in files:
                pydicom.dcmread(f).pixel_array
            s = time.perf_counter() - t0
            RESULT = {"slices": len(files), "seconds": round(s, 2), "slices_per_s": round(len(files) / s, 1)}
        """, str(work / name))
        out[name] = {"shard": shard, "floor": floor, "ratio": round(shard["slices_per_s"] / floor["slices_per_s"], 2)}
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"window {name}: {out[name]}", flush=True)
    return out


def step_memory(work: Path) -> dict:
    out = {}
    for label, src, shards, size in (("1/40 of the twin", "rsna", 40, 128), ("1/4 of the twin", "rsna", 4, 128),
                                     ("512 px subset, one shard", "rsna512", 1, 128)):
        tmp = work / f"memory-{shards}-{src}"
        shutil.rmtree(tmp, ignore_errors=True)
        # The index first, in its own process: the shard job's peak is its own.
        subprocess.run([PYTHON, "-c", QUIET_DICOM + textwrap.dedent("""
            import sys
            from pathlib import Path
            from ichseq.data.cache import WindowSpec
            from ichseq.data.shards import index_cache
            index_cache(Path(sys.argv[1]), Path(sys.argv[2]) / "index", WindowSpec(int(sys.argv[4])),
                        shards=int(sys.argv[3]), source="rsna", log=lambda m: None)
        """), str(work / src), str(tmp), str(shards), str(size)], check=True, cwd=ROOT)
        out[label] = child(_SHARD, str(work / src), str(tmp), str(shards), "0", str(size))
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"memory, {label}: {out[label]}", flush=True)
    return out


def _counts(text: str) -> dict[str, int]:
    """Snakemake's dry-run job-stats table: rule -> jobs."""
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def step_dryrun(work: Path, per_shard: int) -> dict:
    shards = -(-RSNA_FULL_SCANS // per_shard)
    run = work / "dryrun"
    run.mkdir(exist_ok=True)
    (run / "override.yaml").write_text(json.dumps({"dataset": {"source": "rsna", "rsna": {"path": str(work / "rsna")}},
                                                  "preprocess": {"shards": shards}}))
    proc = subprocess.run([SNAKEMAKE, "-n", "--quiet", "rules", "--cores", "64", "-s", str(ROOT / "Snakefile"), "-d",
                           str(run), "--profile", str(ROOT / "profiles/slurm"), "--configfile", str(ROOT / "config.yaml"),
                           str(run / "override.yaml")], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    counts = _counts(proc.stdout + proc.stderr)
    out = {"scans": RSNA_FULL_SCANS, "scans_per_shard": per_shard, "shards": shards, "jobs": counts}
    print(f"Slurm dry run for {RSNA_FULL_SCANS} scans: {out}", flush=True)
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _snakemake(run: Path, *args: str, **kwargs) -> subprocess.Popen:
    cmd = [SNAKEMAKE, *args, "-s", str(ROOT / "Snakefile"), "-d", str(run), "--cores", str(os.cpu_count()),
           "--configfile", str(ROOT / "config.yaml"), str(run / "override.yaml")]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            start_new_session=True, **kwargs)


def _stage_times(run: Path) -> dict[str, float]:
    """Seconds of each rule's jobs, summed, from their logs' ``done in`` lines."""
    times: dict[str, float] = {}
    for log in (run / "logs").rglob("*.log"):
        for name, seconds in re.findall(r"INFO (\w+)(?: [\w-]+)* done in ([\d.]+) s", log.read_text(errors="replace")):
            times[name] = round(times.get(name, 0) + float(seconds), 1)
    return times


def step_run(work: Path, shards: int, replicates: int) -> dict:
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    (run / "override.yaml").write_text(json.dumps({"dataset": {"source": "rsna", "rsna": {"path": str(work / "rsna")}},
                                                  "preprocess": {"shards": shards},
                                                  "splits": {"replicates": replicates}}))
    t0 = time.perf_counter()
    proc = _snakemake(run)
    text = proc.communicate()[0]
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(text[-4000:])
    cohort = (run / "results/data/cohort.csv").read_text().splitlines()
    aucs = {}
    for model in ("convnext", "vivit"):
        values = [json.loads(p.read_text())["metrics"]["roc_auc"] for p in sorted((run / f"results/runs/{model}").glob("rep-*/metrics.json"))]
        aucs[model] = {"mean": round(float(sum(values) / len(values)), 3), "values": [round(v, 3) for v in values]}
    out = {"wall_s": round(wall, 1), "patients": len(cohort) - 1, "stage_s": _stage_times(run), "roc_auc": aucs}
    print(f"run: {out}", flush=True)

    return out


def step_kill(work: Path) -> dict:
    """A shard job killed mid-way (SIGKILL, as the OOM killer or a failing node does) while
    Snakemake runs on: its files and the join's removed, the pipeline asked for the cache again,
    the job killed once its temporary folder holds pixels; then the pipeline run again."""
    run = work / "run"
    shard = run / f"results/data/shards/shard-{1:03d}"
    before = _digest(shard)
    shutil.rmtree(shard)
    shutil.rmtree(run / "results/data/cache")
    proc = _snakemake(run, "results/data/cache")
    deadline, killed = time.time() + 600, None
    while time.time() < deadline and killed is None:
        temps = [p for p in shard.parent.iterdir() if "ichseq-tmp" in p.name]
        if temps and (temps[0] / "slices.npy").is_file() and (temps[0] / "slices.npy").stat().st_size > (1 << 20):
            jobs = subprocess.run(["pgrep", "-f", "brain_window_shard"], capture_output=True, text=True).stdout.split()
            for pid in jobs:
                if int(pid) != proc.pid:
                    os.kill(int(pid), signal.SIGKILL)
                    killed = int(pid)
        time.sleep(0.02)
    first = proc.communicate()[0]
    out = {"killed_pid": killed, "snakemake_exit": proc.returncode,
           "left_a_temporary_folder": bool([p for p in shard.parent.iterdir() if "ichseq-tmp" in p.name]),
           "shard_absent": not shard.exists()}
    t0 = time.perf_counter()
    proc = _snakemake(run, "results/data/cache")
    text = proc.communicate()[0]
    out.update({"rerun_exit": proc.returncode, "rerun_jobs": sorted(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", text)),
                "rerun_s": round(time.perf_counter() - t0, 1),
                "identical_bytes": shard.is_dir() and _digest(shard) == before,
                "temporary_swept": not [p for p in shard.parent.iterdir() if "ichseq-tmp" in p.name]})
    if proc.returncode != 0:
        out["rerun_tail"] = text[-1500:]
    if killed is None:
        out["first_tail"] = first[-1500:]
    print(f"kill and rerun: {out}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the twins and runs (several GB)")
    parser.add_argument("--scans", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128, help="in-plane size of the large twin")
    parser.add_argument("--scans-512", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--shards", type=int, default=8, help="shards of the end-to-end run")
    parser.add_argument("--replicates", type=int, default=3, help="replicates of the end-to-end run")
    parser.add_argument("--scans-per-shard", type=int, default=300, help="for the full-size dry run")
    parser.add_argument("--steps", default="gen,index,window,memory,dryrun,run,kill")
    parser.add_argument("--quick", action="store_true", help="60 scans, 2 at 512 px, 1 replicate")
    args = parser.parse_args()
    if args.quick:
        args.scans, args.scans_512, args.replicates, args.shards = 60, 2, 1, 3
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "rsna_scale.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results["machine"] = describe()
    print(results["machine"], flush=True)
    steps = {"gen": lambda: step_gen(args.work, args.scans, args.size, args.scans_512),
             "index": lambda: step_index(args.work, args.workers),
             "window": lambda: step_window(args.work),
             "memory": lambda: step_memory(args.work),
             "dryrun": lambda: step_dryrun(args.work, args.scans_per_shard),
             "run": lambda: step_run(args.work, args.shards, args.replicates),
             "kill": lambda: step_kill(args.work)}
    for name in args.steps.split(","):
        t0 = time.perf_counter()
        results[name] = steps[name]()
        results[f"{name}_wall_s"] = round(time.perf_counter() - t0, 1)
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {results_path}")


if __name__ == "__main__":
    main()
