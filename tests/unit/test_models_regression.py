"""Regression in both families: they learn a demand signal, export ``prediction`` ONNX that matches."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models import lightgbm_family, torch_mlp
from models.dataset import BINARY_CLASSIFICATION, REGRESSION, Dataset
from models.families import FAMILIES
from models.interface import ONNX_PREDICTION, ONNX_PROBABILITIES, ParamsError, onnx_output_name
from models.metrics import regression_metrics
from models.onnx_parity import (
    REGRESSION_ATOL,
    REGRESSION_RTOL,
    check_regression_parity,
    onnx_predictions,
    onnx_scores,
    onnx_signature,
)

FEATURES = ("price", "promo", "temperature", "noise", "store")
STORE_EFFECT = np.array([-0.6, -0.2, 0.0, 0.3, 0.7])
LGB = {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 15, "early_stopping_rounds": 30}
MLP = {"hidden": [32, 16], "epochs": 15, "batch_size": 128, "learning_rate": 0.003, "categorical": ["store"]}
#: name -> (family, params): both LightGBM objectives the brief names and both MLP losses.
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "lgb_l2": ("lightgbm", LGB),
    "lgb_poisson": ("lightgbm", {**LGB, "objective": "poisson"}),
    "mlp_mse": ("pytorch_mlp", MLP),
    "mlp_poisson": ("pytorch_mlp", {**MLP, "loss": "poisson"}),
}


def daily_demand(n: int, seed: int, nan_fraction: float = 0.03) -> tuple[Dataset, np.ndarray]:
    """Units sold ~ Poisson(rate): the rate falls with price, rises with promo, varies by store."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    store = rng.integers(0, len(STORE_EFFECT), n)
    rate = np.exp(1.0 - 0.5 * X[:, 0] + 0.4 * X[:, 1] + 0.3 * np.sin(2 * X[:, 2]) + STORE_EFFECT[store])
    X[:, 4] = store
    numeric = X[:, :4]
    numeric[rng.random(numeric.shape) < nan_fraction] = np.nan
    y = rng.poisson(rate).astype(np.float32)
    return Dataset(X, y, FEATURES, REGRESSION), rate


@pytest.fixture(scope="module")
def splits() -> tuple[Dataset, Dataset, Dataset]:
    return daily_demand(1500, 1)[0], daily_demand(500, 2)[0], daily_demand(1000, 3)[0]


@pytest.fixture(scope="module")
def fitted(splits) -> dict[str, Any]:
    train, valid, _ = splits
    return {name: FAMILIES[family].fit(train, valid, params, 42) for name, (family, params) in MODELS.items()}


