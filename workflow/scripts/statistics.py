"""Rule statistics: the study's tests and the paired analysis over results/metrics/runs.csv."""

from ichseq.analysis.stats import read_runs, write_stats
from ichseq.runlog import run_step


def main(log):
    p = snakemake.params
    # Exactly the rule's declared outputs (their names are write_stats' output keys).
    paths = write_stats(read_runs(snakemake.input[0]), dict(snakemake.output.items()), alpha=p.alpha,
                        undefined=p.undefined, seed=p.seed, n_resamples=p.bootstrap_resamples,
                        power_alpha=p.power_alpha, log=log, caveats=p.caveats)
    power = "" if p.power_alpha is None else f", power at alpha {p.power_alpha}"
    log(f"alpha {p.alpha}{power}, undefined values: {p.undefined}; wrote " + ", ".join(str(v) for v in paths.values()))


run_step(snakemake.log[0], main, name="statistics")
