"""``python -m models.train`` end to end: inputs verified, artifacts written, failures exit cleanly."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from models import train
from models.dataset import save_training_set
from models.families import FAMILIES
from pipelines import crypto

REPO_ROOT = Path(__file__).resolve().parents[2]
FEATURES = [f"f{i}" for i in range(8)]
PARAMS: dict[str, dict[str, Any]] = {
    "lightgbm": {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 15, "early_stopping_rounds": 20},
    "pytorch_mlp": {"hidden": [32, 16], "epochs": 12, "batch_size": 128, "learning_rate": 0.003},
}


def write_training_set(directory: Path, n: int = 2000, seed: int = 0, label_value: int | None = None) -> Path:
    """A training-set directory as pipelines/training_set.py writes it, with 5% missing features."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    logit = 3.0 * X[:, 0] * X[:, 1] + 2.0 * np.sin(2 * X[:, 2]) + 1.5 * X[:, 3] ** 2 - 6.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    X[rng.random(X.shape) < 0.05] = np.nan
    frame = pd.DataFrame(X, columns=FEATURES)
    frame["is_fraud"] = y if label_value is None else label_value
    frame["split"] = np.select([np.arange(n) < 0.6 * n, np.arange(n) < 0.8 * n], ["train", "valid"], "test")
    frame["transaction_id"] = [f"t{i}" for i in range(n)]
    return save_training_set(directory, frame, FEATURES, "is_fraud", "fraud")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "models.train", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.fixture(scope="module")
def training_set(tmp_path_factory) -> Path:
    return write_training_set(tmp_path_factory.mktemp("ts") / "fraud")


@pytest.mark.parametrize(("family", "native"), [("lightgbm", "model.txt"), ("pytorch_mlp", "model.pt")])
def test_cli_trains_exports_and_records_everything(family, native, training_set, tmp_path):
    # given a verified training set and an output file:// URI
    output = tmp_path / "out" / family
    # when the entrypoint runs
    done = run_cli(
        "--training-set", str(training_set), "--family", family, "--params", json.dumps(PARAMS[family]),
        "--output", output.as_uri(), "--seed", "7",
    )  # fmt: skip
    # then it succeeds and writes the ONNX and native models, encrypted, the metrics and the manifest
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in output.iterdir()) == sorted(
        ["model.onnx.enc", f"{native}.enc", "metrics.json", "manifest.json"]
    )
    manifest = json.loads((output / "manifest.json").read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    assert manifest["family"] == family
    assert manifest["params"] == PARAMS[family]
    assert manifest["seed"] == 7
    assert manifest["features"] == FEATURES
    assert manifest["label"] == "is_fraud"
    assert (
        manifest["training_set_sha256"] == json.loads((training_set / "manifest.json").read_text())["sha256"]
    )
    assert manifest["onnx_sha256"] == hashlib.sha256(crypto.unseal(output / "model.onnx")).hexdigest()
    assert manifest["onnx_inputs"] == ["input"]
    assert "probabilities" in manifest["onnx_outputs"]
    assert manifest["parity"]["passed"] is True
    assert manifest["parity"]["max_abs_diff"] < 1e-5
    assert manifest["parity"]["n_rows"] == metrics["n"] == 400
    assert manifest["library_versions"]["onnxruntime"]
    assert manifest["device"] == ("cuda" if family == "pytorch_mlp" and torch.cuda.is_available() else "cpu")
    assert manifest["train_seconds"] > 0
    assert manifest["created_at"].endswith("+00:00")
    assert metrics["roc_auc"] > 0.8
    assert metrics["valid"]["n"] == 400
    # and the calibrator fitted on valid, with Brier and ECE on test before and after it
    assert manifest["calibration"]["method"] == "platt"
    assert manifest["calibration"]["slope"] > 0
    assert manifest["calibration"]["fitted_on"] == "valid"
    assert manifest["calibration"]["rows"] == 400
    calibration = metrics["calibration"]
    assert calibration["ece_bins"] == 10 and calibration["n"] == 400
    assert calibration["brier_after"] == pytest.approx(metrics["brier"])
    assert calibration["brier_after"] < calibration["brier_before"]
    assert 0 <= calibration["ece_after"] < calibration["ece_before"]
    assert "error" not in done.stderr
    assert "onnx parity" in done.stderr


def _rewrite_data(training_set: Path) -> None:
    frame = pd.read_parquet(io.BytesIO(crypto.unseal(training_set / "data.parquet")))
    frame.loc[0, "f0"] = 99.0
    crypto.seal(training_set / "data.parquet", frame.to_parquet(index=False))


def _flip_a_ciphertext_byte(training_set: Path) -> None:
    sealed = crypto.sealed_path(training_set / "data.parquet")
    blob = bytearray(sealed.read_bytes())
    blob[-100] ^= 0x01
    sealed.write_bytes(bytes(blob))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [(_rewrite_data, "sha256"), (_flip_a_ciphertext_byte, "does not authenticate")],
)
def test_tampered_training_set_is_refused_with_exit_2(tamper, message, tmp_path):
    # given a training set re-encrypted with other data, or with one ciphertext byte flipped
    training_set = write_training_set(tmp_path / "ts", n=300)
    tamper(training_set)
    # when training on it
    done = run_cli(
        "--training-set", str(training_set), "--family", "lightgbm", "--output", str(tmp_path / "out")
    )
    # then it refuses on one line, without a traceback, and writes nothing
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_family_exits_2(training_set, tmp_path):
    # given a family that is not registered / when training / then exit 2 names the known families
    done = run_cli(
        "--training-set", str(training_set), "--family", "xgboost", "--output", str(tmp_path / "o")
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: unknown family 'xgboost'; choose one of lightgbm, pytorch_mlp"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--family", "lightgbm", "--params", "{not json"], "not valid JSON"),
        (["--family", "lightgbm", "--params", "[1, 2]"], "must be a JSON object"),
        (["--family", "pytorch_mlp", "--params", '{"layers": [8]}'], "unknown pytorch_mlp params"),
        (["--family", "lightgbm", "--threshold", "2"], "--threshold"),
        (["--family", "lightgbm", "--output", "s3://bucket/models"], "file:// URIs"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message, training_set, tmp_path, capsys):
    # given a bad argument / when main runs / then exit 2 with the reason on one stderr line
    argv = ["--training-set", str(training_set), "--output", str(tmp_path / "o"), *args]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ")
    assert message in err[-1]


