"""What the predict rule scores: the configured models and the scans behind ``predict.scans``.

Resolved by the Snakefile on every invocation (each Slurm job's too), so this module reads
the scan folders' layout without importing torch or any model.
"""

from __future__ import annotations

from pathlib import Path

from ..data.scan_files import find_scans, is_nifti, nifti_name
from ..errors import ConfigError, DataError


def scan_name(path) -> str:
    """A scan's name for its output folder: a NIfTI file's name without .nii / .nii.gz, a
    DICOM folder's name (whole: a dot in it is not a suffix)."""
    path = Path(path)
    return nifti_name(path) if is_nifti(path) else path.name


def scan_sources(paths) -> dict[str, Path]:
    """Each scan behind ``paths`` (NIfTI files, DICOM series folders, folders of several scans)
    by its name; two scans of one name are refused (their outputs would collide)."""
    found: dict[str, Path] = {}
    for path in paths:
        for scan in find_scans(path):
            name = scan_name(scan)
            if name in found and Path(found[name]).resolve() != Path(scan).resolve():
                raise DataError(f"{scan}: has the same name ({name}) as {found[name]}; their outputs would collide, "
                                f"rename one")
            found[name] = Path(scan)
    return found


def predict_targets(config: dict) -> tuple[list[str], dict[str, Path]]:
    """The predict rule's (models, scans by name) from a validated config's ``predict`` section;
    bad entries are one-line ConfigErrors naming the key."""
    section = config.get("predict") or {}
    configured = list(config.get("models") or {})
    models = list(section.get("models") or configured)
    unknown = [m for m in models if m not in configured]
    if unknown:
        raise ConfigError(f"predict.models: {unknown[0]} is not a configured model (configured: {', '.join(configured)})")
    if not section.get("scans"):
        return models, {}
    try:
        scans = scan_sources(section["scans"])
    except DataError as exc:
        raise ConfigError(f"predict.scans: {exc}") from None
    stray = sorted(set(section.get("series") or {}) - set(scans))
    if stray:
        raise ConfigError(f"predict.series: {stray[0]} is not the name of a scan under predict.scans (scans: "
                          f"{', '.join(sorted(scans))})")
    return models, scans
