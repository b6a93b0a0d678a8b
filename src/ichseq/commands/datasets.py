"""``ichseq download``, ``to-jpg``, ``to-dicom`` and ``check``: getting, converting and
checking a dataset."""

from __future__ import annotations

import zipfile
from pathlib import Path

from ..atomic import output_errors
from ..data.convert import export_jpg_layout
from ..data.dicom import export_dicom
from ..data.download import DEFAULT_URL, download_dataset
from ..data.readers import open_dataset
from ..errors import DataError


def download(args) -> None:
    download_dataset(args.dest, args.url or DEFAULT_URL)


def to_jpg(args) -> None:
    print(f"written {export_jpg_layout(args.src, args.dest)}")


def to_dicom(args) -> None:
    with output_errors(args.dest):  # a full disk, a read-only folder: one line
        export_dicom(args.src, args.dest, compression=args.compression)


def check(args) -> None:
    # Said here for the command line: the readers' own messages point at the config's dataset.local.path.
    path = Path(args.path)
    if not path.exists():
        raise DataError(f"{path}: does not exist; give a CT-ICH dataset folder or zip (v1.3.1 NIfTI or v1.0.0 JPG)")
    if path.is_file() and not zipfile.is_zipfile(path):
        raise DataError(f"{path}: neither a folder nor a zip archive; give a CT-ICH dataset folder or zip")
    ds = open_dataset(path)
    pos = ds.labels.groupby("PatientNumber").label.max()
    print(
        f"{args.path}: {ds.layout}, {len(ds.patients)} patients ({int(pos.sum())} with hemorrhage), "
        f"{len(ds.labels)} slices ({int(ds.labels.label.sum())} positive)"
    )
