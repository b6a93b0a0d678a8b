"""How often the out-of-distribution guard of ``ichseq predict`` fires, on scans like and unlike
the training ones.

    .venv/bin/python workflow/benchmarks/default_run.py --keep /tmp/ichseq-default
    .venv/bin/python workflow/benchmarks/ood_guard.py --run /tmp/ichseq-default [--patients 40]

For each model of the kept run (every finished replicate, as ``ichseq predict`` applies them):
the share of scans flagged out of distribution (``in_distribution: false``) in fresh cohorts the
runs never saw, each written by ``ichseq.data.synthetic`` into a temporary folder and read
through ``read_scan`` as ``ichseq predict`` reads them:

* the same twin as the training cohort with a new seed (2026): the false-alarm rate;
* the same twin at ``hard`` difficulty (smaller, isodense bleeds, more noise): still a head CT
  of the same scanner, mostly in distribution;
* the same twin through the ``bone`` reconstruction kernel (sharper, noisier);
* the old ``cartoon`` twin (an ellipse head): unlike anything the runs learnt from.

Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

COHORTS = {
    "fresh seed (false alarms)": {"seed": 2026},
    "hard difficulty": {"seed": 2027, "difficulty": "hard"},
    "bone kernel": {"seed": 2028, "kernel": "bone"},
    "cartoon twin": {"seed": 2029, "generator": "cartoon"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished default run's working directory")
    parser.add_argument("--patients", type=int, default=40, help="scans per cohort (default 40)")
    args = parser.parse_args()

    import torch

    from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
    from ichseq.inference.predict import (SharedFeatures, distribution_check, load_runs, preprocess_volume,
                                          read_scan, scan_cache, score_run)

    torch.set_num_threads(2)
    config = json.loads((args.run / "results" / "data" / "cache" / "cache.json").read_text())
    base = SyntheticSpec(**(config["dataset"].get("spec") or {}))
    models = sorted(p.name for p in (args.run / "results" / "runs").iterdir() if p.is_dir())
    print(f"{describe()}; runs of {args.run}; base twin: {base.generator}, {base.difficulty}, {base.image_size} px")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, changes in COHORTS.items():
            spec = dataclasses.replace(base, n_patients=args.patients, n_positive=args.patients // 2, **changes)
            generate_synthetic(tmp / label, spec, log=lambda _m: None, workers=2)
            scans = sorted((tmp / label / "ct_scans").iterdir())
            for model in models:
                runs = load_runs(args.run / "results" / "runs" / model, log=lambda _m: None)
                flagged, ratios = 0, []
                for scan in scans:
                    # What predict_scan does before it writes anything: read, reformat, preprocess, score.
                    volume, _report = read_scan(runs, scan, log=lambda _m: None)
                    slices, applied = preprocess_volume(volume, runs[0].preprocess)
                    cache = scan_cache(volume, slices, applied)
                    shared = SharedFeatures(cache)
                    result = distribution_check([score_run(run, cache, shared) for run in runs])
                    flagged += result["in_distribution"] is False
                    ratios.append(result["ood"].get("score_ratio", np.nan))
                rows.append((label, model, flagged, len(scans), float(np.median(ratios)), float(np.max(ratios))))
                print(f"{label} / {model}: {flagged} of {len(scans)} flagged; score ratio median "
                      f"{np.median(ratios):.2f}, max {np.max(ratios):.2f}", flush=True)
    print("\n| cohort | model | flagged out of distribution | score / threshold, median (max) |")
    print("|---|---|---|---|")
    for label, model, flagged, n, median, top in rows:
        print(f"| {label} | {model} | {flagged} of {n} ({flagged / n:.0%}) | {median:.2f} ({top:.2f}) |")


if __name__ == "__main__":
    main()
