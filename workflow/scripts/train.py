"""Rule train: one (model, replicate) run -> the rule's declared outputs."""

from ichseq.runlog import run_step
from ichseq.training.runs import train_run
from ichseq.training.plan import ModelPlan

plan = ModelPlan.from_dict(snakemake.params.plan)
if "pretrained" in snakemake.input.keys():  # weights from the pretrain stage's folder
    plan = plan.with_weights(snakemake.input.pretrained)
rep = int(snakemake.wildcards.rep)
run_step(
    snakemake.log[0],
    lambda log: train_run(
        plan, rep, snakemake.input.split, snakemake.input.cache, snakemake.output,
        features_path=snakemake.input.get("features"), threads=snakemake.threads, log=log,
    ),
    name=f"train {plan.name} rep-{rep}",
)
