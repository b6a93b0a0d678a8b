"""Which files and folders are scans: NIfTI files, DICOM series folders, and the scans under a
folder of several.

Apart from :mod:`ichseq.data.volumes` (which reads them: nibabel, pydicom) because the
Snakefile lists the scans behind ``predict.scans`` on each invocation, and under Slurm in
every job. Reads at most a file's first 132 bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .layout import NIFTI_MASK_DIR, NIFTI_SCAN_DIR

NIFTI_SUFFIXES = (".nii", ".nii.gz")
WHAT_TO_GIVE = "give a NIfTI file (.nii/.nii.gz) or a folder holding one DICOM series"


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_name(path: Path) -> str:
    """``049.nii.gz -> 049``."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 128-byte preamble then ``DICM``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def visible_names(names) -> list[str]:
    return sorted(n for n in names if not n.startswith((".", "__MACOSX")))


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (hidden files ignored), sorted by name."""
    return [folder / n for n in visible_names(os.listdir(folder)) if (folder / n).is_file() and is_dicom_file(folder / n)]


def find_scans(path: str | Path) -> list[Path]:
    """The scans under ``path``, sorted: a NIfTI file is one; a folder holding DICOM files is
    one (its sub-folders are not searched); otherwise every NIfTI file and DICOM folder below
    it. The ``masks/`` beside a CT-ICH ``ct_scans/`` folder are not scans."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: does not exist; {WHAT_TO_GIVE}, or a folder of them")
    if path.is_file():
        if is_nifti(path):
            return [path]
        raise DataError(f"{path}: not a NIfTI file (.nii/.nii.gz) nor a folder; {WHAT_TO_GIVE}, or a folder of them")
    scans: list[Path] = []
    for dirpath, dirs, names in os.walk(path):
        here = Path(dirpath)
        names = visible_names(names)
        # DICOMDIR (an index without pixels) alone does not make a folder a series.
        if any(is_dicom_file(here / n) for n in names if n.upper() != "DICOMDIR"):
            scans.append(here)
            dirs[:] = []
            continue
        scans.extend(here / n for n in names if is_nifti(here / n))
        dirs[:] = visible_names(dirs)
        if NIFTI_SCAN_DIR in dirs and NIFTI_MASK_DIR in dirs:
            dirs.remove(NIFTI_MASK_DIR)
    if not scans:
        raise DataError(f"{path}: no NIfTI file (.nii/.nii.gz) and no folder of DICOM files in it; {WHAT_TO_GIVE}")
    return sorted(scans, key=str)
