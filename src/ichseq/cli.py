"""The ``ichseq`` command: package functions usable outside Snakemake.

    ichseq synthetic DEST [--patients N --positive N --size PX --seed S
                           --min-slices N --max-slices N --mimics M
                           --generator anatomical|cartoon --difficulty easy|moderate|hard
                           --slice-thickness MM --kernel standard|bone
                           --layout ctich|cq500|rsna --no-zip]
    ichseq download DEST [--url URL]          (credentials: PHYSIONET_USERNAME/PASSWORD or ~/.netrc)
    ichseq to-jpg SRC DEST                    (v1.3.1 NIfTI -> v1.0.0 JPG layout)
    ichseq to-dicom SRC DEST [--compression C] (v1.3.1 NIfTI dataset or one .nii/.nii.gz -> DICOM CT series)
    ichseq check PATH                         (detect the layout and validate a dataset)
    ichseq stats METRICS_CSV --out DIR [--alpha A --undefined drop|zero --seed S --resamples N --power-alpha A
                                        --percent]
                                              (compare models over replicates: tests, tables)
    ichseq predict RUN SCAN... [--out DIR --series UID --device auto|cpu|cuda --allow-partial --no-reformat --strict]
                                              (trained runs on new NIfTI / DICOM scans; RUN: a run or model folder)
    ichseq card RUN [--json]                  (a trained model's card: data, metrics with spread, input, recipe)
    ichseq profile install [PROFILE] [--dest DIR --name NAME --link|--copy --force]
                                              (so that `snakemake --profile slurm` finds profiles/slurm)
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from .config import section_defaults
from .errors import ConfigError, IchseqError


#: ``ichseq synthetic --layout``: name -> what it writes (format_twins.LAYOUTS, written out so that
#: `ichseq --help` imports nothing heavy; tests/data/test_format_twins.py keeps them equal).
SYNTHETIC_LAYOUTS = {
    "ctich": "CT-ICH v1.3.1 (ct_scans/NNN.nii, masks/NNN.nii, hemorrhage_diagnosis_raw_ct.csv)",
    "cq500": "CQ500 (CQ500-CT-<n>.zip per patient holding 5 mm, 0.625 mm and bone-kernel JPEG-lossless DICOM "
             "series, and reads.csv of three readers who sometimes disagree)",
    "rsna": "RSNA 2019 (stage_2_train/ID_<hex>.dcm, one uncompressed slice per file, and stage_2_train.csv with six "
            "subtype rows per slice)",
}


def _synthetic(args) -> None:
    from .data.synthetic import SyntheticSpec, generate_synthetic

    options = {"n_patients": args.patients, "n_positive": args.positive, "image_size": args.size, "seed": args.seed,
               "min_slices": args.min_slices, "max_slices": args.max_slices, "mimics_per_scan": args.mimics,
               "generator": args.generator, "difficulty": args.difficulty, "slice_thickness_mm": args.slice_thickness,
               "kernel": args.kernel}
    try:
        spec = SyntheticSpec(**options)
    except ValueError as exc:  # the spec's own checks name its fields; show what was given
        given = ", ".join(f"{key} {value}" for key, value in options.items())
        raise ConfigError(f"{exc} (given: {given})") from None
    if args.layout not in SYNTHETIC_LAYOUTS:
        raise ConfigError(f"--layout {args.layout}: not one of {', '.join(SYNTHETIC_LAYOUTS)}")
    if args.no_zip and args.layout != "cq500":
        raise ConfigError(f"--no-zip applies to --layout cq500 only, not {args.layout}")
    from .atomic import output_errors

    try:
        with output_errors(args.dest):  # a full disk, a read-only folder: one line
            if args.layout == "ctich":
                generate_synthetic(args.dest, spec, workers=args.workers)
            else:
                _synthetic_layout(args, spec)
    except FileExistsError as exc:
        raise ConfigError(str(exc)) from None


def _synthetic_layout(args, spec) -> None:
    """The NIfTI twin generated into a temporary folder beside DEST, then written to DEST in
    the CQ500 or RSNA layout (:mod:`ichseq.data.format_twins`)."""
    import shutil

    from .atomic import temp_dir_beside
    from .data.format_twins import write_cq500, write_rsna
    from .data.synthetic import generate_synthetic

    dest = Path(args.dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):  # before minutes of generating
        raise FileExistsError(f"{dest}: already exists and is not empty; remove it first")
    tmp = temp_dir_beside(dest)
    try:
        twin = tmp / "ct-ich"
        generate_synthetic(twin, spec, workers=args.workers,
                           log=lambda line: print(line.replace(f" written to {twin}", " generated")))
        if args.layout == "cq500":
            write_cq500(twin, dest, zipped=not args.no_zip, seed=spec.seed)
        else:
            write_rsna(twin, dest, seed=spec.seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download(args) -> None:
    from .data.download import DEFAULT_URL, download_dataset

    download_dataset(args.dest, args.url or DEFAULT_URL)


def _to_jpg(args) -> None:
    from .data.convert import export_jpg_layout

    print(f"written {export_jpg_layout(args.src, args.dest)}")


def _to_dicom(args) -> None:
    from .atomic import output_errors
    from .data.dicom import export_dicom

    with output_errors(args.dest):  # a full disk, a read-only folder: one line
        export_dicom(args.src, args.dest, compression=args.compression)


def _check(args) -> None:
    import zipfile

    from .data.readers import open_dataset
    from .errors import DataError

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


def _stats(args) -> None:
    import time

    from .paths import refuse_overlap

    started = time.perf_counter()
    refuse_overlap(args.out, [args.metrics_csv], "--out")  # before anything is read or written
    # Progress lines as they come, also into a pipe or a log file (many models take minutes).
    log = lambda line: print(line, flush=True)  # noqa: E731
    from .analysis.figures import METRIC_FIGURES, figure_paths, metric_figures
    from .analysis.outputs import COMPARISON_NAMES, comparison_outputs
    from .analysis.ranking import write_comparison
    from .analysis.stats import OUTPUT_NAMES, claim_output_folder, read_runs, recorded_outputs, run_stats

    runs = read_runs(args.metrics_csv, percent=args.percent)
    n_models = runs["model"].nunique()
    # The leaderboard, and with 3 or more models the Friedman test, post-hoc table and CD diagram.
    wanted = {key: Path(args.out) / COMPARISON_NAMES[key] for key in comparison_outputs(n_models)}
    # Every file the command may write or remove (the confusion files of a table without counts);
    # one of these names that an earlier `ichseq stats` did not write is refused, not replaced.
    figure_names = [path.name for stem in METRIC_FIGURES for path in figure_paths(stem)]
    claim_output_folder(args.out, [*OUTPUT_NAMES.values(), *figure_names, *(p.name for p in wanted.values())], "--out")
    # A part whose inputs the table lacks (confusion counts) is skipped with one printed line.
    paths = list(run_stats(
        runs, args.out, alpha=args.alpha, undefined=args.undefined, seed=args.seed, n_resamples=args.resamples,
        power_alpha=args.power_alpha, log=log,
    ).values())  # fmt: skip
    paths += metric_figures(runs, args.out, log=log)  # box plots, mean confusion matrices, paired runs
    paths += list(write_comparison(runs, wanted, alpha=args.alpha, undefined=args.undefined, seed=args.seed,
                                   n_resamples=args.resamples, log=log).values())  # fmt: skip
    # An earlier run's Friedman files (it had 3+ models, this table fewer) would read as this
    # table's results: they are removed, being ichseq's own (listed in its record).
    ours = recorded_outputs(Path(args.out), "--out")
    for key, name in COMPARISON_NAMES.items():
        stale = Path(args.out) / name
        if key not in wanted and name in ours and stale.exists():
            stale.unlink()
            log(f"removed {stale} (an earlier run's; a table of {n_models} models has no such result)")
    for path in paths:
        print(f"written {path}")
    print(f"done in {time.perf_counter() - started:.1f} s")


def _predict(args) -> None:
    import torch

    from .inference.predict import predict

    torch.set_num_threads(max(1, args.threads))
    # Each scan's "written DIR" line comes as it is written; scans that could not be scored are
    # listed at the end (exit status 1) after the others were scored.
    predict(args.run, args.scans, out=args.out, series=args.series, device=args.device,
            allow_partial=args.allow_partial, log=lambda msg: print(msg, flush=True), reformat=not args.no_reformat,
            strict=args.strict)


def _card(args) -> None:
    import json

    from .inference.card import card_markdown, model_card

    card = model_card(args.run)
    print(json.dumps(card, indent=2, default=str) if args.json else card_markdown(card), end="" if not args.json else "\n")


def _profile_install(args) -> None:
    from .profiles import install_profile

    target, done = install_profile(args.profile, args.dest, link=args.link, force=args.force, as_name=args.name)
    what = f"a link to profiles/{args.profile}" if args.link else f"a copy of profiles/{args.profile}"
    # Snakemake finds a name in its own folder; a profile installed elsewhere is given by path.
    use = target.name if args.dest is None else target
    print(f"{target}: {what}, {done}; use it with: snakemake --profile {use}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help unless the help states its default already or
    there is none to state (a flag, or an option that is unset unless given)."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from .data.download import DEFAULT_URL

    parser = argparse.ArgumentParser(prog="ichseq", description=__doc__.split("\n\n")[0],
                                     formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below; `ichseq COMMAND --help` for its options")

    def command(name: str, about: str, parent=sub) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=about, description=about, formatter_class=_HelpFormatter)

    # Defaults: the schema's dataset.synthetic, as SyntheticSpec's (read from the schema, so that
    # `ichseq --help` does not import nibabel and scipy). The allowed values are not argparse
    # choices: a wrong one is the spec's one-line error, as any other wrong value.
    synthetic = section_defaults("synthetic")
    p = command("synthetic", "write the synthetic CT-ICH twin (v1.3.1 layout, or with --layout that of CQ500 or "
                             "RSNA 2019)")
    p.add_argument("dest", help="folder to write; must not exist or be empty")
    p.add_argument("--patients", type=int, default=synthetic["n_patients"], help="number of patients")
    p.add_argument("--positive", type=int, default=synthetic["n_positive"], help="how many of them have a hemorrhage")
    p.add_argument("--size", type=int, default=synthetic["image_size"],
                   help="in-plane pixels of every slice, at least 32")
    p.add_argument("--seed", type=int, default=synthetic["seed"],
                   help="random seed; the same options and seed give the same files")
    p.add_argument("--min-slices", type=int, default=synthetic["min_slices"], help="fewest slices per scan, at least 8")
    p.add_argument("--max-slices", type=int, default=synthetic["max_slices"], help="most slices per scan")
    p.add_argument("--mimics", type=float, default=synthetic["mimics_per_scan"],
                   help="mean number of single-slice hemorrhage mimics (calcifications, streaks) per scan")
    p.add_argument("--generator", default=synthetic["generator"], metavar="{anatomical,cartoon}",
                   help="anatomical: a realistic head CT twin on the ICBM 2009 brain template (its head atlas takes "
                        "~15 s to build once, then is read from ~/.cache/ichseq; ~0.26 s per 128-px scan); "
                        "cartoon: the old fast ellipse head, for tests")
    p.add_argument("--difficulty", default=synthetic["difficulty"], metavar="{easy,moderate,hard}",
                   help="anatomical only: how hard the bleeds are to see")
    p.add_argument("--slice-thickness", type=float, default=synthetic["slice_thickness_mm"], metavar="MM",
                   help="anatomical only: slice thickness in mm, 0.5-10 (a thin series such as 0.625 wants "
                        "--min-slices/--max-slices around 200-260)")
    p.add_argument("--kernel", default=synthetic["kernel"], metavar="{standard,bone}",
                   help="anatomical only: reconstruction kernel (bone: sharper, noisier)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="generate the patients in N processes (the same files; default 1)")
    p.add_argument("--layout", default="ctich", metavar="{" + ",".join(SYNTHETIC_LAYOUTS) + "}",
                   help="the layout DEST gets: " + "; ".join(f"{name}: {what}" for name, what in
                                                           SYNTHETIC_LAYOUTS.items())
                        + "; cq500 and rsna are the CT-ICH twin's scans and labels rewritten, to test the readers of "
                          "those public datasets without them")
    p.add_argument("--no-zip", action="store_true",
                   help="cq500 only: write each patient's extracted folder (CQ500CT<n> CQ500CT<n>/) instead of "
                        "CQ500-CT-<n>.zip")
    p.set_defaults(func=_synthetic)
    p = command("download", "download CT-ICH v1.3.1 from PhysioNet")
    p.add_argument("dest", help="folder to download into; an interrupted download resumes there")
    p.add_argument("--url", default=DEFAULT_URL, help="dataset URL")
    p.set_defaults(func=_download)
    p = command("to-jpg", "convert a v1.3.1 dataset to the v1.0.0 JPG layout")
    p.add_argument("src", help="v1.3.1 (NIfTI) dataset folder or zip")
    p.add_argument("dest", help="folder to write the JPG layout to")
    p.set_defaults(func=_to_jpg)
    p = command("to-dicom", "write NIfTI CT scans as DICOM CT series (geometry and HU rescale tags from the "
                            "NIfTI; uncompressed or lossless-compressed), e.g. to test `ichseq predict` on whole "
                            "DICOM series")
    p.add_argument("src", help="v1.3.1 (NIfTI) dataset folder or zip (every ct_scans/NNN.nii -> DEST/NNN/), "
                               "or one .nii/.nii.gz file (-> DEST)")
    p.add_argument("dest", help="folder to write; must not exist or be empty")
    p.add_argument("--compression", default="none", metavar="{none,jpeg-lossless,jpeg-ls,jpeg2000,rle}",
                   help="transfer syntax of the files: none (explicit VR little endian), or lossless JPEG (process "
                        "14 SV1, as CQ500), JPEG-LS, JPEG 2000 or RLE, encoded by GDCM (default none)")
    p.set_defaults(func=_to_dicom)
    p = command("check", "detect the layout of a dataset folder/zip and validate it")
    p.add_argument("path", help="dataset folder or zip, v1.3.1 (NIfTI) or v1.0.0 (JPG)")
    p.set_defaults(func=_check)
    p = command("stats", "compare models over replicates from a model,replicate,metric,value CSV (with 3 or more "
                         "models also the Friedman test, post-hoc tests and critical-difference diagram)")
    p.add_argument("metrics_csv", metavar="METRICS_CSV", help="long-format CSV: model, replicate, metric, value")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--undefined", choices=("drop", "zero"), default="drop", help="undefined values: drop or count as 0")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--resamples", type=int, default=9999, help="bootstrap resamples (default 9999)")
    p.add_argument(
        "--power-alpha", type=float, default=None, metavar="A",
        help="alpha of the power column (default: --alpha; the study used 0.5)",
    )  # fmt: skip
    p.add_argument("--percent", action="store_true",
                   help="the table's rate metrics (accuracy, precision, recall, specificity, f1, balanced_accuracy, "
                        "roc_auc, dice) are percentages (0-100), not fractions: they are divided by 100 first; "
                        "counts and other metrics are used as they are")  # fmt: skip
    p.set_defaults(func=_stats)
    p = command("predict", "score new scans with a trained run, or with every replicate of a model (an ensemble)")
    p.add_argument("run", metavar="RUN", help="a run folder (results/runs/MODEL/rep-N) or a model folder "
                   "(results/runs/MODEL: every finished replicate, their mean probability and spread)")
    p.add_argument("scans", metavar="SCAN", nargs="+", help="a NIfTI file (.nii/.nii.gz, Hounsfield units), a folder "
                   "holding one DICOM series, or a folder of several such scans")
    p.add_argument("--out", metavar="DIR", help="output folder; each scan's files go to DIR/SCAN/ "
                   "(default: predictions/MODEL)")
    p.add_argument("--series", metavar="UID", help="the SeriesInstanceUID to read from a DICOM folder holding several")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where the models run (default: the runs' "
                   "training.device)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--allow-partial", action="store_true",
                   help="score a scan with fewer slices or a shorter extent along the head than the model needs "
                        "(e.g. a single slice); its result is marked partial, about the slices given only")
    p.add_argument("--strict", action="store_true",
                   help="refuse (leave unscored) a scan out of the model's training distribution instead of scoring "
                        "it with in_distribution: false")
    p.add_argument("--no-reformat", action="store_true",
                   help="read each scan as it is: no averaging of thin slices into the training's slabs, no "
                        "field-of-view matching in mm, no tilt correction, and a missing slice refused")
    p.set_defaults(func=_predict)
    p = command("card", "print a trained model's card: what it was trained on, its test metrics over the replicates, "
                        "the input it expects, its recipe and limitations")
    p.add_argument("run", metavar="RUN", help="a run folder (results/runs/MODEL/rep-N) or a model folder "
                   "(results/runs/MODEL: every finished replicate)")
    p.add_argument("--json", action="store_true", help="the card as JSON instead of Markdown")
    p.set_defaults(func=_card)
    p = command("profile", "install this repository's Snakemake profiles for `snakemake --profile NAME`")
    profile = p.add_subparsers(dest="action", required=True, metavar="ACTION", help="what to do (install)")
    p = command("install", "copy or link profiles/PROFILE into Snakemake's profile folder", parent=profile)
    p.add_argument("profile", nargs="?", default="slurm", metavar="PROFILE",
                   help="a profile of the repository's profiles/ folder, e.g. slurm or local")
    p.add_argument("--dest", metavar="DIR", help="folder to install into (default: Snakemake's own, "
                   "$XDG_CONFIG_HOME/snakemake or ~/.config/snakemake)")
    p.add_argument("--name", help="install under this name instead of PROFILE's (e.g. when you have one of that name)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--copy", dest="link", action="store_false",
                     help="install a copy, independent of this checkout (the default)")
    how.add_argument("--link", dest="link", action="store_true",
                     help="install a link to this checkout's profile, which follows its updates")
    p.add_argument("--force", action="store_true", help="replace an installed profile that differs")
    p.set_defaults(func=_profile_install, command="profile install", link=False)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except IchseqError as exc:
        print(f"ichseq {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
