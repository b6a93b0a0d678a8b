"""The sharded brain-window cache: large cohorts (RSNA 2019's ~21,700 scans) windowed in parallel
jobs, each bounded in memory, and joined into a cache that training reads like any other.

Three steps, three Snakemake rules (``preprocess.shards`` > 1; one shard is the plain
:func:`ichseq.data.cache.build_cache`):

1. :func:`index_cache` (rule ``cache_index``): the dataset opened once (RSNA: every DICOM header
   read, in parallel, into the header index; CQ500: its inventory), its content manifest taken,
   its patients cut into ``shards`` contiguous blocks. The index folder holds::

       index.json      how the cache is to be made (the window spec), the entries of cache.json
                       that describe the dataset (its provenance, digest, layout, patients) and
                       the shard count: every shard job reads it from here
       plan.csv        patient, shard, slices (the dataset's count before slabs)
       dataset.json    the content manifest
       shards/NNN.pickle  the dataset restricted to shard NNN's patients (its labels, its
                       slices' files: the shard, not the cohort; CT-ICH is reopened instead)
       ...             the dataset's own tables (RSNA: header_index.csv.gz, scans.csv, faults.txt;
                       CQ500: series_choice.csv), copied into the cache

2. :func:`build_shard` (rule ``brain_window_shard``, one job per shard): the shard's scans read,
   windowed and written one at a time (memory holds a scan per worker, whatever the shard's
   size) into ``shard-NNN/``: slices.npy, masks.npy, manifest.csv (rows 0..n-1) and shard.json.
   Nothing in it depends on time or machine: a shard rerun (a killed job) writes the same bytes.

3. :func:`join_shards` (rule ``brain_window``): the cache folder, as :func:`build_cache` writes
   it, except that the pixels stay in the shards: cache.json lists them (``shards``: their paths
   relative to the cache folder and slice counts) and manifest.csv numbers the rows of all shards
   in order. :class:`ichseq.data.cache.SliceCache` memory-maps each shard's arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..atomic import atomic_dir, check_replaceable
from ..errors import ConfigError, DataError
from .cache import (CACHE_META, MANIFEST_COLUMNS, NOT_A_CACHE, WindowSpec, cache_json, check_slabs, content_manifest,
                    is_cache, made_from, open_source, window_scans, write_scans)
from .fingerprint import MANIFEST_NAME, manifest_digest, read_manifest, write_manifest
from .public_layouts import CQ500_LAYOUT, RSNA_LAYOUT
from .readers import open_dataset
from .shard_names import shard_name

INDEX_META = "index.json"
PLAN_FILE = "plan.csv"
SHARD_META = "shard.json"
_STATES = "shards"
_OWN_FILES = {INDEX_META, PLAN_FILE, MANIFEST_NAME, _STATES}  # the rest of an index folder goes into the cache


def is_index(folder: Path) -> bool:
    return (Path(folder) / INDEX_META).is_file()


def is_shard(folder: Path) -> bool:
    return (Path(folder) / SHARD_META).is_file()


def plan_shards(patients: list[int], shards: int, where: str) -> list[list[int]]:
    """``patients`` (in order) cut into ``shards`` contiguous blocks of sizes differing by at most
    one. More shards than patients would leave one empty: refused, naming the fix."""
    if not (isinstance(shards, int) and shards >= 1):
        raise ConfigError(f"invalid configuration: preprocess.shards: {shards!r} is not a whole number >= 1")
    if shards > len(patients):
        raise DataError(f"{where}: preprocess.shards: {shards} shards for {len(patients)} scans would leave "
                        f"{shards - len(patients)} empty; set preprocess.shards to at most {len(patients)}")
    bounds = np.linspace(0, len(patients), shards + 1).round().astype(int)
    return [list(patients[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _spec_meta(spec: WindowSpec) -> dict:
    return {"image_size": spec.image_size, "level": spec.level, "width": spec.width,
            "prewindowed": spec.prewindowed, "slab_mm": spec.slab_mm}


def _index_key(meta: dict) -> str:
    """What ties a shard to the index it was made from: the dataset's digest, the window spec and
    the plan (a shard of another index, or of the same dataset cut otherwise, does not join)."""
    text = json.dumps({"dataset_sha256": meta["cache"]["dataset_sha256"], "spec": meta["spec"],
                       "plan_sha256": meta["plan_sha256"]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def index_cache(src: str | Path, out: str | Path, spec: WindowSpec = WindowSpec(), shards: int = 2,
                log=print, source: str | None = None, dataset_options: dict | None = None) -> dict:
    """Step 1: open the dataset at ``src`` (as :func:`build_cache` does: ``source``,
    ``dataset_options``), plan ``shards`` shards of its patients and write the index folder
    ``out`` (module docstring). Returns index.json's content."""
    t0 = time.perf_counter()
    out = Path(out)
    check_replaceable(out, owned=is_index, owned_by=f"no {INDEX_META} in it")
    dataset = open_source(src, spec, source, dataset_options, log)
    check_slabs(spec, dataset, src)
    blocks = plan_shards(list(dataset.patients), shards, str(src))
    files = content_manifest(dataset, src, read_manifest(out / MANIFEST_NAME))
    digest = manifest_digest(files)
    counts = dataset.labels.groupby("PatientNumber").size()
    plan = pd.DataFrame([{"patient": int(p), "shard": k, "slices": int(counts.get(p, 0))}
                         for k, block in enumerate(blocks) for p in block])
    plan_csv = plan.to_csv(index=False)
    with atomic_dir(out, owned=is_index, owned_by=f"no {INDEX_META} in it") as tmp:
        (tmp / PLAN_FILE).write_text(plan_csv)
        write_manifest(tmp / MANIFEST_NAME, files)
        extras = getattr(dataset, "cache_extras", None)
        extra_meta = extras(tmp) if extras else {}
        # CT-ICH's dataset holds open files (a zip): each shard job opens it anew. CQ500's and
        # RSNA's are plain data: pickled per shard, restricted to its patients.
        reopen = dataset.layout not in (CQ500_LAYOUT, RSNA_LAYOUT)
        (tmp / _STATES).mkdir()
        if not reopen:
            for k, block in enumerate(blocks):
                with open(tmp / _STATES / f"{shard_name(k, shards)}.pickle", "wb") as fh:
                    pickle.dump(dataset.for_patients(block), fh, protocol=pickle.HIGHEST_PROTOCOL)
        meta = {
            "ichseq": __version__,
            # cache.json's entries but what the shards write (cache.made_from).
            "cache": made_from(src, dataset, source, digest, spec, extra_meta),
            "spec": _spec_meta(spec),
            "slices_before_slabs": int(len(dataset.labels)),
            "shards": shards,
            "plan_sha256": hashlib.sha256(plan_csv.encode()).hexdigest(),
            "reopen": reopen,
        }
        meta["index_key"] = _index_key(meta)
        (tmp / INDEX_META).write_text(json.dumps(meta, indent=2) + "\n")
    sizes = [len(b) for b in blocks]
    log(f"index written to {out}: {len(dataset.patients)} scans in {shards} shards of {min(sizes)}-{max(sizes)} "
        f"in {time.perf_counter() - t0:.1f} s")
    return meta


