"""``ichseq synthetic``: the synthetic CT-ICH twin, in its own layout or that of CQ500 or RSNA 2019."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..atomic import output_errors, temp_dir_beside
from ..data import synthetic
from ..data.format_twins import LAYOUTS, write_cq500, write_rsna
from ..errors import ConfigError


def run(args) -> None:
    options = {"n_patients": args.patients, "n_positive": args.positive, "image_size": args.size, "seed": args.seed,
               "min_slices": args.min_slices, "max_slices": args.max_slices, "mimics_per_scan": args.mimics,
               "generator": args.generator, "difficulty": args.difficulty, "slice_thickness_mm": args.slice_thickness,
               "kernel": args.kernel}
    try:
        spec = synthetic.SyntheticSpec(**options)
    except ValueError as exc:  # the spec's own checks name its fields; show what was given
        given = ", ".join(f"{key} {value}" for key, value in options.items())
        raise ConfigError(f"{exc} (given: {given})") from None
    if args.layout not in LAYOUTS:  # the names of ichseq.cli.SYNTHETIC_LAYOUTS (a test keeps them equal)
        raise ConfigError(f"--layout {args.layout}: not one of {', '.join(LAYOUTS)}")
    if args.no_zip and args.layout != "cq500":
        raise ConfigError(f"--no-zip applies to --layout cq500 only, not {args.layout}")
    try:
        with output_errors(args.dest):  # a full disk, a read-only folder: one line
            if args.layout == "ctich":
                synthetic.generate_synthetic(args.dest, spec, workers=args.workers)
            else:
                write_in_layout(args, spec)
    except FileExistsError as exc:
        raise ConfigError(str(exc)) from None


def write_in_layout(args, spec) -> None:
    """The NIfTI twin generated into a temporary folder beside DEST, then written to DEST in
    the CQ500 or RSNA layout (:mod:`ichseq.data.format_twins`)."""
    dest = Path(args.dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):  # before minutes of generating
        raise FileExistsError(f"{dest}: already exists and is not empty; remove it first")
    tmp = temp_dir_beside(dest)
    try:
        twin = tmp / "ct-ich"
        synthetic.generate_synthetic(twin, spec, workers=args.workers,
                                     log=lambda line: print(line.replace(f" written to {twin}", " generated")))
        if args.layout == "cq500":
            write_cq500(twin, dest, zipped=not args.no_zip, seed=spec.seed)
        else:
            write_rsna(twin, dest, seed=spec.seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
