# Statistics stage: every run's results -> long tables -> tests, tables, figures, summary.

# The report category of the comparison. Not "Statistics": the report has its own panel of
# that name (run times), and the clash makes docutils warn once per caption.
COMPARISON = "Model comparison"


localrules:
    collect_runs,
    statistics,
    figures,
    calibration,
    comparison,


rule collect_runs:
    input:
        metrics=run_files("metrics.json"),
        predictions=run_files("predictions.csv"),
        history=run_files("history.csv"),
        cost=run_files("cost.json"),
    output:
        runs=report("results/metrics/runs.csv", caption="../report/runs.rst", category=COMPARISON,
                     subcategory="Per-run metrics"),
        predictions="results/metrics/predictions.csv",
        history="results/metrics/history.csv",
        cost=report("results/metrics/cost.csv", caption="../report/cost_table.rst", category="Cost"),
        # The report shows HTML inline but CSV only as a download: the same tables as pages.
        runs_html=report("results/metrics/runs.html", caption="../report/runs_page.rst", category=COMPARISON,
                         subcategory="Per-run metrics"),
        cost_html=report("results/metrics/cost.html", caption="../report/cost_page.rst", category="Cost"),
    log:
        "logs/stats/collect_runs.log",
    script:
        "../scripts/collect_runs.py"


rule statistics:
    input:
        "results/metrics/runs.csv",
    output:
        tests=report("results/stats/tests.csv", caption="../report/tests.rst", category=COMPARISON,
                     subcategory="Tests"),
        summary=report("results/stats/summary.csv", caption="../report/summary_table.rst", category=COMPARISON,
                       subcategory="Summary"),
        confusion="results/stats/confusion.csv",
        tables_md="results/stats/tables.md",
        tables_tex="results/stats/tables.tex",
        tables_html=report("results/stats/tables.html", caption="../report/tables_page.rst", category=COMPARISON,
                           subcategory="Tests"),
        findings_html=report("results/stats/findings.html", caption="../report/findings.rst", category=COMPARISON,
                             subcategory="Summary"),
        summary_md="results/summary.md",
    params:
        **config["statistics"],
        caveats=protocol_caveats(),
    log:
        "logs/stats/statistics.log",
    script:
        "../scripts/statistics.py"


FIGURES = {
    "metrics_boxplot": (COMPARISON, "Figures"),
    "paired_runs": (COMPARISON, "Figures"),
    "confusion_matrices": (COMPARISON, "Figures"),
    "roc_curves": (COMPARISON, "Figures"),
    "training_curves": ("Training", None),
    "cost": ("Cost", None),
}


rule figures:
    input:
        runs="results/metrics/runs.csv",
        predictions="results/metrics/predictions.csv",
        history="results/metrics/history.csv",
        cost="results/metrics/cost.csv",
    output:
        **{
            name: report(f"results/figures/{name}.png", caption=f"../report/{name}.rst", category=category,
                         subcategory=sub)
            for name, (category, sub) in FIGURES.items()
        },
        **{f"{name}_svg": f"results/figures/{name}.svg" for name in FIGURES},
    log:
        "logs/stats/figures.log",
    script:
        "../scripts/figures.py"


# Each run's calibration on the test patients: ECE and Brier score before and after the map
# the run fitted on its validation patients, per run (calibration_runs.csv, a download) and per
# model (calibration.csv, and both on the page), and the reliability diagram.
rule calibration:
    input:
        predictions="results/metrics/predictions.csv",
    output:
        models=report("results/stats/calibration.csv", caption="../report/calibration_table.rst", category=COMPARISON,
                      subcategory="Calibration"),
        runs="results/stats/calibration_runs.csv",
        html=report("results/stats/calibration.html", caption="../report/calibration_page.rst", category=COMPARISON,
                    subcategory="Calibration"),
        reliability=report("results/figures/reliability.png", caption="../report/reliability.rst", category=COMPARISON,
                           subcategory="Calibration"),
        reliability_svg="results/figures/reliability.svg",
    log:
        "logs/stats/calibration.log",
    script:
        "../scripts/calibration.py"


# The many-model comparison. The leaderboard is written for any number of models; the
# Friedman test, mean ranks, post-hoc table and critical-difference diagram are declared (and
# written) only with 3 or more models -- the model list is known when the workflow is parsed,
# so the declared outputs are exactly the files the rule writes, and a 2-model run has none
# of them (its comparison is the pairwise tests of rule statistics).
from ichseq.analysis.outputs import COMPARISON_NAMES, comparison_outputs

COMPARISON_OUTPUTS = comparison_outputs(len(MODELS))
COMPARISON_CAPTIONS = {
    "leaderboard": "leaderboard_table",
    "leaderboard_html": "leaderboard_page",
    "leaderboard_png": "leaderboard",
    "friedman": "friedman_table",
    "friedman_html": "friedman_page",
    "critical_difference_png": "critical_difference",
}


rule comparison:
    input:
        runs="results/metrics/runs.csv",
        cost="results/metrics/cost.csv",
    output:
        **{
            key: report(f"results/stats/{COMPARISON_NAMES[key]}", caption=f"../report/{COMPARISON_CAPTIONS[key]}.rst",
                        category=COMPARISON, subcategory="Many models")
            if key in COMPARISON_CAPTIONS else f"results/stats/{COMPARISON_NAMES[key]}"
            for key in COMPARISON_OUTPUTS
        },
    params:
        **config["statistics"],
        pretrained={name: PLANS[name].weights_source for name in MODELS},
    log:
        "logs/stats/comparison.log",
    script:
        "../scripts/comparison.py"
