"""Platt scaling: a logistic regression on a model's log-odds, fitted on the validation split.

Two float32 coefficients map the uncalibrated log-odds ``m`` to ``sigmoid(slope * m + intercept)``: an
ONNX graph applies them with Mul, Add and Sigmoid, so the exported model and ``predict_proba`` agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_MAX_ITERATIONS = 100
_GRADIENT_TOLERANCE = 1e-10
# A tiny ridge keeps the Newton step defined when every margin is equal (e.g. a single-leaf booster).
_RIDGE = 1e-12


@dataclass(frozen=True)
class PlattCalibrator:
    """``P(y=1) = sigmoid(slope * margin + intercept)``; the default is the identity.

    Attributes:
        slope: Multiplies the uncalibrated log-odds; float32-representable.
        intercept: Added after the slope; float32-representable.
    """

    slope: float = 1.0
    intercept: float = 0.0

    def probabilities(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated P(y=1), float64 of shape [N], from uncalibrated log-odds of shape [N]."""
        return sigmoid(self.slope * np.asarray(margin, dtype=np.float64) + self.intercept)

    def as_dict(self) -> dict[str, Any]:
        return {"method": "platt", "slope": self.slope, "intercept": self.intercept}


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` in float64 without overflow for large ``|z|``."""
    return np.asarray(np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=np.float64))))


def fit_platt(margin: np.ndarray, y: np.ndarray) -> PlattCalibrator:
    """Fits Platt scaling by Newton's method with a backtracking line search.

    Targets are Platt's smoothed labels, ``(P + 1) / (P + 2)`` for positives and ``1 / (N + 2)`` for
    negatives, so a validation split that the model separates perfectly still gives finite
    coefficients instead of an infinitely steep sigmoid.

    Args:
        margin: Uncalibrated log-odds of the positive class, shape [N].
        y: 0/1 labels, shape [N].

    Returns:
        The fitted coefficients, rounded to float32 so native and ONNX predictions use the same ones.

    Raises:
        ValueError: If the shapes differ, there are no rows, a label is not 0/1 or a margin is not finite.
    """
    m = np.asarray(margin, dtype=np.float64).reshape(-1)
    labels = np.asarray(y).reshape(-1)
    if len(m) != len(labels) or not len(m):
        raise ValueError(f"margin has {len(m)} rows and y {len(labels)}; need the same, non-zero count")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("y must hold only 0 and 1")
    if not np.isfinite(m).all():
        raise ValueError("margin must be finite")
    positives = int(labels.sum())
    negatives = len(labels) - positives
    target = np.where(labels == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    features = np.column_stack([m, np.ones_like(m)])

    def loss(w: np.ndarray) -> float:
        z = features @ w
        return float(np.sum(np.logaddexp(0.0, z) - target * z))

    w = np.array([0.0, np.log((positives + 1) / (negatives + 1))])
    current = loss(w)
    for _ in range(_MAX_ITERATIONS):
        p = sigmoid(features @ w)
        gradient = features.T @ (p - target)
        if np.max(np.abs(gradient)) < _GRADIENT_TOLERANCE * len(m):
            break
        hessian = features.T @ (features * (p * (1 - p))[:, None]) + _RIDGE * np.eye(2)
        step = np.linalg.solve(hessian, -gradient)
        size = 1.0
        while size > 1e-10:
            candidate = w + size * step
            value = loss(candidate)
            if value < current + 1e-4 * size * float(gradient @ step):
                w, current = candidate, value
                break
            size /= 2
        else:
            break  # no step decreases the loss: w is optimal to float precision
    return PlattCalibrator(slope=float(np.float32(w[0])), intercept=float(np.float32(w[1])))
