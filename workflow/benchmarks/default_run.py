"""The README's main command, measured: wall time and what the default config learns (docs/benchmarks.md).

    .venv/bin/python workflow/benchmarks/default_run.py [--cores 2] [--keep DIR] [--configfile F ...] [--warm-atlas]

Runs the whole main job (all stages, pretraining included) and the report build from scratch
in a temporary working directory (with an empty head-atlas cache, as on a first run, unless
--warm-atlas), then prints when the synthetic cohorts were written, and, from its results/metrics/runs.csv, every
model's patient ROC AUC over the replicates (mean, sd, min, max), the pretraining's held-out
AUC, for each sequence model how often its frames miss every positive slice of a positive
study scan (that bounds its recall), and each model's parameters and mean training seconds per
replicate (cost.csv; a head-mode run's features are computed once per model, not per replicate).
Prints a Markdown table for docs/benchmarks.md. The zoo preset::

    .venv/bin/python workflow/benchmarks/default_run.py --configfile workflow/presets/zoo.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' helpers
from machine import describe  # noqa: E402


def run(cmd: list[str], work: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def frames_missing_bleeds(work: Path, config: dict) -> dict[str, float]:
    """Per sequence model: the share of positive study scans whose selected frames hold no positive slice."""
    from ichseq.data.cache import SliceCache
    from ichseq.data.frames import select_frames
    from ichseq.models import model_kind
    from ichseq.training.plan import model_plan

    cache = SliceCache(work / "results/data/cache")
    out = {}
    for name in config["models"]:
        plan = model_plan(config, name)
        num_frames = plan.model.get("num_frames")
        if not num_frames or model_kind(plan.architecture) != "sequence":
            continue
        missed = positive = 0
        for patient in cache.patients:
            labels = cache.patient_labels(patient)
            if not labels.any():
                continue
            positive += 1
            index = select_frames(len(labels), num_frames, plan.frames["policy"], plan.frames["padding"])
            missed += not labels[index[index >= 0]].any()
        out[name] = missed / positive if positive else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    parser.add_argument("--keep", type=Path, help="keep the working directory here instead of deleting it")
    parser.add_argument("--configfile", nargs="*", default=[], help="extra config files layered on config.yaml")
    parser.add_argument("--warm-atlas", action="store_true",
                        help="use the user's head-atlas cache (default: an empty one, as on a first run)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="ichseq-default-"))
    atlas_cache = work / ".atlas-cache"
    if not args.warm_atlas:  # from scratch: the anatomical twin's atlas is built in the run
        os.environ["ICHSEQ_CACHE_DIR"] = str(atlas_cache)
    started = time.time()
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    # The Snakefile's `configfile: "config.yaml"` is read from the working directory: name it.
    base = [snakemake, "-s", str(ROOT / "Snakefile"), "-d", str(work), "--cores", str(args.cores),
            "--configfile", str(ROOT / "config.yaml"), *(str(Path(f).resolve()) for f in args.configfile)]
    main_s = run(base, work)
    report_s = run([*base, "--report", "results/report.html"], work)

    import yaml
    from snakemake.utils import update_config  # merges --configfile files key by key, as Snakemake does

    from ichseq.config import validate_config

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for extra in args.configfile:
        update_config(config, yaml.safe_load(Path(extra).read_text()))
    config = validate_config(config)
    runs = pd.read_csv(work / "results/metrics/runs.csv")
    cost = pd.read_csv(work / "results/metrics/cost.csv").groupby("model")
    auc = runs[runs.metric == "roc_auc"].groupby("model").value
    pretrain = {p.parent.name: json.loads(p.read_text()) for p in sorted(work.glob("results/pretrain/*/metrics.json"))}
    misses = frames_missing_bleeds(work, config)
    print(f"machine: {describe()}; main job {main_s / 60:.1f} min, report {report_s:.1f} s; "
          f"atlas cache {'warm' if args.warm_atlas else 'cold'}")
    # When the synthetic cohorts were written (their jobs' logs are written last).
    cohorts = {name: work / "logs" / name / "acquire_synthetic.log" for name in ("data", "pretrain")}
    written = {name: log.stat().st_mtime - started for name, log in cohorts.items() if log.is_file()}
    if written:
        print("synthetic cohorts written after " + ", ".join(f"{name} {s:.0f} s" for name, s in written.items()))
    print("| model | patient ROC AUC, mean ± sd (min–max), n | pretraining held-out AUC (s) | frames missing every bleed "
          "| parameters | training s per replicate |")
    print("|---|---|---|---|---|---|")
    for model, values in auc:
        v = values.dropna().to_numpy()
        pre = pretrain.get(model)
        pre_text = "—" if pre is None else f"{pre['holdout_roc_auc']:.3f} ({pre['training_seconds']:.0f} s)"
        miss = f"{misses[model]:.0%} of positive scans" if model in misses else "— (every slice)"
        params = int(cost.parameters_total.mean()[model])
        print(f"| {model} | {v.mean():.3f} ± {np.std(v, ddof=1):.3f} ({v.min():.3f}–{v.max():.3f}), {len(v)} | "
              f"{pre_text} | {miss} | {params:,} | {cost.training_seconds.mean()[model]:.1f} |")
    shutil.rmtree(atlas_cache, ignore_errors=True)
    if args.keep:
        shutil.copytree(work, args.keep, dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
