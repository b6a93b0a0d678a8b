"""What a dataset holds: a content manifest (every file's size and SHA-256) and its digest.

The workflow's brain-window cache must follow the dataset's content, not the time stamp of
its folder (which does not move when a file inside is replaced or fixed). The manifest of
the dataset a cache was built from is stored in the cache (``dataset.json``); before each
run the workflow computes the dataset's current digest and hands it to the brain_window rule
as a parameter, so a changed digest reruns it like any changed parameter.

Hashing is only done where needed: a file whose path, size and modification time match the
previous manifest keeps its recorded hash, so an unchanged dataset costs one ``stat`` per
file. A folder lists every file under it (hidden ones and ``__MACOSX`` excepted, as the
reader skips them); a zip is one file, the archive.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..atomic import write_json_atomic
from ..errors import DataError

MANIFEST_NAME = "dataset.json"  # inside the cache folder
FIELDS = ("path", "size", "mtime_ns", "sha256")
_CHUNK = 1 << 20


def _hidden(rel: str) -> bool:
    return any(part.startswith((".", "__MACOSX")) for part in rel.split("/"))


def _listing(path: Path) -> list[tuple[str, Path]]:
    """``(name in the manifest, file)`` of every data file of the dataset at ``path``."""
    if path.is_file():
        return [(path.name, path)]
    if not path.is_dir():
        raise DataError(f"{path}: does not exist; check the dataset path")
    files = []
    for dirpath, _dirs, names in os.walk(path):
        rel_dir = Path(dirpath).relative_to(path)
        for name in names:
            rel = (rel_dir / name).as_posix()
            if not _hidden(rel):
                files.append((rel, Path(dirpath) / name))
    return sorted(files)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_manifest(path: str | Path, known: list[dict] | None = None) -> list[dict]:
    """One ``{path, size, mtime_ns, sha256}`` per data file of the dataset at ``path`` (a
    folder or a zip), sorted by path. A file whose path, size and mtime match an entry of
    ``known`` (a previous manifest) keeps that entry's hash instead of being read again."""
    path = Path(path)
    previous = {(e["path"], e["size"], e["mtime_ns"]): e["sha256"] for e in known or []}
    rows = []
    for rel, file in _listing(path):
        try:
            st = file.stat()
            key = (rel, st.st_size, st.st_mtime_ns)
            sha = previous.get(key) or sha256_file(file)
        except OSError as exc:
            raise DataError(f"{file}: cannot read ({exc.strerror or exc}); check the dataset") from None
        rows.append(dict(zip(FIELDS, (*key, sha))))
    return rows


def manifest_digest(rows: list[dict]) -> str:
    """SHA-256 over the files' paths, sizes and hashes (not their times): equal iff the content is."""
    text = "".join(f"{r['path']}\t{r['size']}\t{r['sha256']}\n" for r in sorted(rows, key=lambda r: r["path"]))
    return hashlib.sha256(text.encode()).hexdigest()


def read_manifest(path: str | Path) -> list[dict]:
    """A manifest written by :func:`write_manifest`; ``[]`` when absent or unreadable (then
    every file is hashed again, nothing worse)."""
    try:
        data = json.loads(Path(path).read_text())
        rows = data["files"]
        if all(isinstance(r, dict) and set(FIELDS) <= set(r) for r in rows):
            return rows
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return []


def write_manifest(path: str | Path, rows: list[dict]) -> str:
    """Write the manifest (with its digest) to ``path``; returns the digest."""
    digest = manifest_digest(rows)
    write_json_atomic(path, {"sha256": digest, "n_files": len(rows), "bytes": sum(r["size"] for r in rows), "files": rows})
    return digest


def dataset_fingerprint(path: str | Path, previous_manifest: str | Path | None = None) -> str:
    """The content digest of the dataset at ``path``, reusing the hashes recorded in
    ``previous_manifest`` for files that did not change; ``"absent"`` when there is no
    dataset yet (it is about to be acquired)."""
    path = Path(path)
    if not path.exists():
        return "absent"
    known = read_manifest(previous_manifest) if previous_manifest else []
    return manifest_digest(dataset_manifest(path, known))
