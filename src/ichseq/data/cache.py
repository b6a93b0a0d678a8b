"""The windowed-slice cache: every scan read and brain-windowed once, then memory-mapped.

Layout of the cache folder (written to a temporary sibling and renamed when complete)::

    slices.npy     uint8 (N, size, size)  brain window, all patients' slices concatenated
    masks.npy      uint8 (N, size, size)  0/1 hemorrhage masks (for mask-aware models only)
    manifest.csv   one row per slice: row, patient, slice, position_mm, label, subtypes,
                   fracture, has_mask, pixel_mm, source_size; rows of a patient are contiguous
                   and ordered by position
    cache.json     how it was made (source, layout, window, size, slab_mm, dataset_sha256) and
                   the counts
    dataset.json   the dataset's content manifest (each file's size and SHA-256) it was made from
    series_choice.csv  CQ500 only (``dataset.source: cq500``): per patient the series read, or
                   why the patient is skipped (:func:`ichseq.data.cq500.cq500_inventory`'s table)

**Sharded caches** (``preprocess.shards`` > 1, :mod:`ichseq.data.shards`): the folder holds no
slices.npy/masks.npy; cache.json's ``shards`` lists the shard folders (relative to it) whose
arrays, in order, are the rows of manifest.csv; :class:`SliceCache` memory-maps them as one
(:class:`ShardedRows`). Everything else is as above.

**Scan-labelled datasets** (CQ500): cache.json's ``slice_labels`` and ``masks`` are false; each
row carries its scan's labels and has_mask 0 (caches without the keys: both true).

**Slabs** (``preprocess.slab_mm``, :attr:`WindowSpec.slab_mm`; NIfTI in HU only): a scan whose
slices are thinner than :data:`~ichseq.data.reformat.SLAB_BELOW` x slab_mm is cached as slabs of
slab_mm, as ``ichseq predict`` reformats a thin scan (:func:`ichseq.data.reformat.plan_slabs`):
each slab the mean of its slices **in HU**, windowed after (the mean of windowed values is not
the window of the mean: the window clips). A row is then a slab: ``slice`` its number 1..n,
``position_mm`` its centre, its labels and mask pixels set where any of its slices' are; a gap
shorter than a slab is bridged (and logged), a longer one refused. Scans already about that
thick are cached slice for slice, as without slab_mm.

Training opens ``slices.npy`` with ``mmap_mode="r"`` and slices a patient's rows out
without reading the rest: decoding NIfTI/JPG and windowing happen once per dataset, not
once per model and replicate.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_dir, check_free_space, check_replaceable
from ..config import config_default
from ..errors import ConfigError, DataError
from .cq500 import Cq500Dataset
from .fingerprint import MANIFEST_NAME, dataset_manifest, manifest_digest, read_manifest, write_manifest
from .layout import JPG_LAYOUT, SUBTYPES, SYNTHETIC_MARKER
from .public_layouts import CQ500_LAYOUT, RSNA_LAYOUT
from .readers import open_dataset
from .reformat import gap_warnings, plan_slabs
from .rsna import RsnaDataset
from .windowing import brain_window, resize_masks, resize_slices, to_uint8

#: The scan's own in-plane geometry, before the resize to the cache's size (what ``ichseq predict``
#: needs to bring a new scan to the training geometry): ``pixel_mm``, the mean of the row and
#: column spacing in mm (NaN where the layout records none: the v1.0.0 JPGs), and ``source_size``,
#: the slice's number of columns. Caches written before these columns existed lack them;
#: :class:`SliceCache` reads them as NaN (unknown).
GEOMETRY_COLUMNS = ("pixel_mm", "source_size")

MANIFEST_COLUMNS = (
    "row",
    "patient",
    "slice",
    "position_mm",
    "label",
    *SUBTYPES,
    "fracture",
    "has_mask",
    *GEOMETRY_COLUMNS,
)

_WORKER_DATASET = None

CACHE_META = "cache.json"  # written last: a folder holding it is a cache this program wrote


def is_cache(folder: Path) -> bool:
    """Whether ``folder`` is a slice cache that :func:`build_cache` wrote: the only kind of
    folder a rebuild may replace."""
    return (Path(folder) / CACHE_META).is_file()


NOT_A_CACHE = f"no {CACHE_META} in it"


_PREPROCESS = config_default("preprocess")  # the defaults, written in the schema only


@dataclass(frozen=True)
class WindowSpec:
    """How the slice cache renders a cohort: ``preprocess`` and ``dataset.prewindowed``."""

    image_size: int = _PREPROCESS["image_size"]
    level: float = float(_PREPROCESS["window"]["level"])
    width: float = float(_PREPROCESS["window"]["width"])
    # v1.3.1 scans hold 0-255 display values, not HU: used as they are, level/width unused.
    prewindowed: bool = config_default("dataset", "prewindowed")
    # preprocess.slab_mm: thin slices averaged (in HU) into slabs of this many mm; None: slice for slice.
    slab_mm: float | None = _PREPROCESS["slab_mm"]


def _worker_init(path: str, prewindowed: bool, dataset=None) -> None:
    """A worker's dataset: ``dataset`` itself when given (pickled: CQ500's, whose inventory is
    not taken again), else the CT-ICH dataset at ``path`` opened anew (a zip handle does not pickle)."""
    global _WORKER_DATASET
    _WORKER_DATASET = dataset if dataset is not None else open_dataset(path, prewindowed)


def _process_patient(patient: int, spec: WindowSpec, dataset=None):
    """``(images uint8, masks uint8, manifest rows, log lines, slabbed)`` of one patient's scan
    (``slabbed``: averaged into preprocess.slab_mm slabs here)."""
    dataset = dataset or _WORKER_DATASET
    if spec.slab_mm is None:
        scan, slabs = dataset.read_scan(patient, spec.level, spec.width), None
        images = scan.images
    else:
        scan = dataset.read_hu_scan(patient)
        slabs = plan_slabs(scan.positions, spec.slab_mm, f"{dataset.scan_where(patient)} (patient {patient})",
                           lambda k: f"slice {int(scan.slice_numbers[k])}", reads="of preprocess.slab_mm",
                           fix="add the missing slices, remove the patient from the dataset, or set "
                               "preprocess.slab_mm: null to cache the scan slice for slice")
        # Averaged in HU, then windowed: the window clips, so windowing first would not give the
        # slab a thick reconstruction shows. A scan already about slab_mm thick is windowed as it is.
        images = brain_window(scan.images if slabs is None else slabs.mean(scan.images), spec.level, spec.width)
    images = to_uint8(resize_slices(images, spec.image_size))
    masks = resize_masks(scan.masks, spec.image_size).astype(np.uint8)
    labels = dataset.patient_labels(patient).loc[scan.slice_numbers]
    flags = {"label": labels["label"].to_numpy(), **{s: labels[s].to_numpy() for s in SUBTYPES},
             "fracture": labels["Fracture_Yes_No"].to_numpy()}
    numbers, positions, notes = scan.slice_numbers, scan.positions, []
    if slabs is not None:
        # A slab is positive (for a subtype, a fracture) when any of its slices is, and a pixel is
        # in its mask when it is in any of its slices' masks: a bleed seen on one thin slice is in
        # the slab that averages it, as it is in a thick reconstruction of the same scan.
        masks = slabs.any(masks)
        flags = {name: slabs.any(values) for name, values in flags.items()}
        numbers, positions = np.arange(1, len(slabs) + 1), slabs.centres
        notes = [f"patient {patient}: {len(scan.positions)} slices of {slabs.step:.3g} mm averaged into "
                 f"{len(slabs)} slabs of {slabs.thickness:g} mm"]
        notes += [f"patient {patient}: {line}" for line in gap_warnings({"gaps": slabs.gaps})]
    # What the dataset's own reading did (CQ500: its thin series averaged into slabs, tilt undone).
    notes = list(getattr(dataset, "scan_notes", lambda _p: [])(patient)) + notes
    pixel_mm = np.nan if scan.pixel_mm is None else round(float(np.mean(scan.pixel_mm)), 6)
    rows = pd.DataFrame(
        {
            "patient": patient,
            "slice": numbers,
            "position_mm": np.round(positions, 3),
            **flags,
            "has_mask": masks.reshape(len(masks), -1).any(axis=1).astype(int),
            "pixel_mm": pixel_mm,
            "source_size": scan.source_size,
        }
    )
    return images, masks, rows, notes, slabs is not None


def window_scans(dataset, patients, spec: WindowSpec, workers: int = 1, src=None):
    """``(images, masks, rows, notes, slabbed)`` of each of ``patients`` (:func:`_process_patient`),
    in their order, as they are made: ``workers`` processes, each holding one scan at a time (a
    CT-ICH dataset is opened anew in each from ``src``, a CQ500/RSNA one pickled to them)."""
    patients = list(patients)
    if workers > 1 and len(patients) > 1:
        shared = dataset if dataset.layout in (CQ500_LAYOUT, RSNA_LAYOUT) else None
        with ProcessPoolExecutor(min(workers, len(patients)), initializer=_worker_init,
                                 initargs=(str(src if src is not None else dataset.path), spec.prewindowed,
                                           shared)) as pool:
            yield from pool.map(_process_patient, patients, [spec] * len(patients))
    else:
        for patient in patients:
            yield _process_patient(patient, spec, dataset)


@dataclass(frozen=True)
class WrittenScans:
    """What :func:`write_scans` wrote: the manifest (``row`` 0..slices-1), the slice count and
    how many scans were averaged into slabs."""

    manifest: pd.DataFrame
    slices: int
    slabbed: int


def write_scans(folder: Path, results, image_size: int, reserve: int, log=print) -> WrittenScans:
    """Write ``results`` (:func:`window_scans`) into ``folder``'s slices.npy and masks.npy one scan
    at a time, so that memory holds one scan whatever the count; their notes go to ``log`` as
    they come. ``reserve``: the slices expected, whose blocks are reserved first (a guess: the
    files are cut to what was written and their headers rewritten to the count)."""
    size = (image_size, image_size)
    frames, start, slabbed = [], 0, 0
    # Written with plain writes into blocks reserved first, never through a memory map of a
    # sparse file: a full disk then fails a call with ENOSPC (a one-line error) instead of
    # killing the process with SIGBUS at the first page that finds no room.
    with open(folder / "slices.npy", "wb") as slices, open(folder / "masks.npy", "wb") as masks:
        _start_npy(slices, (reserve, *size))
        _start_npy(masks, (reserve, *size))
        for images, mask, rows, notes, was_slabbed in results:
            for line in notes:
                log(line)
            # Else the .npy files would not match their headers.
            assert images.shape[1:] == mask.shape[1:] == size
            slices.write(np.ascontiguousarray(images, dtype=np.uint8).data)
            masks.write(np.ascontiguousarray(mask, dtype=np.uint8).data)
            rows.insert(0, "row", np.arange(start, start + len(images)))
            frames.append(rows)
            start += len(images)
            slabbed += bool(was_slabbed)
        _finish_npy(slices, (start, *size))
        _finish_npy(masks, (start, *size))
    if not frames:
        raise DataError(f"{folder}: no scan to write")
    manifest = pd.concat(frames, ignore_index=True)[list(MANIFEST_COLUMNS)]
    return WrittenScans(manifest, start, slabbed)


def dataset_provenance(dataset, source: str | None = None) -> dict:
    """What the dataset is, for cache.json's ``dataset`` (every run trained on the cache copies it
    into its ``ichseq.json``, and ``ichseq predict`` and ``ichseq card`` say it): ``source`` (the
    config's ``dataset.source``: synthetic, physionet, local; None when not given), ``synthetic``
    (True when the dataset carries the synthetic twin's marker file or the source says so),
    ``description`` (one line) and, for a synthetic one, the generator's ``spec``."""
    layout = dataset.layout
    if dataset.files.exists(SYNTHETIC_MARKER):
        try:
            spec = json.loads(dataset.files.read(SYNTHETIC_MARKER)).get("spec") or {}
        except ValueError:
            spec = {}
        what = ", ".join(f"{k} {spec[k]}" for k in ("generator", "difficulty", "slice_thickness_mm", "seed")
                         if k in spec)
        return {"source": source, "synthetic": True, "description": f"the ichseq synthetic twin ({what})",
                "spec": spec}
    if source == "synthetic":  # written by an ichseq older than the marker
        return {"source": source, "synthetic": True, "description": "the ichseq synthetic twin"}
    where = {"physionet": "CT-ICH from PhysioNet", "local": "a local dataset",
             "cq500": "CQ500 (qure.ai, CC BY-NC-SA)", "rsna": "RSNA 2019 intracranial hemorrhage (Kaggle)"}.get(source, "a dataset")
    return {"source": source, "synthetic": False,
            "description": f"{where} in the {layout} layout ({len(dataset.patients)} patients)"}


def open_source(src: str | Path, spec: WindowSpec, source: str | None = None, options: dict | None = None,
                log=print):
    """The dataset at ``src`` as the config's ``dataset.source`` says: CQ500 for ``cq500``
    (:class:`ichseq.data.cq500.Cq500Dataset`, ``options`` its ``dataset.cq500`` section: reads,
    label_rule, slab_mm, series), RSNA 2019 for ``rsna`` (:class:`ichseq.data.rsna.RsnaDataset`,
    ``options`` its ``dataset.rsna`` section: labels, min_slices, and ``workers`` for the header
    index), else CT-ICH in either layout (:func:`open_dataset`, detected)."""
    if source == "rsna":
        if spec.prewindowed:
            raise ConfigError("invalid configuration: dataset.prewindowed: true applies to CT-ICH NIfTI scans; RSNA "
                              "2019's DICOM files are in Hounsfield units: set it to false")
        options = options or {}
        return RsnaDataset(src, options.get("labels"), 8 if options.get("min_slices") is None else options["min_slices"],
                           workers=int(options.get("workers") or 1), log=log)
    if source != CQ500_LAYOUT:
        return open_dataset(src, spec.prewindowed)
    if spec.prewindowed:
        raise ConfigError("invalid configuration: dataset.prewindowed: true applies to CT-ICH NIfTI scans; CQ500's "
                          "DICOM series are in Hounsfield units: set it to false")
    options = options or {}
    return Cq500Dataset(src, options.get("reads"), options.get("label_rule") or "majority",
                        5.0 if options.get("slab_mm") is None else options["slab_mm"], options.get("series") or {},
                        log=log)


def build_cache(src: str | Path, out: str | Path, spec: WindowSpec = WindowSpec(), workers: int = 1, log=print,
                source: str | None = None, dataset_options: dict | None = None) -> dict:
    """Read every scan of the dataset at ``src`` once and write the cache folder ``out``
    (``source``: the config's ``dataset.source``, recorded with the dataset's provenance; ``cq500``
    reads ``src`` as CQ500, with ``dataset_options`` its ``dataset.cq500`` section: see
    :func:`open_source`).

    cache.json says whether the rows carry slice labels and masks (``slice_labels``, ``masks``;
    absent in caches written before: true). CQ500's do not: every slice carries its scan's
    labels and no mask; its series-choice table is written into the cache (``series_choice``).

    ``out`` may be absent, an empty folder or an earlier cache (:func:`is_cache`), which is
    replaced; anything else there is refused, as is a file system without room for the cache,
    before any scan is read (one-line DataErrors, as is a disk that fills up meanwhile)."""
    t0 = time.perf_counter()
    out = Path(out)
    # Refused before the scans are read, not after: neither a folder of someone else's files
    # nor a disk too small for the result is worth an hour of reading.
    check_replaceable(out, owned=is_cache, owned_by=NOT_A_CACHE)
    dataset = open_source(src, spec, source, dataset_options, log)
    check_slabs(spec, dataset, src)
    # Hashed before the scans are read (a file replaced meanwhile then no longer matches its
    # entry, so the next run hashes it again and sees the change); unchanged files keep the
    # hashes of the cache being replaced.
    files = content_manifest(dataset, src, read_manifest(out / MANIFEST_NAME))
    digest = manifest_digest(files)
    log(f"dataset content: {len(files)} files, {sum(f['size'] for f in files)} bytes, sha256 {digest}")
    log(f"reading {dataset.layout} dataset at {src}: {len(dataset.patients)} patients, {len(dataset.labels)} slices")
    estimate = len(dataset.labels)
    check_free_space(out, _cache_bytes(estimate, spec.image_size, files))
    needed = _cache_bytes(estimate, spec.image_size, files)
    with atomic_dir(out, owned=is_cache, owned_by=NOT_A_CACHE, needed_bytes=needed) as tmp:
        written = write_scans(tmp, window_scans(dataset, dataset.patients, spec, workers, src), spec.image_size,
                              estimate, log)
        manifest, n = written.manifest, written.slices
        manifest.to_csv(tmp / "manifest.csv", index=False)
        write_manifest(tmp / MANIFEST_NAME, files)
        # A dataset's own files written into the cache (CQ500: series_choice.csv) and what
        # cache.json records of them.
        extras = getattr(dataset, "cache_extras", None)
        extra_meta = extras(tmp) if extras else {}
        meta = cache_json(made_from(src, dataset, source, digest, spec, extra_meta), n, manifest.label.sum(),
                          written.slabbed, round(time.perf_counter() - t0, 2))
        (tmp / CACHE_META).write_text(json.dumps(meta, indent=2) + "\n")
    slabs = f" ({meta['slabbed_scans']} scans as {spec.slab_mm:g} mm slabs)" if spec.slab_mm is not None else ""
    log(f"cache written to {out}: {n} slices of {spec.image_size}x{spec.image_size}{slabs} in {meta['seconds']} s")
    return meta


def made_from(src, dataset, source: str | None, digest: str, spec: WindowSpec, extras: dict) -> dict:
    """What cache.json says the cache was made from, in its order: the dataset (where, what, its
    content digest, layout), the window, size and slabs, the patients, whether rows carry slice
    labels and masks, and the dataset's own entries (``extras``: what its cache_extras wrote).
    The sharded cache's index records it, and its join writes it as the one-job cache does."""
    return {
        "source": str(src),
        "dataset": dataset_provenance(dataset, source),
        "dataset_sha256": digest,
        "layout": dataset.layout,
        "window": window_meta(dataset.layout, spec),
        "image_size": spec.image_size,
        # preprocess.slab_mm (None: slice for slice).
        "slab_mm": spec.slab_mm,
        "patients": len(dataset.patients),
        # Whether a row's labels are its slice's own and masks.npy holds masks; false for a
        # dataset labelled per scan (CQ500): every slice carries its scan's labels.
        "slice_labels": bool(getattr(dataset, "slice_labels", True)),
        "masks": bool(getattr(dataset, "has_masks", True)),
        **extras,
    }


def cache_json(made: dict, slices: int, positive_slices: int, slabbed: int, seconds: float,
               shards: list[dict] | None = None) -> dict:
    """cache.json's content: :func:`made_from`'s entries with what was written (``slices``,
    ``positive_slices``, with slab_mm how many scans became slabs), a sharded cache's shard
    list and the seconds it took."""
    meta = {key: made[key] for key in ("source", "dataset", "dataset_sha256", "layout", "window", "image_size",
                                       "slab_mm")}
    if made["slab_mm"] is not None:
        meta["slabbed_scans"] = int(slabbed)
    meta.update(patients=made["patients"], slices=int(slices), positive_slices=int(positive_slices))
    meta.update({key: value for key, value in made.items() if key not in meta})
    if shards is not None:
        meta["shards"] = shards
    meta["seconds"] = seconds
    return meta


def content_manifest(dataset, src, known: list[dict]) -> list[dict]:
    """The dataset's content manifest (dataset.json): the dataset's own where it supplies one
    (RSNA 2019: its label file and a digest over the .dcm files' names, sizes and times, not
    ~450 GB of SHA-256), else every file's size and SHA-256 (:func:`dataset_manifest`), hashes of
    unchanged files taken from ``known`` (the manifest of the cache being replaced)."""
    own = getattr(dataset, "content_manifest", None)
    return own(known) if own else dataset_manifest(src, known)


def check_slabs(spec: WindowSpec, dataset, src) -> None:
    """``preprocess.slab_mm`` needs slice positions in mm and Hounsfield units: refused (one line)
    for a JPG dataset or a pre-windowed one before any scan is read."""
    if spec.slab_mm is None:
        return
    if not spec.slab_mm > 0:
        raise ConfigError(f"invalid configuration: preprocess.slab_mm: {spec.slab_mm} is not a positive number of mm")
    if dataset.layout == JPG_LAYOUT:
        raise DataError(f"preprocess.slab_mm: {spec.slab_mm:g} mm slabs need slice positions in mm, but {src} is in "
                        f"the {dataset.layout} layout (JPG), whose slices have none; set preprocess.slab_mm: null")
    if spec.prewindowed:
        raise DataError(f"preprocess.slab_mm: {spec.slab_mm:g} mm slabs average slices in Hounsfield units, but "
                        f"dataset.prewindowed says {src} holds 0-255 display values (averaging windowed values is "
                        f"not averaging tissue: the window clips); set preprocess.slab_mm: null or provide the scans "
                        f"in HU")


def _cache_bytes(n_slices: int, image_size: int, files: list) -> int:
    """About the size of a cache folder: the two pixel arrays plus generous room for the
    manifest (a row of ~85 bytes per slice), dataset.json (~200 bytes per file) and cache.json."""
    return 2 * n_slices * image_size * image_size + 128 * n_slices + 512 * len(files) + 16384


def _start_npy(fh, shape: tuple[int, ...]) -> None:
    """Write the .npy header of a C-ordered uint8 array of ``shape`` to ``fh`` (the header
    ``np.save`` writes) and reserve the blocks of its data."""
    np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                              "fortran_order": False, "shape": shape})
    fh.flush()
    _reserve(fh.fileno(), fh.tell(), int(np.prod(shape)))


