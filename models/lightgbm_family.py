"""LightGBM binary classifier: Booster API, imbalance-weighted, early-stopped, deterministic."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from models.dataset import Dataset
from models.interface import ONNX_INPUT, Family, ParamsError

logger = logging.getLogger(__name__)

NATIVE_FILENAME = "model.txt"
DEFAULT_N_ESTIMATORS = 500
DEFAULT_EARLY_STOPPING_ROUNDS = 50
DEFAULT_NUM_THREADS = 2
LOG_EVERY = 50
ONNX_TARGET_OPSET = 15

# Keys that would silently break the binary-probability contract or the seeding.
_FIXED = (
    "objective",
    "num_class",
    "seed",
    "random_state",
    "random_seed",
    "num_iterations",
    "num_boost_round",
)


@dataclass(frozen=True)
class FittedLightGBM:
    """A trained booster, already truncated to its best iteration.

    Attributes:
        booster: Holds exactly the trees of the best iteration, so native and ONNX predictions agree.
        best_iteration: Number of boosting rounds kept.
        params: The LightGBM parameters used, after defaults.
    """

    booster: lgb.Booster
    best_iteration: int
    params: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"

    @property
    def summary(self) -> Mapping[str, Any]:
        return {"best_iteration": self.best_iteration, "num_trees": self.booster.num_trees()}


def fit(train: Dataset, valid: Dataset, params: Mapping[str, Any], seed: int) -> FittedLightGBM:
    """Trains a binary LightGBM booster with early stopping on ``valid``.

    Args:
        train: Rows to fit; NaN features are handled natively.
        valid: Rows for early stopping on average precision.
        params: ``n_estimators`` (boosting rounds, default 500), ``early_stopping_rounds`` (default 50),
            optional ``scale_pos_weight`` (default negatives/positives of ``train``), and any other
            LightGBM parameter such as ``num_leaves`` or ``learning_rate``.
        seed: Seeds every LightGBM random source.

    Returns:
        The booster truncated to its best iteration.

    Raises:
        ParamsError: If a parameter is fixed by this family or LightGBM rejects it.
    """
    booster_params, rounds, patience = _booster_params(train, params, seed)
    train_set = lgb.Dataset(train.X, label=train.y, free_raw_data=False)
    valid_set = lgb.Dataset(valid.X, label=valid.y, reference=train_set, free_raw_data=False)
    try:
        booster = lgb.train(
            booster_params,
            train_set,
            num_boost_round=rounds,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[lgb.early_stopping(patience, verbose=False), _log_progress],
        )
    except lgb.basic.LightGBMError as exc:
        raise ParamsError(f"LightGBM rejected the parameters: {exc}") from exc
    best = booster.best_iteration or booster.current_iteration()
    logger.info("[lightgbm] keeping the best iteration: %d", best)
    # Drop the trees after the best iteration: the saved model, the ONNX graph and predict then agree.
    best_booster = lgb.Booster(model_str=float32_thresholds(booster.model_to_string(num_iteration=best)))
    return FittedLightGBM(best_booster, best, booster_params)


def float32_thresholds(model_text: str) -> str:
    """Round every numerical split threshold down to the largest float32 not above it.

    ONNX Runtime compares float32 inputs with float32 thresholds; LightGBM keeps doubles. A double
    threshold rounded to the *nearest* float32 can land on a data value and send it the other way, so
    ONNX and native scores disagree (seen: 8e-3 on 24,000 rows). No float32 lies between a threshold
    and its float32 floor, so for float32 inputs, which is all the platform ever feeds, every split
    decides exactly as before, and the ONNX graph now holds the very same thresholds.
    """
    lines = model_text.splitlines()
    trees: list[dict[str, int]] = []
    for index, line in enumerate(lines):
        if line.startswith("Tree="):
            trees.append({})
        elif trees and line.startswith(("threshold=", "decision_type=")):
            trees[-1][line.split("=", 1)[0]] = index
    for tree in trees:
        if "threshold" not in tree:
            continue  # a single-leaf tree has no splits
        values = lines[tree["threshold"]].split("=", 1)[1].split()
        kinds = [int(v) for v in lines[tree["decision_type"]].split("=", 1)[1].split()]
        fixed = [
            value if kind & 1 else repr(float(_float32_floor(float(value))))  # bit 0: categorical
            for value, kind in zip(values, kinds, strict=True)
        ]
        lines[tree["threshold"]] = "threshold=" + " ".join(fixed)
    # tree_sizes gives each tree's byte length, which the rewrite changes; LightGBM parses without it.
    return "\n".join(line for line in lines if not line.startswith("tree_sizes=")) + "\n"


def _float32_floor(value: float) -> np.float32:
    nearest = np.float32(value)
    return np.nextafter(nearest, np.float32(-np.inf)) if float(nearest) > value else nearest


def predict_proba(fitted: FittedLightGBM, X: np.ndarray) -> np.ndarray:
    """Returns P(y=1) for each row of ``X`` as a float64 array of shape [N]."""
    return np.asarray(fitted.booster.predict(np.asarray(X, dtype=np.float32)), dtype=np.float64)


def save_native(fitted: FittedLightGBM, directory: Path) -> Path:
    """Writes the booster as LightGBM text to ``directory/model.txt`` and returns the path."""
    path = Path(directory) / NATIVE_FILENAME
    fitted.booster.save_model(str(path))
    return path


def export_onnx(fitted: FittedLightGBM, n_features: int, path: Path) -> None:
    """Converts the booster to ONNX with outputs ``label`` [N] and ``probabilities`` [N, 2].

    Args:
        fitted: The trained booster.
        n_features: Width of the float32 ``input``.
        path: Where to write the single-file ONNX model.
    """
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    onnx_model = convert_lightgbm(
        fitted.booster,
        initial_types=[(ONNX_INPUT, FloatTensorType([None, n_features]))],
        zipmap=False,
        target_opset=ONNX_TARGET_OPSET,
    )
    # The converter declares "label" as shape [1]; name one dynamic batch axis "N" on input and outputs.
    for value in [*onnx_model.graph.input, *onnx_model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "N"
    Path(path).write_bytes(onnx_model.SerializeToString())


def _booster_params(train: Dataset, params: Mapping[str, Any], seed: int) -> tuple[dict[str, Any], int, int]:
    fixed = sorted(set(params) & set(_FIXED))
    if fixed:
        raise ParamsError(f"lightgbm params {fixed} are set by the platform; use n_estimators and --seed")
    rest = dict(params)
    rounds = _positive_int(rest.pop("n_estimators", DEFAULT_N_ESTIMATORS), "n_estimators")
    patience = _positive_int(
        rest.pop("early_stopping_rounds", DEFAULT_EARLY_STOPPING_ROUNDS), "early_stopping_rounds"
    )
    positives = train.positives
    booster_params: dict[str, Any] = {
        "objective": "binary",
        # Early stopping watches a ranking metric: with scale_pos_weight the weighted log loss on the
        # unweighted validation set rises after a handful of trees and would stop training far too soon.
        "metric": "average_precision",
        "scale_pos_weight": (len(train.y) - positives) / positives,
        "deterministic": True,
        "force_row_wise": "force_col_wise" not in rest,
        "num_threads": DEFAULT_NUM_THREADS,
        "verbosity": -1,
        **rest,
        "seed": seed,
    }
    return booster_params, rounds, patience


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParamsError(f"lightgbm param '{name}' must be a positive integer, got {value!r}")
    return value


def _log_progress(env: lgb.callback.CallbackEnv) -> None:
    round_ = env.iteration + 1
    if round_ % LOG_EVERY == 0:
        scores = ", ".join(
            f"{data} {metric}={value:.5f}" for data, metric, value, *_ in env.evaluation_result_list or []
        )
        logger.info("[lightgbm] round %d: %s", round_, scores)


FAMILY = Family(
    name="lightgbm",
    native_filename=NATIVE_FILENAME,
    fit=fit,
    predict_proba=predict_proba,
    save_native=save_native,
    export_onnx=export_onnx,
)
