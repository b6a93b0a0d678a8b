# The anatomical synthetic twin, shown and measured: one patient at each difficulty level and
# the Hounsfield units of its tissues and bleeds against the published values.
#
# Only for a synthetic study cohort drawn by the anatomical generator (TWIN_FIGURE); the `all`
# rule asks for it then:  rules.twin_figure.output if TWIN_FIGURE else [],

TWIN_SPEC = {k: v for k, v in DATASET["synthetic"].items() if k != "dir"}
TWIN_FIGURE = SOURCE == "synthetic" and TWIN_SPEC["generator"] == "anatomical"


rule twin_figure:
    # No input: the scans are generated again from the spec (deterministic per seed and
    # patient), so the figure depends on the config alone and a changed spec reruns it (params).
    output:
        levels=report("results/twin/levels.png", caption="../report/twin_levels.rst", category="Data",
                      subcategory="Synthetic twin"),
        html=report("results/twin/tissue_hu.html", caption="../report/twin_tissue_hu.rst", category="Data",
                    subcategory="Synthetic twin"),
        tissue_hu=report("results/twin/tissue_hu.csv", caption="../report/twin_tissue_hu.rst", category="Data",
                         subcategory="Synthetic twin"),
        blood_hu="results/twin/blood_hu.csv",
    params:
        spec=TWIN_SPEC,
    log:
        "logs/data/twin_figure.log",
    threads: 1
    # Not on the way to any model: it waits for a free core rather than slowing the cohorts'
    # jobs and the pretrainings that wait for them.
    priority: -1
    resources:
        mem_mb=3000,
        runtime=30,
    script:
        "../scripts/twin_figure.py"
