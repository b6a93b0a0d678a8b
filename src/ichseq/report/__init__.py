"""Rendering for the report: the statistics tables (Markdown, LaTeX, HTML), the findings and
the small self-contained HTML pages the Snakemake report shows inline."""
