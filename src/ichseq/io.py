"""Atomic writers: a file appears under its final name only when it is complete."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_dir_beside(dest: str | Path) -> Path:
    """A hidden temporary folder next to ``dest`` (same file system, so renaming is atomic).

    ``mkdtemp`` creates it 0700; it gets the usual permissions so that the renamed result is
    readable by the rest of a research group, like any other output.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def _atomic(path: str | Path, write, binary: bool = False) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())  # on disk before it takes the final name
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    _atomic(path, lambda fh: fh.write(data), binary=True)


def write_json_atomic(path: str | Path, obj) -> None:
    def write(fh):
        json.dump(obj, fh, indent=2)
        fh.write("\n")

    _atomic(path, write)


def write_csv_atomic(df: pd.DataFrame, path: str | Path) -> None:
    _atomic(path, lambda fh: df.to_csv(fh, index=False))
