"""Training-speed benchmark (issue 3). Prints a Markdown table for docs/benchmarks.md.

    .venv/bin/python workflow/benchmarks/training.py            # (a) and (b), ~15-20 min on 2 cores
    .venv/bin/python workflow/benchmarks/training.py --skip-paper   # (a) only, ~1 min

(a) Head training on cached features vs end to end through the frozen backbone: the same
    model (the demo configuration of config.yaml), replicate 0, the same epochs; both paths
    include their feature computation. Run from the repository after the data stage
    (results/data/cache and results/splits must exist: `snakemake --cores 2 results/splits/rep-0.json`).
(b) The whole paper protocol (workflow/presets/paper.yaml: 224², ViViT-B 18 frames and
    ConvNeXt-T, 10 replicates, 20 epochs, head-only), random init
    (workflow/presets/paper-random-init.yaml) since the hub is unreachable, on the default
    synthetic cohort: `snakemake --cores N` from scratch in a temporary folder, wall time.
(c) With CUDA, ViViT-B feature extraction throughput in clips/s (bf16 autocast).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import yaml

from ichseq.config import validate_config
from ichseq.data.cache import SliceCache
from ichseq.training.feature_store import extract_features
from ichseq.training.loop import fit
from ichseq.training.settings import run_seed
from ichseq.training.plan import model_plan
from ichseq.training.samples import build_samples

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' helpers
from machine import describe  # noqa: E402


def cached_vs_end_to_end(threads: int) -> list[str]:
    torch.set_num_threads(threads)
    config = validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    cache = SliceCache(ROOT / "results/data/cache")
    split = json.loads((ROOT / "results/splits/rep-0.json").read_text())
    rows = []
    for name in config["models"]:
        plan = model_plan(config, name)
        # A fixed number of epochs (no early stopping) so that both paths do the same work.
        plan.training = dataclasses.replace(plan.training, patience=None)
        quiet = lambda _m: None  # noqa: E731
        model = plan.build().freeze_backbone()
        samples = build_samples(cache, model.kind, model.num_frames, **plan.frames)
        train, val = samples.select(split["train"]), samples.select(split["val"])
        seed = run_seed(plan.training.seed, name, 0)

        t0 = time.perf_counter()
        stored = torch.from_numpy(extract_features(model, cache, samples, plan.training.feature_batch_size,
                                                   torch.device("cpu"), log=quiet))
        t_features = time.perf_counter() - t0
        model.init_classifier_(seed)
        cached = fit(model, model.classifier, lambda i: samples.batch(model, cache, i, features=stored),
                     samples.label, samples.patient, train, val, plan.training, seed, log=quiet)
        t_cached = time.perf_counter() - t0

        model.init_classifier_(seed)
        t0 = time.perf_counter()
        direct = fit(model, model, lambda i: samples.batch(model, cache, i), samples.label,
                     samples.patient, train, val, plan.training, seed, log=quiet)
        t_direct = time.perf_counter() - t0
        same = np.allclose(cached.history.train_loss, direct.history.train_loss, rtol=1e-5)
        rows.append(
            f"| {name} (demo size, {len(cached.history)} epochs, {len(train)} train samples) | "
            f"{t_cached:.1f} s (features {t_features:.1f} s) | {t_direct:.1f} s | {t_direct / t_cached:.1f}x | "
            f"{'yes' if same else 'NO'} |"
        )
        print(rows[-1], flush=True)
    return rows


def paper_protocol(cores: int, keep: Path | None) -> str:
    work = Path(tempfile.mkdtemp(prefix="ichseq-paper-bench-"))
    presets = [str(ROOT / "workflow/presets/paper.yaml"), str(ROOT / "workflow/presets/paper-random-init.yaml")]
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(ROOT / "Snakefile"), "-d", str(work),
           "--cores", str(cores), "--configfile", *presets]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"paper protocol run failed in {work}:\n{proc.stderr[-3000:]}")
    costs = [json.loads(p.read_text()) for p in sorted(work.glob("results/runs/*/rep-*/cost.json"))]
    features = {c["model"]: c["feature_seconds"] for c in costs}
    training = {m: sum(c["training_seconds"] for c in costs if c["model"] == m) for m in features}
    detail = "; ".join(f"{m}: features {features[m]:.0f} s, 10 heads {training[m]:.1f} s" for m in sorted(features))
    row = (f"| whole paper protocol, random init (2 models x {len(costs) // max(1, len(features))} replicates, "
           f"224², 20 epochs) | {wall / 60:.1f} min | {detail} |")
    print(row, flush=True)
    if keep:
        shutil.copytree(work / "results", keep, dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    return row


def gpu_throughput() -> str | None:
    if not torch.cuda.is_available():
        return None
    config = validate_config(yaml.safe_load((ROOT / "workflow/presets/paper.yaml").read_text()))
    from snakemake.utils import update_config  # only to merge the presets as Snakemake does

    update_config(config, yaml.safe_load((ROOT / "workflow/presets/paper-random-init.yaml").read_text()))
    model = model_plan(validate_config(config), "vivit").build().freeze_backbone().cuda().eval()
    batch = torch.randint(0, 256, (16, model.num_frames, 224, 224), dtype=torch.uint8)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(2):
            model.features(model.prepare(batch))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = 10
        for _ in range(n):
            model.features(model.prepare(batch))
        torch.cuda.synchronize()
    rate = n * len(batch) / (time.perf_counter() - t0)
    row = f"| ViViT-B feature extraction, 18 frames 224², bf16, batch 16 | {rate:.1f} clips/s |"
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--skip-paper", action="store_true", help="only (a) (and (c) on a GPU)")
    parser.add_argument("--keep", type=Path, help="copy the paper run's results/ here")
    args = parser.parse_args()
    print(f"machine: {describe()}\n")
    print("| model | cached features + head | end to end (frozen backbone) | ratio | same losses |")
    print("|---|---|---|---|---|")
    cached_vs_end_to_end(args.cores)
    if not args.skip_paper:
        print("\n| run | wall time | detail |\n|---|---|---|")
        paper_protocol(args.cores, args.keep)
    gpu_throughput()


if __name__ == "__main__":
    main()
