"""Regression training sets and ``python -m models.train`` on them, end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models import train
from models.dataset import (
    BINARY_CLASSIFICATION,
    REGRESSION,
    TrainingSetError,
    load_training_set,
    save_training_set,
)
from models.metrics import regression_metrics
from models.onnx_parity import onnx_predictions
from pipelines import crypto
from tests.unit.test_models_train_cli import run_cli

FEATURES = ["price", "promo", "temperature", "store"]
PARAMS: dict[str, dict[str, Any]] = {
    "lightgbm": {
        "objective": "poisson",
        "n_estimators": 200,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "early_stopping_rounds": 20,
    },
    "pytorch_mlp": {
        "hidden": [32, 16],
        "epochs": 12,
        "batch_size": 128,
        "learning_rate": 0.003,
        "categorical": ["store"],
    },
}


def demand_frame(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Daily units sold per store as pipelines/training_set.py would lay them out, 3% features missing."""
    rng = np.random.default_rng(seed)
    price, promo, temperature = rng.normal(size=(3, n))
    store = rng.integers(0, 5, n)
    rate = np.exp(1.0 - 0.5 * price + 0.4 * promo + 0.3 * np.sin(2 * temperature) + 0.3 * (store - 2))
    frame = pd.DataFrame({"price": price, "promo": promo, "temperature": temperature, "store": store})
    for column in ("price", "promo", "temperature"):
        frame.loc[rng.random(n) < 0.03, column] = np.nan
    frame["units_sold"] = rng.poisson(rate)
    frame["split"] = np.select([np.arange(n) < 0.6 * n, np.arange(n) < 0.8 * n], ["train", "valid"], "test")
    frame["sku_day"] = [f"d{i}" for i in range(n)]
    return frame


def write_demand_set(directory: Path, frame: pd.DataFrame | None = None) -> Path:
    frame = demand_frame() if frame is None else frame
    return save_training_set(directory, frame, FEATURES, "units_sold", "demand", task=REGRESSION)


@pytest.fixture(scope="module")
def demand_set(tmp_path_factory) -> Path:
    return write_demand_set(tmp_path_factory.mktemp("ts") / "demand")


def test_the_manifest_task_reaches_the_loaded_splits(demand_set, tmp_path):
    # given a regression training set and a binary one whose manifest names no task
    binary = demand_frame(300)
    binary["units_sold"] = (binary["units_sold"] > 3).astype(int)
    binary_set = save_training_set(tmp_path / "binary", binary, FEATURES, "units_sold", "fraud")
    # when loading both
    regression, classification = load_training_set(demand_set), load_training_set(binary_set)
    # then the regression set and its splits say so and keep float32 counts; the other is binary
    assert json.loads((demand_set / "manifest.json").read_text())["task"] == "regression"
    assert "task" not in json.loads((binary_set / "manifest.json").read_text())
    assert regression.task == REGRESSION
    assert {split.task for split in (regression.train, regression.valid, regression.test)} == {REGRESSION}
    assert regression.train.y.dtype == np.float32 and regression.train.y.max() > 1
    assert classification.task == BINARY_CLASSIFICATION and classification.train.y.dtype == np.int8


def test_a_regression_label_need_not_be_0_1_or_hold_two_values(tmp_path):
    # given a regression label that is a constant 4.5 (a binary set would refuse it as a single class)
    frame = demand_frame(300)
    frame["units_sold"] = 4.5
    # when loading / then it is accepted as it is
    loaded = load_training_set(write_demand_set(tmp_path / "constant", frame))
    assert set(loaded.valid.y.tolist()) == {4.5}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_labels_are_refused_naming_the_split_and_count(bad, tmp_path):
    # given two non-finite labels in the valid split
    frame = demand_frame(300).astype({"units_sold": float})
    valid_rows = frame.index[frame["split"] == "valid"][:2]
    frame.loc[valid_rows, "units_sold"] = bad
    directory = write_demand_set(tmp_path / "bad", frame)
    # when loading / then a TrainingSetError names the split and the count
    with pytest.raises(TrainingSetError, match=r"2 NaN or infinite value\(s\) in split 'valid'"):
        load_training_set(directory)


def test_unknown_task_and_non_numeric_regression_label_are_refused(tmp_path):
    # given a manifest naming an unknown task, and a regression label of strings
    unknown = write_demand_set(tmp_path / "unknown")
    manifest = json.loads((unknown / "manifest.json").read_text())
    (unknown / "manifest.json").write_text(json.dumps({**manifest, "task": "ranking"}))
    frame = demand_frame(300)
    frame["units_sold"] = frame["units_sold"].astype(str)
    strings = write_demand_set(tmp_path / "strings", frame)
    # when loading / then each is refused with the reason
    with pytest.raises(TrainingSetError, match="unknown task 'ranking'"):
        load_training_set(unknown)
    with pytest.raises(TrainingSetError, match="must be numeric"):
        load_training_set(strings)
    with pytest.raises(TrainingSetError, match="unknown task"):
        save_training_set(tmp_path / "never", frame, FEATURES, "units_sold", "demand", task="ranking")


