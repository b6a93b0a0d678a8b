"""Rule figures: box plots, paired runs, confusion matrices, ROC, training curves and cost."""

import pandas as pd

from ichseq.analysis import figures
from ichseq.analysis.stats import read_runs
from ichseq.runlog import run_step


def main(log):
    i, out = snakemake.input, snakemake.output
    # Each figure goes to exactly its declared files: output NAME (PNG) and NAME_svg.
    files = lambda name: [out[name], out[f"{name}_svg"]]  # noqa: E731
    runs = read_runs(i.runs)
    figures.metric_boxplot(runs, files("metrics_boxplot"))
    figures.paired_plot(runs, files("paired_runs"))
    figures.confusion_matrices(runs, files("confusion_matrices"))
    figures.roc_curves(pd.read_csv(i.predictions), files("roc_curves"))
    figures.training_curves(pd.read_csv(i.history), files("training_curves"))
    figures.cost_plot(pd.read_csv(i.cost), files("cost"))
    log(f"wrote {len(out)} figure files: " + ", ".join(out))


run_step(snakemake.log[0], main, name="figures")
