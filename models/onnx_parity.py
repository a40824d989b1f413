"""Checks that an exported ONNX model reproduces the native model's probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.interface import ONNX_PROBABILITIES


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
class OnnxSignature:
    """Input and output names of an ONNX model, in graph order."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def onnx_probabilities(onnx_path: Path, X: np.ndarray) -> np.ndarray:
    """Runs the ONNX model on one CPU thread and returns P(y=1), shape [N].

    Args:
        onnx_path: A model with one float32 input and a ``probabilities`` [N, 2] output.
        X: Raw features, shape [N, F]; cast to float32.

    Returns:
        Column 1 of ``probabilities`` as float64.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    (probabilities,) = session.run(
        [ONNX_PROBABILITIES], {input_name: np.ascontiguousarray(X, dtype=np.float32)}
    )
    return np.asarray(probabilities, dtype=np.float64)[:, 1]


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


def onnx_signature(onnx_path: Path) -> OnnxSignature:
    """Reads the input and output names of an ONNX model without loading its weights."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return OnnxSignature(tuple(i.name for i in graph.input), tuple(o.name for o in graph.output))
