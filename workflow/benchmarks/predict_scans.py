"""`ichseq predict` measured: seconds per new scan and what the trained runs say about scans they never saw.

    .venv/bin/python workflow/benchmarks/predict_scans.py WORKDIR [--scans 10] [--seed 2026] [--models convnext vivit]

WORKDIR is a finished run of the workflow (its results/runs/MODEL/rep-N folders, e.g. the main
job's folder). The script writes ``--scans`` new synthetic patients (a seed the study cohort did
not use, half of them with a hemorrhage) as DICOM series (``ichseq to-dicom``), then for each
model applies every replicate to every scan in one process (as ``ichseq predict`` does) and
prints: the time to load the replicates, the seconds per scan (read, preprocess, score every
replicate, Grad-CAM or occlusion, figure, files), the ensemble's ROC AUC and accuracy on the new
scans, and the mean spread (sd) of the probability across replicates.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' helpers
from machine import describe  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="a finished workflow folder (holding results/runs/)")
    parser.add_argument("--scans", type=int, default=10, help="new synthetic patients (half positive)")
    parser.add_argument("--seed", type=int, default=2026, help="their seed (not the study cohort's)")
    parser.add_argument("--models", nargs="*", help="models to apply (default: every model under results/runs)")
    args = parser.parse_args(argv)

    import torch
    from sklearn.metrics import roc_auc_score

    from ichseq.data.dicom import export_dicom
    from ichseq.data.readers import open_dataset
    from ichseq.data.synthetic import SyntheticSpec, generate_synthetic
    from ichseq.data.scan_files import find_scans
    from ichseq.data.volumes import read_volume
    from ichseq.inference.predict import PREDICT_FILES, load_runs, predict_scan

    torch.set_num_threads(2)
    runs_dir = args.workdir / "results" / "runs"
    models = args.models or sorted(p.name for p in runs_dir.iterdir() if p.is_dir())
    quiet = lambda _msg: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = SyntheticSpec(n_patients=args.scans, n_positive=args.scans // 2, seed=args.seed)
        generate_synthetic(tmp / "nifti", spec, log=quiet)
        labels = open_dataset(tmp / "nifti").labels.groupby("PatientNumber").label.max()
        export_dicom(tmp / "nifti", tmp / "dicom", log=quiet)
        scans = find_scans(tmp / "dicom")
        print(f"{describe()}; {len(scans)} new synthetic scans (seed {args.seed}, {int(labels.sum())} with hemorrhage) "
              f"as DICOM series")
        rows = []
        for model in models:
            t0 = time.perf_counter()
            runs = load_runs(runs_dir / model, log=quiet)
            load_seconds = time.perf_counter() - t0
            seconds, results = [], []
            for scan in scans:
                t0 = time.perf_counter()
                volume = read_volume(scan)
                out = tmp / "out" / model / scan.name
                result = predict_scan(runs, volume, {k: out / f for k, f in PREDICT_FILES.items()}, log=quiet)
                seconds.append(time.perf_counter() - t0)
                results.append({"patient": int(scan.name), "probability": result["probability"],
                                "positive": result["positive"], "sd": result["probability_sd"] or 0.0,
                                "slices": result["slices"]})
            table = pd.DataFrame(results)
            truth = labels.loc[table.patient].to_numpy()
            rows.append({
                "model": model, "replicates": len(runs), "load s": round(load_seconds, 1),
                "s per scan": f"{np.mean(seconds):.2f} ({np.min(seconds):.2f}-{np.max(seconds):.2f})",
                "slices per scan": f"{table.slices.mean():.0f}",
                "ROC AUC": round(float(roc_auc_score(truth, table.probability)), 3),
                "accuracy": round(float((table.positive.astype(int) == truth).mean()), 3),
                "mean sd across replicates": round(float(table.sd.mean()), 3),
            })
        print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
