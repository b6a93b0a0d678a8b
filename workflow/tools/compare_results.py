"""Compare two ``results/`` trees file by file, ignoring only what measures wall-clock time.

    python workflow/tools/compare_results.py BEFORE/results AFTER/results

Used to show that a refactoring leaves the default run's outputs unchanged. Every file must
exist in both trees and be byte-identical, except: in JSON files the timing keys below and
file modification times are dropped before comparing; in CSV/HTML tables the timing columns are
dropped; the cost figure (which plots seconds) and cost.html (cost.csv as a page) are skipped. Exit status 1 lists the differences.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

TIMING_KEYS = {"seconds", "samples_per_second", "feature_seconds", "training_seconds", "mtime_ns"}
# The cost figure plots seconds; cost.html renders cost.csv (compared without its timings).
SKIPPED = {"figures/cost.png", "figures/cost.svg", "metrics/cost.html"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _same(a: Path, b: Path) -> bool:
    if a.suffix == ".json":
        return _strip(json.loads(a.read_text())) == _strip(json.loads(b.read_text()))
    if a.suffix == ".csv":
        ta, tb = pd.read_csv(a), pd.read_csv(b)
        if not TIMING_KEYS & set(ta.columns):
            return a.read_bytes() == b.read_bytes()
        drop = lambda t: t.drop(columns=[c for c in t.columns if c in TIMING_KEYS])  # noqa: E731
        return drop(ta).to_csv(index=False) == drop(tb).to_csv(index=False)
    return a.read_bytes() == b.read_bytes()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    before, after = (Path(p) for p in argv)
    files = lambda root: {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}  # noqa: E731
    a, b = files(before), files(after)
    problems = [f"only in {before}: {f}" for f in sorted(a - b)] + [f"only in {after}: {f}" for f in sorted(b - a)]
    compared = 0
    for name in sorted(a & b):
        if name in SKIPPED:
            continue
        compared += 1
        if not _same(before / name, after / name):
            problems.append(f"differs: {name}")
    print("\n".join(problems) if problems else f"{compared} files identical (timings aside), {len(SKIPPED)} skipped")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
