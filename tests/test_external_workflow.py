"""External validation through Snakemake: the tiny run's replicates tested on a second cohort."""

from __future__ import annotations

import base64
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from ichseq.analysis.external import ENSEMBLE, METRICS, REPLICATE_MEAN, ensemble_scores
from ichseq.inference.external import score_cohort
from ichseq.training.metrics import binary_metrics
from tests.test_workflow import TINY, snakemake

pytestmark = pytest.mark.slow

# Another cartoon twin: other seed, other folder, fewer patients.
EXTERNAL = {"dataset": {"source": "synthetic",
                        "synthetic": {"n_patients": 8, "n_positive": 4, "image_size": 64, "min_slices": 12,
                                      "max_slices": 16, "generator": "cartoon", "seed": 5}},
            "name": "twin-b"}
MODELS = ("vivit", "convnext")


def with_external() -> dict:
    return {**json.loads(json.dumps(TINY)), "external": EXTERNAL}


def job_counts(out: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M)}


def test_dry_run_plans_the_external_jobs_only_when_configured(tmp_path):
    proc = snakemake(tmp_path, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "external" not in out
    proc = snakemake(tmp_path, "-n", config=with_external())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = job_counts(out)
    assert (counts["acquire_external_synthetic"], counts["external_window"], counts["external_scores"],
            counts["external_metrics"]) == (1, 1, 2, 1), counts


def test_external_cohort_is_scored_by_every_replicate_and_its_metrics_recomputed(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path, symlinks=True, dirs_exist_ok=True)
    config = with_external()
    proc = snakemake(tmp_path, config=config)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "rule train:" not in out and "rule features:" not in out  # the study's runs are reused
    assert "rule external_window:" in out
    cache_meta = json.loads((tmp_path / "results/external/data/cache/cache.json").read_text())
    study_meta = json.loads((tmp_path / "results/data/cache/cache.json").read_text())
    assert cache_meta["window"] == study_meta["window"]
    external_patients = set(pd.read_csv(tmp_path / "results/external/data/cache/manifest.csv").patient)
    assert len(external_patients) == 8

    summary = pd.read_csv(tmp_path / "results/external/metrics.csv")
    replicates = pd.read_csv(tmp_path / "results/external/replicates.csv")
    for model in MODELS:
        scores = pd.read_csv(tmp_path / f"results/external/{model}/scores.csv")
        assert list(scores.columns) == ["patient", "label", "replicate", "probability", "prediction"]
        # Each external patient scored once by every replicate; 4 of 8 with hemorrhage.
        assert len(scores) == 8 * 3
        for rep, run in scores.groupby("replicate"):
            assert set(run.patient) == external_patients and run.label.sum() == 4
            want = binary_metrics(run.label, run.prediction, run.probability)
            got = replicates[(replicates.model == model) & (replicates.replicate == rep)].iloc[0]
            for metric in METRICS:
                assert got[metric] == pytest.approx(want[metric], nan_ok=True) if want[metric] is not None \
                    else np.isnan(got[metric])
        assert sorted(scores.replicate.unique()) == [0, 1, 2]
        mine = summary[summary.model == model].set_index(["estimate", "metric"])
        per_rep = [binary_metrics(r.label, r.prediction, r.probability) for _, r in scores.groupby("replicate")]
        ens = ensemble_scores(scores)
        ens_metrics = binary_metrics(ens.label, ens.prediction, ens.probability)
        for metric in METRICS:
            defined = [m[metric] for m in per_rep if m[metric] is not None]
            if defined:
                assert mine.at[(REPLICATE_MEAN, metric), "value"] == pytest.approx(np.mean(defined))
                low, high = mine.at[(REPLICATE_MEAN, metric), "ci_low"], mine.at[(REPLICATE_MEAN, metric), "ci_high"]
                assert low - 1e-9 <= mine.at[(REPLICATE_MEAN, metric), "value"] <= high + 1e-9
            if ens_metrics[metric] is not None:
                assert mine.at[(ENSEMBLE, metric), "value"] == pytest.approx(ens_metrics[metric])
        assert (mine.patients == 8).all() and (mine.replicates == 3).all() and (mine.resamples == 9999).all()

    versus = pd.read_csv(tmp_path / "results/external/internal_vs_external.csv").set_index(["model", "metric"])
    runs = pd.read_csv(tmp_path / "results/metrics/runs.csv")
    internal = runs[runs.metric == "roc_auc"].groupby("model").value.mean()
    for model in MODELS:
        assert versus.at[(model, "roc_auc"), "internal"] == pytest.approx(internal[model])
    assert "twin-b" in (tmp_path / "results/external/internal_vs_external.md").read_text()
    assert (tmp_path / "results/figures/external_roc.png").stat().st_size > 1000
    assert (tmp_path / "results/figures/external_roc.svg").is_file()

    # Nothing left to do, and the report has the category with its page and figure.
    proc = snakemake(tmp_path, "-n", config=config)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    proc = snakemake(tmp_path, "--report", "results/report.html", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tmp_path / "results/report.html").read_text()
    assert "External validation" in html and "external_roc.png" in html
    pages = {m.group(1): base64.b64decode(m.group(2)).decode() for m in re.finditer(
        r"data:text/html;charset=utf8;filename=([\w.]+);base64,([A-Za-z0-9+/=]+)", html)}
    assert "External validation: twin-b" in pages["metrics.html"]


def test_scoring_the_study_cache_reproduces_each_runs_test_predictions(tiny_run):
    # The external scoring path, applied to the study's own cache, decides each test patient
    # exactly as training did (same samples, calibration map and rule).
    for model in MODELS:
        scores = score_cohort([tiny_run / f"results/runs/{model}"], tiny_run / "results/data/cache",
                              log=lambda _: None)
        for rep in range(3):
            predictions = pd.read_csv(tiny_run / f"results/runs/{model}/rep-{rep}/predictions.csv")
            mine = scores[scores.replicate == rep].set_index("patient").loc[predictions.patient]
            assert mine.label.tolist() == predictions.label.tolist()
            assert mine.prediction.tolist() == predictions.prediction.tolist()
            assert mine.probability.to_numpy() == pytest.approx(predictions.probability.to_numpy(), abs=1e-5)


def test_one_cq500_patient_with_the_full_reads_file_is_scored_and_the_rest_listed_once(tiny_run, tmp_path):
    """Issue 26's first check: a CQ500 folder with one patient's real-layout series (the twin's,
    zipped, JPEG lossless, thin and bone series beside the plain one) and a reads.csv of all 491
    names: the patient is read, labelled by the readers' majority, scored by every replicate of
    both models; the 490 others are listed as absent in one line."""
    from ichseq.data import public_layouts as pl
    from ichseq.data.cq500 import cq500_labels, read_cq500_reads
    from ichseq.data.format_twins import write_cq500
    from ichseq.data.synthetic import SyntheticSpec, generate_synthetic

    quiet = {"log": lambda _m: None}
    twin = tmp_path / "twin"
    generate_synthetic(twin, SyntheticSpec(n_patients=4, n_positive=2, image_size=64, min_slices=12, max_slices=16,
                                           generator="cartoon", seed=9), **quiet)
    written = tmp_path / "written"
    write_cq500(twin, written, seed=1, **quiet)
    zips = sorted(written.glob("CQ500-CT-*.zip"))
    keep = int(pl.CQ500_ZIP.match(zips[0].name).group(1))
    download = tmp_path / "cq500"
    download.mkdir()
    shutil.copy(zips[0], download)
    reads = pd.read_csv(written / pl.CQ500_READS)
    mine = reads[reads.name == pl.cq500_name(keep)]
    rng = np.random.default_rng(0)
    others = [n for n in range(491) if n != keep][:490]
    filler = pd.DataFrame({c: rng.integers(0, 2, len(others)) for c in reads.columns[2:]})
    filler.insert(0, "Category", "B1")
    filler.insert(0, "name", [pl.cq500_name(n) for n in others])
    full = pd.concat([mine, filler], ignore_index=True)
    assert len(full) == 491
    full.to_csv(download / pl.CQ500_READS, index=False)

    shutil.copytree(tiny_run, tmp_path / "run", symlinks=True, dirs_exist_ok=True)
    config = {**json.loads(json.dumps(TINY)),
              "external": {"dataset": {"source": "cq500", "cq500": {"path": str(download)}}, "name": "cq500"}}
    proc = snakemake(tmp_path / "run", config=config)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    log = (tmp_path / "run" / "logs").rglob("*.log")
    window_log = next(p for p in log if "external" in str(p) and "window" in p.name).read_text()
    absent = [line for line in window_log.splitlines() if "490" in line and "no scan" in line.lower()]
    assert len(absent) == 1, window_log[-2000:]
    manifest = pd.read_csv(tmp_path / "run/results/external/data/cache/manifest.csv")
    assert set(manifest.patient) == {keep}
    majority = cq500_labels(read_cq500_reads(download / pl.CQ500_READS), "majority").label[keep]
    for model in MODELS:
        scores = pd.read_csv(tmp_path / f"run/results/external/{model}/scores.csv")
        assert scores.patient.tolist() == [keep] * 3 and (scores.label == majority).all()
        assert scores.probability.between(0, 1).all()
