"""The contract every model family implements, so training, export and parity stay family-agnostic."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.calibration import PlattCalibrator
from models.dataset import Dataset

#: Name of the ONNX input every family exports: raw float32 features, shape [N, F], NaN allowed.
ONNX_INPUT = "input"
#: Name of the ONNX output every family exports: [N, 2] float32 = [P(y=0), P(y=1)], calibrated.
ONNX_PROBABILITIES = "probabilities"


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
    def calibrator(self) -> PlattCalibrator:
        """Maps the model's log-odds to the probabilities ``predict_proba`` and the ONNX graph return."""
        ...


@dataclass(frozen=True)
class Family:
    """One model family: fit, predict, save natively and export to ONNX.

    Attributes:
        name: Registry key, e.g. ``lightgbm``.
        native_filename: File name ``save_native`` writes inside its directory.
        fit: ``(train, valid, params, seed) -> fitted``; early-stops on ``valid``, then fits the
            calibrator on ``valid``.
        predict_proba: ``(fitted, X) -> [N]`` float calibrated probabilities of the positive class.
        predict_margin: ``(fitted, X) -> [N]`` float log-odds before calibration.
        save_native: ``(fitted, directory) -> path`` of the native model file.
        export_onnx: ``(fitted, n_features, path) -> None``; the graph takes ``input`` [N, F] float32
            and returns the calibrated ``probabilities`` [N, 2].
    """

    name: str
    native_filename: str
    fit: Callable[[Dataset, Dataset, Mapping[str, Any], int], Fitted]
    predict_proba: Callable[[Any, np.ndarray], np.ndarray]
    predict_margin: Callable[[Any, np.ndarray], np.ndarray]
    save_native: Callable[[Any, Path], Path]
    export_onnx: Callable[[Any, int, Path], None]
