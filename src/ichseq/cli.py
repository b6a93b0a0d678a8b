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
import importlib
import sys
from collections.abc import Callable

from .config import config_default, section_defaults
from .data.download import DEFAULT_URL
from .errors import IchseqError

#: ``ichseq synthetic --layout``: name -> what it writes (format_twins.LAYOUTS, written out so that
#: `ichseq --help` imports nothing heavy; tests/data/test_format_twins.py keeps them equal).
SYNTHETIC_LAYOUTS = {
    "ctich": "CT-ICH v1.3.1 (ct_scans/NNN.nii, masks/NNN.nii, hemorrhage_diagnosis_raw_ct.csv)",
    "cq500": "CQ500 (CQ500-CT-<n>.zip per patient holding 5 mm, 0.625 mm and bone-kernel JPEG-lossless DICOM "
             "series, and reads.csv of three readers who sometimes disagree)",
    "rsna": "RSNA 2019 (stage_2_train/ID_<hex>.dcm, one uncompressed slice per file, and stage_2_train.csv with six "
            "subtype rows per slice)",
}


#: The function that runs each command, as ``module:function`` of :mod:`ichseq.commands`,
#: by the command's name (``args.command``). :func:`handler` imports the module of the command
#: given, and only that one, when it runs: the one lazy import of the command line, so that
#: ``ichseq --help`` and the light commands import neither torch nor the statistics.
HANDLERS = {
    "synthetic": "synthetic:run",
    "download": "datasets:download",
    "to-jpg": "datasets:to_jpg",
    "to-dicom": "datasets:to_dicom",
    "check": "datasets:check",
    "stats": "stats:run",
    "predict": "predict:run",
    "card": "card:run",
    "profile install": "profile:install",
}


def handler(command: str) -> Callable[[argparse.Namespace], None]:
    """The function of :data:`HANDLERS` that runs ``command``, its module imported now."""
    module, function = HANDLERS[command].split(":")
    return getattr(importlib.import_module(f"ichseq.commands.{module}"), function)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help unless the help states its default already or
    there is none to state (a flag, or an option that is unset unless given)."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ichseq", description=__doc__.split("\n\n")[0],
                                     formatter_class=_HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="one of the commands below; `ichseq COMMAND --help` for its options")
    for add in (_add_synthetic, _add_dataset_commands, _add_stats, _add_predict, _add_card, _add_profile):
        add(commands)
    return parser


def _command(parent, name: str, about: str) -> argparse.ArgumentParser:
    return parent.add_parser(name, help=about, description=about, formatter_class=_HelpFormatter)


def _add_synthetic(commands) -> None:
    # Defaults: the schema's dataset.synthetic, as SyntheticSpec's (read from the schema, so that
    # `ichseq --help` does not import nibabel and scipy). The allowed values are not argparse
    # choices: a wrong one is the spec's one-line error, as any other wrong value.
    synthetic = section_defaults("synthetic")
    p = _command(commands, "synthetic", "write the synthetic CT-ICH twin (v1.3.1 layout, or with --layout that of "
                                        "CQ500 or RSNA 2019)")
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


def _add_dataset_commands(commands) -> None:
    p = _command(commands, "download", "download CT-ICH v1.3.1 from PhysioNet")
    p.add_argument("dest", help="folder to download into; an interrupted download resumes there")
    p.add_argument("--url", default=DEFAULT_URL, help="dataset URL")
    p = _command(commands, "to-jpg", "convert a v1.3.1 dataset to the v1.0.0 JPG layout")
    p.add_argument("src", help="v1.3.1 (NIfTI) dataset folder or zip")
    p.add_argument("dest", help="folder to write the JPG layout to")
    p = _command(commands, "to-dicom", "write NIfTI CT scans as DICOM CT series (geometry and HU rescale tags from "
                                       "the NIfTI; uncompressed or lossless-compressed), e.g. to test `ichseq "
                                       "predict` on whole DICOM series")
    p.add_argument("src", help="v1.3.1 (NIfTI) dataset folder or zip (every ct_scans/NNN.nii -> DEST/NNN/), "
                               "or one .nii/.nii.gz file (-> DEST)")
    p.add_argument("dest", help="folder to write; must not exist or be empty")
    p.add_argument("--compression", default="none", metavar="{none,jpeg-lossless,jpeg-ls,jpeg2000,rle}",
                   help="transfer syntax of the files: none (explicit VR little endian), or lossless JPEG (process "
                        "14 SV1, as CQ500), JPEG-LS, JPEG 2000 or RLE, encoded by GDCM (default none)")
    p = _command(commands, "check", "detect the layout of a dataset folder/zip and validate it")
    p.add_argument("path", help="dataset folder or zip, v1.3.1 (NIfTI) or v1.0.0 (JPG)")


