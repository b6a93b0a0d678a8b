"""Rule calibration: ECE and Brier score before/after each run's calibration, and the reliability diagram."""

import pandas as pd

from ichseq.analysis import figures
from ichseq.analysis.calibration import write_calibration
from ichseq.runlog import run_step


def main(log):
    out = snakemake.output
    predictions = pd.read_csv(snakemake.input.predictions)
    # Exactly the rule's declared outputs: the tables by write_calibration's names, the figure as PNG + SVG.
    paths = write_calibration(predictions, {key: out[key] for key in ("models", "runs", "html")}, log=log)
    written = [*paths.values(), *figures.reliability_diagram(predictions, [out.reliability, out.reliability_svg])]
    log("wrote " + ", ".join(str(p) for p in written))


run_step(snakemake.log[0], main, name="calibration")
