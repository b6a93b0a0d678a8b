"""File and column names of the field's public head-CT datasets beside CT-ICH (issue 26).

CQ500 (qure.ai, CC BY-NC-SA; 491 scans read by three radiologists), as downloaded::

    CQ500-CT-<n>.zip                    one zip per patient, or its extracted folder:
    CQ500CT<n> CQ500CT<n>/Unknown Study/CT <series description>/CT000001.dcm
                                        several series per patient (thin 0.625 mm and thick 5 mm,
                                        soft-tissue and bone kernels), JPEG-lossless DICOM
    reads.csv                           name, Category, then per reader R1-R3 ``R<k>:<finding>``

RSNA 2019 intracranial hemorrhage detection (Kaggle)::

    stage_2_train/ID_<id>.dcm           one slice per file; scans by Study/SeriesInstanceUID
    stage_2_train.csv                   ID,Label with IDs ``ID_<id>_<subtype>``
"""

from __future__ import annotations

import re

CQ500_LAYOUT = "cq500"
RSNA_LAYOUT = "rsna-2019"

#: CQ500's label file and its first two columns.
CQ500_READS = "reads.csv"
CQ500_NAME_COLUMN = "name"
CQ500_CATEGORY_COLUMN = "Category"
CQ500_READERS = ("R1", "R2", "R3")
#: Each reader's findings, in the file's order (``R1:ICH`` ... ``R3:MidlineShift``).
CQ500_FINDINGS = ("ICH", "IPH", "IVH", "SDH", "EDH", "SAH", "BleedLocation-Left", "BleedLocation-Right",
                  "ChronicBleed", "Fracture", "CalvarialFracture", "OtherFracture", "MassEffect", "MidlineShift")
#: CQ500's bleed subtypes in the order of ichseq's (layout.SUBTYPES: Intraventricular,
#: Intraparenchymal, Subarachnoid, Epidural, Subdural).
CQ500_SUBTYPES = ("IVH", "IPH", "SAH", "EDH", "SDH")
#: ``CQ500-CT-12.zip`` (the download) and ``CQ500CT12 CQ500CT12`` (the folder inside it).
CQ500_ZIP = re.compile(r"^CQ500-CT-(\d+)\.zip$", re.IGNORECASE)
CQ500_PATIENT_DIR = re.compile(r"^CQ500CT(\d+)(?: CQ500CT\1)?$", re.IGNORECASE)
#: reads.csv's ``name`` column: ``CQ500-CT-12``.
CQ500_NAME = re.compile(r"^CQ500-CT-(\d+)$", re.IGNORECASE)
CQ500_STUDY_DIR = "Unknown Study"
CQ500_SERIES_PREFIX = "CT "


def cq500_columns() -> tuple[str, ...]:
    """reads.csv's columns, in the file's order."""
    return (CQ500_NAME_COLUMN, CQ500_CATEGORY_COLUMN,
            *(f"{reader}:{finding}" for reader in CQ500_READERS for finding in CQ500_FINDINGS))


def cq500_name(patient: int) -> str:
    """``12 -> 'CQ500-CT-12'``: the patient's name in reads.csv and in its zip's name."""
    return f"CQ500-CT-{int(patient)}"


def cq500_patient_dir(patient: int) -> str:
    """``12 -> 'CQ500CT12 CQ500CT12'``: the patient's top folder inside its zip."""
    return f"CQ500CT{int(patient)} CQ500CT{int(patient)}"


RSNA_TRAIN_DIR = "stage_2_train"
RSNA_LABELS = "stage_2_train.csv"
RSNA_LABEL_COLUMNS = ("ID", "Label")
#: The label file's subtypes, in its order; ``any`` is the scan-level union.
RSNA_SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")
#: ichseq's subtypes (layout.SUBTYPES order) by their RSNA names.
RSNA_TO_SUBTYPE = {"intraventricular": "Intraventricular", "intraparenchymal": "Intraparenchymal",
                   "subarachnoid": "Subarachnoid", "epidural": "Epidural", "subdural": "Subdural"}
#: ``ID_63eb1e259_epidural``: the slice's file stem and the subtype.
RSNA_LABEL_ID = re.compile(r"^(ID_[0-9a-f]+)_(" + "|".join(RSNA_SUBTYPES) + r")$")
RSNA_FILE = re.compile(r"^(ID_[0-9a-f]+)\.dcm$")
