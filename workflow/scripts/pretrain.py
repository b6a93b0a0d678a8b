"""Rule pretrain: one model trained whole on the pretraining cohort -> results/pretrained/{model}/."""

from ichseq.runlog import run_step
from ichseq.training.settings import TrainSettings
from ichseq.training.pretrain import pretrain_model
from ichseq.training.plan import ModelPlan

plan = ModelPlan.from_dict(snakemake.params.plan)
settings = TrainSettings.from_dict(snakemake.params.settings, where=f"models.{plan.name}.pretrain")
run_step(
    snakemake.log[0],
    lambda log: pretrain_model(
        plan, settings, snakemake.input.cache, snakemake.input.study_cache, snakemake.output,
        holdout_fraction=snakemake.params.holdout_fraction, seed=snakemake.params.seed,
        threads=snakemake.threads, log=log,
    ),
    name=f"pretrain {plan.name}",
)