def test_missing_training_set_and_single_class_label_exit_2(tmp_path, capsys):
    # given a missing directory, and a training set whose label is always 0
    single_class = write_training_set(tmp_path / "zeros", n=200, label_value=0)
    missing = tmp_path / "nowhere"
    for directory, message in ((missing, "training set not found"), (single_class, "single class")):
        # when training on it / then exit 2 with the reason
        argv = ["--training-set", directory.as_uri(), "--family", "lightgbm", "--output", str(tmp_path / "o")]
        assert train.main(argv) == 2
        assert message in capsys.readouterr().err


def test_parity_failure_deletes_the_onnx_model_and_exits_3(training_set, tmp_path, monkeypatch, capsys):
    # given a family whose native probabilities drift 0.01 away from what its ONNX graph computes
    family = FAMILIES["lightgbm"]

    def drifting(fitted, X):
        return np.clip(family.predict_proba(fitted, X) * 0.98 + 0.01, 0.0, 1.0)

    monkeypatch.setitem(FAMILIES, "lightgbm", dataclasses.replace(family, predict_proba=drifting))
    output = tmp_path / "out"
    # when training
    argv = ["--training-set", str(training_set), "--family", "lightgbm", "--output", str(output)]
    argv += ["--params", json.dumps(PARAMS["lightgbm"])]
    code = train.main(argv)
    # then exit 3, no model.onnx is kept, and the manifest records the failed parity
    assert code == 3
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "metrics.json", "model.txt.enc"]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["parity"]["passed"] is False
    assert manifest["parity"]["max_abs_diff"] > 1e-3
    assert manifest["onnx_sha256"] is None
    assert "ONNX parity failed" in capsys.readouterr().err
