"""Seeded, stratified, patient-level splits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ichseq.atomic import write_json_atomic
from ichseq.data.layout import REAL_PATIENT_NUMBERS
from ichseq.data.splits import PARTS, patient_split, read_split
from ichseq.errors import ConfigError, DataError


def _cohort(n: int = 75, n_pos: int = 36, seed: int = 1) -> pd.DataFrame:
    numbers = list(REAL_PATIENT_NUMBERS[:n]) + list(range(200, 200 + max(0, n - len(REAL_PATIENT_NUMBERS))))
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=int)
    labels[rng.choice(n, size=n_pos, replace=False)] = 1
    return pd.DataFrame({"patient": numbers[:n], "label": labels})


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return _cohort()


def _positives(cohort: pd.DataFrame, members) -> int:
    labels = dict(zip(cohort.patient, cohort.label))
    return sum(labels[p] for p in members)


@pytest.mark.parametrize("replicate", range(10))
def test_parts_are_disjoint_and_cover_the_cohort(cohort, replicate):
    split = patient_split(cohort, replicate)
    sets = [set(split[p]) for p in PARTS]
    assert all(len(s) == len(split[p]) for s, p in zip(sets, PARTS))  # no duplicates inside a part
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sets[0] | sets[1] | sets[2] == set(cohort.patient)
    assert all(split[p] == sorted(split[p]) for p in PARTS)
    assert all(type(x) is int for p in PARTS for x in split[p])


@pytest.mark.parametrize("replicate", range(10))
def test_parts_are_stratified_within_one_patient(cohort, replicate):
    split = patient_split(cohort, replicate)
    frac = cohort.label.mean()
    for part in PARTS:
        members = split[part]
        pos = _positives(cohort, members)
        assert abs(pos - frac * len(members)) <= 1, (part, pos, len(members))
        assert split["counts"][part] == {"patients": len(members), "positive": pos}


def test_test_part_is_about_thirty_percent(cohort):
    for replicate in range(5):
        split = patient_split(cohort, replicate)
        assert abs(len(split["test"]) - 0.3 * len(cohort)) <= 2
        rest = len(cohort) - len(split["test"])
        assert abs(len(split["val"]) - 0.2 * rest) <= 2


def test_fractions_are_honoured():
    cohort = _cohort(200, 80)
    split = patient_split(cohort, 0, test_fraction=0.5, val_fraction=0.1)
    assert len(split["test"]) == 100
    assert len(split["val"]) == 10
    assert len(split["train"]) == 90


def test_same_inputs_give_identical_dict_and_bytes(cohort, tmp_path):
    a = patient_split(cohort, 3, seed=5)
    b = patient_split(cohort.copy(), 3, seed=5)
    assert a == b
    write_json_atomic(tmp_path / "a.json", a)
    write_json_atomic(tmp_path / "b.json", b)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    # The file round-trips through read_split unchanged.
    assert read_split(tmp_path / "a.json", cohort) == json.loads(json.dumps(a))


def test_different_replicates_give_different_test_sets(cohort):
    tests = {tuple(patient_split(cohort, r)["test"]) for r in range(10)}
    assert len(tests) == 10


def test_different_seeds_give_different_splits(cohort):
    tests = {tuple(patient_split(cohort, 0, seed=s)["test"]) for s in range(5)}
    assert len(tests) == 5


def test_split_records_its_parameters_and_cohort(cohort):
    split = patient_split(cohort, 2, seed=4, test_fraction=0.25, val_fraction=0.15)
    assert (split["replicate"], split["seed"], split["test_fraction"], split["val_fraction"]) == (2, 4, 0.25, 0.15)
    other = cohort.copy()
    other.loc[0, "label"] = 1 - other.loc[0, "label"]
    assert patient_split(other, 2, seed=4, test_fraction=0.25, val_fraction=0.15)["cohort_sha256"] != split["cohort_sha256"]



@pytest.mark.parametrize(
    ("n", "n_pos"),
    [
        (4, 2),
        (6, 1),
        (3, 1),
        (20, 0),
        (20, 20),
    ],
)
def test_too_few_patients_raise_a_config_error_naming_splits(n, n_pos):
    with pytest.raises(ConfigError) as info:
        patient_split(_cohort(n, n_pos), 0)
    message = str(info.value)
    assert "splits" in message
    assert "splits.test_fraction" in message or "splits.val_fraction" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"test_fraction": 0.0}, "splits.test_fraction"),
        ({"test_fraction": 1.0}, "splits.test_fraction"),
        ({"val_fraction": 0.0}, "splits.val_fraction"),
        ({"val_fraction": 1.5}, "splits.val_fraction"),
    ],
)
def test_bad_fractions_raise_config_error_naming_the_key(cohort, kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        patient_split(cohort, 0, **kwargs)


# --------------------------------------------------------------------------- read_split


def test_read_split_detects_a_patient_in_two_parts(cohort, tmp_path):
    split = patient_split(cohort, 0)
    split["train"] = sorted(split["train"] + [split["test"][0]])
    path = tmp_path / "split.json"
    write_json_atomic(path, split)
    with pytest.raises(DataError) as info:
        read_split(path)
    message = str(info.value)
    assert str(split["test"][0]) in message and "train" in message and "test" in message
    assert str(path) in message


def test_read_split_detects_a_cohort_mismatch(cohort, tmp_path):
    path = tmp_path / "split.json"
    write_json_atomic(path, patient_split(cohort, 0))
    read_split(path, cohort)  # matches
    read_split(path)  # no cohort given: no check
    other = cohort.iloc[:-1]
    with pytest.raises(DataError, match="different cohort"):
        read_split(path, other)
    relabelled = cohort.copy()
    relabelled.loc[5, "label"] = 1 - relabelled.loc[5, "label"]
    with pytest.raises(DataError, match="different cohort"):
        read_split(path, relabelled)


def test_read_split_rejects_unreadable_or_incomplete_files(cohort, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        read_split(bad)
    with pytest.raises(DataError, match="missing.json"):
        read_split(tmp_path / "missing.json")
    split = patient_split(cohort, 0)
    del split["val"]
    incomplete = tmp_path / "incomplete.json"
    write_json_atomic(incomplete, split)
    with pytest.raises(DataError, match="val"):
        read_split(incomplete)


# --------------------------------------------------------------------------- stratify: false


@pytest.mark.parametrize("replicate", range(5))
def test_unstratified_split_is_disjoint_seeded_and_reproducible(cohort, replicate):
    split = patient_split(cohort, replicate, seed=3, stratify=False)
    sets = [set(split[p]) for p in PARTS]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sets[0] | sets[1] | sets[2] == set(cohort.patient)
    assert patient_split(cohort.sample(frac=1, random_state=0), replicate, seed=3, stratify=False) == split
    assert split["stratify"] is False
    # The same sizes as the stratified split would give, to within the per-class rounding.
    assert abs(len(split["test"]) - 0.3 * len(cohort)) <= 1
    for part in PARTS:
        assert split["counts"][part] == {"patients": len(split[part]), "positive": _positives(cohort, split[part])}


def test_unstratified_split_ignores_the_labels(cohort):
    # Stratified test parts hold 11 (+-1) of the 36 positives every time; a plain random draw
    # of 22 patients from 75 spreads wider, and differs from the stratified draw.
    unstratified = [patient_split(cohort, r, stratify=False) for r in range(20)]
    stratified = [patient_split(cohort, r) for r in range(20)]
    assert any(u["test"] != s["test"] for u, s in zip(unstratified, stratified))
    positives = {_positives(cohort, u["test"]) for u in unstratified}
    expected = cohort.label.mean() * len(unstratified[0]["test"])
    assert any(abs(p - expected) > 1 for p in positives), positives
    assert "stratify" not in stratified[0]
    # Seeds still matter.
    assert len({tuple(patient_split(cohort, 0, seed=s, stratify=False)["test"]) for s in range(5)}) == 5


def test_unstratified_split_with_a_one_class_part_names_the_switch():
    # 10 patients, 1 positive: most draws leave the positive patient out of two parts.
    with pytest.raises(ConfigError) as info:
        patient_split(_cohort(10, 1), 0, stratify=False)
    message = str(info.value)
    assert "unstratified" in message and "splits.stratify" in message and "\n" not in message
