"""``ichseq stats``: the comparison of models over replicates from a runs table."""

from __future__ import annotations

import time
from pathlib import Path

from ..analysis import ranking
from ..analysis.figures import METRIC_FIGURES, figure_paths, metric_figures
from ..analysis.outputs import COMPARISON_NAMES, comparison_outputs
from ..analysis.stats import OUTPUT_NAMES, claim_output_folder, read_runs, recorded_outputs, run_stats
from ..paths import refuse_overlap


def progress(line: str) -> None:
    """Progress lines as they come, also into a pipe or a log file (many models take minutes)."""
    print(line, flush=True)


def run(args) -> None:
    started = time.perf_counter()
    refuse_overlap(args.out, [args.metrics_csv], "--out")  # before anything is read or written
    runs = read_runs(args.metrics_csv, percent=args.percent)
    n_models = runs["model"].nunique()
    # The leaderboard, and with 3 or more models the Friedman test, post-hoc table and CD diagram.
    wanted = {key: Path(args.out) / COMPARISON_NAMES[key] for key in comparison_outputs(n_models)}
    # Every file the command may write or remove (the confusion files of a table without counts);
    # one of these names that an earlier `ichseq stats` did not write is refused, not replaced.
    figure_names = [path.name for stem in METRIC_FIGURES for path in figure_paths(stem)]
    claim_output_folder(args.out, [*OUTPUT_NAMES.values(), *figure_names, *(p.name for p in wanted.values())], "--out")
    # A part whose inputs the table lacks (confusion counts) is skipped with one printed line.
    paths = list(run_stats(
        runs, args.out, alpha=args.alpha, undefined=args.undefined, seed=args.seed, n_resamples=args.resamples,
        power_alpha=args.power_alpha, log=progress,
    ).values())  # fmt: skip
    paths += metric_figures(runs, args.out, log=progress)  # box plots, mean confusion matrices, paired runs
    paths += list(ranking.write_comparison(runs, wanted, alpha=args.alpha, undefined=args.undefined, seed=args.seed,
                                           n_resamples=args.resamples, log=progress).values())  # fmt: skip
    remove_stale_comparison(Path(args.out), wanted, n_models)
    for path in paths:
        print(f"written {path}")
    print(f"done in {time.perf_counter() - started:.1f} s")


def remove_stale_comparison(out: Path, wanted: dict, n_models: int) -> None:
    """An earlier run's Friedman files (it had 3+ models, this table fewer) would read as this
    table's results: they are removed, being ichseq's own (listed in its record)."""
    ours = recorded_outputs(out, "--out")
    for key, name in COMPARISON_NAMES.items():
        stale = out / name
        if key not in wanted and name in ours and stale.exists():
            stale.unlink()
            progress(f"removed {stale} (an earlier run's; a table of {n_models} models has no such result)")
