"""Number and sentence formatting shared by the statistics tables and the findings."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

_POLICY_TEXT = {
    "drop": "undefined values dropped (paired tests drop the replicate from both models)",
    "zero": "undefined values counted as 0 (as in the study)",
}


def format_alpha(alpha: float) -> str:
    """An alpha as written in tables and notes: 0.05, 0.5."""
    return f"{alpha:g}"


def format_p(p: float) -> str:
    """3 significant digits, ``<0.001`` below 0.001, ``n/a`` when undefined."""
    if p is None or not np.isfinite(p):
        return "n/a"
    if p < 0.001:
        return "<0.001"
    return f"{p:#.3g}"


def format_float(x, digits: int = 3) -> str:
    """``digits`` decimals; ``n/a`` when undefined."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "n/a"
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def format_int(x) -> str:
    """A count; ``n/a`` when undefined."""
    return "n/a" if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)) else str(int(x))


def power_differs(alpha: float, power_alpha: float | None) -> bool:
    return power_alpha is not None and power_alpha != alpha


def policy_line(undefined: str, alpha: float, markdown: bool = True, power_alpha: float | None = None) -> str:
    """The line printed under every table: undefined-value policy, alpha, and the power's
    alpha when it is not the tests' one."""
    text = f"Undefined values: {undefined} -- {_POLICY_TEXT[undefined]}."
    power = power_differs(alpha, power_alpha)
    if markdown:
        extra = f"; power at α = {format_alpha(power_alpha)}" if power else ""
        return f"*{text.replace(' -- ', ' — ')} α = {format_alpha(alpha)}{extra}.*"
    extra = f"; power at $\\alpha = {format_alpha(power_alpha)}$" if power else ""
    return f"{text} $\\alpha = {format_alpha(alpha)}${extra}."


def holm_text(tests: pd.DataFrame) -> str:
    n_metrics = tests["metric"].nunique()
    n_pairs = len(tests[tests["test"] != "shapiro"][["model_a", "model_b"]].drop_duplicates())
    across = f"{n_metrics} metric{'s' if n_metrics != 1 else ''}" + (f" x {n_pairs} model pairs" if n_pairs > 1 else "")
    return f"Holm: within each test across {across}."


def power_note(alpha: float, power_alpha: float | None) -> str:
    if power_differs(alpha, power_alpha):
        pal, al = format_alpha(power_alpha), format_alpha(alpha)
        return f"Power of the test used at alpha = {pal}, not the tests' alpha = {al}."
    return f"Power of the test used at alpha = {format_alpha(alpha)}."


def confusion_skipped_line(reason: str) -> str:
    return f"Mean confusion matrices skipped: the runs table has {reason}, which they need."
