"""Number formatting of the statistics tables and findings."""

from ichseq.report.formatting import format_p


def test_format_p():
    assert [format_p(p) for p in (0.0004, 0.001, 0.01234, 0.5, 1.0, float("nan"))] == [
        "<0.001", "0.00100", "0.0123", "0.500", "1.00", "n/a",
    ]  # fmt: skip
