"""Rule twin_figure: the anatomical twin at each difficulty (figure) and its measured HU (tables)."""

import pandas as pd

from ichseq.atomic import write_csv_atomic, write_text_atomic
from ichseq.data.synthetic import SyntheticSpec
from ichseq.report import twin
from ichseq.runlog import run_step

MEASURED_PATIENTS = 20


def main(log):
    out = snakemake.output
    spec = SyntheticSpec(**snakemake.params.spec)
    patient = twin.showcase_patient(spec)
    twin.twin_levels_figure(spec, patient, out.levels)
    log(f"levels figure of patient {patient} at easy, moderate and hard: {out.levels}")
    # The first 20 patients: enough pixels of every tissue (each scan is generated again, about
    # 0.3 s at 128 px), without doubling the data stage's time.
    patients = spec.patient_numbers()[:MEASURED_PATIENTS]
    tissues, blood = twin.hu_tables(spec, patients)
    write_csv_atomic(tissues, out.tissue_hu)
    write_csv_atomic(blood, out.blood_hu)
    write_text_atomic(out.html, twin.hu_html(tissues, blood))
    outside = [t for t, ok in zip(tissues["tissue"], tissues["median_in_range"]) if not pd.isna(ok) and not ok]
    log(f"HU of {len(patients)} patients, {len(tissues)} tissues"
        + (f"; median outside the published range: {', '.join(outside)}" if outside else ", every median in range"))
    log("\n" + twin.hu_markdown(tissues, blood))


run_step(snakemake.log[0], main, name="twin_figure")
