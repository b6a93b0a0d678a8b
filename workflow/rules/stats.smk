# Statistics stage: every run's results -> long tables -> tests, tables, figures, summary.

# The report category of the comparison. Not "Statistics": the report has its own panel of
# that name (run times), and the clash makes docutils warn once per caption.
COMPARISON = "Model comparison"


localrules:
    collect_runs,
    statistics,
    figures,


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
