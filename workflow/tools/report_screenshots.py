"""Screenshots of the Snakemake report for the documentation (docs/images/).

Opens ``results/report.html`` offline in headless Chromium (Debian's ``chromium``
package), clicks through the report's own navigation and saves one PNG per view.
Playwright is only a documentation tool, so it is not in requirements.txt:

    apt-get install -y chromium
    python3.11 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
    /tmp/pw/bin/python workflow/tools/report_screenshots.py results/report.html docs/images

No browser is downloaded (``executable_path`` points at the system Chromium) and the
report needs no network: it is self-contained.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Flags for a root, offline, display-less machine: no sandbox (root), no GPU, and no
# background connections to Google's services, which a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# (file name, clicks through the sidebar, the entry whose "eye" button opens it): the
# three views the documentation shows (docs/statistics.md).
VIEWS = [
    ("report-findings.png", [("Model comparison", 0), ("Summary", 0)], "results/stats/findings.html"),
    ("report-boxplot.png", [("Model comparison", 0), ("Figures", 0)], "results/figures/metrics_boxplot.png"),
    ("report-tables.png", [("Model comparison", 0), ("Tests", 0)], "results/stats/tables.html"),
]


def take(report: Path, out_dir: Path, chromium: str, width: int, height: int) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        for name, clicks, entry in VIEWS:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(report.resolve().as_uri())
            page.wait_for_load_state("networkidle")
            for text, index in clicks:
                page.get_by_text(text, exact=True).nth(index).click()
                page.wait_for_timeout(300)
            row = page.locator("tr", has=page.get_by_text(entry, exact=True))
            row.locator("a[iconname=eye]").click()
            page.wait_for_timeout(1000)
            path = out_dir / name
            page.screenshot(path=str(path))
            written.append(path)
            page.close()
        browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the HTML from snakemake --report")
    parser.add_argument("out_dir", type=Path, help="folder for the PNG files")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="browser executable")
    parser.add_argument("--size", default="1400x900", help="viewport WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        parser.error(f"{args.report}: no such report; run snakemake --report {args.report} first")
    width, height = (int(v) for v in args.size.split("x"))
    for path in take(args.report, args.out_dir, args.chromium, width, height):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
