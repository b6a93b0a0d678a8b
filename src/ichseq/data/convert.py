"""Write a CT-ICH v1.3.1 (NIfTI) dataset in the v1.0.0 (JPG) layout.

The study read v1.0.0; the pipeline reads both. This converter makes the JPG layout from
any v1.3.1 folder (in practice the synthetic twin), so both readers are tested on the same
scans and a user can reproduce the study's input format exactly::

    Patients_CT/NNN/brain/N.jpg          brain window (level 40 / width 120)
    Patients_CT/NNN/brain/N_HGE_Seg.jpg  mask, only for slices that have one
    Patients_CT/NNN/bone/N.jpg           bone window (level 600 / width 2800)
    hemorrhage_diagnosis.csv
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_dir
from ..errors import DataError
from ..paths import refuse_overlap
from .layout import DIAGNOSIS_COLUMNS, JPG_CSV, JPG_MASK_SUFFIX, JPG_ROOT
from .readers import NiftiDataset, open_dataset
from .windowing import brain_window, to_uint8

BONE_WINDOW = (600.0, 2800.0)


def export_jpg_layout(src: str | Path, dest: str | Path, quality: int = 95) -> Path:
    """Convert the v1.3.1 dataset at ``src`` into the v1.0.0 layout at ``dest`` (atomic)."""
    dataset = open_dataset(src)
    if not isinstance(dataset, NiftiDataset):
        raise DataError(f"{src}: already in the JPG (v1.0.0) layout")
    dest = Path(dest)
    refuse_overlap(dest, [src], "DEST")
    if dest.exists():
        raise DataError(f"{dest}: already exists; choose a new folder")
    with atomic_dir(dest, owned=lambda _folder: False, owned_by="the JPG layout goes only into a new folder") as tmp:
        for patient in dataset.patients:
            numbers, _pos, hu, masks = dataset.read_hu(patient)
            brain_dir = tmp / JPG_ROOT / f"{patient:03d}" / "brain"
            bone_dir = tmp / JPG_ROOT / f"{patient:03d}" / "bone"
            brain_dir.mkdir(parents=True)
            bone_dir.mkdir(parents=True)
            brain = to_uint8(brain_window(hu))
            bone = to_uint8(brain_window(hu, *BONE_WINDOW))
            for n, b, o, m in zip(numbers, brain, bone, masks):
                Image.fromarray(b).save(brain_dir / f"{n}.jpg", quality=quality)
                Image.fromarray(o).save(bone_dir / f"{n}.jpg", quality=quality)
                if m.any():
                    Image.fromarray(m.astype(np.uint8) * 255).save(
                        brain_dir / f"{n}{JPG_MASK_SUFFIX}.jpg", quality=quality
                    )
        dataset.labels[list(DIAGNOSIS_COLUMNS)].to_csv(tmp / JPG_CSV, index=False)
    return dest
