"""Atomic writers: a file appears under its final name only when it is complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest`` to fill; when the block ends without an error
    the folder takes ``dest``'s name (replacing an older one), otherwise it is removed.

    An older ``dest`` is moved aside before the rename and deleted after it, so a crash
    between the two renames loses nothing: the old folder is still at ``.NAME.old``.
    """
    dest = Path(dest)
    tmp = temp_dir_beside(dest)
    try:
        yield tmp
        old = dest.with_name(f".{dest.name}.old") if dest.exists() else None
        if old:
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _atomic(path: str | Path, write, binary: bool = False) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())  # on disk before it takes the final name
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    _atomic(path, lambda fh: fh.write(data), binary=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    _atomic(path, lambda fh: fh.write(text))


def write_json_atomic(path: str | Path, obj) -> None:
    def write(fh):
        json.dump(obj, fh, indent=2)
        fh.write("\n")

    _atomic(path, write)


def write_csv_atomic(df: pd.DataFrame, path: str | Path) -> None:
    _atomic(path, lambda fh: df.to_csv(fh, index=False))
