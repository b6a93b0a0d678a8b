# ichseq: intracranial hemorrhage detection from head CT read as a sequence of slices.
#
#   snakemake --cores 2                      # everything, on the embedded synthetic dataset
#   snakemake --profile profiles/slurm       # the same on a Slurm cluster
#
# Rules live in workflow/rules/ (one file per stage); their logic in the `ichseq` package.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/twin.smk"
include: "workflow/rules/external.smk"


rule all:
    input:
        "results/data/cohort.csv",
        split_files(),
        run_files("metrics.json"),
        # Every output of the fan-in rules, so a file added to one (a report page, say) is
        # produced by the next plain run instead of failing the --report step.
        rules.collect_runs.output,
        rules.statistics.output,
        rules.figures.output,
        rules.calibration.output,
        rules.comparison.output,
        # The pretraining's summary and curves, when a model is pretrained here.
        rules.pretrain_summary.output if PRETRAINED else [],
        # New scans scored by the trained runs, when predict.scans lists any.
        rules.predict.input if PREDICT_SCANS else [],
        # The anatomical twin shown and measured, when the study cohort is one.
        rules.twin_figure.output if TWIN_FIGURE else [],
        # Every trained run tested on the external cohort, when external.dataset is set.
        EXTERNAL_TARGETS,
    default_target: True
