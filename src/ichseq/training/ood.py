"""Out-of-distribution reference of a trained run: is a new scan like what the model learnt from?

A model answers every input, and a model trained on one kind of scan (the synthetic twin, one
hospital's scanner) answers others with the same confidence. The guard follows the standard
feature-space approach (Lee et al., NeurIPS 2018, "A simple unified framework for detecting
out-of-distribution samples"): the representation the classifier reads (the backbone's feature
of each sample: a slice, a clip, a context window) is modelled on the training samples by a
Gaussian with a Ledoit-Wolf shrunk covariance; a sample's Mahalanobis distance to it measures how
unlike the training data it is. A scan's score is the median distance of its samples (a bleed on
a few slices does not move it; a scan unlike training on most slices does). The threshold is
set on development scans scored as new ones (the val scans, and each train scan under the
Gaussian fitted without its cross-validation fold): 1.1x their 99th percentile, so that scans
like the training ones come out in distribution (the false-alarm rate on fresh scans is
measured, README); the score is reported as a ratio to it (1.0 = the threshold). A scan far
*closer* to the mean than the development scans (below 1/1.1 of their 1st percentile) is
atypical too (:func:`bounds`).

Saved beside the model as ``ood_reference.npz`` (mean, precision matrix, threshold, the
development scores), read by ``ichseq predict``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OOD_FILE = "ood_reference.npz"
MARGIN = 1.10  # over the largest development score: a new scan like them is not flagged
TRAIN_QUANTILE = 0.99
MAX_FIT_SAMPLES = 20000  # enough for a covariance of a few hundred dimensions


def _fit(features: np.ndarray, rows: np.ndarray, seed: int) -> dict:
    from sklearn.covariance import LedoitWolf

    if len(rows) > MAX_FIT_SAMPLES:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_FIT_SAMPLES, replace=False))
    estimator = LedoitWolf().fit(features[rows])
    return {"mean": estimator.location_.astype(np.float64), "precision": estimator.precision_.astype(np.float64),
            "shrinkage": np.float64(estimator.shrinkage_)}


def fit_reference(features: np.ndarray, patients: np.ndarray, train, val, seed: int = 0) -> dict:
    """The reference from ``features`` (N, D) of development samples whose patient is
    ``patients`` (N,): a Gaussian fitted on the ``train`` patients' samples. Its threshold comes
    from scores that are not in-sample (a Gaussian scores the samples it was fitted on as closer
    than new ones, the more so the fewer they are): the ``val`` scans' scores, and each train
    scan's score under the Gaussian fitted without its cross-validation fold (up to 10 folds by
    patient): ``MARGIN`` x their 99th percentile."""
    features = np.asarray(features, np.float64)
    patients = np.asarray(patients)
    train = [p for p in train if np.any(patients == p)]
    fit_rows = np.flatnonzero(np.isin(patients, train))
    if len(train) < 3 or len(fit_rows) < 2:
        raise ValueError("the OOD reference needs samples of at least three training patients")
    reference = _fit(features, fit_rows, seed)
    folds = np.array_split(np.random.default_rng(seed).permutation(train), min(10, len(train)))
    held_out = []
    for fold in folds:
        rows = np.flatnonzero(np.isin(patients, train) & ~np.isin(patients, fold))
        held_out.extend(scan_scores(_fit(features, rows, seed), features, patients, fold))
    val_scores = scan_scores(reference, features, patients, val)
    development = np.concatenate([np.asarray(held_out, float), val_scores])
    reference.update(threshold=np.float64(MARGIN * np.quantile(development, TRAIN_QUANTILE)),
                     train_scores=np.asarray(held_out, float), val_scores=val_scores,
                     dim=np.int64(features.shape[1]))
    return reference


def bounds(reference: dict) -> tuple[float, float]:
    """(lower, upper) scan scores of the in-distribution range. Upper: the saved threshold.
    Lower: the 1st percentile of the development scores, / MARGIN. In many dimensions typical
    samples lie on a shell around the mean, not at it (Nalisnick et al., ICLR 2019, on
    typicality): a scan whose features sit far closer to the mean than any training scan's (a
    bland image, little structure) is as atypical as one far out."""
    development = np.concatenate([np.asarray(reference.get("train_scores", []), float),
                                  np.asarray(reference.get("val_scores", []), float)])
    lower = float(np.quantile(development, 1 - TRAIN_QUANTILE)) / MARGIN if len(development) else 0.0
    return lower, float(reference["threshold"])


def distances(reference: dict, features: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of each row of ``features`` to the reference."""
    centred = np.asarray(features, np.float64) - reference["mean"]
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, reference["precision"], centred), 0.0))


def scan_score(reference: dict, features: np.ndarray) -> float:
    """A scan's score: the median distance of its samples."""
    return float(np.median(distances(reference, features)))


def scan_scores(reference: dict, features: np.ndarray, patients: np.ndarray, chosen) -> np.ndarray:
    d = distances(reference, features)
    return np.array([float(np.median(d[patients == p])) for p in chosen if np.any(patients == p)])


def save_reference(folder: Path, reference: dict) -> None:
    np.savez(Path(folder) / OOD_FILE, **reference)


def load_reference(folder: Path) -> dict | None:
    path = Path(folder) / OOD_FILE
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