@pytest.fixture(scope="module")
def exported(fitted, tmp_path_factory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name, (family, _) in MODELS.items():
        paths[name] = directory / f"{name}.onnx"
        FAMILIES[family].export_onnx(fitted[name], len(FEATURES), paths[name])
    return paths


def test_output_names_are_constants_chosen_by_task():
    # given both tasks / when naming their ONNX output / then binary keeps probabilities, regression predicts
    assert onnx_output_name(BINARY_CLASSIFICATION) == ONNX_PROBABILITIES == "probabilities"
    assert onnx_output_name(REGRESSION) == ONNX_PREDICTION == "prediction"
    with pytest.raises(ValueError, match="binary_classification, regression"):
        onnx_output_name("ranking")


def test_a_regression_dataset_refuses_non_finite_labels_and_unknown_tasks():
    # given finite float labels, then the same with a NaN, and an unknown task
    X = np.zeros((3, 2), dtype=np.float32)
    assert Dataset(X, np.array([0.0, 2.5, 7.0], dtype=np.float32), task=REGRESSION).is_regression
    # when building the datasets / then the NaN and the unknown task are refused
    with pytest.raises(ValueError, match="1 are NaN or infinite"):
        Dataset(X, np.array([0.0, np.nan, 7.0], dtype=np.float32), task=REGRESSION)
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        Dataset(X, np.array([0, 1, 0], dtype=np.int8), task="ranking")


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_beats_the_train_mean_by_a_clear_margin(name, splits, fitted):
    # given a model fitted on Poisson demand / when predicting held-out days
    train, _, test = splits
    family, _ = MODELS[name]
    prediction = FAMILIES[family].predict(fitted[name], test.X)
    # then it predicts one finite number per row and its RMSE is well below the constant-mean baseline's
    assert prediction.shape == (len(test.y),)
    assert np.isfinite(prediction).all()
    model_rmse = regression_metrics(test.y, prediction)["rmse"]
    baseline_rmse = regression_metrics(test.y, np.full(len(test.y), train.y.mean()))["rmse"]
    assert model_rmse < 0.7 * baseline_rmse, (model_rmse, baseline_rmse)
    assert abs(regression_metrics(test.y, prediction)["bias"]) < 0.5


@pytest.mark.parametrize("name", ["lgb_poisson", "mlp_poisson"])
def test_log_link_models_predict_positive_rates(name, splits, fitted):
    # given a Poisson model / when predicting, including a row of missing values / then every rate is > 0
    _, _, test = splits
    family, _ = MODELS[name]
    X = np.vstack([test.X, np.full((1, len(FEATURES)), np.nan, dtype=np.float32)])
    assert (FAMILIES[family].predict(fitted[name], X) > 0).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_outputs_prediction_in_label_units_and_passes_parity(name, splits, fitted, exported):
    # given an exported regressor
    _, _, test = splits
    family, _ = MODELS[name]
    native = FAMILIES[family].predict(fitted[name], test.X)
    # when ONNX Runtime scores the test rows
    result = check_regression_parity(exported[name], native, test.X)
    # then its only output is `prediction`, [N] float32, and it matches the native model row by row
    assert onnx_signature(exported[name]).inputs == ("input",)
    assert onnx_signature(exported[name]).outputs == ("prediction",)
    session = ort.InferenceSession(str(exported[name]), providers=["CPUExecutionProvider"])
    (raw,) = session.run(["prediction"], {"input": test.X})
    assert raw.dtype == np.float32 and raw.shape == (len(test.y),)
    assert result.passed, result
    assert result.n_rows == len(test.y)
    assert (result.atol, result.rtol) == (REGRESSION_ATOL, REGRESSION_RTOL) == (1e-4, 1e-5)
    assert result.max_abs_diff <= REGRESSION_ATOL + REGRESSION_RTOL * np.abs(native).max()
    assert 0 <= result.max_rel_diff < 1e-4


@pytest.mark.parametrize("name", list(MODELS))
def test_regression_onnx_batch_axis_is_dynamic(name, splits, fitted, exported):
    # given an exported regressor / when scoring batches of 1 and 7 rows / then each agrees with native
    _, _, test = splits
    family, _ = MODELS[name]
    native = FAMILIES[family].predict(fitted[name], test.X[:7])
    assert np.allclose(onnx_predictions(exported[name], test.X[:1]), native[:1], rtol=1e-5, atol=1e-4)
    assert np.allclose(onnx_scores(exported[name], test.X[:7], REGRESSION), native, rtol=1e-5, atol=1e-4)


def test_regression_parity_fails_when_native_predictions_drift(splits, fitted, exported):
    # given an exported regressor and native predictions 0.1% off, then 0.001 units off near zero
    _, _, test = splits
    native = FAMILIES["lightgbm"].predict(fitted["lgb_l2"], test.X)
    # when checking parity / then both fail and report the size of the gap
    relative = check_regression_parity(exported["lgb_l2"], native * 1.001, test.X)
    assert not relative.passed
    assert relative.max_rel_diff == pytest.approx(1e-3, rel=0.01)
    absolute = check_regression_parity(exported["lgb_l2"], native + 1e-3, test.X, rtol=0.0)
    assert not absolute.passed
    assert absolute.max_abs_diff == pytest.approx(1e-3, rel=0.01)
    assert check_regression_parity(exported["lgb_l2"], native + 1e-3, test.X, atol=2e-3, rtol=0.0).passed
    with pytest.raises(ValueError, match="rows"):
        check_regression_parity(exported["lgb_l2"], native[:-1], test.X)


def test_lightgbm_graph_exponentiates_only_the_log_link_objectives(exported):
    # given the exported l2 and poisson boosters / when reading their graphs
    ops = {name: [node.op_type for node in onnx.load(str(exported[name])).graph.node] for name in exported}
    # then both sum the trees once in float64; only poisson applies exp, and both end in a flat prediction
    assert ops["lgb_l2"] == ["Cast", "TreeEnsembleRegressor", "Reshape"]
    assert ops["lgb_poisson"] == ["Cast", "TreeEnsembleRegressor", "Exp", "Reshape"]


def test_lightgbm_regression_graph_refuses_a_link_the_converter_disagrees_with(fitted):
    # given the converter's graph of a poisson booster, which ends in Exp
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    converted = convert_lightgbm(
        fitted["lgb_poisson"].booster,
        initial_types=[("input", FloatTensorType([None, len(FEATURES)]))],
        target_opset=lightgbm_family.ONNX_TARGET_OPSET,
    )
    # when rebuilding it as an identity-link regressor / then the mismatch is refused, not exported wrong
    with pytest.raises(ValueError, match="applies exp"):
        lightgbm_family.regression_graph(converted, log_link=False)


def test_lightgbm_regression_early_stops_on_the_objectives_metric_without_calibration(splits, fitted):
    # given the fitted l2 and poisson boosters, and an l1 booster
    train, valid, test = splits
    l1 = FAMILIES["lightgbm"].fit(train, valid, {**LGB, "objective": "regression_l1", "n_estimators": 40}, 0)
    # then each early-stopped on its metric, has no calibrator and no probabilities, and is seeded
    assert fitted["lgb_l2"].params["metric"] == "l2" and fitted["lgb_l2"].params["objective"] == "regression"
    assert fitted["lgb_poisson"].params["metric"] == "l2"
    assert l1.params["metric"] == "l1" and l1.task == REGRESSION
    assert fitted["lgb_l2"].best_iteration < LGB["n_estimators"]
    assert fitted["lgb_l2"].calibrator is None
    assert "scale_pos_weight" not in fitted["lgb_l2"].params
    assert fitted["lgb_l2"].params["seed"] == 42
    assert fitted["lgb_poisson"].summary["objective"] == "poisson"
    with pytest.raises(ValueError, match="no probabilities"):
        FAMILIES["lightgbm"].predict_proba(fitted["lgb_l2"], test.X)


def test_lightgbm_poisson_predicts_exp_of_its_raw_score_and_saves_label_units(splits, fitted, tmp_path):
    # given a poisson booster saved natively
    _, _, test = splits
    model = fitted["lgb_poisson"]
    path = FAMILIES["lightgbm"].save_native(model, tmp_path)
    reloaded = lgb.Booster(model_file=str(path))
    prediction = FAMILIES["lightgbm"].predict(model, test.X)
    # then the prediction is exp(raw score) and the reloaded file predicts the same label units
    assert np.allclose(prediction, np.exp(FAMILIES["lightgbm"].predict_margin(model, test.X)))
    assert np.allclose(reloaded.predict(test.X), prediction)


def test_mlp_head_maps_the_scaled_output_to_label_units(splits, fitted, tmp_path):
    # given the mse and poisson MLPs
    train, _, test = splits
    mse, poisson = fitted["mlp_mse"], fitted["mlp_poisson"]
    # then mse learned the standardised label and poisson a log-rate relative to the train mean
    assert mse.target.shift == pytest.approx(train.y.mean(), rel=1e-6)
    assert mse.target.scale == pytest.approx(train.y.std(), rel=1e-5)
    assert (poisson.target.shift, poisson.target.scale) == (0.0, pytest.approx(train.y.mean(), rel=1e-6))
    margin = torch_mlp.predict_margin(mse, test.X)
    assert np.allclose(
        torch_mlp.predict(mse, test.X), margin * mse.target.scale + mse.target.shift, rtol=1e-5
    )
    log_rate = torch_mlp.predict_margin(poisson, test.X)
    assert np.allclose(torch_mlp.predict(poisson, test.X), np.exp(log_rate) * poisson.target.scale, rtol=1e-5)
    assert mse.calibrator is None and mse.summary["target"]["link"] == "identity"
    assert poisson.summary["target"]["link"] == "log"
    assert mse.summary["categorical"][0]["codes"] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="no probabilities"):
        torch_mlp.predict_proba(mse, test.X)
    # and the saved state_dict holds the scaling, so the head rebuilds and predicts the same
    state = torch.load(torch_mlp.save_native(poisson, tmp_path), weights_only=True)
    rebuilt = torch_mlp.RegressionHead(
        torch_mlp.TabularMLP(len(FEATURES), (32, 16), 0.0, poisson.categorical), poisson.target
    )
    rebuilt.load_state_dict(state)
    rebuilt.eval()
    with torch.no_grad():
        again = rebuilt(torch.from_numpy(test.X)).numpy()
    assert float(state["scale"]) == poisson.target.scale
    assert np.allclose(again, torch_mlp.predict(poisson, test.X), rtol=1e-6)


