"""Analysis stage: the runs fan-in, the statistical comparison of models and the figures."""
