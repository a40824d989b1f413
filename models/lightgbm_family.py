"""LightGBM on the Booster API, early-stopped and deterministic, for both tasks.

Binary classification: imbalance-weighted and Platt-calibrated. Regression: an objective from
``REGRESSION_OBJECTIVES``, predictions in label units, no calibration.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np

from models.calibration import PlattCalibrator, fit_platt
from models.dataset import BINARY_CLASSIFICATION, REGRESSION, Dataset
from models.interface import ONNX_INPUT, ONNX_PREDICTION, ONNX_PROBABILITIES, Family, ParamsError

if TYPE_CHECKING:
    import onnx

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
#: Objectives a regressor may name in params, each with the metric it early-stops on.
REGRESSION_OBJECTIVES = {
    "regression": "l2",
    "regression_l1": "l1",
    "huber": "l2",
    "poisson": "l2",
    "tweedie": "l2",
}
DEFAULT_REGRESSION_OBJECTIVE = "regression"
#: Objectives whose raw score is log(prediction): the prediction is exp(raw score).
LOG_LINK_OBJECTIVES = frozenset({"poisson", "tweedie"})
# For regression, 'objective' is free (within REGRESSION_OBJECTIVES), but not its aliases, the class
# count, the imbalance weights of a classifier, the seeds or the rounds.
_FIXED_REGRESSION = (
    "objective_type",
    "app",
    "application",
    "loss",
    "num_class",
    "scale_pos_weight",
    "is_unbalance",
    "unbalance",
    "unbalanced_sets",
    "seed",
    "random_state",
    "random_seed",
    "num_iterations",
    "num_boost_round",
)


@dataclass(frozen=True)
class FittedLightGBM:
    """A trained booster, already truncated to its best iteration, and a classifier's calibrator.

    Attributes:
        booster: Holds exactly the trees of the best iteration, so native and ONNX predictions agree.
        best_iteration: Number of boosting rounds kept.
        params: The LightGBM parameters used, after defaults.
        calibrator: Maps a classifier's raw score to calibrated probabilities, fitted on ``valid``;
            None for a regressor.
        task: ``binary_classification`` or ``regression``.
    """

    booster: lgb.Booster
    best_iteration: int
    params: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    calibrator: PlattCalibrator | None = field(default_factory=PlattCalibrator)
    task: str = BINARY_CLASSIFICATION

    @property
    def summary(self) -> Mapping[str, Any]:
        facts: dict[str, Any] = {"best_iteration": self.best_iteration, "num_trees": self.booster.num_trees()}
        if self.task == REGRESSION:
            facts["objective"] = self.params["objective"]
        return facts

    @property
    def log_link(self) -> bool:
        """Whether the prediction is exp(raw score), as for the poisson and tweedie objectives."""
        return self.task == REGRESSION and self.params.get("objective") in LOG_LINK_OBJECTIVES


def fit(train: Dataset, valid: Dataset, params: Mapping[str, Any], seed: int) -> FittedLightGBM:
    """Trains a LightGBM booster for ``train.task`` with early stopping on ``valid``.

    A binary classifier is then calibrated on ``valid``; a regressor is not.

    Args:
        train: Rows to fit; NaN features are handled natively.
        valid: Rows for early stopping: on average precision for binary classification, on l2 for
            regression (l1 for ``regression_l1``).
        params: ``n_estimators`` (boosting rounds, default 500), ``early_stopping_rounds`` (default 50),
            and any other LightGBM parameter such as ``num_leaves`` or ``learning_rate``. Binary
            classification: optional ``scale_pos_weight`` (default negatives/positives of ``train``).
            Regression: optional ``objective``, one of ``REGRESSION_OBJECTIVES`` (default ``regression``).
        seed: Seeds every LightGBM random source.

    Returns:
        The booster truncated to its best iteration; a classifier's with Platt scaling fitted on its
        raw scores.

    Raises:
        ParamsError: If a parameter is fixed by this family, LightGBM rejects it, or a regression
            objective is unknown or needs non-negative labels and ``train`` or ``valid`` has a negative one.
    """
    if train.task != valid.task:
        raise ValueError(f"train is {train.task} but valid is {valid.task}")
    if train.task == REGRESSION:
        return _fit_regression(train, valid, params, seed)
    booster_params, rounds, patience = _booster_params(train, params, seed)
    booster = _train(booster_params, train, valid, rounds, patience)
    best = booster.best_iteration or booster.current_iteration()
    logger.info("[lightgbm] keeping the best iteration: %d", best)
    # Drop the trees after the best iteration: the saved model, the ONNX graph and predict then agree.
    best_booster = lgb.Booster(model_str=float32_thresholds(booster.model_to_string(num_iteration=best)))
    calibrator = fit_platt(_raw_score(best_booster, valid.X), valid.y)
    logger.info(
        "[lightgbm] platt calibration: slope=%.5f intercept=%.5f", calibrator.slope, calibrator.intercept
    )
    return FittedLightGBM(best_booster, best, booster_params, calibrator=calibrator)


def _fit_regression(train: Dataset, valid: Dataset, params: Mapping[str, Any], seed: int) -> FittedLightGBM:
    booster_params, rounds, patience = _regression_params(params, seed)
    objective = booster_params["objective"]
    if objective in LOG_LINK_OBJECTIVES:
        for split, data in (("train", train), ("valid", valid)):
            negative = int(np.count_nonzero(data.y < 0))
            if negative:
                raise ParamsError(
                    f"lightgbm objective '{objective}' needs non-negative labels; {split} has {negative} "
                    "negative; use objective 'regression' or 'huber'"
                )
    booster = _train(booster_params, train, valid, rounds, patience)
    best = booster.best_iteration or booster.current_iteration()
    logger.info("[lightgbm] %s: keeping the best iteration: %d", objective, best)
    best_booster = lgb.Booster(model_str=float32_thresholds(booster.model_to_string(num_iteration=best)))
    return FittedLightGBM(best_booster, best, booster_params, calibrator=None, task=REGRESSION)


def _train(
    booster_params: dict[str, Any], train: Dataset, valid: Dataset, rounds: int, patience: int
) -> lgb.Booster:
    train_set = lgb.Dataset(train.X, label=train.y, free_raw_data=False)
    valid_set = lgb.Dataset(valid.X, label=valid.y, reference=train_set, free_raw_data=False)
    try:
        return lgb.train(
            booster_params,
            train_set,
            num_boost_round=rounds,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[lgb.early_stopping(patience, verbose=False), _log_progress],
        )
    except lgb.basic.LightGBMError as exc:
        raise ParamsError(f"LightGBM rejected the parameters: {exc}") from exc


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
    """Returns calibrated P(y=1) for each row of ``X`` as a float64 array of shape [N].

    Raises:
        ValueError: For a regressor, which has no probabilities; use ``predict``.
    """
    if fitted.calibrator is None:
        raise ValueError(f"a {fitted.task} model has no probabilities; use predict")
    return fitted.calibrator.probabilities(predict_margin(fitted, X))


def predict_margin(fitted: FittedLightGBM, X: np.ndarray) -> np.ndarray:
    """Returns the booster's raw score as float64 of shape [N].

    For a classifier that is the uncalibrated log-odds; for a regressor the score before the inverse
    link: the prediction itself, or its log for the poisson and tweedie objectives.
    """
    return _raw_score(fitted.booster, X)


def predict(fitted: FittedLightGBM, X: np.ndarray) -> np.ndarray:
    """Returns what the ONNX output carries, float64 of shape [N].

    A regressor's prediction in label units (exp of the raw score for poisson and tweedie); a
    classifier's calibrated P(y=1).
    """
    if fitted.task != REGRESSION:
        return predict_proba(fitted, X)
    raw = _raw_score(fitted.booster, X)
    return np.exp(raw) if fitted.log_link else raw


def _raw_score(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(np.asarray(X, dtype=np.float32), raw_score=True), dtype=np.float64)


def save_native(fitted: FittedLightGBM, directory: Path) -> Path:
    """Writes the uncalibrated booster as LightGBM text to ``directory/model.txt`` and returns the path.

    The calibrator is not part of the file; ``models.train`` records it in the manifest. A regressor's
    file names its objective, so ``lgb.Booster(model_file=...).predict`` returns label units.
    """
    path = Path(directory) / NATIVE_FILENAME
    fitted.booster.save_model(str(path))
    return path


def export_onnx(fitted: FittedLightGBM, n_features: int, path: Path) -> None:
    """Converts the booster to ONNX.

    A classifier's graph outputs ``label`` [N] and calibrated ``probabilities`` [N, 2]; a regressor's
    outputs ``prediction`` [N] float32 in label units.

    Args:
        fitted: The trained booster and, for a classifier, its calibrator.
        n_features: Width of the float32 ``input``.
        path: Where to write the single-file ONNX model.
    """
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    converted = convert_lightgbm(
        fitted.booster,
        initial_types=[(ONNX_INPUT, FloatTensorType([None, n_features]))],
        zipmap=False,
        target_opset=ONNX_TARGET_OPSET,
    )
    if fitted.calibrator is None:
        model = regression_graph(converted, log_link=fitted.log_link)
    else:
        model = calibrated_graph(converted, fitted.calibrator)
    Path(path).write_bytes(model.SerializeToString())


def regression_graph(converted: onnx.ModelProto, log_link: bool) -> onnx.ModelProto:
    """Rebuilds the converter's regressor graph so it outputs ``prediction`` [N] in label units.

    onnxmltools (1.16) converts a regression booster to a TreeEnsembleRegressor with output [N, 1]
    named ``variable``, followed by an Exp node for the poisson, gamma and tweedie objectives (the spec
    has no Exp post_transform) and an Identity otherwise. The rebuilt graph keeps the same trees but
    sums them in float64: ``raw_score = TreeEnsembleRegressor(Cast<double>(input))``, then ``Exp`` when
    ``log_link``, then a Reshape to [N]. Labels in the thousands summed over hundreds of trees in
    float32 drift by a few 1e-6 relative; in float64 only the float32 leaf values and the float32
    output round. The thresholds are float32 already (see ``float32_thresholds``) and a float32 input is
    exact in float64, so every split decides as before.

    Args:
        converted: ``convert_lightgbm`` output for a regression booster.
        log_link: Whether the prediction is exp(raw score); must agree with the converter's Exp node.

    Returns:
        A model with input ``input`` [N, F] float32 and output ``prediction`` [N] float32.

    Raises:
        ValueError: If the graph does not hold exactly one single-target TreeEnsembleRegressor without a
            post_transform, or the converter's link disagrees with ``log_link``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    regressors = [node for node in converted.graph.node if node.op_type == "TreeEnsembleRegressor"]
    if len(regressors) != 1:
        raise ValueError(f"expected one TreeEnsembleRegressor, found {len(regressors)}")
    attributes = {a.name: helper.get_attribute_value(a) for a in regressors[0].attribute}
    if attributes.get("post_transform", b"NONE") != b"NONE" or attributes.get("n_targets") != 1:
        raise ValueError("expected a single-target TreeEnsembleRegressor without a post_transform")
    converter_exp = any(node.op_type == "Exp" for node in converted.graph.node)
    if converter_exp != log_link:
        raise ValueError(
            f"the converter {'applies' if converter_exp else 'does not apply'} exp to the raw score, "
            f"but the objective's link is {'log' if log_link else 'identity'}"
        )
    trees: dict[str, Any] = {"post_transform": "NONE"}
    for name, value in attributes.items():
        base = name.removesuffix("_as_tensor")
        if base in ("post_transform", "nodes_hitrates"):
            continue  # hit rates only guide tree layout in some runtimes; the sums do not use them
        if base in ("nodes_values", "target_weights", "base_values"):
            values = numpy_helper.to_array(value) if name != base else np.asarray(value)
            trees[base + "_as_tensor"] = numpy_helper.from_array(values.astype(np.float64), base)
        else:
            trees[name] = value
    flat = helper.make_tensor("flat", TensorProto.INT64, [1], [-1])
    nodes = [
        helper.make_node("Cast", [ONNX_INPUT], ["input_double"], to=TensorProto.DOUBLE),
        helper.make_node(
            "TreeEnsembleRegressor", ["input_double"], ["raw_score"], domain="ai.onnx.ml", **trees
        ),
    ]
    score = "raw_score"
    if log_link:
        nodes.append(helper.make_node("Exp", [score], ["rate"]))
        score = "rate"
    nodes.append(helper.make_node("Reshape", [score, "flat"], [ONNX_PREDICTION]))
    (features,) = converted.graph.input
    features.type.tensor_type.shape.dim[0].dim_param = "N"
    graph = helper.make_graph(
        nodes,
        converted.graph.name,
        [features],
        [helper.make_tensor_value_info(ONNX_PREDICTION, TensorProto.FLOAT, ["N"])],
        initializer=[flat],
    )
    # The *_as_tensor attributes need ai.onnx.ml opset 3.
    opsets = [
        helper.make_opsetid(o.domain, max(o.version, 3) if o.domain == "ai.onnx.ml" else o.version)
        for o in converted.opset_import
    ]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=converted.ir_version,
        producer_name=converted.producer_name,
        producer_version=converted.producer_version,
    )
    onnx.checker.check_model(model)
    return model