def test_mlp_regression_is_deterministic_for_a_seed(splits, monkeypatch):
    # given CPU training twice with the same seed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train, valid, test = splits
    params = {**MLP, "epochs": 3}
    first, second = (torch_mlp.fit(train, valid, params, 5) for _ in range(2))
    # then the predictions are identical
    assert np.array_equal(torch_mlp.predict(first, test.X), torch_mlp.predict(second, test.X))


def _negative(dataset: Dataset) -> Dataset:
    y = dataset.y.copy()
    y[0] = -1.0
    return Dataset(dataset.X, y, dataset.features, REGRESSION)


@pytest.mark.parametrize(
    ("family", "params", "message"),
    [
        ("lightgbm", {"objective": "quantile"}, "must be one of regression, regression_l1, huber, poisson"),
        ("lightgbm", {"objective": "binary"}, "must be one of"),
        ("lightgbm", {"application": "binary"}, "set by the platform for regression"),
        ("lightgbm", {"scale_pos_weight": 3.0}, "set by the platform for regression"),
        ("lightgbm", {"seed": 1}, "set by the platform for regression"),
        ("pytorch_mlp", {"loss": "huber"}, "'loss' must be one of mse, poisson"),
        ("pytorch_mlp", {"pos_weight": 2.0}, "no use in regression"),
    ],
)
def test_invalid_regression_params_raise_params_error(family, params, message, splits):
    # given params a regressor cannot use / when fitting / then a ParamsError names the problem
    train, valid, _ = splits
    with pytest.raises(ParamsError, match=message):
        FAMILIES[family].fit(train, valid, params, 0)


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("lightgbm", {"objective": "poisson"}),
        ("lightgbm", {"objective": "tweedie"}),
        ("pytorch_mlp", {"loss": "poisson"}),
    ],
)
def test_log_link_losses_refuse_negative_labels(family, params, splits):
    # given a negative label / when fitting a Poisson or Tweedie model / then a ParamsError says so
    train, valid, _ = splits
    with pytest.raises(ParamsError, match="non-negative labels"):
        FAMILIES[family].fit(_negative(train), valid, params, 0)


def test_classifier_params_stay_as_they_were(splits):
    # given a binary dataset / when a regression-only key is passed / then it is refused as before
    train, valid, _ = splits
    binary = [Dataset(d.X, (d.y > 3).astype(np.int8), d.features) for d in (train, valid)]
    with pytest.raises(ParamsError, match="regression only"):
        FAMILIES["pytorch_mlp"].fit(*binary, {"loss": "mse"}, 0)
    with pytest.raises(ParamsError, match="set by the platform"):
        FAMILIES["lightgbm"].fit(*binary, {"objective": "poisson"}, 0)
