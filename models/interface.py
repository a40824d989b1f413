"""The contract every model family implements, so training, export and parity stay family-agnostic."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.calibration import PlattCalibrator
from models.dataset import BINARY_CLASSIFICATION, REGRESSION, TASKS, Dataset

#: Name of the ONNX input every family exports: raw float32 features, shape [N, F], NaN allowed.
ONNX_INPUT = "input"
#: ONNX output of a binary classifier: [N, 2] float32 = [P(y=0), P(y=1)], calibrated.
ONNX_PROBABILITIES = "probabilities"
#: ONNX output of a regressor: [N] float32 predictions in label units.
ONNX_PREDICTION = "prediction"
#: The output that carries the model's answer, per task.
ONNX_OUTPUTS = {BINARY_CLASSIFICATION: ONNX_PROBABILITIES, REGRESSION: ONNX_PREDICTION}


def onnx_output_name(task: str) -> str:
    """Names the ONNX output a model of ``task`` answers with.

    Args:
        task: ``binary_classification`` or ``regression``.

    Returns:
        ``probabilities`` for binary classification, ``prediction`` for regression.

    Raises:
        ValueError: Naming the known tasks, for any other task.
    """
    if task not in ONNX_OUTPUTS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return ONNX_OUTPUTS[task]


class ParamsError(ValueError):
    """Hyperparameters a family cannot use; the message names the parameter."""


class Fitted(Protocol):
    """What every family's fitted model exposes besides the model itself."""

    @property
    def device(self) -> str:
        """Where it was trained, e.g. ``cpu`` or ``cuda``."""
        ...

    @property
    def summary(self) -> Mapping[str, Any]:
        """JSON-serialisable facts about the fit, e.g. the best iteration or epoch."""
        ...

    @property
    def task(self) -> str:
        """``binary_classification`` or ``regression``: the task of the dataset it was fitted on."""
        ...

    @property
    def calibrator(self) -> PlattCalibrator | None:
        """A classifier's map from log-odds to the probabilities it returns; None for a regressor."""
        ...


@dataclass(frozen=True)
class Family:
    """One model family: fit, predict, save natively and export to ONNX, for every task in ``TASKS``.

    Attributes:
        name: Registry key, e.g. ``lightgbm``.
        native_filename: File name ``save_native`` writes inside its directory.
        fit: ``(train, valid, params, seed) -> fitted``; the task is ``train.task``. Early-stops on
            ``valid``; a classifier then fits its calibrator on ``valid``.
        predict_proba: ``(fitted, X) -> [N]`` float calibrated probabilities of the positive class;
            classifiers only.
        predict_margin: ``(fitted, X) -> [N]`` float score before calibration or the inverse link:
            a classifier's log-odds, a regressor's raw output.
        save_native: ``(fitted, directory) -> path`` of the native model file.
        export_onnx: ``(fitted, n_features, path) -> None``; the graph takes ``input`` [N, F] float32
            and returns the calibrated ``probabilities`` [N, 2] of a classifier or the ``prediction``
            [N] of a regressor.
        predict: ``(fitted, X) -> [N]`` float what the ONNX output carries: P(y=1) of a classifier,
            the prediction in label units of a regressor.
    """

    name: str
    native_filename: str
    fit: Callable[[Dataset, Dataset, Mapping[str, Any], int], Fitted]
    predict_proba: Callable[[Any, np.ndarray], np.ndarray]
    predict_margin: Callable[[Any, np.ndarray], np.ndarray]
    save_native: Callable[[Any, Path], Path]
    export_onnx: Callable[[Any, int, Path], None]
    predict: Callable[[Any, np.ndarray], np.ndarray]
