"""How long the anatomical synthetic twin takes: the atlas, the default cohorts, 512 px scans.

    .venv/bin/python workflow/benchmarks/twin_generation.py            # the full run (about 10 min on 2 cores)
    .venv/bin/python workflow/benchmarks/twin_generation.py --quick    # a smoke run: a few patients of each

Each measurement runs in a fresh Python process, as a Snakemake job does (imports, the atlas
built once per process), and prints its timings as it finishes:

(i)   the head atlas: nilearn's ICBM 2009 template read and the skull, skull base and face
      built, then each of the four atrophy levels (``head_atlas(0..3)``);
(ii)  the default study cohort (``SyntheticSpec()``: 75 patients, 128 px, 5 mm) written with
      ``generate_synthetic`` into a temporary folder, as rule acquire_synthetic does;
(iii) the default pretraining cohort (150 patients, 75 with a hemorrhage, seed 7);
(iv)  single patients at the real scans' 512 px: 5 mm slices (28-32 from skull base to vertex)
      and 0.625 mm slices (200-240), generated in memory.

(ii) to (iv) build the atlas first and time it apart, so their per-patient times are the
generation alone; the atlas time of (i) comes once per process on top.
"""

from __future__ import annotations

import argparse
import json
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


def _child(step: str, quick: bool) -> dict:
    """Run one step in a fresh process; its last output line is the JSON result."""
    command = [sys.executable, __file__, "--step", step] + (["--quick"] if quick else [])
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{step} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


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
    atlas = _child("atlas", args.quick)
    levels = ", ".join(f"{s:.1f}" for s in atlas["levels_s"])
    print(f"(i) atlas: {atlas['total_s']:.1f} s (import {atlas['import_s']:.1f} s; levels 0-3: {levels} s; "
          f"peak {atlas['peak_mb']:.0f} MB; process {atlas['process_s']:.1f} s)", flush=True)
    results = {}
    for roman, name in zip(("ii", "iii", "iv", "iv"), COHORTS):
        r = results[name] = _child(name, args.quick)
        spec = r["spec"]
        patients = f"{r['patients']} patient" + ("s" if r["patients"] != 1 else "")
        print(f"({roman}) {name}: {patients} ({spec['image_size']} px, {spec['slice_thickness_mm']:g} mm, "
              f"{r['slices']} slices): {r['generate_s']:.1f} s = {r['per_patient_s']:.2f} s/patient, "
              f"{r['generate_s'] / r['slices'] * 1000:.0f} ms/slice; atlas {r['atlas_s']:.1f} s before; "
              f"peak {r['peak_mb']:.0f} MB; process {r['process_s']:.1f} s", flush=True)
    study, pre = results["study"], results["pretraining"]
    print(f"summary: atlas {atlas['total_s']:.0f} s per process; study cohort {study['generate_s']:.0f} s "
          f"({study['patients']} patients), pretraining cohort {pre['generate_s']:.0f} s ({pre['patients']}); "
          f"512 px {results['512px-5mm']['per_patient_s']:.1f} s/patient at 5 mm, "
          f"{results['512px-0.625mm']['per_patient_s']:.1f} s/patient at 0.625 mm")


if __name__ == "__main__":
    main()