def calibrated_graph(converted: onnx.ModelProto, calibrator: PlattCalibrator) -> onnx.ModelProto:
    """Rebuilds the converter's graph so it outputs Platt-calibrated probabilities.

    The converter's TreeEnsembleClassifier applies a sigmoid; taking the log-odds back from its float32
    probability loses precision near 0 and 1. Instead the same trees become a TreeEnsembleRegressor that
    sums the leaf values, i.e. the raw score, and the calibration follows:
    ``p = Sigmoid(Add(Mul(score, slope), intercept))``, ``probabilities = Concat([1 - p, p])`` and
    ``label = ArgMax(probabilities)``. Every op exists at opset 9, so the converter's opsets stay.

    Args:
        converted: ``convert_lightgbm`` output for a binary booster, ``zipmap=False``.
        calibrator: The coefficients to apply, float32-representable.

    Returns:
        A model with input ``input`` [N, F] and outputs ``label`` [N] int64, ``probabilities`` [N, 2].

    Raises:
        ValueError: If the graph does not hold exactly one TreeEnsembleClassifier of the expected form.
    """
    import onnx
    from onnx import TensorProto, helper

    classifiers = [node for node in converted.graph.node if node.op_type == "TreeEnsembleClassifier"]
    if len(classifiers) != 1:
        raise ValueError(f"expected one TreeEnsembleClassifier, found {len(classifiers)}")
    attributes = {a.name: helper.get_attribute_value(a) for a in classifiers[0].attribute}
    if attributes.get("post_transform") != b"LOGISTIC" or set(attributes.get("class_ids", [])) != {0}:
        raise ValueError("expected a binary classifier with one score and a LOGISTIC post_transform")
    trees: dict[str, Any] = {"n_targets": 1, "aggregate_function": "SUM", "post_transform": "NONE"}
    for name, value in attributes.items():
        if name.startswith("nodes_"):
            trees[name] = value
        elif name.startswith("class_"):
            trees["target_" + name.removeprefix("class_")] = value
        elif name not in ("classlabels_int64s", "post_transform"):
            raise ValueError(f"unexpected TreeEnsembleClassifier attribute '{name}'")
    one, slope, intercept = (
        helper.make_tensor(name, TensorProto.FLOAT, [], [value])
        for name, value in (
            ("one", 1.0),
            ("platt_slope", calibrator.slope),
            ("platt_intercept", calibrator.intercept),
        )
    )
    nodes = [
        helper.make_node("TreeEnsembleRegressor", [ONNX_INPUT], ["raw_score"], domain="ai.onnx.ml", **trees),
        helper.make_node("Mul", ["raw_score", "platt_slope"], ["scaled_score"]),
        helper.make_node("Add", ["scaled_score", "platt_intercept"], ["calibrated_score"]),
        helper.make_node("Sigmoid", ["calibrated_score"], ["positive"]),
        helper.make_node("Sub", ["one", "positive"], ["negative"]),
        helper.make_node("Concat", ["negative", "positive"], [ONNX_PROBABILITIES], axis=1),
        helper.make_node("ArgMax", [ONNX_PROBABILITIES], ["label"], axis=1, keepdims=0),
    ]
    (features,) = converted.graph.input
    features.type.tensor_type.shape.dim[0].dim_param = "N"
    graph = helper.make_graph(
        nodes,
        converted.graph.name,
        [features],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info(ONNX_PROBABILITIES, TensorProto.FLOAT, ["N", 2]),
        ],
        initializer=[one, slope, intercept],
    )
    model = helper.make_model(
        graph,
        opset_imports=list(converted.opset_import),
        ir_version=converted.ir_version,
        producer_name=converted.producer_name,
        producer_version=converted.producer_version,
    )
    onnx.checker.check_model(model)
    return model


