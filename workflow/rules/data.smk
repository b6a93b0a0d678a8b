# Data stage: acquisition -> brain-window cache -> cohort -> per-replicate splits.


# Seconds-long bookkeeping runs in the main Snakemake process, not as cluster jobs; the
# download too, because compute nodes often have no internet.
localrules:
    acquire_physionet,
    cohort,
    split,


rule acquire_synthetic:
    output:
        directory(DATASET["synthetic"]["dir"]),
    params:
        spec={k: v for k, v in DATASET["synthetic"].items() if k != "dir"},
    log:
        "logs/data/acquire_synthetic.log",
    threads: config["threads"]["synthetic"]
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/acquire_synthetic.py"


rule acquire_physionet:
    output:
        # A marker file, not the folder: on failure Snakemake deletes only the marker and
        # the partial downloads (*.part) stay for the resumed run.
        os.path.join(DATASET["physionet"]["dir"], MARKER_FILE),
    params:
        url=DATASET["physionet"]["url"],
    log:
        "logs/data/acquire_physionet.log",
    resources:
        mem_mb=1000,
        runtime=240,
    script:
        "../scripts/acquire_physionet.py"


# The cache's settings, shared by the one-job rule and the sharded index rule (a change reruns them).
BRAIN_WINDOW_PARAMS = dict(
    root=dataset_root(raw_dataset()),
    # Content, not time stamps: a scan replaced inside the folder reruns this rule.
    dataset=dataset_content(DATASET, "results/data/cache"),
    level=config["preprocess"]["window"]["level"],
    width=config["preprocess"]["window"]["width"],
    image_size=config["preprocess"]["image_size"],
    # Thin slices averaged into slabs of this many mm (null: slice for slice).
    slab_mm=config["preprocess"]["slab_mm"],
    prewindowed=DATASET["prewindowed"],
    source=SOURCE,
    # dataset.cq500 (reads, label_rule, slab_mm, series) when the source is cq500, else None.
    cq500=cq500_options(),
    # dataset.rsna (labels, min_slices) when the source is rsna, else None.
    rsna=rsna_options(),
)


if SHARDS == 1:

    rule brain_window:
        input:
            raw_dataset(),
        output:
            directory("results/data/cache"),
        params:
            **BRAIN_WINDOW_PARAMS,
        threads: config["threads"]["brain_window"]
        log:
            "logs/data/brain_window.log",
        resources:
            mem_mb=8000,
            runtime=60,
        script:
            "../scripts/brain_window.py"

else:
    # preprocess.shards > 1: index once, one job per shard (fanned out on Slurm), join.

    localrules:
        brain_window,

    rule cache_index:
        input:
            raw_dataset(),
        output:
            directory("results/data/index"),
        params:
            **BRAIN_WINDOW_PARAMS,
            shards=SHARDS,
        threads: config["threads"]["brain_window"]
        log:
            "logs/data/cache_index.log",
        resources:
            # RSNA 2019's header index: ~750,000 rows.
            mem_mb=8000,
            runtime=120,
        script:
            "../scripts/cache_index.py"

    rule brain_window_shard:
        input:
            index="results/data/index",
            dataset=raw_dataset(),
        output:
            directory("results/data/shards/shard-{shard}"),
        threads: config["threads"]["brain_window"]
        log:
            "logs/data/brain_window/shard-{shard}.log",
        wildcard_constraints:
            shard=r"\d+",
        resources:
            # One scan per worker in memory, whatever the shard's size (measured: docs/benchmarks.md).
            mem_mb=2000,
            runtime=60,
        script:
            "../scripts/brain_window_shard.py"

    rule brain_window:
        input:
            index="results/data/index",
            shards=SHARD_DIRS,
        output:
            directory("results/data/cache"),
        log:
            "logs/data/brain_window.log",
        script:
            "../scripts/join_shards.py"


rule cohort:
    input:
        "results/data/cache",
    output:
        report(
            "results/data/cohort.csv",
            caption="../report/cohort.rst",
            category="Data",
        ),
    log:
        "logs/data/cohort.log",
    script:
        "../scripts/cohort.py"


rule split:
    input:
        "results/data/cohort.csv",
    output:
        "results/splits/rep-{rep}.json",
    params:
        seed=config["splits"]["seed"],
        test_fraction=config["splits"]["test_fraction"],
        val_fraction=config["splits"]["val_fraction"],
        stratify=config["splits"]["stratify"],
    log:
        "logs/splits/rep-{rep}.log",
    wildcard_constraints:
        rep=r"\d+",
    script:
        "../scripts/split.py"
