"""What each calibration method and decision rule is worth on a finished run's test patients.

    .venv/bin/python workflow/benchmarks/default_run.py --keep /tmp/ichseq-default
    .venv/bin/python workflow/benchmarks/calibration_methods.py --run /tmp/ichseq-default

For every finished replicate of every model of the kept run: its trained model scores its
validation and test samples again (the whole model, backbone included, as ``ichseq predict``
does), each calibration method of ``ichseq.training.calibration`` is fitted on the validation
patients' logits exactly as training fits it, and the test patients' expected calibration error
(10 bins) and Brier score are measured, per replicate (mean ± sd) and pooled over the
replicates. Then the two patient decision rules on the same logits: ``any`` slice at the model's
own 0.5 (the study) and ``max_prob`` with the threshold chosen on the validation patients
(balanced accuracy, recall, specificity). Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402


def replicate_logits(run_dir: Path, cache, split_dir: Path) -> dict:
    """Val and test patient logits (highest sample) and labels of one finished run."""
    import torch

    from ichseq.data.splits import read_split
    from ichseq.training.calibration import patient_logits
    from ichseq.training.loop import predict_logits
    from ichseq.training.runs import load_run_model, samples_for

    model, info = load_run_model(run_dir / "model")
    from ichseq.training.plan import ModelPlan

    plan = ModelPlan.from_dict(info["plan"])
    samples = samples_for(model, cache, plan)
    split = read_split(split_dir / f"rep-{info['replicate']}.json")
    out = {"kind": model.kind}
    for part in ("val", "test"):
        index = samples.select(split[part])
        with torch.no_grad():
            logits = predict_logits(model, lambda idx: samples.batch(model, cache, idx), index,
                                    plan.training.feature_batch_size).double()
        z = (logits[:, 1] - logits[:, 0]).numpy()
        table = patient_logits(samples.patient[index], z)
        table["label"] = pd.Series(samples.label[index]).groupby(samples.patient[index]).max().to_numpy()
        # A slice model's any-slice vote at 0.5 on the model's own probabilities (logit >= 0).
        table["any"] = table.z >= 0
        out[part] = table
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run's working directory")
    args = parser.parse_args()

    import torch

    from ichseq.data.cache import SliceCache
    from ichseq.training.calibration import METHODS, brier_score, calibrated, expected_calibration_error, fit_calibration
    from ichseq.training.votes import choose_patient_threshold

    torch.set_num_threads(2)
    os.chdir(args.run)  # the runs' plans name their pretrained folders relative to it
    cache = SliceCache(Path("results/data/cache"))
    print(f"# calibration methods on {args.run} ({describe()})\n")
    calib_rows, rule_rows = [], []
    for model_dir in sorted(Path("results/runs").iterdir()):
        reps = sorted(p for p in model_dir.glob("rep-*") if (p / "metrics.json").is_file())
        pooled = {m: [] for m in METHODS}
        labels = []
        for rep in reps:
            data = replicate_logits(rep, cache, Path("results/splits"))
            val, test = data["val"], data["test"]
            y = test.label.to_numpy()
            labels.append(y)
            for method in METHODS:
                fitted = fit_calibration(method, val.z.to_numpy(), val.label.to_numpy())
                p = calibrated(fitted, test.z.to_numpy())
                pooled[method].append(p)
                calib_rows.append({"model": model_dir.name, "replicate": rep.name, "method": method,
                                   "ece": expected_calibration_error(p, y), "brier": brier_score(p, y)})
            p_val = calibrated(fit_calibration("platt", val.z.to_numpy(), val.label.to_numpy()), val.z.to_numpy())
            cut = choose_patient_threshold(val.label.to_numpy(), p_val)
            p_test = calibrated(fit_calibration("platt", val.z.to_numpy(), val.label.to_numpy()), test.z.to_numpy())
            for rule, positive in (("any / threshold 0.5", test["any"].to_numpy()), ("max_prob, val threshold", p_test >= cut)):
                recall = float(np.mean(positive[y == 1])) if (y == 1).any() else np.nan
                specificity = float(np.mean(~positive[y == 0])) if (y == 0).any() else np.nan
                rule_rows.append({"model": model_dir.name, "kind": data["kind"], "rule": rule, "recall": recall,
                                  "specificity": specificity, "balanced_accuracy": (recall + specificity) / 2})
            print(f"{model_dir.name} {rep.name} done", file=sys.stderr)
        y_all = np.concatenate(labels) if labels else np.array([])
        for method in METHODS:
            if pooled[method]:
                p_all = np.concatenate(pooled[method])
                calib_rows.append({"model": model_dir.name, "replicate": "pooled", "method": method,
                                   "ece": expected_calibration_error(p_all, y_all), "brier": brier_score(p_all, y_all)})
    calib = pd.DataFrame(calib_rows)
    print("| model | calibration | test ECE, mean ± sd | pooled ECE | Brier, mean ± sd |")
    print("|---|---|---|---|---|")
    for (model, method), group in calib.groupby(["model", "method"], sort=False):
        per = group[group.replicate != "pooled"]
        pooled_ece = group[group.replicate == "pooled"].ece.iloc[0]
        print(f"| {model} | {method} | {per.ece.mean():.3f} ± {per.ece.std(ddof=1):.3f} | {pooled_ece:.3f} | "
              f"{per.brier.mean():.3f} ± {per.brier.std(ddof=1):.3f} |")
    rules = pd.DataFrame(rule_rows)
    print("\n| model | decision | balanced accuracy | recall | specificity |")
    print("|---|---|---|---|---|")
    for (model, rule), group in rules.groupby(["model", "rule"], sort=False):
        cells = [f"{group[c].mean():.3f} ± {group[c].std(ddof=1):.3f}" for c in ("balanced_accuracy", "recall", "specificity")]
        print(f"| {model} | {rule} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
