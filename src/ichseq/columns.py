"""Names of the columns of every table a run writes and the fan-in collects, and of the metrics:
defined here once, used by the training (which writes them), collect, the statistics and the
figures (which read them)."""

#: What identifies a run in every collected table (put in front of each run's own columns).
RUN_KEYS = ("model", "replicate")
#: Columns the runs table must have.
RUN_COLUMNS = (*RUN_KEYS, "metric", "value")
#: Metrics that are counts: averaged into confusion matrices, never tested.
COUNT_METRICS = ("tn", "fp", "fn", "tp", "n_test")
#: The counts a mean confusion matrix is made of.
CONFUSION_COUNTS = ("tn", "fp", "fn", "tp")
#: Rate metrics in report order (others follow in order of first appearance).
RATE_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "balanced_accuracy", "roc_auc")

#: A run's predictions.csv: one row per test patient.
PREDICTION_COLUMNS = ("patient", "label", "probability", "prediction")
#: The column beside them since runs calibrate: the model's own patient probability (``probability``
#: is the calibrated one). Optional when reading: runs trained before have none.
UNCALIBRATED = "probability_uncalibrated"
#: A run's history.csv: one row per epoch (``best`` = 1 on the kept epoch).
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_roc_auc", "val_balanced_accuracy", "lr", "seconds", "best")
#: Added to the history (after the val columns) under ``checkpoint_selection: test``.
TEST_HISTORY_COLUMNS = ("test_loss", "test_roc_auc", "test_balanced_accuracy")
#: A run's cost.json keys, in order (``checkpoint_selection`` follows when it is ``test``).
COST_COLUMNS = (*RUN_KEYS, "mode", "class_imbalance", "parameters_total", "parameters_trainable", "feature_seconds", "training_seconds",
                "samples_per_second", "epochs_run", "best_epoch", "resumed_from_epoch", "device")
#: The numeric ones among them.
COST_NUMBERS = tuple(c for c in COST_COLUMNS if c not in (*RUN_KEYS, "mode", "class_imbalance", "device"))
