"""What the model comparison writes: its files by output key, and which of them a comparison
of N models has (the Friedman test's need three models or more).

The Snakefile reads these on every invocation (each Slurm job's too) to name the comparison
rule's outputs, so they live apart from the statistics and their imports (scipy, pingouin).
"""

from __future__ import annotations

#: Fewest models for the Friedman test and its post-hoc comparisons.
MIN_MODELS = 3

#: What :func:`~ichseq.analysis.ranking.write_comparison` writes: output key -> file name. The leaderboard keys are
#: written for any number of models, :data:`FRIEDMAN_OUTPUTS` only with 3 or more.
COMPARISON_NAMES = {
    "leaderboard": "leaderboard.csv",
    "leaderboard_md": "leaderboard.md",
    "leaderboard_html": "leaderboard.html",
    "leaderboard_png": "leaderboard.png",
    "leaderboard_svg": "leaderboard.svg",
    "friedman": "friedman.csv",
    "mean_ranks": "mean_ranks.csv",
    "posthoc": "posthoc.csv",
    "friedman_html": "friedman.html",
    "critical_difference_png": "critical_difference.png",
    "critical_difference_svg": "critical_difference.svg",
}
FRIEDMAN_OUTPUTS = ("friedman", "mean_ranks", "posthoc", "friedman_html", "critical_difference_png",
                    "critical_difference_svg")  # fmt: skip


def comparison_outputs(n_models: int) -> list[str]:
    """The output keys of :func:`~ichseq.analysis.ranking.write_comparison` for a table of ``n_models`` models."""
    return [k for k in COMPARISON_NAMES if n_models >= MIN_MODELS or k not in FRIEDMAN_OUTPUTS]
