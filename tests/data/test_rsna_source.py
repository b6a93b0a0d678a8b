"""RSNA 2019 as a dataset source (issue 26.2): ``dataset.source: rsna`` caches the RSNA format
twin with one patient per scan (numbered by sorted SeriesInstanceUID), every slice its own
labels, no masks, ``slice_labels`` true / ``masks`` false in cache.json, the header index and
scans.csv inside the cache; faults are logged once and their scans skipped; a person's scans
stay in one split part; the config, the preset and the Snakemake workflow take the source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml

from ichseq.config import validate_config
from ichseq.data import public_layouts as pl
from ichseq.data.cache import SliceCache, WindowSpec, build_cache
from ichseq.data.cohort import cohort_from_manifest, read_patient_ids
from ichseq.data.format_twins import write_cq500
from ichseq.data.layout import NIFTI_CSV, SUBTYPES, patient_file
from ichseq.data.readers import display_slices, load_nifti
from ichseq.data.rsna import (
    FAULTS_FILE,
    HEADER_INDEX_FILE,
    SCANS_FILE,
    SCANS_FILE_COLUMNS,
    read_header_index,
    read_rsna_scan,
    rsna_content_digest,
)
from ichseq.data.splits import patient_split
from ichseq.data.synthetic import SyntheticSpec
from ichseq.errors import ConfigError
from tests.conftest import one_line_error

ROOT = Path(__file__).resolve().parents[2]
# 6 patients (3 with hemorrhage), 32 px, 9-10 slices of 5 mm.
SPEC = SyntheticSpec(n_patients=6, n_positive=3, image_size=32, min_slices=9, max_slices=10, seed=4,
                     generator="cartoon")
SEED = 7
SIZE = 32
QUIET = {"log": lambda _msg: None}


pytestmark = pytest.mark.usefixtures("unchecked_dicom_ids")


@pytest.fixture(scope="module")
def twin(small_twins) -> Path:
    return small_twins(SPEC)


@pytest.fixture(scope="module")
def rsna(small_twins) -> Path:
    return small_twins(SPEC, "rsna", seed=SEED)


@pytest.fixture(scope="module")
def cached(rsna, tmp_path_factory) -> tuple[Path, list[str], dict]:
    out = tmp_path_factory.mktemp("cache") / "cache"
    lines: list[str] = []
    meta = build_cache(rsna, out, WindowSpec(SIZE), workers=2, log=lines.append, source="rsna",
                       dataset_options={"workers": 2})
    return out, lines, meta


def _twin_patient(rsna: Path, twin: Path, index: pd.DataFrame, series: str) -> int:
    """The twin patient whose NIfTI stack (in its slice order) the series is, to 1 HU."""
    volume, _ = read_rsna_scan(rsna, pd.DataFrame({"id": index.loc[index.series == series, "id"], "scan": series}))
    found = []
    for p in pd.read_csv(twin / NIFTI_CSV, encoding="utf-8-sig").PatientNumber.unique():
        values, _ = load_nifti((twin / "ct_scans" / patient_file(p)).read_bytes(), "test")
        stack = display_slices(values)
        if stack.shape == volume.hu.shape and np.abs(stack - volume.hu).max() <= 1:
            found.append(int(p))
    (patient,) = found
    return patient


def test_cache_has_one_patient_per_scan_with_the_twins_slice_labels(twin, rsna, cached):
    out, lines, meta = cached
    truth = pd.read_csv(twin / NIFTI_CSV, encoding="utf-8-sig")
    cache = SliceCache(out)
    scans = pd.read_csv(out / SCANS_FILE)
    index = read_header_index(out / HEADER_INDEX_FILE)
    assert len(index) == len(truth) and index.problem.isna().all()
    assert tuple(scans.columns) == SCANS_FILE_COLUMNS
    # Patients 1..N in the order of the sorted SeriesInstanceUIDs; one per twin scan.
    assert scans.patient.tolist() == list(range(1, SPEC.n_patients + 1)) == cache.patients
    assert scans.series_uid.tolist() == sorted(scans.series_uid) and scans.patient_id.nunique() == SPEC.n_patients
    matched = set()
    for row in scans.itertuples():
        patient = _twin_patient(rsna, twin, index, row.series_uid)
        matched.add(patient)
        expect = truth[truth.PatientNumber == patient].sort_values("SliceNumber")
        rows = cache.manifest[cache.manifest.patient == row.patient]
        assert len(rows) == len(expect) == row.slices
        assert (np.diff(rows.position_mm) > 0).all()
        # Every slice its own labels (RSNA's "any" is ichseq's label).
        assert rows.label.tolist() == (expect.No_Hemorrhage == 0).astype(int).tolist()
        for subtype in SUBTYPES:
            assert rows[subtype].tolist() == expect[subtype].tolist(), (patient, subtype)
        assert row.label == int(rows.label.max())
    assert matched == set(truth.PatientNumber)
    assert (cache.manifest.has_mask == 0).all() and not np.asarray(cache.masks).any()
    assert (cache.manifest.fracture == 0).all()
    assert meta["slice_labels"] is True and meta["masks"] is False
    assert meta["layout"] == pl.RSNA_LAYOUT and meta["dataset"]["source"] == "rsna"
    assert meta["header_index"] == HEADER_INDEX_FILE and meta["scans"] == SCANS_FILE and meta["rsna_faults"] == 0
    assert meta["positive_slices"] == int((truth.No_Hemorrhage == 0).sum()) > 0
    assert meta["patients"] == SPEC.n_patients and meta["slices"] == len(truth)
    assert (out / FAULTS_FILE).read_text() == ""
    assert not [line for line in lines if "skipped" in line or "dropped" in line], lines


def test_a_corrupt_file_is_logged_once_its_scan_skipped_and_a_persons_scans_split_together(rsna, cached, tmp_path):
    copy = tmp_path / "rsna"
    shutil.copytree(rsna, copy)
    folder = copy / pl.RSNA_TRAIN_DIR
    index = read_header_index(cached[0] / HEADER_INDEX_FILE)
    scans = pd.read_csv(cached[0] / SCANS_FILE)
    first, second, third = scans.series_uid.iloc[:3]
    # An inner slice of the first scan cut short: its file dropped, which leaves a gap.
    stems = index[index.series == first].sort_values("position_z").id.tolist()
    broken = folder / f"{stems[len(stems) // 2]}.dcm"
    broken.write_bytes(broken.read_bytes()[:-600])
    # The second and third scans are one person's (PatientID), in two studies.
    person = index.loc[index.series == second, "patient"].iloc[0]
    for stem in index.loc[index.series == third, "id"]:
        ds = pydicom.dcmread(folder / f"{stem}.dcm")
        ds.PatientID = person
        ds.save_as(folder / f"{stem}.dcm")
    lines: list[str] = []
    meta = build_cache(copy, tmp_path / "cache", WindowSpec(SIZE), log=lines.append, source="rsna")
    unreadable = [line for line in lines if "unreadable" in line]
    gaps = [line for line in lines if "scan(s) skipped" in line]
    assert len(unreadable) == 1 and broken.stem in unreadable[0] and unreadable[0].startswith("RSNA: "), lines
    assert len(gaps) == 1 and first in gaps[0] and "gap" in gaps[0], lines
    assert meta["patients"] == SPEC.n_patients - 1 and meta["rsna_faults"] == 2
    assert (tmp_path / "cache" / FAULTS_FILE).read_text().splitlines() == [u[len("RSNA: "):] for u in unreadable + gaps]
    table = pd.read_csv(tmp_path / "cache" / SCANS_FILE)
    assert first not in set(table.series_uid) and table.patient.tolist() == list(range(1, SPEC.n_patients))
    # The cohort names each scan's person; every split keeps the person's two scans together.
    cache = SliceCache(tmp_path / "cache")
    cohort = cohort_from_manifest(cache.manifest, read_patient_ids(tmp_path / "cache"))
    pair = table.loc[table.patient_id == person, "patient"].tolist()
    assert len(pair) == 2 and cohort.patient_id.nunique() == len(cohort) - 1
    # Five scans are too few for three parts of both classes: twenty one-scan persons join them.
    more = pd.DataFrame({"patient": range(100, 120), "label": [0, 1] * 10, "patient_id": [f"X{i}" for i in range(20)]})
    everyone = pd.concat([cohort, more], ignore_index=True)
    for rep in range(6):
        split = patient_split(everyone, rep, 0, 0.3, 0.25)
        assert any(set(pair) <= set(split[part]) for part in ("train", "val", "test")), split
        assert split["grouped_by"] == "patient_id" and split["persons"] == len(everyone) - 1


def test_patient_split_draws_persons_and_is_unchanged_for_one_scan_per_person():
    rng = np.random.default_rng(0)
    cohort = pd.DataFrame({"patient": np.arange(1, 41), "label": rng.integers(0, 2, 40)})
    plain = patient_split(cohort, 1, 3, 0.3, 0.2)
    single = patient_split(cohort.assign(patient_id=[f"P{p}" for p in cohort.patient]), 1, 3, 0.3, 0.2)
    assert {k: single[k] for k in ("train", "val", "test")} == {k: plain[k] for k in ("train", "val", "test")}
    assert "grouped_by" not in plain and single["grouped_by"] == "patient_id"
    many = pd.DataFrame({"patient": np.arange(1, 121), "label": rng.integers(0, 2, 120)})
    people = many.assign(patient_id=[f"P{(p + 1) // 3}" for p in many.patient])  # up to 3 scans each
    for rep in range(5):
        split = patient_split(people, rep, 0, 0.3, 0.2)
        where = {p: part for part in ("train", "val", "test") for p in split[part]}
        assert sorted(where) == many.patient.tolist()
        assert people.assign(part=people.patient.map(where)).groupby("patient_id").part.nunique().max() == 1


def test_wrong_folder_and_missing_labels_are_refused_in_one_line(rsna, twin, tmp_path):
    one_line_error(lambda: build_cache(twin, tmp_path / "c", WindowSpec(SIZE), source="rsna", **QUIET),
                   pl.RSNA_LABELS, "dataset.rsna.path", "dataset.source local")
    one_line_error(lambda: build_cache(rsna, tmp_path / "c", WindowSpec(SIZE), source="rsna", **QUIET,
                                       dataset_options={"labels": str(tmp_path / "none.csv")}), "none.csv")
    assert not (tmp_path / "c").exists()


def test_content_digest_sees_a_touched_file_and_a_changed_label(rsna, tmp_path):
    copy = tmp_path / "rsna"
    shutil.copytree(rsna, copy)
    before = rsna_content_digest(copy)
    assert rsna_content_digest(copy / pl.RSNA_TRAIN_DIR) == before  # stage_2_train itself, labels beside it
    some = next((copy / pl.RSNA_TRAIN_DIR).iterdir())
    some.write_bytes(some.read_bytes() + b"\0")
    touched = rsna_content_digest(copy)
    assert touched != before
    labels = copy / pl.RSNA_LABELS
    labels.write_text(labels.read_text().replace(",0\n", ",1\n", 1))
    assert rsna_content_digest(copy) != touched


# --------------------------------------------------------------------------- config


def test_config_takes_source_rsna_with_defaults_and_refuses_a_missing_path_in_one_line():
    config = validate_config({"dataset": {"source": "rsna", "rsna": {"path": "x"}}})
    assert config["dataset"]["rsna"] == {"path": "x", "labels": None, "min_slices": 8}
    for bad, needle in (({"dataset": {"source": "rsna"}}, "dataset.rsna.path"),
                        ({"external": {"dataset": {"source": "rsna"}}}, "external.dataset.rsna.path"),
                        ({"dataset": {"source": "rsna", "rsna": {"path": "x", "min_slices": 0}}},
                         "dataset.rsna.min_slices")):
        with pytest.raises(ConfigError) as info:
            validate_config(bad)
        assert "\n" not in str(info.value) and needle in str(info.value)
    repo = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert repo["dataset"]["rsna"] == validate_config({})["dataset"]["rsna"]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _preset_config(rsna: Path, cq500: Path) -> dict:
    preset = yaml.safe_load((ROOT / "workflow/presets/rsna-to-cq500.yaml").read_text())
    preset["dataset"]["rsna"]["path"] = str(rsna)
    preset["external"]["dataset"]["cq500"]["path"] = str(cq500)
    return preset


@pytest.fixture(scope="module")
def cq500(twin, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cq500") / "CQ500"
    write_cq500(twin, out, thin_series=False, seed=2, **QUIET)
    return out


def test_the_preset_validates_with_rsna_and_cq500_twins(rsna, cq500):
    config = validate_config(_merge(yaml.safe_load((ROOT / "config.yaml").read_text()), _preset_config(rsna, cq500)))
    assert config["dataset"]["source"] == "rsna" and config["dataset"]["rsna"]["path"] == str(rsna)
    assert config["external"]["dataset"]["source"] == "cq500" and config["external"]["name"] == "CQ500"


# --------------------------------------------------------------------------- workflow


@pytest.mark.slow
def test_snakemake_dry_run_with_source_rsna_plans_brain_window_and_the_cq500_external_window(rsna, cq500, tmp_path):
    from tests.test_workflow import TINY, snakemake

    config = _merge(json.loads(json.dumps(TINY)), _preset_config(rsna, cq500))
    proc = snakemake(tmp_path, "-n", config=config)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "brain_window" in out and "external_window" in out and "acquire_" not in out
    missing = _merge(config, {"dataset": {"rsna": {"path": str(tmp_path / "nowhere")}}})
    proc = snakemake(tmp_path, "-n", config=missing)
    assert proc.returncode != 0 and "dataset.rsna.path" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_snakemake_builds_the_rsna_cache_and_a_cohort_naming_each_scans_person(rsna, tmp_path):
    from tests.test_workflow import TINY, snakemake

    config = {**json.loads(json.dumps(TINY)), "dataset": {"source": "rsna", "rsna": {"path": str(rsna)}}}
    proc = snakemake(tmp_path, "results/data/cohort.csv", config=config)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    cache = tmp_path / "results/data/cache"
    meta = json.loads((cache / "cache.json").read_text())
    assert meta["slice_labels"] is True and meta["masks"] is False and (cache / HEADER_INDEX_FILE).is_file()
    cohort = pd.read_csv(tmp_path / "results/data/cohort.csv")
    assert cohort.patient.tolist() == list(range(1, SPEC.n_patients + 1)) and cohort.patient_id.nunique() == len(cohort)
    assert "persons (PatientID)" in (tmp_path / "logs/data/cohort.log").read_text()
    again = snakemake(tmp_path, "results/data/cohort.csv", "-n", config=config)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
