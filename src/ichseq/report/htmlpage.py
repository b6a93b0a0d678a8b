"""Small self-contained HTML pages for the Snakemake report.

The report shows images, HTML and PDF inline but offers CSV and Markdown only as
downloads, so every table a reader should see in the report is also written as one of
these pages: inline CSS, no scripts, nothing fetched, so they open offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

import pandas as pd

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em; color: #1f2933; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.4em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #d9dee3; white-space: nowrap; }
th { border-bottom: 2px solid #7b8794; text-align: left; background: #f5f7fa; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:hover td { background: #eef2f7; }
p.note { font-size: 0.85em; color: #52606d; max-width: 60em; }
"""


def table(headers: Sequence[str], rows: Iterable[Sequence], align: Sequence[str] | None = None) -> str:
    """An HTML ``<table>``; ``align`` holds ``"left"``/``"right"`` per column (right = numbers)."""
    align = list(align) if align is not None else ["left"] * len(headers)
    if len(align) != len(headers):
        raise ValueError(f"{len(headers)} headers but {len(align)} alignments")
    cls = [' class="num"' if a == "right" else "" for a in align]
    head = "".join(f"<th{c}>{html.escape(str(h))}</th>" for c, h in zip(cls, headers))
    body = []
    for row in rows:
        row = list(row)
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells for {len(headers)} headers")
        body.append("<tr>" + "".join(f"<td{c}>{html.escape(_cell(v))}</td>" for c, v in zip(cls, row)) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""  # undefined, as in the CSV
    return str(value)


def _column_text(values: pd.Series) -> list[str]:
    """Cells of one column: counts as integers even when NaN made the column float, other
    numbers with three decimals (three significant digits below 0.001), NaN empty."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return ["" if pd.isna(v) else str(v) for v in values]
    defined = values.dropna()
    if (defined == defined.round()).all():
        return ["" if pd.isna(v) else str(int(v)) for v in values]
    return ["" if pd.isna(v) else f"{v:.3g}" if 0 < abs(v) < 0.001 else f"{v:.3f}" for v in values]


def frame_table(frame: pd.DataFrame) -> str:
    """A data frame as a table; numeric columns are right-aligned, NaN is an empty cell."""
    align = ["right" if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
             else "left" for c in frame.columns]  # fmt: skip
    columns = [_column_text(frame[c]) for c in frame.columns]
    return table([str(c) for c in frame.columns], zip(*columns), align)


def page(title: str, parts: Iterable[str]) -> str:
    """A whole HTML document: ``title`` as heading, then ``parts`` (HTML fragments) in order."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def heading(text: str) -> str:
    return f"<h2>{html.escape(text)}</h2>"


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def caveat(text: str) -> str:
    """A sentence the reader must not miss (e.g. a biased protocol), in bold above the content."""
    # Styled inline, so pages without a caveat keep their bytes.
    return f'<p class="caveat" style="color: #b42318; max-width: 60em;"><b>{html.escape(text)}</b></p>'
