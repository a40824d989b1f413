"""Classification metrics shared by every family and by the evaluation gate."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import (
    brier_score,
    calibration_metrics,
    classification_metrics,
    expected_calibration_error,
    regression_metrics,
)


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


def test_brier_score_is_the_mean_squared_error_of_the_probabilities():
    # given four rows: (0.9 - 1)^2 + (0.2 - 0)^2 + (0.6 - 1)^2 + (0.0 - 0)^2 = 0.01 + 0.04 + 0.16 + 0 = 0.21
    y = np.array([1, 0, 1, 0])
    proba = np.array([0.9, 0.2, 0.6, 0.0])
    # when scored / then the Brier score is 0.21 / 4
    assert brier_score(y, proba) == pytest.approx(0.0525)
    assert brier_score(y, y.astype(float)) == 0.0


def test_ece_weighs_each_equal_width_bin_by_its_rows():
    # given six rows in three of ten bins of width 0.1:
    #   bin 0 [0.0, 0.1): p 0.05, 0.05, y 0, 1 -> |0.5 - 0.05| = 0.45, weight 2/6
    #   bin 3 [0.3, 0.4): p 0.35,       y 0    -> |0.0 - 0.35| = 0.35, weight 1/6
    #   bin 9 [0.9, 1.0]: p 0.95, 1.0, 0.9, y 1, 1, 0 -> |2/3 - 0.95| = 0.95 - 2/3, weight 3/6 (1.0 and
    #   the lower edge 0.9 both land here)
    y = np.array([0, 1, 0, 1, 1, 0])
    proba = np.array([0.05, 0.05, 0.35, 0.95, 1.0, 0.9])
    expected = 2 / 6 * 0.45 + 1 / 6 * 0.35 + 3 / 6 * (0.95 - 2 / 3)
    # when scored / then ECE is their row-weighted sum
    assert expected_calibration_error(y, proba) == pytest.approx(expected)
    # and with a single bin it is |mean(y) - mean(p)| = |3/6 - 3.3/6|
    assert expected_calibration_error(y, proba, n_bins=1) == pytest.approx(0.3 / 6)


def test_perfectly_calibrated_bins_give_zero_ece():
    # given bins whose observed positive rate equals the predicted probability: 0.25 with 1 of 4 positive,
    # 0.75 with 3 of 4 positive
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    proba = np.array([0.25] * 4 + [0.75] * 4)
    # when scored / then ECE is zero although the Brier score is not
    assert expected_calibration_error(y, proba) == pytest.approx(0.0)
    assert brier_score(y, proba) == pytest.approx(0.1875)


def test_calibration_metrics_report_before_and_after_on_the_same_rows():
    y = np.array([1, 0, 1, 0])
    metrics = calibration_metrics(y, np.array([0.9, 0.2, 0.6, 0.0]), np.array([1.0, 0.0, 1.0, 0.0]))
    assert metrics == {
        "brier_before": pytest.approx(0.0525),
        "brier_after": 0.0,
        "ece_before": pytest.approx((0.1 + 0.2 + 0.4 + 0.0) / 4),
        "ece_after": 0.0,
        "ece_bins": 10,
        "n": 4,
    }


@pytest.mark.parametrize(
    ("y", "proba", "message"),
    [([0, 1], [0.2], "rows"), ([0, 2], [0.2, 0.4], "only 0 and 1"), ([0, 1], [0.2, 1.5], "probabilities")],
)
def test_brier_and_ece_reject_invalid_inputs(y, proba, message):
    for metric in (brier_score, expected_calibration_error):
        with pytest.raises(ValueError, match=message):
            metric(np.array(y), np.array(proba))


def test_regression_metrics_match_hand_computed_values():
    # given labels and predictions with errors +1, -1, +2, 0
    y = np.array([2.0, 4.0, 0.0, 10.0])
    pred = np.array([3.0, 3.0, 2.0, 10.0])
    # when scored
    metrics = regression_metrics(y, pred)
    # then every metric is the textbook value and the keys are exactly the contract's
    assert set(metrics) == {"rmse", "mae", "wape", "bias", "r2", "n"}
    assert metrics["rmse"] == pytest.approx(np.sqrt((1 + 1 + 4 + 0) / 4))
    assert metrics["mae"] == pytest.approx(1.0)
    assert metrics["wape"] == pytest.approx(4 / 16)
    assert metrics["bias"] == pytest.approx(0.5)
    assert metrics["r2"] == pytest.approx(1 - 6 / np.sum((y - 4.0) ** 2))
    assert metrics["n"] == 4
    assert all(type(value) in (float, int) for value in metrics.values())


def test_regression_bias_is_positive_when_the_model_over_predicts_and_perfect_fits_are_exact():
    # given predictions 1 unit above every label, and perfect predictions of a constant label
    over = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0]))
    constant = regression_metrics(np.zeros(3), np.zeros(3))
    # then the bias is +1, and a perfect fit of all-zero labels scores 0 error and r2 1, not NaN
    assert over["bias"] == pytest.approx(1.0)
    assert over["r2"] == pytest.approx(1 - 3 / 2)
    assert constant == {"rmse": 0.0, "mae": 0.0, "wape": 0.0, "bias": 0.0, "r2": 1.0, "n": 3}


def test_regression_metrics_of_a_constant_mean_prediction_have_zero_r2():
    # given the label mean as every prediction / when scored / then r2 is 0 and the bias 0
    y = np.array([1.0, 5.0, 3.0, 7.0])
    metrics = regression_metrics(y, np.full(4, y.mean()))
    assert metrics["r2"] == pytest.approx(0.0)
    assert metrics["bias"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("y", "pred", "message"),
    [
        ([], [], "empty"),
        ([1.0, 2.0], [1.0], "2 rows but y_pred has 1"),
        ([1.0, np.nan], [1.0, 2.0], "y_true has 1 NaN or infinite"),
        ([1.0, 2.0], [np.inf, -np.inf], "y_pred has 2 NaN or infinite"),
    ],
)
def test_regression_metrics_reject_empty_mismatched_or_non_finite_input(y, pred, message):
    # given no rows, a length mismatch or a non-finite value / when scored / then a ValueError says which
    with pytest.raises(ValueError, match=message):
        regression_metrics(np.array(y), np.array(pred))
