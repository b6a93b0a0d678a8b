"""Self-contained HTML tables for the report."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ichseq.report import htmlpage


def test_table_escapes_cells_and_right_aligns_numbers(html_tables):
    text = htmlpage.table(["model", "p"], [["<vivit & co>", "0.01"], ["convnext", "n/a"]], ["left", "right"])
    assert "&lt;vivit &amp; co&gt;" in text and "<vivit" not in text
    assert text.count('<td class="num">') == 2 and text.count("<td>") == 2
    assert html_tables(text) == [[["model", "p"], ["<vivit & co>", "0.01"], ["convnext", "n/a"]]]


def test_frame_table_keeps_undefined_values_empty(html_tables):
    frame = pd.DataFrame({"model": ["a", "b"], "replicate": [0, 1], "precision": [0.123456, math.nan],
                          "tp": [3.0, math.nan], "p": [0.00012345, 1.0]})
    [table] = html_tables(htmlpage.frame_table(frame))
    assert table == [["model", "replicate", "precision", "tp", "p"],
                     ["a", "0", "0.123", "3", "0.000123"], ["b", "1", "", "", "1.000"]]


@pytest.mark.parametrize(
    "headers, rows, align, message",
    [
        (["a", "b"], [["1"]], None, "has 1 cells for 2 headers"),
        (["a", "b"], [], ["left"], "2 headers but 1 alignments"),
    ],
)
def test_shape_mismatch_is_an_error(headers, rows, align, message):
    with pytest.raises(ValueError, match=message):
        htmlpage.table(headers, rows, align)


def test_page_is_self_contained():
    text = htmlpage.page("Tables & more", [htmlpage.heading("I"), htmlpage.note("a < b")])
    assert text.startswith("<!DOCTYPE html>") and "<title>Tables &amp; more</title>" in text
    assert "a &lt; b" in text
    for external in ("<script", "<link", "src=", "http"):
        assert external not in text
