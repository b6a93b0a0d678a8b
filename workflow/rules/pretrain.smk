# Pretrain stage: a pretraining cohort of its own -> its brain-window cache -> one job per model
# with `pretrained: pretrain`, whose saved folder the features and train jobs then load.

PRETRAIN = config["pretrain"]
PRETRAIN_DATASET = PRETRAIN["dataset"]


rule acquire_pretrain_synthetic:
    output:
        directory(PRETRAIN_DATASET["synthetic"]["dir"]),
    params:
        spec={k: v for k, v in PRETRAIN_DATASET["synthetic"].items() if k != "dir"},
    log:
        "logs/pretrain/acquire_synthetic.log",
    threads: config["threads"]["synthetic"]
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/acquire_synthetic.py"


rule pretrain_window:
    # The same windowing and size as the study cohort's cache, so a pretrained backbone sees
    # what the study's features job will give it.
    input:
        raw_dataset(PRETRAIN_DATASET),
    output:
        directory("results/pretrain/data/cache"),
    params:
        root=dataset_root(raw_dataset(PRETRAIN_DATASET)),
        dataset=dataset_content(PRETRAIN_DATASET, "results/pretrain/data/cache"),
        level=config["preprocess"]["window"]["level"],
        width=config["preprocess"]["window"]["width"],
        image_size=config["preprocess"]["image_size"],
        slab_mm=config["preprocess"]["slab_mm"],
        prewindowed=PRETRAIN_DATASET["prewindowed"],
        source=PRETRAIN_DATASET["source"],
    threads: config["threads"]["brain_window"]
    log:
        "logs/pretrain/brain_window.log",
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/brain_window.py"


rule pretrain:
    input:
        cache="results/pretrain/data/cache",
        # Only to refuse a pretraining cohort that shares a scan with it.
        study_cache="results/data/cache",
    output:
        model=directory("results/pretrained/{model}"),
        history=report("results/pretrain/{model}/history.csv", caption="../report/pretrain_history.rst",
                       category="Training", subcategory="Pretraining"),
        metrics="results/pretrain/{model}/metrics.json",
    params:
        plan=plan_of,
        settings=lambda wc: pretrain_settings(config, wc.model).as_dict(),
        holdout_fraction=PRETRAIN["holdout_fraction"],
        seed=PRETRAIN["seed"],
    threads: config["threads"]["pretrain"]
    log:
        "logs/pretrain/{model}.log",
    resources:
        gpu=lambda wc: 0 if pretrain_settings(config, wc.model).device == "cpu" else 1,
        mem_mb=16000,
        # Minutes; a job killed at its time limit resumes from its last epoch when retried.
        runtime=lambda wc, attempt: 240 * attempt,
    script:
        "../scripts/pretrain.py"


localrules:
    pretrain_summary,


rule pretrain_summary:
    input:
        metrics=expand("results/pretrain/{model}/metrics.json", model=PRETRAINED),
        history=expand("results/pretrain/{model}/history.csv", model=PRETRAINED),
    output:
        table="results/pretrain/summary.csv",
        page=report("results/pretrain/summary.html", caption="../report/pretrain_summary.rst", category="Data",
                    subcategory="Pretraining cohort"),
        curves=report("results/figures/pretraining_curves.png", caption="../report/pretraining_curves.rst",
                      category="Training", subcategory="Pretraining"),
        curves_svg="results/figures/pretraining_curves.svg",
    log:
        "logs/pretrain/summary.log",
    script:
        "../scripts/pretrain_summary.py"
