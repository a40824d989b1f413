"""Both model families: they learn, export ONNX that matches, and handle missing values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from models.dataset import Dataset
from models.families import FAMILIES, get_family
from models.interface import ParamsError
from models.onnx_parity import check_parity, onnx_probabilities, onnx_signature

N_FEATURES = 8
PARAMS: dict[str, dict[str, Any]] = {
    "lightgbm": {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 15, "early_stopping_rounds": 30},
    "pytorch_mlp": {"hidden": [32, 16], "epochs": 20, "batch_size": 128, "learning_rate": 0.003},
}


def make_data(n: int, seed: int, nan_fraction: float = 0.0) -> Dataset:
    """A nonlinear signal (interaction, sine, square) with about 10% positives."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    logit = 3.0 * X[:, 0] * X[:, 1] + 2.0 * np.sin(2 * X[:, 2]) + 1.5 * X[:, 3] ** 2 - 6.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    if nan_fraction:
        X[rng.random(X.shape) < nan_fraction] = np.nan
    return Dataset(X, y)


@pytest.fixture(scope="module")
def splits() -> tuple[Dataset, Dataset, Dataset]:
    return make_data(1500, seed=1), make_data(500, seed=2), make_data(1000, seed=3)


@pytest.fixture(scope="module")
def fitted(splits):
    train, valid, _ = splits
    return {name: family.fit(train, valid, PARAMS[name], 42) for name, family in FAMILIES.items()}


def test_registry_holds_both_families_and_rejects_unknown_names():
    # given the registry / when looking families up / then both exist and an unknown name says which exist
    assert set(FAMILIES) == {"lightgbm", "pytorch_mlp"}
    assert get_family("lightgbm").native_filename == "model.txt"
    with pytest.raises(ValueError, match="lightgbm, pytorch_mlp"):
        get_family("xgboost")


@pytest.mark.parametrize("name", ["lightgbm", "pytorch_mlp"])
def test_family_learns_the_nonlinear_signal(name, splits, fitted):
    # given a model fitted on a learnable signal with 10% positives
    _, _, test = splits
    # when it scores held-out rows
    proba = FAMILIES[name].predict_proba(fitted[name], test.X)
    # then it ranks clearly better than chance and returns one probability per row
    assert proba.shape == (len(test.y),)
    assert ((proba >= 0) & (proba <= 1)).all()
    assert roc_auc_score(test.y, proba) > 0.85