@pytest.mark.parametrize(("family", "native"), [("lightgbm", "model.txt"), ("pytorch_mlp", "model.pt")])
def test_cli_trains_a_regressor_and_records_regression_metrics(family, native, demand_set, tmp_path):
    # given a regression training set
    output = tmp_path / family
    # when the entrypoint runs
    done = run_cli(
        "--training-set", str(demand_set), "--family", family, "--params", json.dumps(PARAMS[family]),
        "--output", output.as_uri(), "--seed", "7",
    )  # fmt: skip
    # then it writes the encrypted models, the metrics and a manifest for a regressor
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in output.iterdir()) == sorted(
        ["model.onnx.enc", f"{native}.enc", "metrics.json", "manifest.json"]
    )
    manifest = json.loads((output / "manifest.json").read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    assert manifest["task"] == "regression"
    assert manifest["onnx_output"] == "prediction"
    assert manifest["onnx_inputs"] == ["input"] and manifest["onnx_outputs"] == ["prediction"]
    assert manifest["label"] == "units_sold" and manifest["features"] == FEATURES
    assert manifest["params"] == PARAMS[family] and manifest["seed"] == 7
    assert manifest["calibration"] is None and manifest["threshold"] is None
    assert manifest["onnx_sha256"] == hashlib.sha256(crypto.unseal(output / "model.onnx")).hexdigest()
    parity = manifest["parity"]
    assert parity["passed"] is True and parity["n_rows"] == 400
    assert (parity["atol"], parity["rtol"]) == (1e-4, 1e-5)
    assert 0 <= parity["max_abs_diff"] < 1e-4 and 0 <= parity["max_rel_diff"] < 1e-5
    # and the metrics are regression metrics, clearly better than predicting the train mean
    assert {"rmse", "mae", "wape", "bias", "r2", "n"} <= set(metrics)
    assert not {"roc_auc", "pr_auc", "calibration"} & set(metrics)
    assert metrics["n"] == metrics["valid"]["n"] == metrics["baseline"]["n"] == 400
    assert metrics["rmse"] < 0.75 * metrics["baseline"]["rmse"]
    assert metrics["r2"] > 0.4 and metrics["baseline"]["r2"] <= 0.01
    assert 0 < metrics["wape"] < metrics["baseline"]["wape"]
    assert "test rmse=" in done.stderr and "error" not in done.stderr
    # and the kept ONNX model reproduces the reported test metrics
    onnx_file = tmp_path / "plain.onnx"
    onnx_file.write_bytes(crypto.unseal(output / "model.onnx"))
    test = load_training_set(demand_set).test
    assert regression_metrics(test.y, onnx_predictions(onnx_file, test.X))["rmse"] == pytest.approx(
        metrics["rmse"], rel=1e-4
    )


def test_cli_refuses_a_non_finite_label_with_exit_2(tmp_path):
    # given a regression training set with one infinite label in train
    frame = demand_frame(300).astype({"units_sold": float})
    frame.loc[0, "units_sold"] = np.inf
    directory = write_demand_set(tmp_path / "inf", frame)
    # when training / then exit 2 with one line naming the split, and no output
    done = run_cli("--training-set", str(directory), "--family", "lightgbm", "--output", str(tmp_path / "o"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: label 'units_sold' has 1 NaN or infinite value(s) in split 'train'; "
        "regression labels must be finite"
    ]
    assert not (tmp_path / "o").exists()


def test_cli_refuses_regression_params_with_exit_2(demand_set, tmp_path, capsys):
    # given a classifier-only LightGBM parameter / when training a regressor / then exit 2 names it
    argv = ["--training-set", str(demand_set), "--family", "lightgbm", "--output", str(tmp_path / "o")]
    assert train.main([*argv, "--params", json.dumps({"scale_pos_weight": 2})]) == 2
    assert "['scale_pos_weight'] are set by the platform for regression" in capsys.readouterr().err


def test_regression_parity_failure_deletes_the_onnx_model_and_exits_3(
    demand_set, tmp_path, monkeypatch, capsys
):
    # given a regressor whose native predictions drift 0.1% away from its ONNX graph
    import dataclasses

    from models.families import FAMILIES

    family = FAMILIES["lightgbm"]

    def drifting(fitted, X):
        return family.predict(fitted, X) * 1.001

    monkeypatch.setitem(FAMILIES, "lightgbm", dataclasses.replace(family, predict=drifting))
    output = tmp_path / "out"
    # when training
    argv = ["--training-set", str(demand_set), "--family", "lightgbm", "--output", str(output)]
    code = train.main([*argv, "--params", json.dumps(PARAMS["lightgbm"])])
    # then exit 3, no model.onnx is kept, and the manifest records the relative gap
    assert code == 3
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "metrics.json", "model.txt.enc"]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["parity"]["passed"] is False
    assert manifest["parity"]["max_rel_diff"] == pytest.approx(1e-3, rel=0.01)
    assert manifest["onnx_sha256"] is None
    err = capsys.readouterr().err
    assert "ONNX parity failed" in err and "beyond 0.0001 + 1e-05 * |native|" in err


def test_binary_manifests_name_their_task_and_output(tmp_path):
    # given a binary training set written without a task
    frame = demand_frame(1000)
    frame["units_sold"] = (frame["units_sold"] > 3).astype(int)
    directory = save_training_set(tmp_path / "binary", frame, FEATURES, "units_sold", "fraud")
    params = {"n_estimators": 30, "num_leaves": 7}
    output = tmp_path / "out"
    # when training
    code = train.main(
        ["--training-set", str(directory), "--family", "lightgbm", "--params", json.dumps(params),
         "--output", str(output)]
    )  # fmt: skip
    # then the manifest names the binary task and its probabilities output, with the calibrator as before
    assert code == 0
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["task"] == "binary_classification"
    assert manifest["onnx_output"] == "probabilities"
    assert manifest["threshold"] == 0.5 and manifest["calibration"]["method"] == "platt"
    assert manifest["parity"]["tolerance"] == 1e-5
    assert "roc_auc" in json.loads((output / "metrics.json").read_text())
