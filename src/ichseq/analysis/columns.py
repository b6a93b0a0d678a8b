"""Names of the runs table's columns and metrics, shared by the statistics and their tables."""

#: Columns the runs table must have.
RUN_COLUMNS = ("model", "replicate", "metric", "value")
#: Metrics that are counts: averaged into confusion matrices, never tested.
COUNT_METRICS = ("tn", "fp", "fn", "tp", "n_test")
#: The counts a mean confusion matrix is made of.
CONFUSION_COUNTS = ("tn", "fp", "fn", "tp")
#: Rate metrics in report order (others follow in order of first appearance).
RATE_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "balanced_accuracy", "roc_auc")
