"""Pages of the many-model comparison: the leaderboard and the Friedman/post-hoc tables."""

from __future__ import annotations

import pandas as pd

from .formatting import format_alpha
from .htmlpage import frame_table, heading, note, page

FRIEDMAN_NOTE = (
    "Friedman test per metric over the replicates (blocks = replicates, treatments = models; only replicates with a "
    "value for every model); mean rank 1 = best; two models differ (Nemenyi) when their mean ranks differ by more than "
    "the critical difference. Post-hoc: Wilcoxon signed-rank per model pair, Holm-adjusted over the pairs of one metric."
)


def leaderboard_html(board: pd.DataFrame) -> str:
    """The leaderboard page: one row per model, best first."""
    sorted_by = board.attrs.get("sorted_by", "")
    return page("Leaderboard", [
        note(f"Models sorted by mean {sorted_by}; every metric as mean and bootstrap 95% CI over the replicates "
             "(ci_low, ci_high); parameters and training seconds are means over the model's runs."),
        frame_table(board),
    ])  # fmt: skip


def leaderboard_markdown(board: pd.DataFrame) -> str:
    """The leaderboard as a Markdown table (mean [CI] per metric)."""
    metrics = [c[: -len("_mean")] for c in board.columns if c.endswith("_mean")]
    extra = [c for c in ("pretrained", "class_imbalance", "parameters_total", "training_seconds") if c in board.columns]
    headers = ["rank", "model", *extra, *metrics]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for _, row in board.iterrows():
        cells = [str(row["rank"]), str(row["model"])]
        for c in extra:
            v = row[c]
            if pd.isna(v):
                cells.append("")
            elif c == "training_seconds":
                cells.append(f"{v:.1f}")
            else:
                cells.append(f"{v:,.0f}" if isinstance(v, (int, float)) else str(v))
        for m in metrics:
            mean, low, high = row[f"{m}_mean"], row[f"{m}_ci_low"], row[f"{m}_ci_high"]
            cells.append("" if pd.isna(mean) else f"{mean:.3f}" + ("" if pd.isna(low) else f" [{low:.3f}, {high:.3f}]"))
        lines.append("| " + " | ".join(cells) + " |")
    return f"Leaderboard, sorted by mean {board.attrs.get('sorted_by', '')} (mean [bootstrap 95% CI]).\n\n" + "\n".join(lines)


def friedman_html(tests: pd.DataFrame, ranks: pd.DataFrame, posthoc: pd.DataFrame, alpha: float) -> str:
    """The Friedman tests, mean ranks and post-hoc comparisons on one page."""
    wide = ranks.pivot(index="model", columns="metric", values="mean_rank") if len(ranks) else ranks
    parts = [note(f"alpha {format_alpha(alpha)}. {FRIEDMAN_NOTE}"), heading("Friedman tests"), frame_table(tests)]
    if len(ranks):
        parts += [heading("Mean ranks"), frame_table(wide.reset_index())]
    parts += [heading("Post-hoc pairwise comparisons"), frame_table(posthoc)]
    return page("Friedman test and post-hoc comparisons", parts)
