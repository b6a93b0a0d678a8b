"""The ``ichseq`` command: package functions usable outside Snakemake.

    ichseq synthetic DEST [--patients N --positive N --size PX --seed S]
    ichseq download DEST [--url URL]          (credentials: PHYSIONET_USERNAME/PASSWORD or ~/.netrc)
    ichseq to-jpg SRC DEST                    (v1.3.1 NIfTI -> v1.0.0 JPG layout)
    ichseq check PATH                         (detect the layout and validate a dataset)
    ichseq stats METRICS_CSV --out DIR [--alpha A --undefined drop|zero --seed S --resamples N --power-alpha A]
                                              (compare models over replicates: tests, tables)
"""

from __future__ import annotations

import argparse
import sys

from .errors import IchseqError


def _synthetic(args) -> None:
    from .synthetic import SyntheticSpec, generate_synthetic

    spec = SyntheticSpec(n_patients=args.patients, n_positive=args.positive, image_size=args.size, seed=args.seed)
    generate_synthetic(args.dest, spec)


def _download(args) -> None:
    from .physionet import DEFAULT_URL, download_dataset

    download_dataset(args.dest, args.url or DEFAULT_URL)


def _to_jpg(args) -> None:
    from .convert import export_jpg_layout

    print(f"written {export_jpg_layout(args.src, args.dest)}")


def _check(args) -> None:
    from .dataset import open_dataset

    ds = open_dataset(args.path)
    pos = ds.labels.groupby("PatientNumber").label.max()
    print(
        f"{args.path}: {ds.layout}, {len(ds.patients)} patients ({int(pos.sum())} with hemorrhage), "
        f"{len(ds.labels)} slices ({int(ds.labels.label.sum())} positive)"
    )


def _stats(args) -> None:
    from .figures import metric_figures
    from .stats import read_runs, run_stats

    runs = read_runs(args.metrics_csv)
    # A part whose inputs the table lacks (confusion counts) is skipped with one printed line.
    paths = list(run_stats(
        runs, args.out, alpha=args.alpha, undefined=args.undefined, seed=args.seed, n_resamples=args.resamples,
        power_alpha=args.power_alpha, log=print,
    ).values())  # fmt: skip
    paths += metric_figures(runs, args.out, log=print)  # box plots, mean confusion matrices, paired runs
    for path in paths:
        print(f"written {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ichseq", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synthetic", help="write the synthetic CT-ICH twin (v1.3.1 layout)")
    p.add_argument("dest")
    p.add_argument("--patients", type=int, default=75)
    p.add_argument("--positive", type=int, default=36)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_synthetic)
    p = sub.add_parser("download", help="download CT-ICH v1.3.1 from PhysioNet")
    p.add_argument("dest")
    p.add_argument("--url")
    p.set_defaults(func=_download)
    p = sub.add_parser("to-jpg", help="convert a v1.3.1 dataset to the v1.0.0 JPG layout")
    p.add_argument("src")
    p.add_argument("dest")
    p.set_defaults(func=_to_jpg)
    p = sub.add_parser("check", help="detect the layout of a dataset folder/zip and validate it")
    p.add_argument("path")
    p.set_defaults(func=_check)
    p = sub.add_parser("stats", help="compare models over replicates from a model,replicate,metric,value CSV")
    p.add_argument("metrics_csv", metavar="METRICS_CSV")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--undefined", choices=("drop", "zero"), default="drop", help="undefined values: drop or count as 0")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--resamples", type=int, default=9999, help="bootstrap resamples (default 9999)")
    p.add_argument(
        "--power-alpha", type=float, default=None, metavar="A",
        help="alpha of the power column (default: --alpha; the study used 0.5)",
    )  # fmt: skip
    p.set_defaults(func=_stats)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except IchseqError as exc:
        print(f"ichseq {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
