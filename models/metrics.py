"""Binary-classification metrics reported for every model, computed the same way for all families."""

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
