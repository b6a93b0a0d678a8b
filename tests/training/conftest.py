"""Fixtures of the training tests: a tiny cohort as a slice cache and replicate splits."""

from __future__ import annotations

import pandas as pd
import pytest

from ichseq.atomic import write_json_atomic
from ichseq.data.cache import WindowSpec, build_cache
from ichseq.data.cohort import cohort_from_manifest
from ichseq.data.splits import patient_split


@pytest.fixture(scope="module")
def cohort_dir(nifti_dataset, tmp_path_factory):
    """The tiny conftest dataset as a 32-px cache plus three replicate splits."""
    root = tmp_path_factory.mktemp("training")
    build_cache(nifti_dataset, root / "cache", WindowSpec(32), log=lambda _m: None)
    cohort = cohort_from_manifest(pd.read_csv(root / "cache" / "manifest.csv"))
    for rep in range(3):
        write_json_atomic(root / f"rep-{rep}.json", patient_split(cohort, rep, 0, 0.25, 0.34))
    return root
