"""Data stage: the CT-ICH layouts and their readers, the synthetic twin, the PhysioNet
download, brain windowing into the slice cache, the cohort, the patient splits and the
choice of frames."""
