"""Classification metrics shared by every family and by the evaluation gate."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import classification_metrics


def test_perfect_ranking_scores_one_and_threshold_metrics_follow_the_threshold():
    # given probabilities that rank every positive above every negative
    y = np.array([0, 0, 0, 1, 1])
    proba = np.array([0.1, 0.2, 0.6, 0.7, 0.9])
    # when scored at threshold 0.5
    metrics = classification_metrics(y, proba, threshold=0.5)
    # then ranking metrics are perfect and the 0.6 negative counts as a false positive
    assert metrics["roc_auc"] == 1.0
    assert metrics["pr_auc"] == 1.0
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == 1.0
    assert metrics["f1"] == pytest.approx(0.8)
    assert metrics["positive_rate"] == pytest.approx(0.6)
    assert metrics["n"] == 5
    assert metrics["brier"] == pytest.approx(np.mean((proba - y) ** 2))
    expected_log_loss = -np.mean(y * np.log(proba) + (1 - y) * np.log(1 - proba))
    assert metrics["log_loss"] == pytest.approx(expected_log_loss)


def test_a_higher_threshold_trades_recall_for_precision():
    # given the same scores / when the threshold rises to 0.8 / then only the 0.9 row is predicted positive
    metrics = classification_metrics(np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.6, 0.7, 0.9]), 0.8)
    assert metrics["precision"] == 1.0
    assert metrics["recall"] == 0.5
    assert metrics["positive_rate"] == pytest.approx(0.2)


def test_no_predicted_positives_gives_zero_precision_not_a_warning():
    # given a threshold above every score / when scored / then precision is 0 rather than undefined
    metrics = classification_metrics(np.array([0, 1, 0, 1]), np.array([0.1, 0.4, 0.2, 0.3]), 0.9)
    assert metrics["precision"] == 0.0
    assert metrics["positive_rate"] == 0.0


def test_metrics_are_plain_json_numbers():
    # given random scores / when scored / then every value is a Python float or int
    rng = np.random.default_rng(0)
    metrics = classification_metrics(rng.integers(0, 2, 100), rng.random(100), 0.5)
    assert all(type(value) in (float, int) for value in metrics.values())


@pytest.mark.parametrize(
    ("y", "proba", "threshold", "message"),
    [
        ([1, 1, 1], [0.2, 0.5, 0.9], 0.5, "single class"),
        ([0, 0], [0.2, 0.5], 0.5, "single class"),
        ([0, 1], [0.2], 0.5, "rows"),
        ([0, 2], [0.2, 0.4], 0.5, "only 0 and 1"),
        ([0, 1], [0.2, np.nan], 0.5, "probabilities"),
        ([0, 1], [0.2, 1.2], 0.5, "probabilities"),
        ([0, 1], [0.2, 0.4], 1.5, "threshold"),
    ],
)
def test_invalid_inputs_raise_clear_value_errors(y, proba, threshold, message):
    # given invalid labels, probabilities or threshold / when scored / then a ValueError says what is wrong
    with pytest.raises(ValueError, match=message):
        classification_metrics(np.array(y), np.array(proba), threshold)
