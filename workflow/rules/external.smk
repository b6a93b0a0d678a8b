# External validation (optional, external.dataset): a second cohort, cached with the study's
# preprocessing -> every replicate of each model scores each of its patients -> metrics with
# bootstrap CIs over its patients beside the study's test metrics. In `rule all` only when
# external.dataset is set (EXTERNAL_TARGETS).

EXTERNAL_TARGETS = []

if EXTERNAL_DATASET:

    if external_acquires("synthetic"):

        rule acquire_external_synthetic:
            output:
                directory(EXTERNAL_DATASET["synthetic"]["dir"]),
            params:
                spec={k: v for k, v in EXTERNAL_DATASET["synthetic"].items() if k != "dir"},
            log:
                "logs/external/acquire_synthetic.log",
            threads: config["threads"]["synthetic"]
            resources:
                mem_mb=2000,
                runtime=30,
            script:
                "../scripts/acquire_synthetic.py"

    if external_acquires("physionet"):

        localrules:
            acquire_external_physionet,

        rule acquire_external_physionet:
            output:
                raw_dataset(EXTERNAL_DATASET),
            params:
                url=EXTERNAL_DATASET["physionet"]["url"],
            log:
                "logs/external/acquire_physionet.log",
            resources:
                mem_mb=1000,
                runtime=240,
            script:
                "../scripts/acquire_physionet.py"

    rule external_window:
        # The study cohort's window, slice size and slab thickness: the runs see what they trained on.
        input:
            raw_dataset(EXTERNAL_DATASET),
        output:
            directory("results/external/data/cache"),
        params:
            root=dataset_root(raw_dataset(EXTERNAL_DATASET)),
            dataset=dataset_content(EXTERNAL_DATASET, "results/external/data/cache"),
            level=config["preprocess"]["window"]["level"],
            width=config["preprocess"]["window"]["width"],
            image_size=config["preprocess"]["image_size"],
            slab_mm=config["preprocess"]["slab_mm"],
            prewindowed=EXTERNAL_DATASET["prewindowed"],
            source=EXTERNAL_DATASET["source"],
            cq500=cq500_options(EXTERNAL_DATASET),
            rsna=rsna_options(EXTERNAL_DATASET),
        threads: config["threads"]["brain_window"]
        log:
            "logs/external/brain_window.log",
        resources:
            mem_mb=8000,
            runtime=60,
        script:
            "../scripts/brain_window.py"

    rule external_scores:
        input:
            unpack(external_scores_inputs),
        output:
            scores="results/external/{model}/scores.csv",
        threads: config["threads"]["predict"]
        log:
            "logs/external/{model}.log",
        resources:
            # Like the features job: every replicate's model runs over the cohort's slices.
            gpu=lambda wc: uses_gpu(wc.model, "features"),
            mem_mb=16000,
            runtime=lambda wc, attempt: 120 * attempt,
        script:
            "../scripts/external_scores.py"

    rule external_metrics:
        input:
            scores=expand("results/external/{model}/scores.csv", model=MODELS),
            runs="results/metrics/runs.csv",
        output:
            metrics="results/external/metrics.csv",
            replicates="results/external/replicates.csv",
            page=report("results/external/metrics.html", caption="../report/external_metrics.rst",
                        category="External validation"),
            table=report("results/external/internal_vs_external.csv",
                         caption="../report/external_internal_vs_external.rst", category="External validation"),
            table_md="results/external/internal_vs_external.md",
            roc_png=report("results/figures/external_roc.png", caption="../report/external_roc.rst",
                           category="External validation"),
            roc_svg="results/figures/external_roc.svg",
        params:
            models=MODELS,
            name=EXTERNAL_NAME,
            n_resamples=config["statistics"]["bootstrap_resamples"],
            seed=config["statistics"]["seed"],
        log:
            "logs/external/metrics.log",
        resources:
            mem_mb=4000,
            runtime=30,
        script:
            "../scripts/external_metrics.py"

    EXTERNAL_TARGETS = rules.external_metrics.output