def _add_stats(commands) -> None:
    p = _command(commands, "stats", "compare models over replicates from a model,replicate,metric,value CSV (with 3 "
                                    "or more models also the Friedman test, post-hoc tests and critical-difference "
                                    "diagram)")
    p.add_argument("metrics_csv", metavar="METRICS_CSV", help="long-format CSV: model, replicate, metric, value")
    # Defaults: the schema's statistics section, what the workflow's statistics rule uses.
    statistics = config_default("statistics")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--alpha", type=float, default=statistics["alpha"],
                   help=f"significance level (default {statistics['alpha']})")
    p.add_argument("--undefined", choices=("drop", "zero"), default=statistics["undefined"],
                   help="undefined values: drop or count as 0")
    p.add_argument("--seed", type=int, default=statistics["seed"], help=f"bootstrap seed (default {statistics['seed']})")
    p.add_argument("--resamples", type=int, default=statistics["bootstrap_resamples"],
                   help=f"bootstrap resamples (default {statistics['bootstrap_resamples']})")
    p.add_argument(
        "--power-alpha", type=float, default=None, metavar="A",
        help="alpha of the power column (default: --alpha; the study used 0.5)",
    )  # fmt: skip
    p.add_argument("--percent", action="store_true",
                   help="the table's rate metrics (accuracy, precision, recall, specificity, f1, balanced_accuracy, "
                        "roc_auc, dice) are percentages (0-100), not fractions: they are divided by 100 first; "
                        "counts and other metrics are used as they are")  # fmt: skip


def _add_predict(commands) -> None:
    p = _command(commands, "predict", "score new scans with a trained run, or with every replicate of a model (an "
                                      "ensemble)")
    p.add_argument("run", metavar="RUN", help="a run folder (results/runs/MODEL/rep-N) or a model folder "
                   "(results/runs/MODEL: every finished replicate, their mean probability and spread)")
    p.add_argument("scans", metavar="SCAN", nargs="+", help="a NIfTI file (.nii/.nii.gz, Hounsfield units), a folder "
                   "holding one DICOM series, or a folder of several such scans")
    p.add_argument("--out", metavar="DIR", help="output folder; each scan's files go to DIR/SCAN/ "
                   "(default: predictions/MODEL)")
    p.add_argument("--series", metavar="UID", help="the SeriesInstanceUID to read from a DICOM folder holding several")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where the models run (default: the runs' "
                   "training.device)")
    p.add_argument("--threads", type=int, default=config_default("threads", "predict"), help="CPU threads")
    p.add_argument("--allow-partial", action="store_true",
                   help="score a scan with fewer slices or a shorter extent along the head than the model needs "
                        "(e.g. a single slice); its result is marked partial, about the slices given only")
    p.add_argument("--strict", action="store_true",
                   help="refuse (leave unscored) a scan out of the model's training distribution instead of scoring "
                        "it with in_distribution: false")
    p.add_argument("--no-reformat", action="store_true",
                   help="read each scan as it is: no averaging of thin slices into the training's slabs, no "
                        "field-of-view matching in mm, no tilt correction, and a missing slice refused")


def _add_card(commands) -> None:
    p = _command(commands, "card", "print a trained model's card: what it was trained on, its test metrics over the "
                                   "replicates, the input it expects, its recipe and limitations")
    p.add_argument("run", metavar="RUN", help="a run folder (results/runs/MODEL/rep-N) or a model folder "
                   "(results/runs/MODEL: every finished replicate)")
    p.add_argument("--json", action="store_true", help="the card as JSON instead of Markdown")


def _add_profile(commands) -> None:
    p = _command(commands, "profile", "install this repository's Snakemake profiles for `snakemake --profile NAME`")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", help="what to do (install)")
    p = _command(actions, "install", "copy or link profiles/PROFILE into Snakemake's profile folder")
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
    p.set_defaults(command="profile install", link=False)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler(args.command)(args)
    except IchseqError as exc:
        print(f"ichseq {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
