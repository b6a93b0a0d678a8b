"""What a slice-cache folder holds besides its arrays for the public datasets: RSNA 2019's
header index, scan table and fault lines (written by :class:`ichseq.data.rsna.RsnaDataset`)
and CQ500's series-choice table (:class:`ichseq.data.cq500.Cq500Dataset`). Names only, so
that a reader of a cache (:mod:`ichseq.data.cohort`) needs neither DICOM reader."""

from __future__ import annotations

#: RSNA 2019's files inside the cache folder.
HEADER_INDEX_FILE = "header_index.csv.gz"
SCANS_FILE = "scans.csv"
FAULTS_FILE = "faults.txt"

#: CQ500's series-choice table inside the cache folder.
SERIES_CHOICE_FILE = "series_choice.csv"
