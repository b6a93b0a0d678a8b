# Predict stage (optional): each chosen model's trained replicates score each new scan listed
# under predict.scans (an ensemble per model). Not part of `rule all` while predict.scans is
# empty; `snakemake predict` runs only this stage (training what it needs first).

import re

from ichseq.inference.targets import predict_targets

try:
    PREDICT_MODELS, PREDICT_SCANS = predict_targets(config)
except IchseqError as exc:
    raise WorkflowError(str(exc)) from None


wildcard_constraints:
    # Only the configured scans' names (which may hold dots or dashes).
    scan="|".join(re.escape(name) for name in PREDICT_SCANS) or "(?!)",


def predict_inputs(wildcards):
    return {
        "scan": str(PREDICT_SCANS[wildcards.scan]),
        "runs": expand("results/runs/{model}/rep-{rep}/metrics.json", model=wildcards.model, rep=REPLICATES),
        "models": expand("results/runs/{model}/rep-{rep}/model", model=wildcards.model, rep=REPLICATES),
        # A head-mode run rebuilds its backbone from these weights.
        **pretrained_input(wildcards),
    }


rule predict_scan:
    input:
        unpack(predict_inputs),
    output:
        slices="results/predict/{model}/{scan}/slices.csv",
        decision="results/predict/{model}/{scan}/decision.json",
        figure_png=report("results/predict/{model}/{scan}/figure.png", caption="../report/predict_figure.rst",
                          category="Predictions", subcategory="{model}", labels={"model": "{model}", "scan": "{scan}"}),
        figure_svg="results/predict/{model}/{scan}/figure.svg",
    params:
        series=lambda wc: config["predict"]["series"].get(wc.scan),
        allow_partial=config["predict"]["allow_partial"],
        reformat=config["predict"]["reformat"],
    threads: config["threads"]["predict"]
    log:
        "logs/predict/{model}/{scan}.log",
    resources:
        # Like the features job: every replicate's whole model runs on the scan's slices.
        gpu=lambda wc: uses_gpu(wc.model, "features"),
        mem_mb=16000,
        runtime=lambda wc, attempt: 60 * attempt,
    script:
        "../scripts/predict.py"


localrules:
    predict,


rule predict:
    # Target: every configured scan scored by every chosen model.
    input:
        expand("results/predict/{model}/{scan}/decision.json", model=PREDICT_MODELS, scan=list(PREDICT_SCANS)),
