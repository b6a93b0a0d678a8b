"""Where a command may write: never onto, into or around what it reads.

Every command that writes into a folder the user names (``predict --out``, ``to-dicom DEST``,
``stats --out``) checks it against its inputs first, before any work: an output folder that is
an input, holds one, or lies inside one could overwrite or, by an atomic replacement of the
output folder, delete the very files being read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError


def _real(path: str | Path) -> Path:
    # realpath follows symbolic links (a link to the input is the input) and needs no file to exist.
    return Path(os.path.realpath(path))


def refuse_overlap(out: str | Path, inputs: Iterable[str | Path], what: str = "--out") -> None:
    """Raise a one-line :class:`DataError` when ``out`` (``what``: how the user gave it, e.g.
    ``--out`` or ``DEST``) is one of ``inputs``, holds one of them or lies inside one."""
    target = _real(out)
    for given in inputs:
        source = _real(given)
        if target == source:
            relation = "is the input"
        elif source.is_relative_to(target):
            relation = "holds the input"
        elif target.is_relative_to(source):
            relation = "lies inside the input"
        else:
            continue
        raise DataError(f"{what} {out}: {relation} {given}; writing there could overwrite or delete what is being "
                        f"read, choose a folder outside every input")
