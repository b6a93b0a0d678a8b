"""Rule features: one model's frozen-backbone features of every sample of the cohort."""

from ichseq.runlog import run_step
from ichseq.training.runs import compute_features
from ichseq.training.plan import ModelPlan

plan = ModelPlan.from_dict(snakemake.params.plan)
if "pretrained" in snakemake.input.keys():  # weights from the pretrain stage's folder
    plan = plan.with_weights(snakemake.input.pretrained)
run_step(
    snakemake.log[0],
    lambda log: compute_features(plan, snakemake.input.cache, snakemake.output[0], threads=snakemake.threads, log=log),
    name=f"features {plan.name}",
)
