"""Categorical embeddings in the MLP: code slots, unknown and missing codes, ONNX parity, determinism."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from models.calibration import sigmoid
from models.dataset import Dataset
from models.interface import ParamsError
from models.onnx_parity import check_parity, onnx_probabilities
from models.torch_mlp import (
    CategoricalColumn,
    CategoricalEmbedding,
    TabularMLP,
    export_onnx,
    fit,
    predict_margin,
    predict_proba,
)

FEATURES = ("amount", "channel_code", "velocity", "country_code")
PARAMS: dict[str, Any] = {
    "hidden": [16],
    "epochs": 4,
    "batch_size": 64,
    "learning_rate": 0.01,
    "categorical": ["channel_code", 3],
}


def make_data(n: int, seed: int) -> Dataset:
    """Channel 3 and country 40 carry the risk; both code columns miss 5% of their values."""
    rng = np.random.default_rng(seed)
    amount, velocity = rng.normal(size=n), rng.normal(size=n)
    channel = rng.choice([1, 2, 3, 5, 8], size=n).astype(np.float64)
    country = rng.choice([10, 20, 40], size=n).astype(np.float64)
    logit = amount + 2.5 * (channel == 3) + 1.5 * (country == 40) - 3.0
    y = (rng.random(n) < sigmoid(logit)).astype(np.int8)
    channel[rng.random(n) < 0.05] = np.nan
    country[rng.random(n) < 0.05] = np.nan
    X = np.column_stack([amount, channel, velocity, country]).astype(np.float32)
    return Dataset(X, y, FEATURES)


@pytest.fixture(scope="module")
def splits() -> tuple[Dataset, Dataset]:
    return make_data(600, 1), make_data(300, 2)


@pytest.fixture(scope="module")
def model(splits):
    train, valid = splits
    return fit(train, valid, PARAMS, 0)


def test_codes_map_to_their_slots_and_everything_else_to_the_unknown_slot():
    # Given an embedding that saw codes 2, 5 and 7
    embedding = CategoricalEmbedding(CategoricalColumn(column=0, codes=(2, 5, 7)))
    values = torch.tensor([2, 5, 7, 3, 9, -1, float("nan"), 2.5, float("inf"), -float("inf")])

    # When looking up slots
    slots = embedding.slot(values)

    # Then known codes take slots 1..3; an unseen code inside or outside the range, NaN, a fraction and
    # infinities all take slot 0, and the table has 3 + 1 rows of width min(8, (4 + 1) // 2) = 2
    assert slots.tolist() == [1, 2, 3, 0, 0, 0, 0, 0, 0, 0]
    assert embedding.embedding.weight.shape == (4, 2)


def test_fit_embeds_named_and_indexed_columns_with_codes_seen_in_training(model):
    # Given a model fitted with one column named and one given by index
    # Then each gets its training codes and the numeric columns keep their standardisation
    assert [(c.column, c.codes) for c in model.categorical] == [(1, (1, 2, 3, 5, 8)), (3, (10, 20, 40))]
    assert [e.embedding.weight.shape for e in model.model.embeddings] == [(6, 3), (4, 2)]
    assert model.model.numeric.tolist() == [0, 2]
    assert model.summary["categorical"][0] == {"column": 1, "codes": [1, 2, 3, 5, 8], "embedding_dim": 3}


def test_unknown_codes_and_nan_score_alike_natively_and_in_onnx(model, tmp_path):
    # Given rows that differ only in the channel: NaN, an unseen code 4, an out-of-range code 99, and 3
    row = np.array([0.5, np.nan, 0.0, 20.0], dtype=np.float32)
    X = np.tile(row, (4, 1))
    X[1:, 1] = [4.0, 99.0, 3.0]
    path = tmp_path / "model.onnx"
    export_onnx(model, len(FEATURES), path)

    # When scored natively and by ONNX Runtime
    native = predict_proba(model, X)
    onnx = onnx_probabilities(path, X)

    # Then NaN and both unknown codes share the unknown slot; the known risky code scores differently
    assert native[0] == native[1] == native[2]
    assert native[3] != native[0]
    assert np.allclose(onnx, native, atol=1e-5)


def test_onnx_parity_with_categoricals(splits, model, tmp_path):
    # Given the exported model with two embedded columns / when checked on valid rows plus a NaN row
    _, valid = splits
    X = np.vstack([valid.X, np.full((1, len(FEATURES)), np.nan, dtype=np.float32)])
    path = tmp_path / "model.onnx"
    export_onnx(model, len(FEATURES), path)
    result = check_parity(path, predict_proba(model, X), X, tolerance=1e-5)
    # then ONNX reproduces the calibrated probabilities from the same single float32 input
    assert result.passed, result


def test_embeddings_learn_the_categorical_signal(splits, model):
    # Given the fitted model / when scoring the same rows as channel 3 and as channel 1
    _, valid = splits
    risky, safe = valid.X.copy(), valid.X.copy()
    risky[:, 1], safe[:, 1] = 3.0, 1.0
    # then the risky channel scores higher on average
    assert predict_margin(model, risky).mean() > predict_margin(model, safe).mean()


def test_two_cpu_fits_with_the_same_seed_are_identical(splits, monkeypatch):
    # Given training forced onto the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train, valid = splits
    # When fitted twice with the same seed
    first, second = (fit(train, valid, {**PARAMS, "epochs": 2}, 5) for _ in range(2))
    # Then weights, calibration and predictions are bit for bit the same
    assert first.calibrator == second.calibrator
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True)
    )
    assert np.array_equal(predict_proba(first, valid.X), predict_proba(second, valid.X))


def test_no_categorical_columns_keeps_the_plain_model(splits, monkeypatch):
    # Given the same data fitted without categoricals, once without the key and once with an empty list
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train, valid = splits
    params = {key: value for key, value in PARAMS.items() if key != "categorical"}
    plain, empty = (
        fit(train, valid, {**params, "epochs": 2}, 5),
        fit(train, valid, {**params, "epochs": 2, "categorical": []}, 5),
    )
    # Then both are the plain MLP over every column, with no code tables in the state_dict
    assert np.array_equal(predict_margin(plain, valid.X), predict_margin(empty, valid.X))
    assert not plain.model.embeddings and plain.categorical == ()
    assert set(plain.model.state_dict()) == set(TabularMLP(len(FEATURES), (16,), 0.1).state_dict())
    assert "numeric" not in plain.model.state_dict()
    assert plain.model.mean.shape == (len(FEATURES),)


@pytest.mark.parametrize(
    ("categorical", "message"),
    [
        (["merchant_code"], "not a feature"),
        ([7], "out of range"),
        (["amount"], "integer codes"),
        ([1, "channel_code"], "listed twice"),
        ("channel_code", "must be a list"),
        ([-1], "must be a list"),
    ],
)
def test_bad_categorical_params_raise_params_error(categorical, message, splits):
    train, valid = splits
    with pytest.raises(ParamsError, match=message):
        fit(train, valid, {**PARAMS, "categorical": categorical}, 0)


def test_names_need_feature_names_and_codes_need_a_small_range(splits):
    # Given a dataset without column names, and a code column spanning more than MAX_CODE_SPAN values
    train, valid = splits
    unnamed = Dataset(train.X, train.y)
    wide = train.X.copy()
    wide[0, 1] = 1e6
    # When fitting / then each is refused with the fix in the message
    with pytest.raises(ParamsError, match="give column indices"):
        fit(unnamed, valid, PARAMS, 0)
    with pytest.raises(ParamsError, match="re-encode"):
        fit(Dataset(wide, train.y, FEATURES), valid, PARAMS, 0)
