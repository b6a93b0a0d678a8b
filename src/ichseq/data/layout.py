"""File and column names of the two published CT-ICH layouts.

v1.3.1 (NIfTI, current PhysioNet release)::

    ct_scans/NNN.nii                     HU volume, slices along the third axis
    masks/NNN.nii                        hemorrhage masks, 0/255
    hemorrhage_diagnosis_raw_ct.csv      one row per slice (UTF-8 with BOM)
    Patient_demographics.csv

v1.0.0 (JPG, what "From Pixels to Diagnosis" used)::

    Patients_CT/NNN/brain/N.jpg          brain-windowed slice
    Patients_CT/NNN/brain/N_HGE_Seg.jpg  hemorrhage mask
    Patients_CT/NNN/bone/N.jpg           bone-windowed slice (never a model input)
    hemorrhage_diagnosis.csv
"""

from __future__ import annotations

NIFTI_LAYOUT = "nifti-v1.3.1"
JPG_LAYOUT = "jpg-v1.0.0"

NIFTI_CSV = "hemorrhage_diagnosis_raw_ct.csv"
NIFTI_SCAN_DIR = "ct_scans"
NIFTI_MASK_DIR = "masks"
DEMOGRAPHICS_CSV = "Patient_demographics.csv"

#: Written by ichseq's synthetic twin (:mod:`ichseq.data.synthetic`) into every dataset it makes,
#: beside the v1.3.1 files: the generator and its spec (the slice cache and every run trained on
#: it record it; ``ichseq predict`` then says the model was trained on synthetic data).
SYNTHETIC_MARKER = "ichseq-synthetic.json"

JPG_CSV = "hemorrhage_diagnosis.csv"
JPG_ROOT = "Patients_CT"
JPG_MASK_SUFFIX = "_HGE_Seg"

SUBTYPES = ("Intraventricular", "Intraparenchymal", "Subarachnoid", "Epidural", "Subdural")
DIAGNOSIS_COLUMNS = (
    "PatientNumber",
    "SliceNumber",
    *SUBTYPES,
    "No_Hemorrhage",
    "Fracture_Yes_No",
)

# Patient numbers of the real cohort: 49-130 without 59-65 (75 patients, v1.3.1).
REAL_PATIENT_NUMBERS = tuple(p for p in range(49, 131) if not 59 <= p <= 65)


def patient_file(patient: int) -> str:
    """``49 -> '049.nii'``: the zero-padded name both NIfTI folders use."""
    return f"{patient:03d}.nii"
