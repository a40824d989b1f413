"""Platt calibration: fitted on valid, returned by predict_proba and applied inside both ONNX graphs."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models.calibration import PlattCalibrator, fit_platt, sigmoid
from models.dataset import Dataset
from models.families import FAMILIES
from models.metrics import brier_score, expected_calibration_error
from models.onnx_parity import check_parity, onnx_probabilities

N_FEATURES = 4
# Positives weighted 20x on ~10% positives: the uncalibrated probabilities are far too high.
MISCALIBRATED: dict[str, dict[str, Any]] = {
    "lightgbm": {"n_estimators": 60, "num_leaves": 7, "scale_pos_weight": 20.0, "early_stopping_rounds": 20},
    "pytorch_mlp": {"hidden": [8], "epochs": 4, "batch_size": 64, "learning_rate": 0.01, "pos_weight": 20.0},
}


def make_data(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    y = (rng.random(n) < sigmoid(2.0 * X[:, 0] + X[:, 1] - 3.0)).astype(np.int8)
    X[rng.random(X.shape) < 0.05] = np.nan
    return Dataset(X, y)


@pytest.fixture(scope="module")
def splits() -> tuple[Dataset, Dataset, Dataset]:
    return make_data(800, 1), make_data(600, 2), make_data(800, 3)


@pytest.fixture(scope="module")
def fitted(splits):
    train, valid, _ = splits
    return {name: FAMILIES[name].fit(train, valid, params, 0) for name, params in MISCALIBRATED.items()}


def test_fit_platt_recovers_known_coefficients_as_float32():
    # Given log-odds whose true calibration is sigmoid(0.5 * m - 1)
    rng = np.random.default_rng(0)
    margin = rng.normal(scale=2.0, size=20_000)
    y = (rng.random(margin.size) < sigmoid(0.5 * margin - 1.0)).astype(np.int8)

    # When Platt scaling is fitted
    calibrator = fit_platt(margin, y)

    # Then it finds the coefficients, exactly representable in float32, and lowers the Brier score
    assert calibrator.slope == pytest.approx(0.5, abs=0.03)
    assert calibrator.intercept == pytest.approx(-1.0, abs=0.05)
    assert calibrator.slope == float(np.float32(calibrator.slope))
    assert calibrator.intercept == float(np.float32(calibrator.intercept))
    assert brier_score(y, calibrator.probabilities(margin)) < brier_score(y, sigmoid(margin))


def test_fit_platt_stays_finite_on_separable_or_constant_margins():
    # Given a validation split the model separates perfectly, and one where every margin is equal
    separable = fit_platt(np.array([-2.0, -1.0, 1.0, 2.0]), np.array([0, 0, 1, 1]))
    constant = fit_platt(np.zeros(4), np.array([0, 1, 1, 1]))

    # Then Platt's smoothed targets (3/4 and 1/4 with two rows of each class) keep the slope finite and
    # the probabilities short of 0 and 1, symmetric around 0.5
    assert np.isfinite([separable.slope, separable.intercept]).all()
    proba = separable.probabilities(np.array([-2.0, 2.0]))
    assert 0.1 < proba[0] < 0.3 < 0.7 < proba[1] < 0.9
    assert proba[0] == pytest.approx(1 - proba[1], abs=1e-6)
    # and a constant margin leaves only the intercept: log-odds of the mean target (3 * 4/5 + 1/3) / 4
    assert constant.slope == 0.0
    mean_target = (3 * 4 / 5 + 1 / 3) / 4
    assert constant.intercept == pytest.approx(np.log(mean_target / (1 - mean_target)), abs=1e-6)


def test_fit_platt_rejects_bad_input():
    with pytest.raises(ValueError, match="rows"):
        fit_platt(np.array([0.1, 0.2]), np.array([1]))
    with pytest.raises(ValueError, match="0 and 1"):
        fit_platt(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="finite"):
        fit_platt(np.array([0.1, np.nan]), np.array([0, 1]))


@pytest.mark.parametrize("name", ["lightgbm", "pytorch_mlp"])
def test_calibration_lowers_brier_and_ece_of_a_miscalibrated_model(name, splits, fitted):
    # Given a model whose positives were over-weighted 20x
    _, _, test = splits
    family, model = FAMILIES[name], fitted[name]

    # When its test probabilities are compared before and after calibration
    before = sigmoid(family.predict_margin(model, test.X))
    after = family.predict_proba(model, test.X)

    # Then calibration pulls them towards the observed rate without changing the ranking
    assert before.mean() > 2 * test.y.mean()
    assert brier_score(test.y, after) <= brier_score(test.y, before)
    assert expected_calibration_error(test.y, after) < expected_calibration_error(test.y, before)
    assert model.calibrator.slope > 0
    assert np.array_equal(np.argsort(before, kind="stable"), np.argsort(after, kind="stable"))


@pytest.mark.parametrize("name", ["lightgbm", "pytorch_mlp"])
def test_onnx_outputs_the_calibrated_probabilities(name, splits, fitted, tmp_path):
    # Given a calibrated model exported to ONNX
    _, _, test = splits
    family, model = FAMILIES[name], fitted[name]
    path = tmp_path / "model.onnx"
    family.export_onnx(model, N_FEATURES, path)
    X = np.vstack([test.X, np.full((1, N_FEATURES), np.nan, dtype=np.float32)])

    # When ONNX Runtime scores the rows, an all-missing one included
    calibrated = family.predict_proba(model, X)
    result = check_parity(path, calibrated, X, tolerance=1e-5)

    # Then it returns predict_proba's calibrated probabilities, not the uncalibrated ones
    assert result.passed, result
    assert not check_parity(path, sigmoid(family.predict_margin(model, X)), X, tolerance=1e-3).passed
    (probabilities,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {"input": X}
    )
    assert probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_lightgbm_graph_calibrates_the_raw_score_and_labels_by_the_calibrated_probability(
    splits, fitted, tmp_path
):
    # Given a booster whose calibrator moves near-certain scores to the middle, where a logit taken
    # back from a float32 probability of ~1 would be far off
    _, _, test = splits
    model = fitted["lightgbm"]
    margin = FAMILIES["lightgbm"].predict_margin(model, test.X)
    shifted = dataclasses.replace(
        model, calibrator=PlattCalibrator(slope=1.0, intercept=float(np.float32(-margin.max())))
    )
    path = tmp_path / "model.onnx"
    FAMILIES["lightgbm"].export_onnx(shifted, N_FEATURES, path)

    # When ONNX Runtime scores the rows
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": test.X})

    # Then the graph sums the trees as a regressor, matches natively to 1e-5, and labels follow it
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops[0] == "TreeEnsembleRegressor" and "TreeEnsembleClassifier" not in ops
    assert check_parity(path, FAMILIES["lightgbm"].predict_proba(shifted, test.X), test.X).passed
    assert np.array_equal(label, (probabilities[:, 1] > 0.5).astype(np.int64))
    assert np.allclose(onnx_probabilities(path, test.X[:1]), probabilities[:1, 1])
