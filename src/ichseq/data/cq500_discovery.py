"""Finding CQ500's patients on disk by their names alone (no DICOM file is read): which
locations under a folder are CQ500 patients (a ``CQ500-CT-<n>.zip``, its extracted folder, or a
folder named after it; :mod:`ichseq.data.cq500` describes the layouts and which copy wins),
whether a folder looks like CQ500 at all (the CT-ICH readers' unknown-layout message asks), and
the files directly in a dataset root. Kept apart from :mod:`ichseq.data.cq500`, which reads the
series, so that :mod:`ichseq.data.readers` can ask without importing the DICOM readers built on it."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .public_layouts import CQ500_NAME, CQ500_PATIENT_DIR, CQ500_READS, CQ500_ZIP
from .scan_files import visible_names


def patient_number(location: str | Path) -> int | None:
    """The patient number a location's name gives (``CQ500-CT-12.zip``, ``CQ500CT12 CQ500CT12``,
    ``CQ500-CT-12``), or None."""
    name = Path(location).name
    for pattern in (CQ500_ZIP, CQ500_PATIENT_DIR, CQ500_NAME):
        match = pattern.match(name)
        if match:
            return int(match.group(1))
    return None


def _candidates(folder: Path, depth: int) -> list[tuple[int, Path, bool, int]]:
    """``(patient, location, is_zip, depth)`` of the patients directly in ``folder``."""
    found = []
    for name in visible_names(os.listdir(folder)):
        path = folder / name
        if path.is_file() and CQ500_ZIP.match(name):
            found.append((int(CQ500_ZIP.match(name).group(1)), path, True, depth))
        elif path.is_dir() and CQ500_PATIENT_DIR.match(name):
            found.append((int(CQ500_PATIENT_DIR.match(name).group(1)), path, False, depth))
        elif path.is_dir() and CQ500_NAME.match(name):
            patient = int(CQ500_NAME.match(name).group(1))
            inner = [path / n for n in visible_names(os.listdir(path)) if (path / n).is_dir()
                     and CQ500_PATIENT_DIR.match(n) and int(CQ500_PATIENT_DIR.match(n).group(1)) == patient]
            found.append((patient, inner[0] if len(inner) == 1 else path, False, depth))
    return found


def discover_cq500(root: Path) -> tuple[dict[int, Path], dict[int, list[Path]]]:
    """``(chosen, duplicates)``: ``{patient: location}`` of the copy read of each patient under
    ``root`` and ``{patient: [the other copies]}`` of those found more than once."""
    if not root.exists():
        raise DataError(f"{root}: does not exist; give the folder holding CQ500's CQ500-CT-<n>.zip files "
                        f"or their extracted folders")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; give the folder holding CQ500's CQ500-CT-<n>.zip files "
                        f"or their extracted folders")
    own = patient_number(root)
    if own is not None and not CQ500_ZIP.match(root.name):  # root is one patient's folder
        found = [(own, root, False, 0)]
    else:
        found = _candidates(root, 0)
        for name in visible_names(os.listdir(root)):
            sub = root / name
            if sub.is_dir() and patient_number(sub) is None:
                found.extend(_candidates(sub, 1))
    by_patient: dict[int, list[tuple[int, Path, bool, int]]] = {}
    for entry in found:
        by_patient.setdefault(entry[0], []).append(entry)
    chosen, duplicates = {}, {}
    for patient in sorted(by_patient):
        entries = sorted(by_patient[patient], key=lambda e: (e[2], e[3], str(e[1])))  # folder, shallow, path
        chosen[patient] = entries[0][1]
        if len(entries) > 1:
            duplicates[patient] = [e[1] for e in entries[1:]]
    return chosen, duplicates


def find_cq500_patients(root: str | Path) -> dict[int, Path]:
    """``{patient: location}`` of CQ500's scans under ``root`` (a zip or a folder each; the
    layouts accepted and which copy wins are in the module's docstring), sorted by patient."""
    return discover_cq500(Path(root))[0]


class RootFiles:
    """The little of :class:`ichseq.data.readers.DatasetFiles` the cache's provenance reads
    (``exists``, ``read``), over the files directly in a CQ500 root (the twin's marker)."""

    def __init__(self, root: Path):
        self.path = root

    def exists(self, rel: str) -> bool:
        return (self.path / rel).is_file()

    def read(self, rel: str, n: int | None = None) -> bytes:
        with open(self.path / rel, "rb") as fh:
            return fh.read() if n is None else fh.read(n)


def looks_like_cq500(path: str | Path) -> bool:
    """Whether ``path`` holds CQ500's reads.csv or a patient's zip or folder (at its top or one
    folder below), or is one patient's folder: what the readers' unknown-layout message checks."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / CQ500_READS).is_file() or patient_number(path) is not None:
        return True
    try:
        return bool(discover_cq500(path)[0])
    except (DataError, OSError):
        return False


__all__ = ["RootFiles", "discover_cq500", "find_cq500_patients", "looks_like_cq500", "patient_number"]
