"""Shared fixtures of the data tests: the small synthetic twin and its copies in the public
layouts (CQ500, RSNA 2019), each made once per test session per spec and options, and pydicom's
UID validation off for RSNA's ``ID_...`` values.

Tests that change a dataset copy it first (the folders are shared by every module asking for the
same spec and options)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from ichseq.data.format_twins import write_cq500, write_rsna
from ichseq.data.synthetic import SyntheticSpec, generate_synthetic

QUIET = {"log": lambda _msg: None}
_WRITERS = {"cq500": write_cq500, "rsna": write_rsna}


@pytest.fixture
def unchecked_dicom_ids(monkeypatch):
    """RSNA's ``ID_...`` values in UI elements are not DICOM UIDs: pydicom would warn on each
    read and write (the readers turn the warning off themselves; this covers the tests' own)."""
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.IGNORE)
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)


@pytest.fixture(scope="session")
def small_twins(tmp_path_factory):
    """A function: ``(spec)`` -> the synthetic twin of ``spec`` (CT-ICH NIfTI layout);
    ``(spec, layout, **options)`` -> its copy in ``layout`` (``cq500``, ``rsna``) written with
    ``options`` (the writer's: seed, zipped, thin_series, ...). Each is made once per session."""
    made: dict[tuple, Path] = {}

    def make(spec: SyntheticSpec, layout: str | None = None, **options) -> Path:
        key = (spec, layout, tuple(sorted(options.items())))
        if key not in made:
            if layout is None:
                dest = tmp_path_factory.mktemp("twin") / "ct-ich"
                generate_synthetic(dest, spec, **QUIET)
            else:
                dest = tmp_path_factory.mktemp(layout) / layout
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)
                    _WRITERS[layout](make(spec), dest, **options, **QUIET)
            made[key] = dest
        return made[key]

    return make
