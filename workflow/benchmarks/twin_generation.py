"""How long the anatomical synthetic twin takes: the atlas, the default cohorts, 512 px scans.

    .venv/bin/python workflow/benchmarks/twin_generation.py            # the full run (about 6 min on 2 cores)
    .venv/bin/python workflow/benchmarks/twin_generation.py --quick    # a smoke run: a few patients of each

Each measurement runs in a fresh Python process, as a Snakemake job does, with the atlas cache
(``ICHSEQ_CACHE_DIR``) in a temporary folder of its own, and prints its timings as it finishes:

(i)   the head atlas built (cold cache): nilearn's ICBM 2009 template read, the skull, skull
      base and face built, each of the four atrophy levels (``head_atlas(0..3)``) and stored;
      then read back in another fresh process (warm cache);
(ii)  the two default cohorts as the default run makes them: the study cohort
      (``SyntheticSpec()``: 75 patients, 128 px, 5 mm) and the pretraining cohort (150
      patients, 75 with a hemorrhage, seed 7) written with ``generate_synthetic`` by two
      processes side by side (rules acquire_synthetic and acquire_pretrain_synthetic on 2
      cores): the wall time until both are written, with a cold cache (the first run: both
      processes build the atlas) and a warm one (every later run);
(iii) single patients at the real scans' 512 px: 5 mm slices (28-32 from skull base to vertex)
      and 0.625 mm slices (200-240), generated in memory (warm cache).

Each cohort process reports the atlas's time apart from the generation's, so the per-patient
times are the generation alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' helpers
from machine import describe  # noqa: E402

#: What (ii)-(iv) generate: name -> (SyntheticSpec overrides, patients in the full run, in --quick).
COHORTS = {
    "study": ({}, None, 6),
    "pretraining": ({"n_patients": 150, "n_positive": 75, "seed": 7}, None, 6),
    "512px-5mm": ({"image_size": 512, "min_slices": 28, "max_slices": 32}, 2, 1),
    "512px-0.625mm": ({"image_size": 512, "min_slices": 200, "max_slices": 240, "slice_thickness_mm": 0.625}, 2, 1),
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_atlas() -> dict:
    start = time.perf_counter()
    from ichseq.data import head_atlas as atlas

    imported = time.perf_counter()
    levels = []
    for level in range(atlas.ATROPHY_LEVELS):
        t = time.perf_counter()
        atlas.head_atlas(level)
        levels.append(time.perf_counter() - t)
    return {"import_s": imported - start, "levels_s": levels, "total_s": time.perf_counter() - start,
            "peak_mb": _peak_mb()}


def step_cohort(name: str, quick: bool) -> dict:
    start = time.perf_counter()
    from ichseq.data import head_atlas as atlas
    from ichseq.data.synthetic import SyntheticSpec, generate_synthetic, positive_patients, synthesize_scan

    overrides, full, few = COHORTS[name]
    count = few if quick else full
    if name in ("study", "pretraining") and count is not None:  # a smaller cohort of the same make-up
        base = SyntheticSpec(**overrides)
        overrides = {**overrides, "n_patients": count, "n_positive": max(1, count * base.n_positive // base.n_patients)}
    spec = SyntheticSpec(**overrides)
    t = time.perf_counter()
    for level in range(atlas.ATROPHY_LEVELS):
        atlas.head_atlas(level)
    atlas_s = time.perf_counter() - t
    t = time.perf_counter()
    if name in ("study", "pretraining"):
        with tempfile.TemporaryDirectory() as tmp:
            summary = generate_synthetic(Path(tmp) / name, spec, log=lambda _m: None)
        patients, slices = spec.n_patients, summary["slices"]
    else:  # one scan after another in memory, positive patients first
        numbers = sorted(positive_patients(spec)) + spec.patient_numbers()
        slices = 0
        for patient in numbers[:count]:
            slices += synthesize_scan(patient, True, spec).hu.shape[0]
        patients = count
    seconds = time.perf_counter() - t
    return {"spec": {k: v for k, v in vars(spec).items() if k in ("n_patients", "n_positive", "image_size", "seed",
                                                                    "slice_thickness_mm", "min_slices", "max_slices")},
            "patients": patients, "slices": slices, "atlas_s": atlas_s, "generate_s": seconds,
            "per_patient_s": seconds / patients, "total_s": time.perf_counter() - start, "peak_mb": _peak_mb()}


def _command(step: str, quick: bool) -> list[str]:
    return [sys.executable, __file__, "--step", step] + (["--quick"] if quick else [])


def _result(step: str, done: subprocess.CompletedProcess) -> dict:
    if done.returncode:
        sys.exit(f"{step} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(step: str, quick: bool, env: dict) -> dict:
    """Run one step in a fresh process; its last output line is the JSON result."""
    start = time.perf_counter()
    result = _result(step, subprocess.run(_command(step, quick), capture_output=True, text=True, env=env))
    result["process_s"] = time.perf_counter() - start
    return result


def _side_by_side(steps: list[str], quick: bool, env: dict) -> tuple[float, dict]:
    """Run steps in fresh processes at the same time; the wall time until the last is done."""
    start = time.perf_counter()
    running = {step: subprocess.Popen(_command(step, quick), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env) for step in steps}
    results = {}
    for step, proc in running.items():
        out, err = proc.communicate()
        results[step] = _result(step, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return time.perf_counter() - start, results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few patients of each cohort")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # one measurement, in the child process
    args = parser.parse_args(argv)
    if args.step:
        result = step_atlas() if args.step == "atlas" else step_cohort(args.step, args.quick)
        print(json.dumps(result), flush=True)
        return

    print(f"{describe()}; anatomical synthetic twin{' (--quick)' if args.quick else ''}", flush=True)
    cache = tempfile.mkdtemp(prefix="ichseq-bench-cache-")
    env = dict(os.environ, ICHSEQ_CACHE_DIR=cache)
    try:
        cold = _child("atlas", args.quick, env)
        warm = _child("atlas", args.quick, env)
        for label, atlas in (("built, cold cache", cold), ("read, warm cache", warm)):
            levels = ", ".join(f"{s:.2f}" for s in atlas["levels_s"])
            print(f"(i) atlas {label}: {atlas['total_s']:.1f} s (import {atlas['import_s']:.1f} s; levels 0-3: "
                  f"{levels} s; peak {atlas['peak_mb']:.0f} MB; process {atlas['process_s']:.1f} s)", flush=True)
        for label in ("cold", "warm"):
            if label == "cold":
                shutil.rmtree(cache)
                os.makedirs(cache)
            wall, results = _side_by_side(["study", "pretraining"], args.quick, env)
            parts = []
            for name, r in results.items():
                parts.append(f"{name} {r['patients']} patients ({r['slices']} slices) {r['total_s']:.1f} s = atlas "
                             f"{r['atlas_s']:.1f} s + {r['generate_s']:.1f} s ({r['per_patient_s']:.2f} s/patient), "
                             f"peak {r['peak_mb']:.0f} MB")
            print(f"(ii) default cohorts side by side, {label} cache: {wall:.1f} s wall; " + "; ".join(parts), flush=True)
        for name in ("512px-5mm", "512px-0.625mm"):
            r = _child(name, args.quick, env)
            spec = r["spec"]
            patients = f"{r['patients']} patient" + ("s" if r["patients"] != 1 else "")
            print(f"(iii) {name}: {patients} ({spec['image_size']} px, {spec['slice_thickness_mm']:g} mm, "
                  f"{r['slices']} slices): {r['generate_s']:.1f} s = {r['per_patient_s']:.2f} s/patient, "
                  f"{r['generate_s'] / r['slices'] * 1000:.0f} ms/slice; peak {r['peak_mb']:.0f} MB", flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
