"""Training stage: a model's samples, its frozen-backbone feature store, the training loop,
one run per (model, replicate), patient-level metrics and slice votes."""
