"""The findings page: the Markdown findings as HTML."""

from ichseq.report.findings import render_findings_html


def test_findings_html_keeps_the_nested_lists_and_escapes():
    md = ("# Findings\n\n- **f1**: a<b has the higher mean.\n  - t-test: p = 0.01.\n  - U: p = 0.02.\n"
          "- **recall**: same.\n\nUndefined values: drop.\n")
    page = render_findings_html(md)
    assert "<h1>Findings</h1>" in page and "<b>f1</b>: a&lt;b has" in page
    assert page.count("<ul>") == 2 and page.count("</ul>") == 2 and page.count("<li>") == 4
    assert "<p>Undefined values: drop.</p>" in page
