"""The one training entrypoint: verify a training set, fit a family, export ONNX, check parity.

Usage::

    python -m models.train --training-set DIR --family {lightgbm,pytorch_mlp} --params JSON \\
        --output DIR [--seed 42] [--threshold 0.5]

The training set's manifest names the task. Binary classification: probabilities, in ``metrics.json`` and
from the ONNX model (output ``probabilities``) alike, are Platt-calibrated on the valid split;
``metrics.json`` also compares Brier score and ECE on the test split before and after calibration.
Regression: predictions are in label units (ONNX output ``prediction``), ``metrics.json`` holds RMSE, MAE,
WAPE, bias and R² and those of the train-mean baseline; ``--threshold`` does not apply.

Exit codes: 0 trained and parity passed; 2 bad input (the reason is one line on stderr);
3 the ONNX model does not reproduce the native model (``model.onnx`` is not kept, the manifest
records the failed parity).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pipelines import crypto

from models.dataset import REGRESSION, TrainingSet, TrainingSetError, load_training_set, local_path

if TYPE_CHECKING:
    from models.interface import Family, Fitted

logger = logging.getLogger("models")

#: Largest |ONNX - native| P(y=1) of a classifier; a regressor's tolerances are in ``models.onnx_parity``.
PARITY_TOLERANCE = 1e-5
ONNX_FILENAME = "model.onnx"
EXIT_BAD_INPUT = 2
EXIT_PARITY_FAILED = 3
_VERSIONED = (
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "lightgbm",
    "torch",
    "onnx",
    "onnxmltools",
    "onnxscript",
    "onnxruntime",
)


class BadInput(Exception):
    """Input the caller must fix; reported as one line with exit code 2."""


@dataclass(frozen=True)
class TrainConfig:
    """Parsed, validated command-line arguments."""

    training_set: Path
    family: str
    params: dict[str, Any]
    output: Path
    seed: int
    threshold: float


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parses and validates the command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The validated configuration.

    Raises:
        BadInput: If ``--params`` is not a JSON object, the threshold is outside [0, 1], or a path
            is a URI other than ``file://``.
    """
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    parser.add_argument("--training-set", required=True, help="Directory or file:// URI with data.parquet")
    parser.add_argument("--family", required=True, help="lightgbm or pytorch_mlp")
    parser.add_argument("--params", default="{}", help="Family hyperparameters as a JSON object")
    parser.add_argument("--output", required=True, help="Directory or file:// URI for the model files")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threshold", type=float, default=0.5, help="Decision threshold for the metrics")
    args = parser.parse_args(argv)
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        raise BadInput(f"--params is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise BadInput(f"--params must be a JSON object, got {type(params).__name__}")
    if not 0.0 <= args.threshold <= 1.0:
        raise BadInput(f"--threshold must be in [0, 1], got {args.threshold}")
    try:
        training_set, output = local_path(args.training_set), local_path(args.output)
    except TrainingSetError as exc:
        raise BadInput(str(exc)) from None
    return TrainConfig(training_set, args.family, params, output, args.seed, args.threshold)


def run(config: TrainConfig) -> int:
    """Trains, evaluates, exports and parity-checks one model, writing everything to ``config.output``.

    Writes ``model.onnx`` and the native model, both encrypted (``.enc``), ``metrics.json`` and
    ``manifest.json`` (with ``task`` and the ONNX output it answers with, ``onnx_output``). For binary
    classification the metrics are those of the calibrated model on test, plus ``valid`` and
    ``calibration`` (Brier and ECE before and after), and the manifest holds the calibrator under
    ``calibration``. For regression the metrics are ``regression_metrics`` on test, plus ``valid`` and
    ``baseline`` (predicting the train label mean on test); the manifest's ``calibration`` and
    ``threshold`` are null and ``parity`` holds ``atol``, ``rtol`` and the largest relative difference.

    Args:
        config: Validated arguments.

    Returns:
        0 on success, 3 if ONNX parity failed.

    Raises:
        BadInput: For an unknown family, an invalid or tampered training set, or invalid params.
    """
    from models.families import FAMILIES
    from models.interface import ParamsError, onnx_output_name
    from models.onnx_parity import (
        ParityResult,
        RegressionParityResult,
        check_parity,
        check_regression_parity,
        onnx_signature,
    )

    if config.family not in FAMILIES:
        raise BadInput(f"unknown family '{config.family}'; choose one of {', '.join(sorted(FAMILIES))}")
    family = FAMILIES[config.family]
    try:
        data = load_training_set(config.training_set)
    except TrainingSetError as exc:
        raise BadInput(str(exc)) from None
    regression = data.task == REGRESSION
    logger.info(
        "training %s for %s on %d rows (%d valid, %d test), %d features, seed %d",
        family.name,
        data.task,
        len(data.train.y),
        len(data.valid.y),
        len(data.test.y),
        len(data.features),
        config.seed,
    )

    started = time.perf_counter()
    try:
        fitted = family.fit(data.train, data.valid, config.params, config.seed)
    except ParamsError as exc:
        raise BadInput(str(exc)) from None
    train_seconds = time.perf_counter() - started

    # What the ONNX output must reproduce on test: a regressor's prediction, P(y=1) of a classifier.
    if regression:
        test_scores = family.predict(fitted, data.test.X)
        metrics = _regression_metrics(family, fitted, data, test_scores)
    else:
        test_scores = family.predict_proba(fitted, data.test.X)
        metrics = _binary_metrics(family, fitted, data, config.threshold, test_scores)

    output = config.output
    output.mkdir(parents=True, exist_ok=True)
    # A manifest left by an earlier run must not vouch for the files this run rewrites.
    (output / "manifest.json").unlink(missing_ok=True)
    _write_json(output / "metrics.json", metrics)
    # Models lie encrypted at rest: the exporters write plaintext to an owner-only scratch folder only.
    with tempfile.TemporaryDirectory(prefix="falaj-model-") as scratch:
        native_path = family.save_native(fitted, Path(scratch))
        onnx_path = Path(scratch) / ONNX_FILENAME
        family.export_onnx(fitted, len(data.features), onnx_path)
        parity: ParityResult | RegressionParityResult
        if regression:
            parity = check_regression_parity(onnx_path, test_scores, data.test.X)
        else:
            parity = check_parity(onnx_path, test_scores, data.test.X, PARITY_TOLERANCE)
        signature = onnx_signature(onnx_path)
        onnx_model = onnx_path.read_bytes()
        crypto.seal(output / native_path.name, native_path.read_bytes())
    if parity.passed:
        crypto.seal(output / ONNX_FILENAME, onnx_model)
    else:
        crypto.sealed_path(output / ONNX_FILENAME).unlink(missing_ok=True)
    logger.info("onnx parity on %d test rows: max_abs_diff=%.3g", parity.n_rows, parity.max_abs_diff)

    calibration = None
    if fitted.calibrator is not None:
        calibration = {**fitted.calibrator.as_dict(), "fitted_on": "valid", "rows": len(data.valid.y)}
    manifest = {
        "family": family.name,
        "task": data.task,
        "params": config.params,
        "seed": config.seed,
        "threshold": None if regression else config.threshold,
        "features": list(data.features),
        "label": data.label,
        "training_set": str(config.training_set),
        "training_set_sha256": data.sha256,
        "native_model": native_path.name,
        "onnx_model": ONNX_FILENAME if parity.passed else None,
        "onnx_sha256": hashlib.sha256(onnx_model).hexdigest() if parity.passed else None,
        "encryption": "AES-256-GCM envelope (pipelines.crypto); files end in .enc",
        "onnx_inputs": list(signature.inputs),
        "onnx_outputs": list(signature.outputs),
        "onnx_output": onnx_output_name(data.task),
        "parity": asdict(parity) if regression else {**asdict(parity), "tolerance": PARITY_TOLERANCE},
        "fit": dict(fitted.summary),
        "calibration": calibration,
        "device": fitted.device,
        "train_seconds": round(train_seconds, 3),
        "library_versions": _library_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if not parity.passed:
        _write_json(output / "manifest.json", manifest)
        if isinstance(parity, RegressionParityResult):
            gap = (
                f"max_abs_diff {parity.max_abs_diff:.3g}, max_rel_diff {parity.max_rel_diff:.3g}: "
                f"beyond {parity.atol} + {parity.rtol} * |native|"
            )
        else:
            gap = f"max_abs_diff {parity.max_abs_diff:.3g} > {PARITY_TOLERANCE}"
        print(
            f"error: ONNX parity failed: {gap} on {parity.n_rows} test rows; model.onnx not kept",
            file=sys.stderr,
        )
        return EXIT_PARITY_FAILED
    _write_json(output / "manifest.json", manifest)
    logger.info("wrote %s", output)
    return 0


def _binary_metrics(
    family: Family, fitted: Fitted, data: TrainingSet, threshold: float, test_proba: np.ndarray
) -> dict[str, Any]:
    from models.calibration import sigmoid
    from models.metrics import calibration_metrics, classification_metrics

    valid_proba = family.predict_proba(fitted, data.valid.X)
    uncalibrated = sigmoid(family.predict_margin(fitted, data.test.X))
    metrics: dict[str, Any] = {
        **classification_metrics(data.test.y, test_proba, threshold),
        "valid": classification_metrics(data.valid.y, valid_proba, threshold),
        "calibration": calibration_metrics(data.test.y, uncalibrated, test_proba),
    }
    logger.info("test roc_auc=%.4f pr_auc=%.4f", metrics["roc_auc"], metrics["pr_auc"])
    logger.info(
        "test brier %.5f -> %.5f, ece %.5f -> %.5f after calibration",
        *(metrics["calibration"][key] for key in ("brier_before", "brier_after", "ece_before", "ece_after")),
    )
    return metrics


def _regression_metrics(
    family: Family, fitted: Fitted, data: TrainingSet, test_prediction: np.ndarray
) -> dict[str, Any]:
    from models.metrics import regression_metrics

    # The floor any model must clear: predict the train label mean for every test row.
    baseline = np.full(len(data.test.y), float(np.mean(data.train.y, dtype=np.float64)))
    metrics: dict[str, Any] = {
        **regression_metrics(data.test.y, test_prediction),
        "valid": regression_metrics(data.valid.y, family.predict(fitted, data.valid.X)),
        "baseline": {"predicts": "train label mean", **regression_metrics(data.test.y, baseline)},
    }
    logger.info(
        "test rmse=%.4f (train-mean baseline %.4f) mae=%.4f wape=%.4f bias=%.4f r2=%.4f",
        metrics["rmse"],
        metrics["baseline"]["rmse"],
        metrics["mae"],
        metrics["wape"],
        metrics["bias"],
        metrics["r2"],
    )
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entrypoint; returns the process exit code."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return run(parse_args(argv))
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        logger.removeHandler(handler)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(_finite(payload), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    # Strict JSON has no NaN or Infinity; a non-finite number becomes null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


if __name__ == "__main__":
    sys.exit(main())
