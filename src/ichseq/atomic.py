"""Atomic writers: a file appears under its final name only when it is complete.

Each result is made under a temporary name beside its final one (same file system, so the
rename is atomic) and renamed when complete. The temporary names say whose they are, so that
what a killed job leaves (SIGKILL, an out-of-memory kill, a power cut) is recognised and swept
by the next job writing into the same folder, and nothing else is ever touched:

* a temporary file or folder is ``.NAME.ichseq-tmp-HOST-PID-RANDOM`` (``HOST``: 8 hex digits
  of a hash of the host name); a temporary folder of :func:`atomic_dir` also holds
  :data:`TEMP_MARKER`, a small JSON record of its host, pid and destination, removed before the
  folder takes its final name;
* a folder being replaced is set aside as ``.NAME.ichseq-old-HOST-PID-RANDOM`` for the moment
  between the two renames.

Errors of the file system (full, over quota, read-only, not permitted, a file where a folder
must be) become one-line :class:`~ichseq.errors.DataError`\\ s naming the path: see
:func:`output_errors`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .errors import DataError

#: Inside every temporary folder while it is being filled: ``{"program", "host", "pid", "dest"}``.
TEMP_MARKER = ".ichseq-tmp.json"
_TEMP_TAG = "ichseq-tmp"
_OLD_TAG = "ichseq-old"
_TEMPORARY = re.compile(rf"^\.(?P<dest>.+)\.(?P<tag>{_TEMP_TAG}|{_OLD_TAG})-(?P<host>[0-9a-f]{{8}})-(?P<pid>[0-9]+)-"
                        r"[A-Za-z0-9_]+$")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_PERMITTED = (errno.EACCES, errno.EPERM)
_MB = 1_000_000


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host_id(host: str) -> str:
    return hashlib.sha256(host.encode()).hexdigest()[:8]


def _temp_prefix(name: str, tag: str = _TEMP_TAG) -> str:
    # Looked up at each call, not at import: a forked worker has its own pid.
    return f".{name}.{tag}-{_host_id(socket.gethostname())}-{os.getpid()}-"


# --------------------------------------------------------------------------- errors


def mount_point(path: str | Path) -> Path:
    """The mount point of the file system that holds (or would hold) ``path``."""
    here = Path(os.path.realpath(_existing(path)))
    while not os.path.ismount(here) and here != here.parent:
        here = here.parent
    return here


def _existing(path: str | Path) -> Path:
    """``path`` or its nearest ancestor that exists (the file system it will be written on)."""
    here = Path(os.path.abspath(path))
    while not os.path.lexists(here) and here != here.parent:
        here = here.parent
    return here


def _free_bytes(path: str | Path) -> int | None:
    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError:
        return None


def _megabytes(n: int) -> int:
    return math.ceil(n / _MB)


def no_space_error(path: str | Path, needed_bytes: int | None = None, quota: bool = False) -> DataError:
    """The one-line error of a full file system (or an exceeded quota) while writing ``path``."""
    mount = mount_point(path)
    need = f"needs about {_megabytes(needed_bytes)} MB" if needed_bytes else "not enough"
    if quota:  # the disk may have room; this user's share of it has not
        return DataError(f"no space left on {mount}: {need} to write {path}, over your disk quota; delete some of "
                         f"your files there or write to another file system")
    free = _free_bytes(path)
    free_text = f" ({free // _MB} MB free)" if free is not None else ""
    return DataError(f"no space left on {mount}: {need}{free_text} to write {path}; free some space or write to "
                     f"another file system")


def check_free_space(path: str | Path, needed_bytes: int) -> None:
    """Raise the one-line no-space :class:`DataError` now, before a large write, when the file
    system that will hold ``path`` (which need not exist yet) has less than ``needed_bytes`` free.
    A file system that cannot tell its free space is not refused."""
    free = _free_bytes(path)
    if free is not None and free < needed_bytes:
        raise no_space_error(path, needed_bytes)


def _file_in_the_way(path: Path) -> Path | None:
    """The first of ``path`` and its ancestors that exists and is not a folder."""
    for here in (path, *path.parents):
        if os.path.lexists(here):
            return None if here.is_dir() else here
    return None


def _as_data_error(exc: OSError, path: Path, needed_bytes: int | None) -> DataError | None:
    code = exc.errno
    if code in _NO_SPACE:
        return no_space_error(path, needed_bytes, quota=code == errno.EDQUOT)
    if code in _NOT_PERMITTED:
        return DataError(f"cannot write to {path}: permission denied; choose another folder or fix its permissions")
    if code == errno.EROFS:
        return DataError(f"cannot write to {path}: read-only file system ({mount_point(path)}); choose another "
                         f"folder")
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _file_in_the_way(path)
        if blocker is not None:
            where = "" if blocker == path else f" (cannot write {path} below it)"
            return DataError(f"{blocker}: is a file, not a folder{where}; remove it or choose another folder")
    if code == errno.EISDIR and path.is_dir():
        return DataError(f"{path}: is a folder, not a file; remove it or choose another name")
    if code == errno.ENAMETOOLONG:
        return DataError(f"{path}: name too long for its file system; choose a shorter name")
    return None


@contextmanager
def output_errors(path: str | Path, needed_bytes: int | None = None) -> Iterator[None]:
    """Within the block, an :class:`OSError` of writing ``path`` (a file or a folder) becomes a
    one-line :class:`DataError` naming it:

    * ENOSPC: ``no space left on MOUNT: needs about N MB (F MB free) to write PATH; free some
      space or write to another file system`` (``not enough`` for ``needs about N MB`` when
      ``needed_bytes`` is not given); EDQUOT: the same, ``..., over your disk quota; ...``;
    * EACCES, EPERM: ``cannot write to PATH: permission denied; ...``;
    * EROFS: ``cannot write to PATH: read-only file system (MOUNT); ...``;
    * ENOTDIR, EEXIST where ``path`` or one of its folders is a file: ``FILE: is a file, not a
      folder ...``; EISDIR where ``path`` is a folder: ``PATH: is a folder, not a file ...``;
    * ENAMETOOLONG: ``PATH: name too long for its file system ...``.

    Any other error passes through unchanged. Only for writing: an EACCES of reading an input
    inside the block would be misreported as one of ``path``.
    """
    path = Path(path)
    try:
        yield
    except OSError as exc:
        error = _as_data_error(exc, path, needed_bytes)
        if error is None:
            raise
        raise error from None


@contextmanager
def _no_space_errors(path: Path, needed_bytes: int | None) -> Iterator[None]:
    # Around a caller's own writes, only the errors that no read can cause are converted.
    try:
        yield
    except OSError as exc:
        if exc.errno not in _NO_SPACE:
            raise
        raise no_space_error(path, needed_bytes, quota=exc.errno == errno.EDQUOT) from None


# --------------------------------------------------------------------------- temporaries


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError):  # not a pid this system could have given: not ours to judge
        return True
    return True


def _owner(path: Path, match: re.Match) -> tuple[str, int] | None:
    """(host id, pid) of a temporary: its marker's when it has one, else its name's."""
    host_id, pid = match["host"], int(match["pid"])
    if match["tag"] == _TEMP_TAG and path.is_dir() and not path.is_symlink():
        try:
            record = json.loads((path / TEMP_MARKER).read_text())
            host_id, pid = _host_id(str(record["host"])), int(record["pid"])
        except FileNotFoundError:
            pass  # made without one (temp_dir_beside's default) or killed before it was written: the name says
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable: leave it to a person
    return host_id, pid


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale_temps(parent: str | Path) -> list[Path]:
    """Remove from ``parent`` the temporary files and folders of ichseq's atomic writers whose
    process is gone: made on this host by a pid that no longer runs. Returns what was removed
    (or put back).

    Left alone: anything not named as ichseq's temporaries (a ``.cache.abc`` folder of someone
    else), the temporaries of a live process (a concurrent job), and those of other hosts: on a
    file system shared by a cluster a pid means nothing outside its own machine, so a job there
    may still be writing them; they are swept by the next job on that host, or removed by hand.
    (Processes that share a host name but not pid numbers, e.g. containers with one host name,
    are not told apart.)

    A folder set aside during a replacement (``.NAME.ichseq-old-…``) whose job died between the
    two renames is put back under ``NAME`` when nothing has that name (nothing is lost), else
    removed. Costs one ``listdir`` of ``parent``; never raises.
    """
    parent = Path(parent)
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    here = _host_id(socket.gethostname())
    swept = []
    for name in names:
        if not name.startswith(".") or ".ichseq-" not in name:
            continue
        match = _TEMPORARY.match(name)
        if match is None:
            continue
        path = parent / name
        try:
            owner = _owner(path, match)
            if owner is None or owner[0] != here or _alive(owner[1]):
                continue
            if match["tag"] == _OLD_TAG and not os.path.lexists(parent / match["dest"]):
                os.rename(path, parent / match["dest"])
            else:
                _remove(path)
        except OSError:
            continue  # another job swept it first, or it cannot be read or removed: not this job's concern
        swept.append(path)
    return swept


def temp_dir_beside(dest: str | Path, marker: bool = False) -> Path:
    """A hidden temporary folder next to ``dest`` (same file system, so renaming is atomic),
    named as ichseq's (``.NAME.ichseq-tmp-HOST-PID-RANDOM``). What killed jobs left in the same
    folder is swept first (:func:`sweep_stale_temps`).

    ``marker``: also write :data:`TEMP_MARKER` inside (host, pid, destination, for whoever finds
    the folder). Off by default because a caller that renames the folder itself would publish
    the marker with its result; :func:`atomic_dir` turns it on and removes it before the rename.

    ``mkdtemp`` creates it 0700; it gets the usual permissions so that the renamed result is
    readable by the rest of a research group, like any other output. File-system errors are
    one-line DataErrors (:func:`output_errors`).
    """
    dest = Path(dest)
    with output_errors(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(dest.parent)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(dest.name), dir=dest.parent))
        try:
            os.chmod(tmp, 0o777 & ~_umask())
            if marker:
                record = {"program": "ichseq", "host": socket.gethostname(), "pid": os.getpid(), "dest": str(dest)}
                (tmp / TEMP_MARKER).write_text(json.dumps(record) + "\n")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return tmp


# --------------------------------------------------------------------------- folders


def check_replaceable(dest: str | Path, owned: Callable[[Path], bool] | None = None,
                      owned_by: str | None = None) -> None:
    """Raise a one-line :class:`DataError` unless :func:`atomic_dir` may put a folder at
    ``dest``: nothing there, an empty folder, or a folder for which ``owned(dest)`` is true
    (every folder when ``owned`` is None). A file there is refused in every case. Call it
    before long work; :func:`atomic_dir` calls it again at both ends."""
    dest = Path(dest)
    with output_errors(dest):
        if not os.path.lexists(dest):
            return
        if not dest.is_dir():
            raise DataError(f"{dest}: is a file, not a folder; remove it or choose another folder")
        if owned is None or not any(dest.iterdir()) or owned(dest):
            return
    why = owned_by or "it does not hold what ichseq writes there"
    raise DataError(f"{dest}: already exists and was not written by ichseq ({why}); remove it or choose another "
                    f"folder")


@contextmanager
def atomic_dir(dest: str | Path, owned: Callable[[Path], bool] | None = None, owned_by: str | None = None,
               needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest`` to fill; when the block ends without an error
    the folder takes ``dest``'s name, otherwise it is removed.

    What may be at ``dest`` already (checked on entry, before the block runs, and again before
    the rename, see :func:`check_replaceable`): nothing, an empty folder, or a folder that
    ``owned(dest)`` recognises as this program's earlier output, which is replaced (e.g.
    ``owned=lambda p: (p / "cache.json").is_file()``, ``owned_by="no cache.json in it"``:
    the reason shown when refused). ``owned=None`` replaces any folder: only for paths the
    workflow owns (Snakemake's ``results/`` outputs), never for a folder a user names.

    ``needed_bytes``: the size about to be written; the free space is checked first and a full
    disk says how much is needed. Any ENOSPC/EDQUOT inside the block becomes the one-line
    no-space DataError (the temporary folder removed), as do this function's own file-system
    errors (:func:`output_errors`).

    An older ``dest`` is set aside (``.NAME.ichseq-old-…``) before the rename and deleted after
    it; a job killed between the two leaves it there, and the next job writing beside it puts
    it back (:func:`sweep_stale_temps`).
    """
    dest = Path(dest)
    check_replaceable(dest, owned, owned_by)
    tmp = temp_dir_beside(dest, marker=True)
    try:
        if needed_bytes:
            check_free_space(dest, needed_bytes)
        with _no_space_errors(dest, needed_bytes):
            yield tmp
        check_replaceable(dest, owned, owned_by)  # something may have appeared there meanwhile
        with output_errors(dest, needed_bytes):
            (tmp / TEMP_MARKER).unlink()
            _rename_over(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rename_over(tmp: Path, dest: Path) -> None:
    if not os.path.lexists(dest):
        os.replace(tmp, dest)
        return
    # mkdtemp only picks a free name of the right form: the placeholder goes at once, because
    # renaming onto an empty folder works for a folder but not for a symbolic link to one.
    old = Path(tempfile.mkdtemp(prefix=_temp_prefix(dest.name, _OLD_TAG), dir=dest.parent))
    old.rmdir()
    os.replace(dest, old)
    os.replace(tmp, dest)
    _remove(old)


# --------------------------------------------------------------------------- files


def _atomic(path: str | Path, write, binary: bool = False) -> None:
    path = Path(path)
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), dir=path.parent)
        try:
            os.chmod(tmp, 0o666 & ~_umask())
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
