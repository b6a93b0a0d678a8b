"""`ichseq stats` on many models: writes a synthetic runs table and times the command on it.

    .venv/bin/python workflow/benchmarks/stats_many_models.py [--models 50] [--replicates 10] [--seed 0]
                                                               [--resamples 9999] [--continuous] [--keep DIR]

The table is what the workflow collects (``model,replicate,metric,value``: the seven rate
metrics and the confusion counts of every run): each model has its own sensitivity and
specificity, each replicate tests every model on the same 40 patients (20 with a hemorrhage),
and the counts are drawn from those rates with a fixed seed, so the same options give the same
table. Rates of 40 patients are multiples of 1/40, so two models' paired differences tie, as
in a real run. ``--continuous`` draws every rate from a normal distribution instead (no ties:
a table of published means and the like). The script then runs ``ichseq stats TABLE --out DIR``
in a fresh process (imports included, as a user runs it), echoes its progress lines and prints
the wall-clock seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' helpers
from machine import describe  # noqa: E402

#: Test patients per replicate, and how many of them have a hemorrhage.
PATIENTS, POSITIVE = 40, 20


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")  # NaN: undefined, an empty cell


def continuous_table(n_models: int, n_replicates: int, seed: int) -> pd.DataFrame:
    """``n_models`` x ``n_replicates`` runs whose seven rates are normal around each model's level."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.7, 0.9, n_models)
    rows = [(f"model_{m:02d}", replicate, metric, float(np.clip(rng.normal(level[m], 0.03), 0.0, 1.0)))
            for m in range(n_models) for replicate in range(n_replicates)
            for metric in ("accuracy", "precision", "recall", "specificity", "f1", "balanced_accuracy", "roc_auc")]
    return pd.DataFrame(rows, columns=["model", "replicate", "metric", "value"])


def runs_table(n_models: int, n_replicates: int, seed: int) -> pd.DataFrame:
    """The long runs table of ``n_models`` x ``n_replicates`` synthetic runs."""
    rng = np.random.default_rng(seed)
    recall = rng.uniform(0.65, 0.95, n_models)
    specificity = rng.uniform(0.65, 0.95, n_models)
    rows = []
    for m in range(n_models):
        model = f"model_{m:02d}"
        for replicate in range(n_replicates):
            tp = int(rng.binomial(POSITIVE, recall[m]))
            tn = int(rng.binomial(PATIENTS - POSITIVE, specificity[m]))
            fn, fp = POSITIVE - tp, PATIENTS - POSITIVE - tn
            rec, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
            metrics = {
                "accuracy": _ratio(tp + tn, PATIENTS),
                "precision": _ratio(tp, tp + fp),
                "recall": rec,
                "specificity": spec,
                "f1": _ratio(2 * tp, 2 * tp + fp + fn),
                "balanced_accuracy": (rec + spec) / 2,
                # AUC above the balanced accuracy, as a scored model's usually is.
                "roc_auc": float(np.clip((rec + spec) / 2 + rng.uniform(0.0, 0.08), 0.0, 1.0)),
                "tn": tn, "fp": fp, "fn": fn, "tp": tp, "n_test": PATIENTS,
            }  # fmt: skip
            rows += [(model, replicate, metric, value) for metric, value in metrics.items()]
    return pd.DataFrame(rows, columns=["model", "replicate", "metric", "value"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=50, help="number of models")
    parser.add_argument("--replicates", type=int, default=10, help="replicates per model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic table")
    parser.add_argument("--resamples", type=int, default=9999, help="bootstrap resamples (ichseq stats --resamples)")
    parser.add_argument("--continuous", action="store_true", help="rates without ties, no confusion counts")
    parser.add_argument("--keep", type=Path, help="write the table and the outputs here (default: a temporary folder)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        table = folder / "runs.csv"
        make = continuous_table if args.continuous else runs_table
        make(args.models, args.replicates, args.seed).to_csv(table, index=False)
        command = [sys.executable, "-m", "ichseq.cli", "stats", str(table), "--out", str(folder / "stats"),
                   "--resamples", str(args.resamples)]  # fmt: skip
        kind = "continuous rates" if args.continuous else "rates and counts of 40 test patients"
        print(f"{describe()}; {args.models} models x {args.replicates} replicates, {kind} (seed {args.seed}): "
              + " ".join(command[2:]), flush=True)  # fmt: skip
        start = time.perf_counter()
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as done:
            for line in done.stdout:  # its progress, as it comes
                if not line.startswith("written "):
                    print(f"  {line.rstrip()}", flush=True)
        seconds = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"ichseq stats failed (exit {done.returncode})")
        print(f"ichseq stats: {seconds:.1f} s")


if __name__ == "__main__":
    main()
