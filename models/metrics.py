"""Metrics reported for every model, computed the same way for all families, per task."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

#: Equal-width bins on [0, 1] for the expected calibration error.
ECE_BINS = 10


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5
) -> dict[str, float | int]:
    """Scores positive-class probabilities against 0/1 labels.

    Args:
        y_true: Labels, shape [N], values 0 and 1; both classes must be present.
        proba: P(y=1), shape [N], values in [0, 1].
        threshold: Rows with ``proba >= threshold`` are predicted positive.

    Returns:
        ``roc_auc``, ``pr_auc`` (average precision), ``log_loss``, ``brier``, and at the threshold
        ``precision``, ``recall``, ``f1`` and ``positive_rate``; plus ``threshold`` and ``n`` rows.

    Raises:
        ValueError: If the shapes differ, a label is not 0/1, a probability is outside [0, 1] or
            NaN, the threshold is outside [0, 1], or ``y_true`` holds a single class.
    """
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(proba, dtype=np.float64).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"y_true has {len(y)} rows but proba has {len(p)}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("proba must be finite probabilities in [0, 1]")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(
            f"y_true holds a single class {classes.tolist()}; ROC AUC, PR AUC and log loss need 0 and 1"
        )
    y = y.astype(np.int64)
    predicted = (p >= threshold).astype(np.int64)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "positive_rate": float(predicted.mean()),
        "threshold": float(threshold),
        "n": len(y),
    }


def brier_score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean squared difference between P(y=1) and the 0/1 label: lower is better, 0 is perfect."""
    y, p = _labels_and_probabilities(y_true, proba)
    return float(np.mean((p - y) ** 2))


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """How far predicted probabilities are from observed positive rates, averaged over the rows.

    The bins are equal-width on [0, 1]: row ``i`` falls in bin ``min(floor(n_bins * p_i), n_bins - 1)``,
    so bin ``k`` holds ``k / n_bins <= p < (k + 1) / n_bins`` and ``p = 1`` joins the last bin. The
    error is ``sum_k (n_k / N) * |mean(y in k) - mean(p in k)|``; empty bins add nothing.

    Args:
        y_true: Labels, shape [N], values 0 and 1.
        proba: P(y=1), shape [N], values in [0, 1].
        n_bins: Number of equal-width bins; 10 in every report.

    Returns:
        The expected calibration error, in [0, 1].

    Raises:
        ValueError: On mismatched shapes, labels other than 0/1, probabilities outside [0, 1], no rows
            or fewer than one bin.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    y, p = _labels_and_probabilities(y_true, proba)
    bins = np.minimum(np.floor(p * n_bins).astype(np.int64), n_bins - 1)
    rows = np.bincount(bins, minlength=n_bins)
    gaps = np.abs(
        np.bincount(bins, weights=y, minlength=n_bins) - np.bincount(bins, weights=p, minlength=n_bins)
    )
    # Per bin, |sum(y) - sum(p)| / N equals (n_k / N) * |mean(y) - mean(p)|.
    return float(gaps[rows > 0].sum() / len(y))


def calibration_metrics(
    y_true: np.ndarray, uncalibrated: np.ndarray, calibrated: np.ndarray, n_bins: int = ECE_BINS
) -> dict[str, float | int]:
    """Brier score and ECE of the same rows before and after calibration, for ``metrics.json``."""
    return {
        "brier_before": brier_score(y_true, uncalibrated),
        "brier_after": brier_score(y_true, calibrated),
        "ece_before": expected_calibration_error(y_true, uncalibrated, n_bins),
        "ece_after": expected_calibration_error(y_true, calibrated, n_bins),
        "ece_bins": n_bins,
        "n": len(np.asarray(y_true).reshape(-1)),
    }


def _labels_and_probabilities(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(proba, dtype=np.float64).reshape(-1)
    if len(y) != len(p) or not len(y):
        raise ValueError(f"y_true has {len(y)} rows and proba {len(p)}; need the same, non-zero count")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("proba must be finite probabilities in [0, 1]")
    return y.astype(np.float64), p


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Scores predictions in label units against the labels.

    Args:
        y_true: Labels, shape [N] (or [N, 1]), finite.
        y_pred: Predictions in label units, shape [N] (or [N, 1]), finite.

    Returns:
        ``rmse``; ``mae``; ``wape``, sum |error| / sum |label| (``inf`` when every label is 0 and some
        error is not, 0 when both are); ``bias``, mean(prediction - label), positive when the model
        over-predicts; ``r2``, 1 - SSE / SST (``-inf`` when the labels are constant and some error is
        not, 1 when both are); and ``n``, the number of rows, an int.

    Raises:
        ValueError: If there are no rows, the shapes differ, or a label or prediction is NaN or infinite.
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"y_true has {len(y)} rows but y_pred has {len(p)}")
    if not len(y):
        raise ValueError("y_true and y_pred are empty; regression metrics need at least one row")
    for name, values in (("y_true", y), ("y_pred", p)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise ValueError(
                f"{name} has {bad} NaN or infinite value(s); regression metrics need finite values"
            )
    error = p - y
    absolute = np.abs(error)
    squared = float(np.sum(error**2))
    total = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(absolute.mean()),
        "wape": _ratio(float(absolute.sum()), float(np.abs(y).sum())),
        "bias": float(error.mean()),
        "r2": 1.0 - _ratio(squared, total),
        "n": len(y),
    }


def _ratio(numerator: float, denominator: float) -> float:
    # x / 0: 0 when nothing is wrong (a perfect fit), else infinitely bad, never a NaN.
    if denominator > 0:
        return numerator / denominator
    return 0.0 if numerator == 0 else float("inf")
