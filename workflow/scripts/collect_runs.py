"""Rule collect_runs: every run's files -> results/metrics/{runs,predictions,history,cost}.csv and pages."""

from ichseq.analysis.collect import collect
from ichseq.runlog import run_step


def main(log):
    # The rule's named inputs and outputs are collect's (exactly the declared files are written).
    paths = collect(snakemake.input, snakemake.output)
    log(f"collected {len(snakemake.input.metrics)} runs into " + ", ".join(str(p) for p in paths.values()))


run_step(snakemake.log[0], main, name="collect_runs")
