"""Checks that an exported ONNX model reproduces the native model: probabilities or predictions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.interface import BINARY_CLASSIFICATION, REGRESSION, onnx_output_name

#: A regressor's ONNX prediction may differ from the native one by ``atol + rtol * |native|`` per row:
#: float32 leaf values, weights and sums are good to about 1e-7 relative, so a correct export keeps far
#: inside this, while a wrong link, a missing target scaling or a dropped tree does not.
REGRESSION_ATOL = 1e-4
REGRESSION_RTOL = 1e-5


@dataclass(frozen=True)
class ParityResult:
    """Outcome of a parity check.

    Attributes:
        max_abs_diff: Largest |onnx - native| probability over the rows; ``inf`` if ONNX gave NaN.
        passed: ``max_abs_diff <= tolerance``.
        n_rows: Rows compared.
    """

    max_abs_diff: float
    passed: bool
    n_rows: int


@dataclass(frozen=True)
class RegressionParityResult:
    """Outcome of a regression parity check.

    Attributes:
        max_abs_diff: Largest |onnx - native| over the rows, in label units; ``inf`` if either is not finite.
        max_rel_diff: Largest |onnx - native| / |native| over the rows where native is not 0 (0 when
            there is none); ``inf`` if either is not finite.
        passed: Every row has ``|onnx - native| <= atol + rtol * |native|``.
        n_rows: Rows compared.
        atol: Absolute tolerance used.
        rtol: Relative tolerance used.
    """

    max_abs_diff: float
    max_rel_diff: float
    passed: bool
    n_rows: int
    atol: float
    rtol: float


@dataclass(frozen=True)
class OnnxSignature:
    """Input and output names of an ONNX model, in graph order."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def onnx_scores(onnx_path: Path, X: np.ndarray, task: str = BINARY_CLASSIFICATION) -> np.ndarray:
    """Runs the ONNX model on one CPU thread and returns its answer for ``task``, shape [N].

    Args:
        onnx_path: A model with one float32 input and the output ``onnx_output_name(task)`` names.
        X: Raw features, shape [N, F]; cast to float32.
        task: ``binary_classification`` reads column 1 of ``probabilities`` [N, 2]; ``regression``
            reads ``prediction`` [N] (or [N, 1]).

    Returns:
        P(y=1) or the prediction in label units, as float64.

    Raises:
        ValueError: For an unknown task, or a ``prediction`` that is not [N] or [N, 1].
    """
    name = onnx_output_name(task)
    session = _session(onnx_path)
    input_name = session.get_inputs()[0].name
    (output,) = session.run([name], {input_name: np.ascontiguousarray(X, dtype=np.float32)})
    values = np.asarray(output, dtype=np.float64)
    if task == REGRESSION:
        if values.ndim == 2 and values.shape[1] == 1:
            return values[:, 0]
        if values.ndim != 1:
            raise ValueError(f"ONNX output '{name}' has shape {values.shape}; expected [N] or [N, 1]")
        return values
    return values[:, 1]


def onnx_probabilities(onnx_path: Path, X: np.ndarray) -> np.ndarray:
    """Runs the ONNX model on one CPU thread and returns P(y=1), shape [N].

    Args:
        onnx_path: A model with one float32 input and a ``probabilities`` [N, 2] output.
        X: Raw features, shape [N, F]; cast to float32.

    Returns:
        Column 1 of ``probabilities`` as float64.
    """
    return onnx_scores(onnx_path, X, BINARY_CLASSIFICATION)


def onnx_predictions(onnx_path: Path, X: np.ndarray) -> np.ndarray:
    """Runs a regressor's ONNX model on one CPU thread and returns its ``prediction``, shape [N], float64."""
    return onnx_scores(onnx_path, X, REGRESSION)


def check_parity(
    onnx_path: Path, native_proba: np.ndarray, X: np.ndarray, tolerance: float = 1e-5
) -> ParityResult:
    """Compares ONNX Runtime's P(y=1) with the native model's on the same rows.

    Args:
        onnx_path: The exported model.
        native_proba: The native model's P(y=1) for ``X``, shape [N].
        X: The rows, shape [N, F].
        tolerance: Largest allowed absolute difference.

    Returns:
        The largest difference and whether it is within ``tolerance``.

    Raises:
        ValueError: If ``native_proba`` and ``X`` disagree on the number of rows.
    """
    native = np.asarray(native_proba, dtype=np.float64).reshape(-1)
    if len(native) != len(X):
        raise ValueError(f"native_proba has {len(native)} rows but X has {len(X)}")
    onnx = onnx_probabilities(onnx_path, X)
    diff = np.abs(onnx - native)
    max_abs_diff = float(diff.max(initial=0.0)) if np.isfinite(diff).all() else float("inf")
    return ParityResult(max_abs_diff=max_abs_diff, passed=max_abs_diff <= tolerance, n_rows=len(native))


def check_regression_parity(
    onnx_path: Path,
    native_prediction: np.ndarray,
    X: np.ndarray,
    atol: float = REGRESSION_ATOL,
    rtol: float = REGRESSION_RTOL,
) -> RegressionParityResult:
    """Compares ONNX Runtime's ``prediction`` with the native model's on the same rows.

    Predictions are in label units, whose scale depends on the use case, so a row passes when
    ``|onnx - native| <= atol + rtol * |native|``, the rule of ``numpy.isclose``; every row must pass.

    Args:
        onnx_path: The exported regressor.
        native_prediction: The native model's predictions for ``X``, shape [N].
        X: The rows, shape [N, F].
        atol: Absolute tolerance, in label units.
        rtol: Tolerance relative to the native prediction.

    Returns:
        The largest absolute and relative differences and whether every row is within tolerance.

    Raises:
        ValueError: If ``native_prediction`` and ``X`` disagree on the number of rows, or a tolerance
            is negative.
    """
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol and rtol must be non-negative, got {atol} and {rtol}")
    native = np.asarray(native_prediction, dtype=np.float64).reshape(-1)
    if len(native) != len(X):
        raise ValueError(f"native_prediction has {len(native)} rows but X has {len(X)}")
    onnx = onnx_predictions(onnx_path, X)
    if len(onnx) != len(native):
        raise ValueError(f"the ONNX model returned {len(onnx)} predictions for {len(native)} rows")
    diff = np.abs(onnx - native)
    if not (np.isfinite(diff).all() and np.isfinite(native).all()):
        inf = float("inf")
        return RegressionParityResult(inf, inf, False, len(native), atol, rtol)
    scale = np.abs(native)
    relative = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    return RegressionParityResult(
        max_abs_diff=float(diff.max(initial=0.0)),
        max_rel_diff=float(relative.max(initial=0.0)),
        passed=bool((diff <= atol + rtol * scale).all()),
        n_rows=len(native),
        atol=atol,
        rtol=rtol,
    )


def onnx_signature(onnx_path: Path) -> OnnxSignature:
    """Reads the input and output names of an ONNX model without loading its weights."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return OnnxSignature(tuple(i.name for i in graph.input), tuple(o.name for o in graph.output))


def _session(onnx_path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
