"""ichseq: intracranial-hemorrhage detection from head CT read as a sequence of slices.

The package holds all logic of the Snakemake workflow (data acquisition, brain-window
filtering, cohort and splits, models, training, statistics); rule scripts only call it.
It never imports Snakemake. Its subpackages follow the workflow's stages: ``data``,
``models``, ``training``, ``analysis`` and ``report`` (rendering); ``config``, ``errors`` and
``cli`` sit at the top.
"""

__version__ = "0.1.0"
