"""Rule pretrain_summary: the pretraining cohort, held-out AUC and curves of every pretrained model."""

from ichseq.runlog import run_step
from ichseq.training.pretrain import summarise_pretraining

run_step(
    snakemake.log[0],
    lambda log: log("wrote " + ", ".join(map(str, summarise_pretraining(snakemake.input, snakemake.output).values()))),
    name="pretrain_summary",
)