@pytest.mark.parametrize("name", ["lightgbm", "pytorch_mlp"])
def test_onnx_export_matches_native_probabilities(name, splits, fitted, tmp_path):
    # given a fitted model exported to ONNX
    _, _, test = splits
    family = FAMILIES[name]
    path = tmp_path / "model.onnx"
    family.export_onnx(fitted[name], N_FEATURES, path)
    # when ONNX Runtime scores the test rows
    result = check_parity(path, family.predict_proba(fitted[name], test.X), test.X, tolerance=1e-5)
    # then it reproduces the native probabilities, in one self-contained file with the shared contract
    assert result.passed, result
    assert result.max_abs_diff < 1e-5
    assert result.n_rows == len(test.y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    signature = onnx_signature(path)
    assert signature.inputs == ("input",)
    assert "probabilities" in signature.outputs


@pytest.mark.parametrize("name", ["lightgbm", "pytorch_mlp"])
def test_onnx_batch_axis_is_dynamic(name, splits, fitted, tmp_path):
    # given an exported model / when scoring batches of 1 and 7 rows
    _, _, test = splits
    path = tmp_path / "model.onnx"
    FAMILIES[name].export_onnx(fitted[name], N_FEATURES, path)
    native = FAMILIES[name].predict_proba(fitted[name], test.X[:7])
    # then each batch size works and agrees with native
    assert np.allclose(onnx_probabilities(path, test.X[:1]), native[:1], atol=1e-5)
    assert np.allclose(onnx_probabilities(path, test.X[:7]), native, atol=1e-5)


@pytest.mark.parametrize("name", ["lightgbm", "pytorch_mlp"])
def test_missing_values_are_handled_natively_and_in_onnx(name, tmp_path):
    # given training rows with 10% missing features
    train, valid, test = (make_data(n, seed, nan_fraction=0.1) for n, seed in ((1500, 4), (500, 5), (600, 6)))
    family = FAMILIES[name]
    model = family.fit(train, valid, PARAMS[name], 7)
    # when scoring rows with missing values, including an all-missing row
    X = np.vstack([test.X, np.full((1, N_FEATURES), np.nan, dtype=np.float32)])
    proba = family.predict_proba(model, X)
    path = tmp_path / "model.onnx"
    family.export_onnx(model, N_FEATURES, path)
    # then every probability is finite, the signal survives, and ONNX agrees on the NaN rows
    assert np.isfinite(proba).all()
    assert roc_auc_score(test.y, proba[:-1]) > 0.8
    assert check_parity(path, proba, X).passed


def test_check_parity_fails_when_native_probabilities_differ(splits, fitted, tmp_path):
    # given an exported model and native probabilities shifted by 0.001
    _, _, test = splits
    family = FAMILIES["lightgbm"]
    path = tmp_path / "model.onnx"
    family.export_onnx(fitted["lightgbm"], N_FEATURES, path)
    shifted = family.predict_proba(fitted["lightgbm"], test.X) + 1e-3
    # when checking parity / then it fails with the size of the gap
    result = check_parity(path, shifted, test.X)
    assert not result.passed
    assert result.max_abs_diff == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(ValueError, match="rows"):
        check_parity(path, shifted[:-1], test.X)


def test_lightgbm_keeps_only_the_best_iteration_and_saves_it(splits, fitted, tmp_path):
    # given a booster early-stopped on the valid set
    _, _, test = splits
    model = fitted["lightgbm"]
    # when saved natively and reloaded
    path = FAMILIES["lightgbm"].save_native(model, tmp_path)
    import lightgbm as lgb

    reloaded = lgb.Booster(model_file=str(path))
    # then it stopped before n_estimators and the saved trees are the best iteration's, before calibration
    assert path.name == "model.txt"
    assert model.best_iteration < PARAMS["lightgbm"]["n_estimators"]
    assert reloaded.num_trees() == model.best_iteration
    margin = FAMILIES["lightgbm"].predict_margin(model, test.X)
    assert np.allclose(reloaded.predict(test.X, raw_score=True), margin)
    assert np.allclose(
        model.calibrator.probabilities(margin), FAMILIES["lightgbm"].predict_proba(model, test.X)
    )


def test_lightgbm_weights_positives_by_the_train_imbalance(splits, fitted):
    # given train rows with about 10% positives / when fitted without scale_pos_weight
    train, _, _ = splits
    expected = (len(train.y) - train.positives) / train.positives
    # then the booster weighted positives by negatives / positives, deterministically
    params = fitted["lightgbm"].params
    assert params["scale_pos_weight"] == pytest.approx(expected)
    assert params["deterministic"] is True
    assert params["seed"] == 42


def test_lightgbm_is_deterministic_for_a_seed(splits, fitted):
    # given the same data and seed / when fitted again / then predictions are identical
    train, valid, test = splits
    again = FAMILIES["lightgbm"].fit(train, valid, PARAMS["lightgbm"], 42)
    family = FAMILIES["lightgbm"]
    assert np.array_equal(
        family.predict_proba(again, test.X), family.predict_proba(fitted["lightgbm"], test.X)
    )


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("lightgbm", {"objective": "regression"}, "set by the platform"),
        ("lightgbm", {"n_estimators": 0}, "n_estimators"),
        ("lightgbm", {"num_leaves": -3}, "LightGBM rejected"),
        ("pytorch_mlp", {"hiden": [8]}, "unknown pytorch_mlp params"),
        ("pytorch_mlp", {"hidden": []}, "hidden"),
        ("pytorch_mlp", {"epochs": 1.5}, "epochs"),
        ("pytorch_mlp", {"dropout": 1.0}, "dropout"),
    ],
)
def test_invalid_params_raise_params_error(name, params, message, splits):
    # given invalid hyperparameters / when fitting / then a ParamsError names the problem
    train, valid, _ = splits
    with pytest.raises(ParamsError, match=message):
        FAMILIES[name].fit(train, valid, params, 0)


def test_native_files_are_written_where_asked(fitted, tmp_path: Path):
    # given both fitted families / when saved natively / then each writes its own file name
    for name, family in FAMILIES.items():
        path = family.save_native(fitted[name], tmp_path)
        assert path == tmp_path / family.native_filename
        assert path.stat().st_size > 0


def test_float32_thresholds_decide_like_the_doubles_for_float32_inputs() -> None:
    from models.lightgbm_family import float32_thresholds

    # Given a tree whose numerical threshold sits just below a float32 value, and a categorical split
    just_below = float(np.nextafter(np.float32(0.1), np.float32(1))) - 1e-12
    text = (
        "tree\nversion=v4\ntree_sizes=120\n\nTree=0\nnum_leaves=3\n"
        f"threshold={just_below!r} 5\ndecision_type=2 1\nleaf_value=0 1 2\n\nend of trees\n"
    )

    # When the thresholds are rewritten
    rewritten = float32_thresholds(text)
    values = (
        next(line for line in rewritten.splitlines() if line.startswith("threshold=")).split("=")[1].split()
    )

    # Then the numerical one is the largest float32 not above it, the categorical one is untouched,
    # and the stale byte sizes are gone
    numeric = float(values[0])
    assert numeric == float(np.float32(numeric)) and numeric <= just_below
    assert float(np.nextafter(np.float32(numeric), np.float32(1))) > just_below
    assert values[1] == "5"
    assert "tree_sizes=" not in rewritten