def read_index(index: str | Path) -> tuple[dict, pd.DataFrame]:
    """index.json and plan.csv of the index folder ``index``, or a one-line DataError."""
    index = Path(index)
    try:
        meta = json.loads((index / INDEX_META).read_text())
        plan = pd.read_csv(index / PLAN_FILE)
    except (OSError, ValueError) as exc:
        raise DataError(f"{index}: not a complete cache index ({exc}); rerun the cache_index rule") from None
    return meta, plan


def _shard_dataset(index: Path, meta: dict, shard: int, patients: list[int]):
    if meta["reopen"]:
        return open_dataset(meta["cache"]["source"], meta["spec"]["prewindowed"]).for_patients(patients)
    path = index / _STATES / f"{shard_name(shard, meta['shards'])}.pickle"
    if meta.get("ichseq") != __version__:
        raise DataError(f"{index}: written by ichseq {meta.get('ichseq')}, this is {__version__}; rerun the "
                        f"cache_index rule (snakemake -R cache_index)")
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
        raise DataError(f"{path}: unreadable shard state ({exc}); rerun the cache_index rule") from None


def build_shard(index: str | Path, shard: int, out: str | Path, workers: int = 1, log=print) -> dict:
    """Step 2: window shard ``shard``'s scans (the index folder ``index`` says which, and how)
    into the shard folder ``out``, one scan at a time. Returns shard.json's content."""
    t0 = time.perf_counter()
    index, out = Path(index), Path(out)
    meta, plan = read_index(index)
    shards = int(meta["shards"])
    if not 0 <= shard < shards:
        raise DataError(f"{index}: has shards {shard_name(0, shards)}-{shard_name(shards - 1, shards)}, not "
                        f"{shard}; rerun the cache_index rule if preprocess.shards changed")
    patients = [int(p) for p in plan.loc[plan["shard"] == shard, "patient"]]
    if not patients:
        raise DataError(f"{index / PLAN_FILE}: shard {shard_name(shard, shards)} has no scan; rerun the cache_index "
                        f"rule (preprocess.shards must be at most the number of scans)")
    spec = WindowSpec(**meta["spec"])
    check_replaceable(out, owned=is_shard, owned_by=f"no {SHARD_META} in it")
    dataset = _shard_dataset(index, meta, shard, patients)
    reserve = int(plan.loc[plan["shard"] == shard, "slices"].sum())
    with atomic_dir(out, owned=is_shard, owned_by=f"no {SHARD_META} in it",
                    needed_bytes=2 * reserve * spec.image_size ** 2) as tmp:
        written = write_scans(tmp, window_scans(dataset, patients, spec, workers, meta["cache"]["source"]), spec.image_size,
                              reserve, log)
        written.manifest.to_csv(tmp / "manifest.csv", index=False)
        # No time, host or path in it: a rerun writes the same bytes.
        shard_meta = {"shard": shard, "shards": shards, "index_key": meta["index_key"],
                      "patients": len(patients), "first_patient": patients[0], "last_patient": patients[-1],
                      "slices": written.slices, "positive_slices": int(written.manifest["label"].sum()),
                      "slabbed_scans": written.slabbed}
        (tmp / SHARD_META).write_text(json.dumps(shard_meta, indent=2) + "\n")
    log(f"shard {shard_name(shard, shards)} written to {out}: {len(patients)} scans, {written.slices} slices in "
        f"{time.perf_counter() - t0:.1f} s")
    return shard_meta


