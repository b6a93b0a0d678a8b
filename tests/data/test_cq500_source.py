"""CQ500 as a dataset source (issue 26.1): ``dataset.source: cq500`` caches the CQ500 twin (the
cartoon CT-ICH twin written in CQ500's layout) with one scan per usable patient, the readers'
majority as every slice's label, no masks, ``slice_labels``/``masks`` false in cache.json and the
series choice inside the cache; a thin series is averaged into 5 mm slabs (tilt undone); the
config and the Snakemake workflow take the source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ichseq.config import validate_config
from ichseq.data.cache import SliceCache, WindowSpec, build_cache
from ichseq.data.cq500 import SERIES_CHOICE_FILE, cq500_labels, read_cq500_reads
from ichseq.data.format_twins import THIN_DESCRIPTION, write_cq500
from ichseq.data.layout import SUBTYPES
from ichseq.data.public_layouts import CQ500_LAYOUT, CQ500_READS, cq500_name
from ichseq.data.synthetic import SyntheticSpec
from ichseq.errors import ConfigError
from tests.conftest import one_line_error

# 4 patients (2 with hemorrhage), 32 px, 8-10 slices of 5 mm: their thin series are 64-80 slices.
SPEC = SyntheticSpec(n_patients=4, n_positive=2, image_size=32, min_slices=8, max_slices=10, seed=3,
                     generator="cartoon")
SEED = 2  # with it the three readers disagree on some patients (test_format_twins)
SIZE = 32
QUIET = {"log": lambda _msg: None}


@pytest.fixture(scope="module")
def twin(small_twins) -> Path:
    return small_twins(SPEC)


@pytest.fixture(scope="module")
def cq500(small_twins) -> Path:
    """The CQ500 twin without its thin series (fast): a 5 mm and a bone-kernel series per patient."""
    return small_twins(SPEC, "cq500", thin_series=False, seed=SEED)


@pytest.fixture(scope="module")
def cached(cq500, tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("cache") / "cache"
    lines: list[str] = []
    build_cache(cq500, out, WindowSpec(SIZE), log=lines.append, source="cq500")
    return out, lines


def majority(root: Path) -> pd.DataFrame:
    return cq500_labels(read_cq500_reads(root / CQ500_READS), "majority")


def test_cache_has_one_scan_per_patient_labelled_by_the_readers_majority(cq500, cached):
    out, lines = cached
    truth = majority(cq500)
    cache = SliceCache(out)
    assert cache.patients == sorted(truth.index)
    manifest = cache.manifest
    # Every slice carries its scan's labels, no mask.
    for patient, rows in manifest.groupby("patient"):
        for column in ("label", *SUBTYPES, "fracture"):
            assert (rows[column] == truth.at[patient, column]).all(), (patient, column)
        assert (np.diff(rows.position_mm) > 0).all()
    assert (manifest.has_mask == 0).all() and not np.asarray(cache.masks).any()
    assert truth.label.nunique() == 2  # both classes present
    meta = json.loads((out / "cache.json").read_text())
    assert meta["layout"] == CQ500_LAYOUT and meta["dataset"]["source"] == "cq500"
    assert meta["slice_labels"] is False and meta["masks"] is False
    assert meta["label_rule"] == "majority" and meta["series_choice"] == SERIES_CHOICE_FILE
    assert meta["window"] == {"level": 40.0, "width": 120.0}
    assert meta["patients"] == len(truth) and meta["slices"] == len(manifest)
    assert meta["positive_slices"] == int(manifest.label.sum()) > 0
    assert meta["dataset"]["synthetic"] is True  # the twin's marker at CQ500's root
    # The series choice, inside the cache: every patient, the 5 mm soft-tissue series, its reason.
    choice = pd.read_csv(out / SERIES_CHOICE_FILE)
    assert sorted(choice.patient) == sorted(truth.index) and choice.use.all()
    assert set(choice.description) <= {"5mm", "PLAIN"}
    assert choice.reason.str.contains("nearest 5 mm").all() and choice.reason.str.contains("BONE").all()
    assert not [line for line in lines if line.startswith("CQ500:")]  # nothing to report


def test_cache_of_tcich_sets_both_flags_true(nifti_dataset, tmp_path):
    meta = build_cache(nifti_dataset, tmp_path / "cache", WindowSpec(SIZE), **QUIET)
    assert meta["slice_labels"] is True and meta["masks"] is True and "series_choice" not in meta


def test_thin_series_is_averaged_into_5mm_slabs_and_tilt_undone(twin, cached, tmp_path):
    """The default twin (5 mm, 0.625 mm and bone series) at a 10 degree gantry tilt: the 5 mm
    series is chosen by default; pinned, the thin series gives 5 mm slabs, as many as the 5 mm
    series' slices, close to the thick series' cache."""
    root = tmp_path / "CQ500"
    write_cq500(twin, root, zipped=False, tilt_deg=10.0, seed=SEED, **QUIET)
    patients = sorted(majority(root).index)
    lines: list[str] = []
    meta = build_cache(root, tmp_path / "thin", WindowSpec(SIZE), workers=2, log=lines.append, source="cq500",
                       dataset_options={"series": {str(p): THIN_DESCRIPTION for p in patients}, "slab_mm": 5.0})
    thin = SliceCache(tmp_path / "thin")
    thick = SliceCache(cached[0])
    assert thin.patients == thick.patients == patients
    for patient in patients:
        rows = thin.manifest[thin.manifest.patient == patient]
        np.testing.assert_allclose(np.diff(rows.position_mm), 5.0, atol=1e-3)
        assert len(rows) == len(thick.patient_rows(patient))
        a = np.asarray(thin.slices[thin.patient_rows(patient)], float)
        b = np.asarray(thick.slices[thick.patient_rows(patient)], float)
        assert np.abs(a - b).mean() < 12, patient  # the same head, averaged back (of 0-255)
        assert any(f"{cq500_name(patient)}: " in line and "averaged into" in line and "of 5 mm" in line
                   for line in lines), lines
        assert any(f"{cq500_name(patient)}: gantry tilt" in line for line in lines), lines
    choice = pd.read_csv(tmp_path / "thin" / SERIES_CHOICE_FILE)
    assert (choice.description == THIN_DESCRIPTION).all() and choice.reason.str.contains("pinned").all()
    assert choice.reason.str.contains("reformatted").all()
    assert meta["slices"] == len(thin.manifest) and meta["cq500_slab_mm"] == 5.0
    # No pin: the 5 mm series (nothing to average).
    lines.clear()
    build_cache(root, tmp_path / "default", WindowSpec(SIZE), log=lines.append, source="cq500")
    assert set(pd.read_csv(tmp_path / "default" / SERIES_CHOICE_FILE).description) <= {"5mm", "PLAIN"}
    assert not [line for line in lines if "averaged into" in line]


def test_reads_without_scans_and_scans_without_reads_are_logged_once_and_skipped(cq500, tmp_path):
    root = tmp_path / "CQ500"
    shutil.copytree(cq500, root)
    reads = pd.read_csv(root / CQ500_READS, dtype=str)
    dropped = int(reads.name.iloc[0].rsplit("-", 1)[1])
    extra = reads.iloc[[1]].assign(name=cq500_name(999))
    own = tmp_path / "my-reads.csv"  # dataset.cq500.reads: a reads file outside the folder
    pd.concat([reads.iloc[1:], extra]).to_csv(own, index=False)
    lines: list[str] = []
    meta = build_cache(root, tmp_path / "cache", WindowSpec(SIZE), log=lines.append, source="cq500",
                       dataset_options={"label_rule": "any", "reads": str(own)})
    absent = [line for line in lines if cq500_name(999) in line]
    unread = [line for line in lines if cq500_name(dropped) in line]
    assert len(absent) == 1 and "no scan under" in absent[0], lines
    assert len(unread) == 1 and "no row in" in unread[0] and "skipped" in unread[0], lines
    cache = SliceCache(tmp_path / "cache")
    expected = sorted(set(majority(cq500).index) - {dropped})
    assert cache.patients == expected and meta["patients"] == len(expected)
    assert meta["label_rule"] == "any" and meta["reads"] == str(own)
    anyone = cq500_labels(read_cq500_reads(own), "any")
    assert cache.manifest.groupby("patient").label.max().to_dict() == anyone.label.loc[expected].to_dict()
    choice = pd.read_csv(tmp_path / "cache" / SERIES_CHOICE_FILE).set_index("patient")
    assert set(choice.index) == set(expected) | {dropped, 999}
    assert not choice.at[999, "use"] and "no scan" in choice.at[999, "reason"]
    assert not choice.at[dropped, "use"] and "not in reads.csv" in choice.at[dropped, "reason"]


def test_a_folder_like_neither_layout_and_the_wrong_source_are_refused_in_one_line(cq500, nifti_dataset, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    for source in ("local", "cq500"):
        one_line_error(lambda: build_cache(other, tmp_path / f"c-{source}", WindowSpec(SIZE), source=source, **QUIET),
                       "hemorrhage_diagnosis_raw_ct.csv", "CQ500", "dataset.source")
    # CQ500 read as CT-ICH: the message says which source reads it.
    one_line_error(lambda: build_cache(cq500, tmp_path / "c", WindowSpec(SIZE), source="local", **QUIET),
                   "CQ500", "dataset.source: cq500")
    # CT-ICH read as CQ500.
    one_line_error(lambda: build_cache(nifti_dataset, tmp_path / "c", WindowSpec(SIZE), source="cq500", **QUIET),
                   "not CQ500", "dataset.source local")
    assert not any(p.name.startswith("c") for p in tmp_path.iterdir() if p.name != "other")


# --------------------------------------------------------------------------- config


def test_config_takes_source_cq500_with_defaults_and_refuses_a_missing_path_in_one_line(tmp_path):
    config = validate_config({"dataset": {"source": "cq500", "cq500": {"path": str(tmp_path)}}})
    assert config["dataset"]["cq500"] == {"path": str(tmp_path), "reads": None, "label_rule": "majority",
                                          "slab_mm": 5.0, "series": {}}
    pinned = validate_config({"dataset": {"source": "cq500", "cq500": {"path": "x", "series": {12: "PLAIN THIN"}}}})
    assert pinned["dataset"]["cq500"]["series"] == {12: "PLAIN THIN"}
    with pytest.raises(ConfigError) as info:
        validate_config({"dataset": {"source": "cq500"}})
    assert "\n" not in str(info.value) and "dataset.cq500.path" in str(info.value)
    with pytest.raises(ConfigError) as info:
        validate_config({"dataset": {"source": "cq500", "cq500": {"path": "x", "label_rule": "R4"}}})
    assert "dataset.cq500.label_rule" in str(info.value) and "majority" in str(info.value)
    # The repo's config.yaml spells out the section with its defaults.
    repo = yaml.safe_load((Path(__file__).resolve().parents[2] / "config.yaml").read_text())
    assert repo["dataset"]["cq500"] == validate_config({})["dataset"]["cq500"]


# --------------------------------------------------------------------------- workflow


def _workflow_config(root: Path, **cq500) -> dict:
    from tests.test_workflow import TINY

    return {**TINY, "dataset": {"source": "cq500", "cq500": {"path": str(root), **cq500}}}


@pytest.mark.slow
def test_snakemake_dry_run_with_source_cq500_plans_the_brain_window_job(cq500, tmp_path):
    from tests.test_workflow import snakemake

    reads = shutil.copy(cq500 / CQ500_READS, tmp_path / "reads-elsewhere.csv")  # hashed beside the folder
    proc = snakemake(tmp_path, "results/data/cohort.csv", "-n", config=_workflow_config(cq500, reads=str(reads)))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "brain_window" in out and "acquire_" not in out
    missing = snakemake(tmp_path, "-n", config=_workflow_config(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "dataset.cq500.path" in missing.stdout + missing.stderr
    no_reads = snakemake(tmp_path, "-n", config=_workflow_config(cq500, reads=str(tmp_path / "none.csv")))
    assert no_reads.returncode != 0 and "dataset.cq500.reads" in no_reads.stdout + no_reads.stderr


@pytest.mark.slow
def test_snakemake_builds_the_cq500_cache_and_a_changed_reads_csv_rebuilds_it(cq500, tmp_path):
    from tests.test_workflow import snakemake

    root = tmp_path / "CQ500"
    shutil.copytree(cq500, root)
    work = tmp_path / "work"
    work.mkdir()
    config = _workflow_config(root)
    proc = snakemake(work, "results/data/cache", config=config)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    meta = json.loads((work / "results/data/cache/cache.json").read_text())
    assert meta["slice_labels"] is False and (work / "results/data/cache" / SERIES_CHOICE_FILE).is_file()
    again = snakemake(work, "results/data/cache", "-n", config=config)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # One reader changes their mind on one patient: same size, new content.
    reads = (root / CQ500_READS).read_text()
    header, first, *rest = reads.splitlines(keepends=True)
    first = first.replace(",0,", ",1,", 1) if ",0," in first else first.replace(",1,", ",0,", 1)
    (root / CQ500_READS).write_text(header + first + "".join(rest))
    changed = snakemake(work, "results/data/cache", "-n", config=config)
    assert changed.returncode == 0 and "brain_window" in changed.stdout + changed.stderr
    # A changed label rule reruns it too.
    rule = snakemake(work, "results/data/cache", "-n", config=_workflow_config(root, label_rule="any"))
    assert "brain_window" in rule.stdout + rule.stderr
