"""The study's statistics tables (I to IX) as Markdown, LaTeX and an HTML page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from tabulate import tabulate

from ..columns import COUNT_METRICS
from . import htmlpage
from .formatting import (confusion_skipped_line, format_float, format_int, format_p, holm_text, policy_line,
                         power_note)


def md_table(headers, rows, align) -> str:
    cells = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    return tabulate(cells, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)


def _tex_table(headers, rows, align) -> str:
    return tabulate(rows, headers=headers, tablefmt="latex_booktabs", disable_numparse=True, colalign=align)


class _Section(NamedTuple):
    title: str
    headers: list
    rows: list
    align: tuple
    extra: str  # note after the policy line
    skipped: str = ""  # the line that replaces a table whose inputs are missing


def _by_test(tests, name: str):
    """The rows of ``tests`` of one test."""
    return tests[tests["test"] == name]


def _pair(r) -> str:
    return f"{r.model_a} vs {r.model_b}"


def _sections(tests, summary, confusion, alpha: float, power_alpha: float | None = None):
    """Every table as a :class:`_Section`, in the study's order. ``confusion`` is the reason
    string instead of a table when the mean confusion matrices were skipped."""
    rates = summary[~summary["metric"].isin(COUNT_METRICS)]
    return [*_assumption_sections(tests), *_two_sample_sections(tests, alpha, power_alpha),
            *_replicate_sections(rates), _paired_section(tests), _interval_section(tests, rates),
            _confusion_section(confusion)]


def _assumption_sections(tests) -> list[_Section]:
    """Tables I and II: the normality and equal-variance checks that choose Student or Welch."""
    return [
        _Section(
            "Table I. Shapiro-Wilk test of normality",
            ["metric", "model", "n", "W", "p"],
            [[r.metric, r.model_a, format_int(r.n_a), format_float(r.statistic), format_p(r.p_value)]
             for r in _by_test(tests, "shapiro").itertuples()],
            ("left", "left", "right", "right", "right"), "",
        ),
        _Section(
            "Table II. Levene's test of equal variances (median-centred)",
            ["metric", "models", "W", "p"],
            [[r.metric, _pair(r), format_float(r.statistic), format_p(r.p_value)]
             for r in _by_test(tests, "levene").itertuples()],
            ("left", "left", "right", "right"), "",
        ),
    ]  # fmt: skip


def _two_sample_sections(tests, alpha: float, power_alpha: float | None) -> list[_Section]:
    """Tables III and IV: the t-tests and the Mann-Whitney U tests of each model pair."""
    holm = holm_text(tests)
    ttests = tests[tests["test"].isin(["student_t", "welch_t"])]
    names = {"student_t": "Student", "welch_t": "Welch"}
    return [
        _Section(
            "Table III. t-tests (Student's if both samples pass Shapiro-Wilk and Levene, else Welch's)",
            ["metric", "models", "test", "t", "df", "p", "p Holm", "Cohen's d", "power"],
            [[r.metric, _pair(r), names[r.test], format_float(r.statistic), format_float(r.df, 1),
              format_p(r.p_value), format_p(r.p_holm), format_float(r.effect_size), format_float(r.power)]
             for r in ttests.itertuples()],
            ("left", "left", "left") + ("right",) * 6, f"{power_note(alpha, power_alpha)} {holm}",
        ),
        _Section(
            "Table IV. Mann-Whitney U test (two-sided)",
            ["metric", "models", "U", "p", "p Holm", "rank-biserial r"],
            [[r.metric, _pair(r), format_float(r.statistic, 1), format_p(r.p_value), format_p(r.p_holm),
              format_float(r.effect_size)] for r in _by_test(tests, "mann_whitney_u").itertuples()],
            ("left", "left") + ("right",) * 4, holm,
        ),
    ]  # fmt: skip


def _replicate_sections(rates) -> list[_Section]:
    """Tables V and VI: each rate metric's range and mean over a model's replicates."""
    return [
        _Section(
            "Table V. Minimum and maximum over replicates",
            ["metric", "model", "n", "min", "max"],
            [[r.metric, r.model, format_int(r.n), format_float(r.min), format_float(r.max)]
             for r in rates.itertuples()],
            ("left", "left", "right", "right", "right"), "",
        ),
        _Section(
            "Table VI. Means over replicates",
            ["metric", "model", "n", "undefined", "mean", "sd", "median"],
            [[r.metric, r.model, format_int(r.n), format_int(r.n_undefined), format_float(r.mean),
              format_float(r.sd), format_float(r.median)] for r in rates.itertuples()],
            ("left", "left") + ("right",) * 5, "sd with ddof 1.",
        ),
    ]  # fmt: skip


def _paired_section(tests) -> _Section:
    """Table VII: the paired t and Wilcoxon signed-rank tests of each pair, side by side."""
    paired_t = _by_test(tests, "paired_t").set_index(["metric", "model_a", "model_b"])
    rows = []
    for r in _by_test(tests, "wilcoxon").itertuples():
        p = paired_t.loc[(r.metric, r.model_a, r.model_b)]
        rows.append([r.metric, _pair(r), format_int(r.n_a), format_float(p.mean_a - p.mean_b),
                     format_float(p.statistic), format_p(p.p_value), format_p(p.p_holm), format_float(p.effect_size),
                     format_float(r.statistic, 1), format_p(r.p_value), format_p(r.p_holm),
                     format_float(r.effect_size)])  # fmt: skip
    return _Section(
        "Table VII. Paired tests by replicate (paired t and Wilcoxon signed-rank)",
        ["metric", "models", "pairs", "mean diff", "t", "p", "p Holm", "d_z", "Wilcoxon W", "p", "p Holm", "matched r"],
        rows, ("left", "left") + ("right",) * 10,
        "Differences are first model minus second; only replicates present for both are paired. " + holm_text(tests),
    )  # fmt: skip


def _interval_section(tests, rates) -> _Section:
    """Table VIII: the bootstrap CIs of each model's means and of the paired mean differences."""
    rows = [[r.metric, r.model, format_float(r.mean), f"[{format_float(r.ci_low)}, {format_float(r.ci_high)}]",
             r.ci_method or "n/a"] for r in rates.itertuples()]  # fmt: skip
    rows += [[r.metric, f"{r.model_a} - {r.model_b} (paired)", format_float(r.mean_a - r.mean_b),
              f"[{format_float(r.ci_low)}, {format_float(r.ci_high)}]", _ci_method(r.note)]
             for r in _by_test(tests, "paired_t").itertuples()]  # fmt: skip
    return _Section(
        "Table VIII. Bootstrap 95% confidence intervals of means and paired mean differences",
        ["metric", "model / difference", "estimate", "95% CI", "method"],
        rows, ("left", "left", "right", "right", "left"), "",
    )  # fmt: skip


