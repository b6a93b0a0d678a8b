"""What each part of the demo models' pretraining recipe is worth (issue 13).

For every variant: the pretrain stage's own code (``pretrain_model``) on the default
pretraining cohort, then the study's head-only protocol (``compute_features`` + ``train_run``
per replicate) on the study cohort and its splits, exactly as the workflow runs them; prints
the held-out AUC of the pretraining, its seconds, and the study's patient ROC AUC over the
replicates (mean ± sd). A variant is the default config with one thing changed.

Needs a finished default run (its caches and splits), e.g. the one ``default_run.py --keep``
leaves::

    .venv/bin/python workflow/benchmarks/default_run.py --keep /tmp/ichseq-default
    .venv/bin/python workflow/benchmarks/pretrain_ablation.py --run /tmp/ichseq-default [--only convnext]

Each variant takes about 1-2 minutes on 2 CPU cores.

Other models, or other entries, from a file (``--config FILE``)::

    .venv/bin/python workflow/benchmarks/pretrain_ablation.py --run /tmp/ichseq-default \
        --config workflow/benchmarks/video_entries.yaml [--only videomae] [--replicates 3]

``FILE`` holds ``models:`` (entries added to, or replacing, config.yaml's) and optionally
``variants:`` (label -> ``{model, entry, pretrain}``: the entry's name, changes to its entry,
changes to its pretraining settings, as in ``VARIANTS``); without ``variants`` each of its
models is one variant, as given. The entry's name matters: a model's random initialisation and
its pretraining's draws are seeded from it, so measure an entry under the name the preset gives it.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

# name -> (model, changes to its entry, changes to its pretraining settings)
VARIANTS = {
    "convnext: default": ("convnext", {}, {}),
    "convnext: no pretraining (random init, frozen)": ("convnext", {"pretrained": None}, {}),
    "convnext: no input windows (the slice in all 3 channels)": ("convnext", {"input_windows": None}, {}),
    "convnext: mean pooling": ("convnext", {"pooling": "mean"}, {}),
    "convnext: no mask loss": ("convnext", {}, {"mask_loss_weight": 0.0}),
    "convnext: the former demo shape (4-px stem, 4 stages)": (
        "convnext", {"config": {"hidden_sizes": [24, 48, 96, 192], "depths": [1, 1, 2, 1]}}, {}),
    "vivit: default": ("vivit", {}, {}),
    "vivit: no pretraining (random init, frozen)": ("vivit", {"pretrained": None}, {}),
    "vivit: CLS token": ("vivit", {"pooling": "cls"}, {}),
    "vivit: no mean filters": ("vivit", {"mean_filters": None}, {}),
    "vivit: blood window not a band": (
        "vivit", {"input_windows": [{"level": 40, "width": 120}, {"level": 74, "width": 48},
                                    {"level": 98, "width": 4}]}, {}),
    "vivit: no mask loss": ("vivit", {}, {"mask_loss_weight": 0.0}),
}


def head_only(plan, run: Path, work: Path, replicates: int, threads: int) -> list[float]:
    from ichseq.training.runs import RUN_OUTPUTS, compute_features, train_run

    cache = run / "results/data/cache"
    compute_features(plan, cache, work / "features", threads=threads, log=lambda _m: None)
    aucs = []
    for rep in range(replicates):
        out = work / f"rep-{rep}"
        outputs = {k: out / (k if k == "model" else f"{k}.{'json' if k in ('metrics', 'cost') else 'csv'}")
                   for k in RUN_OUTPUTS}
        report = train_run(plan, rep, run / f"results/splits/rep-{rep}.json", cache, outputs,
                           features_path=work / "features", threads=threads, log=lambda _m: None)
        aucs.append(report["metrics"]["roc_auc"])
    return aucs


def read_variants(path: Path | None, base: dict) -> dict:
    """The variants to measure: ``VARIANTS``, or those of ``--config FILE`` (see the module
    docstring), whose ``models`` are added to ``base['models']`` (in place)."""
    if path is None:
        return VARIANTS
    spec = yaml.safe_load(path.read_text()) or {}
    models = spec.get("models") or {}
    unknown = set(spec) - {"models", "variants"}
    if unknown or not isinstance(models, dict):
        sys.exit(f"{path}: expected the keys models (entries) and variants, got {', '.join(sorted(spec))}")
    base["models"] = {**base["models"], **models}
    variants = spec.get("variants")
    if variants is None:
        return {f"{name}: as given": (name, {}, {}) for name in models}
    for label, v in variants.items():
        if not isinstance(v, dict) or v.get("model") not in base["models"]:
            sys.exit(f"{path}: variants.{label}.model: name an entry of models or of config.yaml")
    return {label: (v["model"], v.get("entry") or {}, v.get("pretrain") or {}) for label, v in variants.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished default run's working directory")
    parser.add_argument("--config", type=Path, help="a YAML file of model entries / variants to measure instead")
    parser.add_argument("--only", help="variants whose name starts with this (e.g. convnext)")
    parser.add_argument("--replicates", type=int, help="the first N replicates only (default: the config's)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ichseq.config import validate_config
    from ichseq.training.pretrain import pretrain_model
    from ichseq.training.plan import model_plan, pretrain_settings

    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    variants = read_variants(args.config, base)
    replicates = args.replicates or validate_config(base)["splits"]["replicates"]
    print(f"machine: {describe()}, {args.threads} threads")
    print("| variant | parameters | pretraining held-out AUC (s wall, CPU) | study patient ROC AUC, mean ± sd (min-max), n "
          "| study s |")
    print("|---|---|---|---|---|")
    for name, (model, entry_changes, pretrain_changes) in variants.items():
        if args.only and not name.startswith(args.only):
            continue
        config = copy.deepcopy(base)
        entry = {**config["models"][model], **entry_changes}
        entry["pretrain"] = {**(entry.get("pretrain") or {}), **pretrain_changes}
        if entry.get("pretrained") != "pretrain":
            entry.pop("pretrain")
        config["models"] = {model: entry}
        config = validate_config(config)
        plan = model_plan(config, model)
        parameters = plan.build().parameter_counts()["total"]
        work = Path(tempfile.mkdtemp(prefix="ichseq-ablation-"))
        try:
            pre_text = "—"
            if plan.pretrain:
                t0, cpu0 = time.perf_counter(), time.process_time()
                report = pretrain_model(
                    plan, pretrain_settings(config, model), args.run / "results/pretrain/data/cache",
                    args.run / "results/data/cache",
                    {"model": work / "pre/model", "history": work / "pre/history.csv", "metrics": work / "pre/m.json"},
                    holdout_fraction=config["pretrain"]["holdout_fraction"], seed=config["pretrain"]["seed"],
                    threads=args.threads, log=lambda _m: None)
                # CPU seconds too: on a shared machine the wall time varies with the others' load.
                pre_text = (f"{report['holdout_roc_auc']:.3f} ({time.perf_counter() - t0:.0f} s, "
                            f"{time.process_time() - cpu0:.0f} CPU s)")
                plan = plan.with_weights(work / "pre/model")
            t0 = time.perf_counter()
            aucs = np.array(head_only(plan, args.run, work, replicates, args.threads))
            spread = f"{aucs.std(ddof=1):.3f}" if len(aucs) > 1 else "—"
            print(f"| {name} | {parameters:,} | {pre_text} | {aucs.mean():.3f} ± {spread} "
                  f"({aucs.min():.3f}-{aucs.max():.3f}), {len(aucs)} | {time.perf_counter() - t0:.0f} |", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
