# Training stage: per-model feature extraction (head mode) -> one job per (model, replicate).


wildcard_constraints:
    model="|".join(MODELS),
    rep=r"\d+",


rule features:
    # Frozen backbone, eval mode, no augmentation: every replicate's head trains on the same
    # features, so they are computed once per model.
    input:
        unpack(features_inputs),
    output:
        directory("results/features/{model}"),
    params:
        plan=plan_of,
    threads: config["threads"]["features"]
    log:
        "logs/features/{model}.log",
    resources:
        gpu=lambda wc: uses_gpu(wc.model, "features"),
        mem_mb=16000,
        # Minutes; a job killed at its time limit is retried with more (profile retries).
        runtime=lambda wc, attempt: 120 * attempt,
    script:
        "../scripts/features.py"


rule train:
    input:
        unpack(train_inputs),
    output:
        metrics="results/runs/{model}/rep-{rep}/metrics.json",
        predictions="results/runs/{model}/rep-{rep}/predictions.csv",
        sample_predictions="results/runs/{model}/rep-{rep}/sample_predictions.csv",
        history="results/runs/{model}/rep-{rep}/history.csv",
        cost="results/runs/{model}/rep-{rep}/cost.json",
        model=directory("results/runs/{model}/rep-{rep}/model"),
    params:
        plan=plan_of,
    threads: lambda wc: config["threads"]["train_full" if PLANS[wc.model].training.mode == "full" else "train_head"]
    log:
        "logs/train/{model}/rep-{rep}.log",
    resources:
        gpu=lambda wc: uses_gpu(wc.model, "train"),
        mem_mb=lambda wc: 16000 if PLANS[wc.model].training.mode == "full" else 4000,
        runtime=lambda wc, attempt: (240 if PLANS[wc.model].training.mode == "full" else 30) * attempt,
    script:
        "../scripts/train.py"
