"""The findings: per metric and model pair, the higher mean and the tests' verdicts, as
Markdown (``summary.md``) and as an HTML page."""

from __future__ import annotations

import html
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pandas as pd

from . import htmlpage
from .formatting import format_alpha, format_float, format_int, format_p, holm_text, policy_line, power_differs


def _p_is(label: str, p: float) -> str:
    text = format_p(p)
    return f"{label} {text[0]} {text[1:]}" if text.startswith("<") else f"{label} = {text}"


#: How the findings name each test, the symbol of its statistic, and each effect size.
TEST_NAMES = {"student_t": "Student's t-test", "welch_t": "Welch's t-test", "mann_whitney_u": "Mann-Whitney U test",
              "paired_t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}  # fmt: skip
TEST_SYMBOLS = {"student_t": "t", "welch_t": "t", "mann_whitney_u": "U", "paired_t": "t", "wilcoxon": "W"}
EFFECT_NAMES = {"cohen_d": "Cohen's d", "rank_biserial": "rank-biserial r", "cohen_dz": "Cohen's d_z",
                "matched_pairs_rank_biserial": "matched-pairs rank-biserial r"}  # fmt: skip


def render_findings(
    tests: pd.DataFrame,
    alpha: float,
    undefined: str,
    power_alpha: float | None = None,
    skipped: Sequence[str] = (),
    caveats: Sequence[str] = (),
) -> str:
    """``summary.md``: each of ``caveats`` in bold, then per metric and model pair the higher
    mean and the tests' verdicts; then the policy line and one line per ``skipped`` part (e.g.
    the confusion matrices)."""
    power_label = f"power (α = {format_alpha(power_alpha)})" if power_differs(alpha, power_alpha) else "power"
    lines = ["# Findings", ""]
    for caveat in caveats:
        lines += [f"**Caveat: {caveat}**", ""]
    compared = tests[tests["test"] != "shapiro"]
    # One pass over the table (filtering it per comparison took minutes with 50 models).
    groups = compared.groupby(["metric", "model_a", "model_b"], sort=False, dropna=False)
    for (metric, model_a, model_b), rows in groups:
        c = SimpleNamespace(metric=metric, model_a=model_a, model_b=model_b)
        lines += _comparison_lines(c, {r.test: r for r in rows.itertuples()}, alpha, power_label)
    lines += ["", policy_line(undefined, alpha, markdown=True, power_alpha=power_alpha) + " " + holm_text(tests), ""]
    for line in skipped:
        lines += [line, ""]
    return "\n".join(lines)


def _comparison_lines(c, get: dict, alpha: float, power_label: str) -> list[str]:
    """One comparison's bullet (``c``: its metric and model pair; ``get``: its tests' rows by
    test): which model has the higher mean, then the verdicts of its tests."""
    t = get["student_t"] if "student_t" in get else get["welch_t"]
    why = t.note.split("; ")[0].split(": ", 1)[1]
    pt = get["paired_t"]
    return [
        f"- {_higher_mean(c, t.mean_a, t.mean_b)}",
        f"  - {_verdict(t, f'{TEST_NAMES[t.test]} ({why})', alpha, power_label)}.",
        f"  - {_verdict(get['mann_whitney_u'], TEST_NAMES['mann_whitney_u'], alpha, power_label)}.",
        f"  - Paired by replicate ({format_int(pt.n_a)} pair{'' if pt.n_a == 1 else 's'}): "
        f"{_verdict(pt, TEST_NAMES['paired_t'], alpha, power_label)}; "
        f"{_verdict(get['wilcoxon'], TEST_NAMES['wilcoxon'], alpha, power_label)}.",
    ]


def _higher_mean(c, ma: float, mb: float) -> str:
    """The head of a comparison's bullet: which of its models has the higher mean."""
    if not (np.isfinite(ma) and np.isfinite(mb)):
        undefined_models = [m for m, v in ((c.model_a, ma), (c.model_b, mb)) if not np.isfinite(v)]
        return f"**{c.metric}**, {c.model_a} vs {c.model_b}: no value for {' and '.join(undefined_models)}."
    if ma == mb:
        return f"**{c.metric}**: {c.model_a} and {c.model_b} have the same mean ({format_float(ma)})."
    hi, lo, vhi, vlo = (c.model_a, c.model_b, ma, mb) if ma > mb else (c.model_b, c.model_a, mb, ma)
    return f"**{c.metric}**: {hi} has the higher mean ({format_float(vhi)} vs {format_float(vlo)} for {lo})."


def _verdict(r, label: str, alpha: float, power_label: str) -> str:
    """One test's verdict: its statistic, p-values and effect size (and power for a t-test),
    and whether it is significant at ``alpha`` after Holm's correction."""
    if not np.isfinite(r.p_value):
        return f"{label}: undefined ({r.note.split('; ')[-1]})"
    sig = np.isfinite(r.p_holm) and r.p_holm < alpha
    statistic = format_float(r.statistic, 1 if TEST_SYMBOLS[r.test] in "UW" else 2)
    effect = f"{EFFECT_NAMES[r.effect_size_name]} = {format_float(r.effect_size, 2)}"
    p_values = f"{_p_is('p', r.p_value)}, {_p_is('Holm p', r.p_holm)}"
    text = f"{label}: {TEST_SYMBOLS[r.test]} = {statistic}, {p_values}, {effect}"
    if r.test in ("student_t", "welch_t", "paired_t"):
        text += f", {power_label} = {format_float(r.power, 2)}"
    return f"{text} — {'significant' if sig else 'not significant'} at α = {format_alpha(alpha)} after Holm"


def _inline_html(text: str) -> str:
    # The findings use only **bold** for emphasis.
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def render_findings_html(markdown: str) -> str:
    """The findings (the Markdown of :func:`render_findings`: a heading, nested bullet lists,
    a paragraph) as a small self-contained HTML page, for the Snakemake report, which does
    not render Markdown."""
    body, depth, title = [], 0, "Findings"
    for line in markdown.splitlines():
        stripped = line.lstrip(" ")
        level = (len(line) - len(stripped)) // 2 + 1 if stripped.startswith("- ") else 0
        while depth > level:
            body.append("</li></ul>")
            depth -= 1
        if level:
            if depth == level:
                body.append("</li>")
            while depth < level:
                body.append("<ul>")
                depth += 1
            body.append(f"<li>{_inline_html(stripped[2:])}")
        elif stripped.startswith("# "):
            title = stripped[2:]
        elif stripped:
            body.append(f"<p>{_inline_html(stripped)}</p>")
    body += ["</li></ul>"] * depth
    return htmlpage.page(title, body)