def join_shards(index: str | Path, shard_dirs: list[str | Path], out: str | Path, log=print) -> dict:
    """Step 3: the cache folder ``out`` of the index ``index`` and its shards ``shard_dirs`` (in
    shard order): cache.json, the joined manifest.csv, dataset.json and the dataset's tables;
    the pixels stay in the shards, which cache.json lists relative to ``out``."""
    t0 = time.perf_counter()
    index, out = Path(index), Path(out)
    meta, plan = read_index(index)
    shards = int(meta["shards"])
    if len(shard_dirs) != shards:
        raise DataError(f"{index}: plans {shards} shards, {len(shard_dirs)} given; rerun the workflow (the shard "
                        f"count preprocess.shards changed since the index was written)")
    frames, listed, start, slabbed = [], [], 0, 0
    for k, folder in enumerate(map(Path, shard_dirs)):
        try:
            part = json.loads((folder / SHARD_META).read_text())
            rows = pd.read_csv(folder / "manifest.csv")
            count = np.load(folder / "slices.npy", mmap_mode="r").shape[0]
        except (OSError, ValueError) as exc:
            raise DataError(f"{folder}: not a complete shard ({exc}); rerun its brain_window_shard job") from None
        expected = [int(p) for p in plan.loc[plan["shard"] == k, "patient"]]
        if part.get("shard") != k or part.get("index_key") != meta["index_key"]:
            raise DataError(f"{folder}: shard {part.get('shard')} of another index, not shard {k} of {index}; rerun "
                            f"its brain_window_shard job")
        if count == 0 or count != len(rows) or count != part["slices"]:
            raise DataError(f"{folder}: {count} slices in slices.npy, {len(rows)} manifest rows, {part['slices']} "
                            f"in {SHARD_META}; an empty or damaged shard: rerun its brain_window_shard job")
        if sorted(rows["patient"].unique().tolist()) != expected:
            raise DataError(f"{folder}: holds other patients than {index / PLAN_FILE} gives shard {k}; rerun its "
                            f"brain_window_shard job")
        rows["row"] = rows["row"] + start
        frames.append(rows)
        listed.append({"path": os.path.relpath(folder, out), "slices": int(count)})
        start += count
        slabbed += int(part.get("slabbed_scans", 0))
    manifest = pd.concat(frames, ignore_index=True)[list(MANIFEST_COLUMNS)]
    check_replaceable(out, owned=is_cache, owned_by=NOT_A_CACHE)
    with atomic_dir(out, owned=is_cache, owned_by=NOT_A_CACHE) as tmp:
        manifest.to_csv(tmp / "manifest.csv", index=False)
        shutil.copyfile(index / MANIFEST_NAME, tmp / MANIFEST_NAME)
        for item in sorted(index.iterdir()):
            if item.name not in _OWN_FILES and item.is_file():
                shutil.copyfile(item, tmp / item.name)
        spec = WindowSpec(**meta["spec"])
        cache = cache_json(meta["cache"], start, manifest["label"].sum(), slabbed, round(time.perf_counter() - t0, 2),
                           shards=listed)
        (tmp / CACHE_META).write_text(json.dumps(cache, indent=2) + "\n")
    log(f"cache written to {out}: {start} slices of {spec.image_size}x{spec.image_size} in {shards} shards")
    return cache


__all__ = ["INDEX_META", "PLAN_FILE", "SHARD_META", "build_shard", "index_cache", "is_index", "is_shard",
           "join_shards", "plan_shards", "read_index"]
