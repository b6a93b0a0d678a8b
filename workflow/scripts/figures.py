"""Rule figures: box plots, paired runs, confusion matrices, ROC, training curves and cost."""

import os

import pandas as pd

from ichseq.analysis import figures
from ichseq.analysis.stats import read_runs
from ichseq.runlog import run_step


def main(log):
    i, out = snakemake.input, snakemake.output
    stem = lambda name: os.path.splitext(out[name])[0]  # noqa: E731
    runs = read_runs(i.runs)
    figures.metric_boxplot(runs, stem("metrics_boxplot"))
    figures.paired_plot(runs, stem("paired_runs"))
    figures.confusion_matrices(runs, stem("confusion_matrices"))
    figures.roc_curves(pd.read_csv(i.predictions), stem("roc_curves"))
    figures.training_curves(pd.read_csv(i.history), stem("training_curves"))
    figures.cost_plot(pd.read_csv(i.cost), stem("cost"))
    log(f"wrote {len(out)} figure files to {os.path.dirname(out[0])}")


run_step(snakemake.log[0], main, name="figures")
