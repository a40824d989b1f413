"""The PyTorch MLP: BatchNorm folding, determinism, in-graph imputation and the ONNX contract."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from models.dataset import Dataset
from models.onnx_parity import onnx_probabilities
from models.torch_mlp import (
    MLPParams,
    TabularMLP,
    export_onnx,
    fit,
    fold_batchnorm,
    predict_proba,
    save_native,
)

N_FEATURES = 6
PARAMS: dict[str, Any] = {"hidden": [16, 8], "epochs": 6, "batch_size": 64, "learning_rate": 0.01}


def make_data(n: int, seed: int, nan_fraction: float = 0.0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(loc=3.0, scale=2.0, size=(n, N_FEATURES)).astype(np.float32)
    z = (X - 3.0) / 2.0
    logit = 3.0 * z[:, 0] * z[:, 1] + 2.0 * np.sin(2 * z[:, 2]) - 3.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    if nan_fraction:
        X[rng.random(X.shape) < nan_fraction] = np.nan
    return Dataset(X, y)


@pytest.fixture(scope="module")
def splits() -> tuple[Dataset, Dataset]:
    return make_data(800, seed=1, nan_fraction=0.05), make_data(300, seed=2, nan_fraction=0.05)


def test_fold_batchnorm_preserves_outputs_and_removes_batchnorm():
    # given an MLP whose BatchNorm layers hold non-trivial running statistics and affine weights
    torch.manual_seed(0)
    model = TabularMLP(N_FEATURES, (16, 8), dropout=0.1)
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(64, N_FEATURES) * 3 + 1)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(-1.0, 1.0)
    model.eval()
    x = torch.randn(200, N_FEATURES) * 3 + 1
    # when BatchNorm is folded into the preceding Linear layers
    folded = fold_batchnorm(model)
    # then outputs match, the copy has no BatchNorm, and the original is untouched
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in folded.modules())
    assert not torch.equal(folded.state_dict()["body.0.weight"], model.state_dict()["body.0.weight"])
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 2
    assert not folded.training


def test_same_seed_gives_identical_predictions_and_another_seed_does_not(splits):
    # given the same data / when fitted twice with seed 3 and once with seed 4
    train, valid = splits
    first, second, other = (fit(train, valid, PARAMS, seed) for seed in (3, 3, 4))
    # then the two seed-3 models predict bit for bit the same, the seed-4 one differs
    assert np.array_equal(predict_proba(first, valid.X), predict_proba(second, valid.X))
    assert not np.array_equal(predict_proba(first, valid.X), predict_proba(other, valid.X))
    assert first.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_fit_restores_the_global_torch_settings_it_changes(splits):
    # given the process-wide determinism flag and thread count / when fitting on 1 thread
    train, valid = splits
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    torch.set_num_threads(2)
    try:
        fit(train, valid, {**PARAMS, "epochs": 1, "num_threads": 1}, 0)
        # then both are as they were afterwards
        assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == (before[0], 2)
    finally:
        torch.set_num_threads(before[1])


def test_best_epoch_is_the_lowest_validation_loss(splits):
    # given a fitted model with its per-epoch history
    train, valid = splits
    model = fit(train, valid, PARAMS, 5)
    losses = [epoch["valid_loss"] for epoch in model.history]
    # then the kept epoch is the argmin and the kept weights reproduce its validation loss
    assert len(losses) == PARAMS["epochs"]
    assert model.best_epoch == int(np.argmin(losses)) + 1
    pos_weight = (len(train.y) - train.positives) / train.positives
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    with torch.no_grad():
        loss = float(
            loss_fn(model.model(torch.from_numpy(valid.X)), torch.from_numpy(valid.y.astype(np.float32)))
        )
    assert loss == pytest.approx(min(losses), rel=1e-4)


def test_missing_values_are_imputed_with_the_train_mean_inside_the_model(splits, tmp_path):
    # given a fitted model
    train, valid = splits
    model = fit(train, valid, PARAMS, 1)
    train_mean = np.nanmean(train.X, axis=0).astype(np.float32)
    # when a row is all NaN and another is the train mean
    rows = np.vstack([np.full(N_FEATURES, np.nan, dtype=np.float32), train_mean])
    proba = predict_proba(model, rows)
    path = tmp_path / "model.onnx"
    export_onnx(model, N_FEATURES, path)
    # then both score the same, natively and in ONNX, and the stored buffers are the train statistics
    assert np.isfinite(proba).all()
    assert proba[0] == pytest.approx(proba[1], abs=1e-6)
    assert np.allclose(onnx_probabilities(path, rows), proba, atol=1e-5)
    assert np.allclose(model.model.mean.numpy(), train_mean, atol=1e-5)
    assert np.allclose(model.model.scale.numpy(), np.nanstd(train.X, axis=0), rtol=1e-4)


def test_onnx_output_is_complementary_probabilities(splits, tmp_path):
    # given an exported model / when scored by ONNX Runtime
    train, valid = splits
    model = fit(train, valid, {**PARAMS, "epochs": 2}, 2)
    path = tmp_path / "model.onnx"
    export_onnx(model, N_FEATURES, path)
    (out,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": valid.X})
    # then it is float32 [N, 2] with rows summing to 1
    assert out.dtype == np.float32
    assert out.shape == (len(valid.y), 2)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-6)


def test_state_dict_round_trips(splits, tmp_path):
    # given a saved model.pt / when loaded into a fresh module of the same shape
    train, valid = splits
    model = fit(train, valid, {**PARAMS, "epochs": 2}, 2)
    path = save_native(model, tmp_path)
    fresh = TabularMLP(N_FEATURES, model.params.hidden, model.params.dropout)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    fresh.eval()
    # then it predicts the same, standardisation buffers included, once the calibrator is applied
    with torch.no_grad():
        reloaded = fresh(torch.from_numpy(valid.X)).numpy()
    assert path.name == "model.pt"
    assert np.allclose(model.calibrator.probabilities(reloaded), predict_proba(model, valid.X), atol=1e-7)


def test_params_defaults_and_validation():
    # given params from JSON / when parsed / then lists become tuples and defaults fill the rest
    params = MLPParams.from_dict({"hidden": [4, 2], "learning_rate": 1})
    assert params.hidden == (4, 2)
    assert params.learning_rate == 1.0
    assert params.dropout == 0.1
    assert params.pos_weight is None
    assert MLPParams.from_dict({"pos_weight": None}).pos_weight is None
