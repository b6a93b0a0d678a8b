"""End-to-end runs of the Snakemake workflow on tiny synthetic configurations."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ichseq.data.download import MARKER_FILE
from ichseq.data.splits import patient_split
from ichseq.models import BUILTIN

# Every built-in model, as the unknown-model message lists them.
AVAILABLE = ", ".join(sorted(BUILTIN))

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
# The cartoon synthetic twin (fast) for the study cohort and for any pretraining cohort: the
# anatomical default builds a head atlas in each acquire job.
TINY = {
    "dataset": {"synthetic": {"n_patients": 10, "n_positive": 5, "image_size": 64, "min_slices": 12, "max_slices": 16,
                              "generator": "cartoon"}},
    "pretrain": {"dataset": {"synthetic": {"generator": "cartoon"}}},
    "preprocess": {"image_size": 32},
    "splits": {"replicates": 3, "test_fraction": 0.3, "val_fraction": 0.25},
    # Deep-merged over config.yaml by Snakemake, so every architecture key is spelled out, and
    # the demo entries' pretraining recipe is switched off: random backbones, plain input (the
    # pretrain stage has its own test below, on a copy of this run).
    "models": {
        "vivit": {"pretrained": None, "pretrain": None, "pooling": "cls", "input_windows": None, "mean_filters": None,
                  "config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                             "intermediate_size": 32, "tubelet_size": [2, 8, 8]},
                  "num_frames": 4, "image_size": 32},
        "convnext": {"pretrained": None, "pooling": "mean", "input_windows": None,
                     "config": {"patch_size": 4, "num_stages": 4, "hidden_sizes": [8, 8, 16, 16],
                                "depths": [1, 1, 1, 1], "layer_scale_init_value": 1.0e-6},
                     "image_size": 32},
    },
    "training": {"epochs": 3, "batch_size": 4},
}
RUN_FILES = ("metrics.json", "predictions.csv", "sample_predictions.csv", "history.csv", "cost.json", "model/ichseq.json")

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, config: dict | None = None) -> subprocess.CompletedProcess:
    cfg = workdir / "test-config.yaml"
    cfg.write_text(yaml.safe_dump(config or TINY))
    # Targets go before --configfile, which takes several values.
    cmd = [str(SNAKEMAKE), *args, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", "--configfile", str(cfg)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_default_target_builds_cohort_and_splits(tiny_run):
    cohort = pd.read_csv(tiny_run / "results/data/cohort.csv")
    assert list(cohort.columns[:4]) == ["patient", "label", "n_slices", "n_positive_slices"]
    assert len(cohort) == 10 and cohort.label.sum() == 5
    # label = any positive slice
    assert ((cohort.n_positive_slices > 0).astype(int) == cohort.label).all()
    for rep in range(3):
        split = json.loads((tiny_run / f"results/splits/rep-{rep}.json").read_text())
        expected = patient_split(cohort, rep, 0, 0.3, 0.25)
        assert {k: split[k] for k in ("train", "val", "test")} == {k: expected[k] for k in ("train", "val", "test")}
    log = (tiny_run / "logs/data/cohort.log").read_text()
    assert "cohort: 10 patients (5 with hemorrhage, 5 without)" in log


def test_default_target_trains_every_model_and_replicate(tiny_run):
    for model in ("vivit", "convnext"):
        assert (tiny_run / f"results/features/{model}/features.npy").is_file()
        assert "feature vectors" in (tiny_run / f"logs/features/{model}.log").read_text()
        for rep in range(3):
            run = tiny_run / f"results/runs/{model}/rep-{rep}"
            for name in RUN_FILES:
                assert (run / name).is_file(), run / name
            assert not (run / "resume-checkpoint.pt").exists()
            metrics = json.loads((run / "metrics.json").read_text())
            assert (metrics["model"], metrics["replicate"]) == (model, rep)
            split = json.loads((tiny_run / f"results/splits/rep-{rep}.json").read_text())
            assert sorted(pd.read_csv(run / "predictions.csv").patient) == split["test"]
            # The log shows progress: epoch, losses, validation metric, elapsed and remaining time.
            log = (tiny_run / f"logs/train/{model}/rep-{rep}.log").read_text()
            assert "epoch 3/3 train_loss" in log and "val_roc_auc" in log and "remaining" in log


def test_statistics_figures_and_report(tiny_run):
    runs = pd.read_csv(tiny_run / "results/metrics/runs.csv")
    assert set(runs.model) == {"vivit", "convnext"} and set(runs.replicate) == {0, 1, 2}
    tests = pd.read_csv(tiny_run / "results/stats/tests.csv")
    assert {"shapiro", "levene", "mann_whitney_u", "paired_t", "wilcoxon"} <= set(tests.test)
    assert "Undefined values" in (tiny_run / "results/stats/tables.md").read_text()
    assert (tiny_run / "results/summary.md").read_text().startswith("# Findings")
    figures = ("metrics_boxplot", "paired_runs", "confusion_matrices", "roc_curves", "training_curves", "cost",
               "reliability")
    for name in figures:
        assert (tiny_run / f"results/figures/{name}.png").stat().st_size > 1000
        assert (tiny_run / f"results/figures/{name}.svg").is_file()
    proc = snakemake(tiny_run, "--report", "results/report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tiny_run / "results/report.html").read_text()
    for name in figures:
        assert f"{name}.png" in html, name
    for name in ("cohort.csv", "runs.csv", "tests.csv", "findings.html"):
        assert name in html, name
    # Tables are embedded as HTML pages the report shows inline (CSV is only a download).
    pages = {}
    for match in re.finditer(r"data:text/html;charset=utf8;filename=([\w.]+);base64,([A-Za-z0-9+/=]+)", html):
        pages[match.group(1)] = base64.b64decode(match.group(2)).decode()
    assert {"tables.html", "runs.html", "cost.html", "findings.html", "calibration.html"} <= set(pages), sorted(pages)
    assert pages["tables.html"].count("<table>") == 9 and "Table III. t-tests" in pages["tables.html"]
    assert pages["runs.html"].count("<tr>") == 1 + len(runs.groupby(["model", "replicate"]))
    # Each run's calibration: ECE before/after per run and per model, every run calibrated.
    calibration = pd.read_csv(tiny_run / "results/stats/calibration_runs.csv")
    assert len(calibration) == 6 and calibration.calibrated.all()
    models = pd.read_csv(tiny_run / "results/stats/calibration.csv")
    assert sorted(models.model) == ["convnext", "vivit"] and (models.calibrated_replicates == 3).all()
    assert pages["calibration.html"].count("<table>") == 2


def test_failed_training_job_leaves_nothing_that_looks_complete(tiny_run, tmp_path):
    shutil.copytree(tiny_run / "resources", tmp_path / "resources")
    # Valid for the schema, but ViViT cannot cut 5 frames into tubelets of 2: the model job fails.
    odd = {**TINY["models"]["vivit"], "architecture": "vivit", "num_frames": 5}
    config = {**TINY, "models": {**TINY["models"], "vivit_odd": odd}}
    proc = snakemake(tmp_path, "results/runs/vivit_odd/rep-0/metrics.json", config=config)
    assert proc.returncode != 0
    log = (tmp_path / "logs/features/vivit_odd.log").read_text()
    error = [line for line in log.splitlines() if "ERROR" in line]
    assert len(error) == 1 and "models.vivit_odd.num_frames: 5 is not a multiple of the tubelet length 2" in error[0], log
    assert not (tmp_path / "results/features/vivit_odd").exists()
    assert not (tmp_path / "results/runs").exists()


def test_unknown_model_fails_at_validation_before_any_job(tmp_path):
    config = {**TINY, "models": {**TINY["models"], "resnet": {"image_size": 32}}}
    proc = snakemake(tmp_path, "-n", config=config)
    assert proc.returncode != 0
    assert f"models.resnet: unknown model 'resnet'; available: {AVAILABLE}" in proc.stdout + proc.stderr
    proc = snakemake(tmp_path, config=config)
    assert proc.returncode != 0 and not (tmp_path / "results").exists()


def test_rerun_has_nothing_to_do(tiny_run):
    proc = snakemake(tiny_run, "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_named_targets(tmp_path):
    proc = snakemake(tmp_path, "results/data/cohort.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results/data/cohort.csv").exists()
    assert not (tmp_path / "results/splits").exists()
    proc = snakemake(tmp_path, "results/splits/rep-1.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in (tmp_path / "results/splits").iterdir()] == ["rep-1.json"]


def test_typo_in_config_names_the_key(tmp_path):
    bad = {**TINY, "splits": {"replicats": 3}}
    proc = snakemake(tmp_path, "-n", config=bad)
    assert proc.returncode != 0
    assert "splits.replicats: unknown key" in proc.stdout + proc.stderr


def test_wrong_type_names_the_key(tmp_path):
    bad = {**TINY, "preprocess": {"image_size": "big"}}
    proc = snakemake(tmp_path, "-n", config=bad)
    assert proc.returncode != 0
    assert "preprocess.image_size: expected an integer" in proc.stdout + proc.stderr


def test_local_jpg_layout_gives_the_same_cohort(tiny_run, tmp_path):
    from ichseq.data.convert import export_jpg_layout

    jpg = export_jpg_layout(tiny_run / "resources/ct-ich-synthetic", tmp_path / "jpg")
    config = {**TINY, "dataset": {"source": "local", "local": {"path": str(jpg)}}}
    proc = snakemake(tmp_path, "results/data/cohort.csv", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = pd.read_csv(tiny_run / "results/data/cohort.csv")
    b = pd.read_csv(tmp_path / "results/data/cohort.csv")
    pd.testing.assert_frame_equal(a, b)
    assert "jpg-v1.0.0" in (tmp_path / "logs/data/brain_window.log").read_text()


def test_bad_dataset_fails_with_one_line_and_leaves_no_output(tiny_run, tmp_path):
    data = tmp_path / "broken"
    shutil.copytree(tiny_run / "resources/ct-ich-synthetic", data)
    scan = data / "ct_scans" / "051.nii"
    scan.write_bytes(scan.read_bytes()[: scan.stat().st_size // 2])
    config = {**TINY, "dataset": {"source": "local", "local": {"path": str(data)}}}
    proc = snakemake(tmp_path, config=config)
    assert proc.returncode != 0
    log = (tmp_path / "logs/data/brain_window.log").read_text()
    error = [line for line in log.splitlines() if "ERROR" in line]
    assert len(error) == 1 and "051.nii: truncated NIfTI" in error[0], log
    assert "Traceback" not in log
    leftovers = list((tmp_path / "results").rglob("*")) if (tmp_path / "results").exists() else []
    assert not [p for p in leftovers if p.is_file()], leftovers
    assert not (tmp_path / "results/data/cohort.csv").exists()


def test_missing_local_path_is_a_config_error(tmp_path):
    config = {**TINY, "dataset": {"source": "local", "local": {"path": str(tmp_path / "nowhere")}}}
    proc = snakemake(tmp_path, "-n", config=config)
    assert proc.returncode != 0
    assert f"dataset.local.path: {tmp_path / 'nowhere'} does not exist" in proc.stdout + proc.stderr


def test_physionet_source_downloads_then_builds(tiny_run, tmp_path, monkeypatch):
    """The physionet source end to end against a loopback server holding the tiny twin."""
    from tests.data.test_download import PASSWORD, USER, _start_server

    fake, server = _start_server()
    try:
        src = tiny_run / "resources/ct-ich-synthetic"
        fake.files = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
        config = {**TINY, "dataset": {"source": "physionet", "physionet": {"url": fake.url, "dir": "downloads/ct-ich"}}}
        env_cmd = {"PHYSIONET_USERNAME": USER, "PHYSIONET_PASSWORD": PASSWORD}
        for name, value in env_cmd.items():
            monkeypatch.setenv(name, value)
        proc = snakemake(tmp_path, "results/data/cohort.csv", config=config)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    pd.testing.assert_frame_equal(
        pd.read_csv(tiny_run / "results/data/cohort.csv"), pd.read_csv(tmp_path / "results/data/cohort.csv")
    )
    assert (tmp_path / "downloads/ct-ich" / MARKER_FILE).exists()
    # The password is nowhere: not in logs, results, Snakemake's metadata or its output.
    assert PASSWORD not in proc.stdout + proc.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_pretrain_stage_runs_before_features_and_reaches_the_report(tiny_run, tmp_path):
    # convnext opts in; vivit keeps its random backbone. A tiny pretraining cohort of its own.
    # On a copy of the tiny run: only the pretraining and what depends on it run again.
    shutil.copytree(tiny_run, tmp_path, symlinks=True, dirs_exist_ok=True)
    config = json.loads(json.dumps(TINY))
    config["models"]["convnext"]["pretrained"] = "pretrain"
    config["pretrain"] = {"dataset": {"synthetic": {"n_patients": 10, "n_positive": 5, "image_size": 64,
                                                    "min_slices": 12, "max_slices": 16, "generator": "cartoon"}},
                          "training": {"epochs": 2, "batch_size": 16}}
    proc = snakemake(tmp_path, config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rule pretrain:" in proc.stdout + proc.stderr
    assert "rule brain_window:" not in proc.stdout + proc.stderr  # the study's data stage is reused
    saved = tmp_path / "results/pretrained/convnext"
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in saved.iterdir()}
    assert not (tmp_path / "results/pretrained/vivit").exists()
    meta = json.loads((tmp_path / "results/features/convnext/features.json").read_text())
    assert meta["settings"]["pretrained"] == "results/pretrained/convnext"
    summary = pd.read_csv(tmp_path / "results/pretrain/summary.csv")
    assert summary.model.tolist() == ["convnext"] and summary.patients_train.item() + summary.patients_holdout.item() == 10
    assert "shares no scan with the study cohort" in (tmp_path / "logs/pretrain/convnext.log").read_text()
    proc = snakemake(tmp_path, "--report", "results/report.html", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pretraining cohort" in (tmp_path / "results/report.html").read_text()


def test_two_stage_models_read_the_backbones_store_and_three_models_get_the_friedman_comparison(tiny_run, tmp_path):
    # On a copy of the tiny run: cnn_rnn and slice_context join; they train on convnext's
    # feature store (no features job of their own, convnext's is not rerun), and with four
    # models the comparison adds the Friedman test and the critical-difference diagram.
    shutil.copytree(tiny_run, tmp_path, symlinks=True, dirs_exist_ok=True)
    config = json.loads(json.dumps(TINY))
    config["models"]["cnn_rnn"] = {"head": {"hidden_size": 8}}
    config["models"]["slice_context"] = {"head": {"hidden_size": 8, "context": 1}}
    proc = snakemake(tmp_path, config=config)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "rule features:" not in out and not (tmp_path / "results/features/cnn_rnn").exists()
    assert "localrule comparison:" in out
    for model in ("cnn_rnn", "slice_context"):
        for rep in range(3):
            log = (tmp_path / f"logs/train/{model}/rep-{rep}.log").read_text()
            assert "results/features/convnext" in log and "no slice goes through the backbone again" in log
            cost = json.loads((tmp_path / f"results/runs/{model}/rep-{rep}/cost.json").read_text())
            assert cost["class_imbalance"] == "weighted" and cost["mode"] == "head"
    # 3 replicates are too few for a Friedman test (autorank needs 5): it says so, and so does the
    # diagram, instead of failing the rule.
    friedman = pd.read_csv(tmp_path / "results/stats/friedman.csv").set_index("metric")
    assert friedman.at["roc_auc", "n_models"] == 4 and friedman.at["roc_auc", "n_replicates"] == 3
    assert "fewer than 5: undefined" in friedman.at["roc_auc", "note"]
    board = pd.read_csv(tmp_path / "results/stats/leaderboard.csv").set_index("model")
    assert board.at["cnn_rnn", "pretrained"] == "backbone convnext: random init"
    assert set(board["class_imbalance"]) == {"weighted"}
    assert (tmp_path / "results/stats/critical_difference.png").stat().st_size > 1000
    proc = snakemake(tmp_path, "--report", "results/report.html", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tmp_path / "results/report.html").read_text()
    assert "critical_difference.png" in html and "leaderboard.png" in html


def test_zoo_preset_dry_run_plans_all_seven_models(tmp_path):
    cmd = [str(SNAKEMAKE), "-n", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "2",
           "--configfile", str(ROOT / "config.yaml"), str(ROOT / "workflow/presets/zoo.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    # 7 models x 10 replicates; features for the 5 models with a backbone of their own (the
    # two-stage ones read convnext's), pretraining for the 5 that are pretrained.
    assert (counts["train"], counts["features"], counts["pretrain"]) == ("70", "5", "5"), counts
    assert counts["comparison"] == "1"
    trained = set(re.findall(r"results/runs/(\w+)/rep-0/metrics\.json", out))
    assert trained == {"vivit", "convnext", "cnn_rnn", "slice_context", "seg_cls", "videomae", "timesformer"}



def test_planning_the_workflow_imports_neither_torch_nor_the_statistics(tmp_path):
    # Every Slurm job parses the whole workflow before its one rule runs; importing torch (and
    # with it transformers) or pingouin there cost seconds per job. Stand-ins that end the
    # process on import prove that the seven models' plans and every stage's targets are
    # resolved without them.
    for name in ("torch", "transformers", "pingouin"):
        (tmp_path / "stubs" / name).mkdir(parents=True)
        (tmp_path / "stubs" / name / "__init__.py").write_text(
            f"raise SystemExit('{name} imported while the workflow was planned')\n")
    cmd = [str(SNAKEMAKE), "-n", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path / "work"), "--cores", "2",
           "--configfile", str(ROOT / "config.yaml"), str(ROOT / "workflow/presets/zoo.yaml")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "stubs"),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    out = proc.stdout + proc.stderr
    assert "imported while the workflow was planned" not in out, out[-3000:]
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r"^train\s+70$", out, flags=re.M), out[-3000:]

def test_predict_rule_scores_new_scans_with_every_replicate_of_each_model(tiny_run, tmp_path):
    # On a copy of the tiny run: predict.scans names a folder holding a NIfTI scan and the same
    # scan as a DICOM series; `snakemake predict` runs one predict_scan job per (model, scan)
    # and nothing else (the runs exist), and the two files of one scan score alike.
    from ichseq.cli import main

    shutil.copytree(tiny_run, tmp_path, symlinks=True, dirs_exist_ok=True)
    nifti = sorted((tmp_path / "resources").rglob("ct_scans/*.nii"))[0]
    scans = tmp_path / "new-scans"
    scans.mkdir()
    shutil.copy(nifti, scans / "head.nii")
    assert main(["to-dicom", str(nifti), str(scans / "head_dicom")]) == 0
    config = {**json.loads(json.dumps(TINY)), "predict": {"scans": [str(scans)]}}
    proc = snakemake(tmp_path, "predict", config=config)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "rule predict_scan:" in out and "rule train:" not in out and "rule features:" not in out
    decisions = {}
    for model in ("vivit", "convnext"):
        for scan in ("head", "head_dicom"):
            folder = tmp_path / f"results/predict/{model}/{scan}"
            decisions[model, scan] = json.loads((folder / "decision.json").read_text())
            assert decisions[model, scan]["replicates"] == [0, 1, 2]
            assert (folder / "figure.png").stat().st_size > 1000 and (folder / "figure.svg").is_file()
            assert len(pd.read_csv(folder / "slices.csv")) == decisions[model, scan]["slices"]
            assert "replicates positive" in (tmp_path / f"logs/predict/{model}/{scan}.log").read_text()
        assert decisions[model, "head"]["probability"] == pytest.approx(decisions[model, "head_dicom"]["probability"],
                                                                          abs=1e-5)
    # With scans configured, the default target includes them: nothing left to do.
    proc = snakemake(tmp_path, "-n", config=config)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    # And the report shows the figures under Predictions.
    proc = snakemake(tmp_path, "--report", "results/report.html", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Predictions" in (tmp_path / "results/report.html").read_text()