def _confusion_section(confusion) -> _Section:
    """Table IX: the mean confusion matrices, or the line saying why they were skipped."""
    skipped = isinstance(confusion, str)
    return _Section(
        "Table IX. Mean confusion matrices over replicates",
        ["model", "replicates", "TN", "FP", "FN", "TP"],
        [] if skipped else
        [[r.model, format_int(r.n_replicates)]
         + [f"{format_float(getattr(r, c + '_mean'), 1)} ({format_float(getattr(r, c + '_sd'), 1)})"
            for c in ("tn", "fp", "fn", "tp")] for r in confusion.itertuples()],
        ("left",) + ("right",) * 5, "Mean (sd) of the test-set counts.",
        confusion_skipped_line(confusion) if skipped else "",
    )  # fmt: skip


def _ci_method(note: str) -> str:
    for method in ("BCa", "percentile"):
        if f"bootstrap {method} " in note:
            return method
    return "n/a"


def _tex_escape(text: str) -> str:
    return "".join(
        {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}"}.get(c, c)
        for c in text
    ).replace("Shapiro-Wilk", "Shapiro--Wilk").replace("Mann-Whitney", "Mann--Whitney")


def render_tables(
    tests, summary, confusion, alpha: float, undefined: str, power_alpha: float | None = None,
    caveats: Sequence[str] = (),
) -> tuple[str, str]:
    """``(markdown, latex)`` of the study's tables, each followed by the policy/alpha line.

    ``confusion`` is the :func:`ichseq.analysis.stats.mean_confusion` table, or the reason it was skipped (a
    string), which then stands in place of Table IX. Each of ``caveats`` (e.g. a biased
    protocol) stands in bold above the tables.
    """
    md = ["# Statistical comparison of models", ""]
    tex = [
        "% ichseq stats: the study's tables. Needs \\usepackage{booktabs} in the preamble.",
        "",
    ]
    for caveat in caveats:
        md += [f"**Caveat: {caveat}**", ""]
        tex += [f"\\noindent\\textbf{{Caveat: {_tex_escape(caveat)}}}\\par", ""]
    policy_md = policy_line(undefined, alpha, markdown=True, power_alpha=power_alpha)
    policy_tex = policy_line(undefined, alpha, markdown=False, power_alpha=power_alpha)
    for title, headers, rows, align, extra, skipped in _sections(tests, summary, confusion, alpha, power_alpha):
        md += [f"## {title}", ""]
        caption = title.split(". ", 1)[1]
        tex += [f"% {title.split('. ', 1)[0]}", "\\begin{table}[htbp]", "\\centering"]
        tex += [f"\\caption{{{_tex_escape(caption)}}}"]
        if skipped:
            md += [f"*{skipped}*", ""]
            tex += [f"{{\\footnotesize {_tex_escape(skipped)}}}", "\\end{table}", ""]
            continue
        md += [md_table(headers, rows, align) if rows else "(no rows)", ""]
        md += [policy_md + (f" {extra}" if extra else ""), ""]
        tex += [_tex_table(headers, rows, align) if rows else "(no rows)"]  # tabulate escapes cells
        tex += [f"\\par\\smallskip{{\\footnotesize {policy_tex}"
                + (f" {_tex_escape(extra)}" if extra else "") + "}", "\\end{table}", ""]  # fmt: skip
    return "\n".join(md), "\n".join(tex)


def render_tables_html(
    tests, summary, confusion, alpha: float, undefined: str, power_alpha: float | None = None,
    caveats: Sequence[str] = (),
) -> str:
    """The same tables as one self-contained HTML page, for the Snakemake report (which
    offers CSV and Markdown only as downloads)."""
    policy = policy_line(undefined, alpha, markdown=True, power_alpha=power_alpha).strip("*")
    parts = [htmlpage.caveat(f"Caveat: {caveat}") for caveat in caveats]
    for title, headers, rows, align, extra, skipped in _sections(tests, summary, confusion, alpha, power_alpha):
        parts.append(htmlpage.heading(title))
        if skipped:
            parts.append(htmlpage.note(skipped))
            continue
        parts.append(htmlpage.table(headers, rows, align) if rows else htmlpage.note("(no rows)"))
        parts.append(htmlpage.note(policy + (f" {extra}" if extra else "")))
    return htmlpage.page("Statistical comparison of models", parts)
