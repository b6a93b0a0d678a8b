"""Which tables have been validated, so that a table is checked once, where it enters.

A validator (e.g. ``stats.validate_runs``) marks the frame it returns; a function handed that
very object skips its own check, while any other frame -- a copy, a filtered subset, a table
built by the caller -- is checked again. Frames are tracked by identity through weak
references (a DataFrame is not hashable), so nothing is kept alive and an id reused by a new
object never passes for the old one.
"""

from __future__ import annotations

import weakref

import pandas as pd

_VALIDATED: dict[int, tuple[str, weakref.ref]] = {}


def mark_validated(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Record that ``df`` is a valid ``kind`` table (e.g. "runs"); returns ``df``."""
    key = id(df)
    _VALIDATED[key] = (kind, weakref.ref(df, lambda _ref, key=key: _VALIDATED.pop(key, None)))
    return df


def is_validated(df: pd.DataFrame, kind: str) -> bool:
    """Whether ``df`` is the very object a ``kind`` validator returned."""
    entry = _VALIDATED.get(id(df))
    return entry is not None and entry[0] == kind and entry[1]() is df