def _booster_params(train: Dataset, params: Mapping[str, Any], seed: int) -> tuple[dict[str, Any], int, int]:
    fixed = sorted(set(params) & set(_FIXED))
    if fixed:
        raise ParamsError(f"lightgbm params {fixed} are set by the platform; use n_estimators and --seed")
    rest = dict(params)
    rounds, patience = _rounds(rest)
    positives = train.positives
    booster_params: dict[str, Any] = {
        "objective": "binary",
        # Early stopping watches a ranking metric: with scale_pos_weight the weighted log loss on the
        # unweighted validation set rises after a handful of trees and would stop training far too soon.
        "metric": "average_precision",
        "scale_pos_weight": (len(train.y) - positives) / positives,
        **_common_params(rest, seed),
    }
    return booster_params, rounds, patience


def _regression_params(params: Mapping[str, Any], seed: int) -> tuple[dict[str, Any], int, int]:
    fixed = sorted(set(params) & set(_FIXED_REGRESSION))
    if fixed:
        raise ParamsError(
            f"lightgbm params {fixed} are set by the platform for regression; name the loss as 'objective' "
            "and use n_estimators and --seed"
        )
    rest = dict(params)
    objective = rest.pop("objective", DEFAULT_REGRESSION_OBJECTIVE)
    if objective not in REGRESSION_OBJECTIVES:
        raise ParamsError(
            f"lightgbm param 'objective' must be one of {', '.join(REGRESSION_OBJECTIVES)} for regression, "
            f"got {objective!r}"
        )
    rounds, patience = _rounds(rest)
    booster_params = {"objective": objective, "metric": REGRESSION_OBJECTIVES[objective]}
    return booster_params | _common_params(rest, seed), rounds, patience


def _rounds(rest: dict[str, Any]) -> tuple[int, int]:
    """Pops the round count and the early-stopping patience out of ``rest``."""
    rounds = _positive_int(rest.pop("n_estimators", DEFAULT_N_ESTIMATORS), "n_estimators")
    patience = _positive_int(
        rest.pop("early_stopping_rounds", DEFAULT_EARLY_STOPPING_ROUNDS), "early_stopping_rounds"
    )
    return rounds, patience


def _common_params(rest: dict[str, Any], seed: int) -> dict[str, Any]:
    """What every booster gets: deterministic training, the default threads, the user's params, the seed."""
    return {
        "deterministic": True,
        "force_row_wise": "force_col_wise" not in rest,
        "num_threads": DEFAULT_NUM_THREADS,
        "verbosity": -1,
        **rest,
        "seed": seed,
    }


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
    predict_margin=predict_margin,
    save_native=save_native,
    export_onnx=export_onnx,
    predict=predict,
)