def _finish_npy(fh, shape: tuple[int, ...]) -> None:
    """Cut the .npy file ``fh`` (begun by :func:`_start_npy`) after its data and rewrite its
    header for the ``shape`` written: the header :func:`_start_npy` would have written for it."""
    data_end = fh.tell()
    fh.truncate(data_end)
    fh.seek(0)
    np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                              "fortran_order": False, "shape": shape})
    # .npy pads its header to 64 bytes: counts of a few to many digits give the same length.
    if fh.tell() + int(np.prod(shape)) != data_end:
        raise DataError(f"{fh.name}: header of {fh.tell()} bytes does not fit the reserved one; rerun the rule")
    fh.seek(data_end)


def _reserve(fd: int, offset: int, length: int) -> None:
    """Allocate ``length`` bytes of the file from ``offset``, so that a full disk shows now (as
    ENOSPC) rather than somewhere in the write. Where the file system cannot reserve space
    (no posix_fallocate, or it refuses the call) the writes report a full disk themselves."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is None or length == 0:
        return
    try:
        allocate(fd, offset, length)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def window_meta(layout: str, spec: WindowSpec) -> dict | str:
    if layout == JPG_LAYOUT:
        return "as published (JPG)"
    if spec.prewindowed:
        return "as provided (pre-windowed 0-255 NIfTI, dataset.prewindowed)"
    return {"level": spec.level, "width": spec.width}


def _with_geometry_columns(manifest: pd.DataFrame) -> pd.DataFrame:
    """``manifest`` with the GEOMETRY_COLUMNS it lacks added as NaN (unknown): a cache written
    before they existed stays readable, and readers of the geometry need no special case."""
    missing = [column for column in GEOMETRY_COLUMNS if column not in manifest.columns]
    return manifest.assign(**{column: np.nan for column in missing}) if missing else manifest


class ShardedRows:
    """Memory-mapped arrays of equal row shape read as their concatenation along the rows (a
    sharded cache's slices or masks): ``shape``, ``dtype``, ``len`` and row indexing by an int, a
    slice or an array of ints, each row read from its shard's map; nothing is loaded before."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.offsets[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            row = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= row < len(self):
                raise IndexError(f"row {index} out of range for {len(self)} rows")
            k = int(np.searchsorted(self.offsets, row, side="right")) - 1
            return self.parts[k][row - self.offsets[k]]
        rows = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        flat = rows.reshape(-1).astype(np.int64)
        flat = np.where(flat < 0, flat + len(self), flat)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} rows")
        out = np.empty((flat.size, *self.shape[1:]), self.dtype)
        which = np.searchsorted(self.offsets, flat, side="right") - 1
        for k in np.unique(which):
            here = which == k
            out[here] = self.parts[k][flat[here] - self.offsets[k]]
        return out.reshape(*rows.shape, *self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


class SliceCache:
    """Read access to a cache folder: the manifest in memory, the pixels memory-mapped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.manifest = _with_geometry_columns(pd.read_csv(self.path / "manifest.csv"))
            self.meta = json.loads((self.path / "cache.json").read_text())
            self.slices = self._pixels("slices.npy")
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path}: not a complete slice cache ({exc}); rerun the brain_window rule") from None
        if len(self.manifest) != len(self.slices):
            raise DataError(f"{self.path}: manifest has {len(self.manifest)} rows but slices.npy {len(self.slices)}")
        self._rows = {int(p): g.row.to_numpy() for p, g in self.manifest.groupby("patient")}

    @classmethod
    def from_arrays(cls, slices: np.ndarray, manifest: pd.DataFrame, meta: dict,
                    masks: np.ndarray | None = None) -> "SliceCache":
        """A cache held in memory (a new scan being predicted, which no cache folder holds):
        ``slices`` uint8 (N, size, size), ``manifest`` with the columns of MANIFEST_COLUMNS the
        readers use (row, patient, slice, position_mm, label; GEOMETRY_COLUMNS are NaN unless
        given), ``masks`` all 0 unless given."""
        cache = cls.__new__(cls)
        cache.path = Path("<memory>")
        cache.manifest = _with_geometry_columns(manifest.reset_index(drop=True))
        cache.slices = np.ascontiguousarray(slices, dtype=np.uint8)
        cache.meta = dict(meta)
        # A new scan has no hemorrhage masks: a model that reads them as an input gets none.
        cache.__dict__["masks"] = np.zeros_like(cache.slices) if masks is None else masks
        if len(cache.manifest) != len(cache.slices):
            raise ValueError(f"manifest has {len(cache.manifest)} rows but slices {len(cache.slices)}")
        cache._rows = {int(p): g.row.to_numpy() for p, g in cache.manifest.groupby("patient")}
        return cache

    def _pixels(self, name: str):
        """The cache's ``name`` array memory-mapped: its own file, or for a sharded cache
        (cache.json ``shards``) the shards' files read as one (:class:`ShardedRows`)."""
        shards = self.meta.get("shards")
        if not shards:
            return np.load(self.path / name, mmap_mode="r")
        parts = []
        for shard in shards:
            part = np.load(self.path / shard["path"] / name, mmap_mode="r")
            if len(part) != shard["slices"]:
                raise DataError(f"{self.path / shard['path']}: {len(part)} rows in {name}, cache.json says "
                                f"{shard['slices']}; rerun the brain_window rule")
            parts.append(part)
        return ShardedRows(parts)

    @property
    def patients(self) -> list[int]:
        return sorted(self._rows)

    @functools.cached_property
    def masks(self) -> np.ndarray:
        """uint8 0/1 (N, size, size) hemorrhage masks, memory-mapped on first use."""
        try:
            return self._pixels("masks.npy")
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path}: unreadable masks.npy ({exc}); rerun the brain_window rule") from None

    def patient_rows(self, patient: int) -> np.ndarray:
        """Row numbers of one patient's slices in slices.npy, ordered by position."""
        return self._rows[patient]

    def patient_labels(self, patient: int) -> np.ndarray:
        return self.manifest.label.to_numpy()[self._rows[patient]]
