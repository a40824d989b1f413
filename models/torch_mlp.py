"""Tabular MLP in PyTorch: in-graph imputation, scaling and embeddings; best epoch kept.

A binary classifier is then Platt-calibrated; a regressor learns a scaled target (mse) or a log-rate
(poisson) and its head maps the output back to label units, in PyTorch and in the ONNX graph alike.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models.calibration import PlattCalibrator, fit_platt
from models.dataset import BINARY_CLASSIFICATION, REGRESSION, Dataset
from models.interface import ONNX_INPUT, ONNX_PREDICTION, ONNX_PROBABILITIES, Family, ParamsError

logger = logging.getLogger(__name__)

NATIVE_FILENAME = "model.pt"
ONNX_OPSET = 18
#: Widest range of integer codes a categorical column may span: the code-to-slot table has one entry each.
MAX_CODE_SPAN = 1 << 16
#: Codes must be exact in float32, and every integer up to 2**24 is.
_MAX_ABS_CODE = 1 << 24
#: Regression losses ``loss`` may name; the first is the default.
REGRESSION_LOSSES = ("mse", "poisson")


@dataclass(frozen=True)
class MLPParams:
    """Hyperparameters of the MLP; unknown keys are rejected so typos do not pass silently.

    Attributes:
        hidden: Width of each hidden layer.
        dropout: Dropout after each hidden activation.
        epochs: Passes over the training rows; the epoch with the lowest validation loss is kept.
        batch_size: Rows per optimiser step.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        pos_weight: Binary classification only: weight of positive rows in the loss; default
            negatives/positives of train.
        loss: Regression only: ``mse`` (default) on the standardised label, or ``poisson`` on a
            log-rate, for non-negative counts; ``None`` until ``from_dict`` resolves it.
        num_threads: CPU threads while training; small tabular MLPs train fastest on one, as
            thread synchronisation outweighs the tiny matrix products.
        categorical: Columns holding integer codes, by feature name or 0-based index; each gets an
            embedding instead of standardisation.
    """

    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    pos_weight: float | None = None
    num_threads: int = 1
    categorical: tuple[int | str, ...] = ()
    loss: str | None = None

    @classmethod
    def from_dict(cls, params: Mapping[str, Any], task: str = BINARY_CLASSIFICATION) -> MLPParams:
        """Validates a params mapping, e.g. from ``--params`` JSON, for ``task``.

        Raises:
            ParamsError: On an unknown key, a value of the wrong type or range, or a key of the other
                task (``pos_weight`` for regression, ``loss`` for binary classification).
        """
        unknown = sorted(set(params) - set(cls.__dataclass_fields__))
        if unknown:
            raise ParamsError(
                f"unknown pytorch_mlp params {unknown}; known: {sorted(cls.__dataclass_fields__)}"
            )
        values = dict(params)
        if task == REGRESSION:
            if "pos_weight" in values:
                raise ParamsError(
                    "pytorch_mlp param 'pos_weight' weighs positives; it has no use in regression"
                )
            loss = values.setdefault("loss", REGRESSION_LOSSES[0])
            if loss not in REGRESSION_LOSSES:
                raise ParamsError(
                    f"pytorch_mlp param 'loss' must be one of {', '.join(REGRESSION_LOSSES)}, got {loss!r}"
                )
        elif "loss" in values:
            raise ParamsError("pytorch_mlp param 'loss' applies to regression only; classifiers use log loss")
        hidden = values.get("hidden", cls.hidden)
        if (
            not isinstance(hidden, list | tuple)
            or not hidden
            or not all(_is_int(h) and h > 0 for h in hidden)
        ):
            raise ParamsError(
                f"pytorch_mlp param 'hidden' must be a non-empty list of positive ints, got {hidden!r}"
            )
        values["hidden"] = tuple(hidden)
        for name in ("epochs", "batch_size", "num_threads"):
            if name in values and not (_is_int(values[name]) and values[name] > 0):
                raise ParamsError(
                    f"pytorch_mlp param '{name}' must be a positive integer, got {values[name]!r}"
                )
        for name in ("learning_rate", "weight_decay", "dropout", "pos_weight"):
            if name not in values or (name == "pos_weight" and values[name] is None):
                continue
            value = values[name]
            if not _is_number(value) or value < 0:
                raise ParamsError(f"pytorch_mlp param '{name}' must be a non-negative number, got {value!r}")
            values[name] = float(value)
        if values.get("dropout", 0.0) >= 1.0:
            raise ParamsError("pytorch_mlp param 'dropout' must be below 1")
        if values.get("learning_rate", cls.learning_rate) == 0:
            raise ParamsError("pytorch_mlp param 'learning_rate' must be positive")
        categorical = values.get("categorical", ())
        if (
            not isinstance(categorical, list | tuple)
            or not all((_is_int(c) and c >= 0) or (isinstance(c, str) and c) for c in categorical)
            or len(set(categorical)) != len(categorical)
        ):
            raise ParamsError(
                "pytorch_mlp param 'categorical' must be a list of distinct feature names or "
                f"non-negative column indices, got {categorical!r}"
            )
        values["categorical"] = tuple(categorical)
        return cls(**values)


@dataclass(frozen=True)
class CategoricalColumn:
    """One categorical input column and the integer codes training saw in it.

    Attributes:
        column: 0-based index in the input row.
        codes: The distinct codes seen in training, ascending; slot ``i + 1`` embeds ``codes[i]`` and
            slot 0 every other value, NaN included.
    """

    column: int
    codes: tuple[int, ...]

    @property
    def num_embeddings(self) -> int:
        return len(self.codes) + 1

    @property
    def embedding_dim(self) -> int:
        return min(8, (self.num_embeddings + 1) // 2)


class CategoricalEmbedding(nn.Module):
    """Embeds one float32 column of integer codes; unseen codes, non-integers and NaN share slot 0.

    A code-to-slot table indexed by ``code - low`` is one Gather in ONNX, where comparing every row
    with every known code would cost rows x codes.
    """

    slots: torch.Tensor

    def __init__(self, category: CategoricalColumn) -> None:
        super().__init__()
        self.column = category.column
        codes = category.codes or (0,)
        self.low, self.high = float(codes[0]), float(codes[-1])
        slots = torch.zeros(codes[-1] - codes[0] + 1, dtype=torch.int64)
        if category.codes:
            slots[torch.tensor(category.codes) - codes[0]] = torch.arange(1, len(category.codes) + 1)
        self.register_buffer("slots", slots)
        self.embedding = nn.Embedding(category.num_embeddings, category.embedding_dim)

    def slot(self, values: torch.Tensor) -> torch.Tensor:
        """Returns the embedding slot of each value, shape [N] int64."""
        # NaN fails every comparison, so it lands in slot 0 with the out-of-range and fractional values.
        known = (values >= self.low) & (values <= self.high) & (values == torch.floor(values))
        offset = torch.where(known, values - self.low, torch.zeros_like(values)).long()
        return torch.where(known, self.slots[offset], torch.zeros_like(offset))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the embeddings of column ``self.column`` of ``x``, shape [N, embedding_dim]."""
        return self.embedding(self.slot(x[:, self.column]))


class TabularMLP(nn.Module):
    """Takes raw features: NaN becomes the train mean, then (x - mean) / scale, then the MLP.

    Categorical columns skip the scaling: each is embedded and the embeddings join the scaled numeric
    columns. Keeping imputation, scaling and the code tables as buffers puts them in the state_dict and
    the ONNX graph, so serving feeds raw feature vectors.
    """

    mean: torch.Tensor
    scale: torch.Tensor
    numeric: torch.Tensor
    body: nn.Sequential

    def __init__(
        self,
        n_features: int,
        hidden: tuple[int, ...],
        dropout: float,
        categorical: Sequence[CategoricalColumn] = (),
    ) -> None:
        super().__init__()
        embedded = {category.column for category in categorical}
        numeric = [column for column in range(n_features) if column not in embedded]
        self.register_buffer("mean", torch.zeros(len(numeric)))
        self.register_buffer("scale", torch.ones(len(numeric)))
        if categorical:
            self.register_buffer("numeric", torch.tensor(numeric, dtype=torch.int64))
        layers: list[nn.Module] = []
        width = len(numeric) + sum(category.embedding_dim for category in categorical)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.body = nn.Sequential(*layers)
        self.embeddings = nn.ModuleList(CategoricalEmbedding(category) for category in categorical)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns logits of shape [N]."""
        if not self.embeddings:
            return self.body(self._standardise(x)).squeeze(-1)
        parts = [self._standardise(torch.index_select(x, 1, self.numeric))]
        parts += [embedding(x) for embedding in self.embeddings]
        return self.body(torch.cat(parts, dim=1)).squeeze(-1)

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(torch.isnan(x), self.mean, x)
        return (x - self.mean) / self.scale


@dataclass(frozen=True)
class TargetScaling:
    """How a regressor's network output maps to label units; float32-representable, so native and ONNX agree.

    Attributes:
        loss: ``mse`` or ``poisson``.
        shift: Added last (mse: the train label mean; poisson: 0).
        scale: mse: the train label standard deviation; poisson: the train label mean.
    """

    loss: str
    shift: float
    scale: float

    @property
    def log_link(self) -> bool:
        """poisson: the network outputs a log-rate and the prediction is ``scale * exp(output)``."""
        return self.loss == "poisson"

    def targets(self, y: np.ndarray) -> np.ndarray:
        """What the network learns: ``(y - shift) / scale``, float32 of shape [N]."""
        return ((np.asarray(y, dtype=np.float64) - self.shift) / self.scale).astype(np.float32)

    def as_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "link": "log" if self.log_link else "identity",
            "shift": self.shift,
            "scale": self.scale,
        }


def target_scaling(y: np.ndarray, loss: str) -> TargetScaling:
    """Scales the train labels so the network learns numbers near 1 whatever the label's units.

    Args:
        y: Train labels, shape [N], finite.
        loss: ``mse``: standardise by the mean and standard deviation. ``poisson``: divide by the mean,
            so a zero output predicts the mean rate.

    Returns:
        The scaling, rounded to float32; a constant (or all-zero) label scales by 1.

    Raises:
        ParamsError: For ``poisson`` if a label is negative.
    """
    values = np.asarray(y, dtype=np.float64)
    if loss == "poisson":
        negative = int(np.count_nonzero(values < 0))
        if negative:
            raise ParamsError(
                f"pytorch_mlp loss 'poisson' needs non-negative labels; {negative} are negative; use 'mse'"
            )
        mean = float(values.mean())
        return TargetScaling(loss, 0.0, float(np.float32(mean)) if mean > 0 else 1.0)
    std = float(values.std())
    scale = float(np.float32(std)) if std > 1e-12 * max(1.0, abs(float(values.mean()))) else 1.0
    return TargetScaling(loss, float(np.float32(values.mean())), scale)


class RegressionHead(nn.Module):
    """Wraps a regressor's network so it returns predictions in label units, shape [N].

    ``prediction = output * scale + shift`` for mse, ``scale * exp(output)`` for poisson: the target
    scaling travels inside the state_dict and the exported graph.
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, model: nn.Module, target: TargetScaling) -> None:
        super().__init__()
        self.model = model
        self.log_link = target.log_link
        self.register_buffer("shift", torch.tensor(target.shift, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(target.scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.model(x)
        if self.log_link:
            return torch.exp(output) * self.scale
        return output * self.scale + self.shift


class ProbabilityHead(nn.Module):
    """Wraps a logit model so it returns [N, 2] = [1 - p, p], the ONNX contract of every family.

    ``p = sigmoid(slope * logit + intercept)``: the Platt calibration travels inside the exported graph.
    """

    slope: torch.Tensor
    intercept: torch.Tensor

    def __init__(self, model: nn.Module, calibrator: PlattCalibrator | None = None) -> None:
        super().__init__()
        self.model = model
        calibrator = calibrator or PlattCalibrator()
        self.register_buffer("slope", torch.tensor(calibrator.slope, dtype=torch.float32))
        self.register_buffer("intercept", torch.tensor(calibrator.intercept, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.model(x) * self.slope + self.intercept)
        return torch.stack([1.0 - p, p], dim=1)


@dataclass(frozen=True)
class FittedMLP:
    """A trained MLP, on CPU in eval mode, holding the weights of its best epoch.

    Attributes:
        model: The network; takes raw float32 features, NaN allowed; returns a classifier's uncalibrated
            logits or a regressor's scaled output (see ``target``).
        params: The hyperparameters used.
        best_epoch: 1-based epoch with the lowest validation loss.
        history: Per-epoch ``train_loss`` and ``valid_loss``.
        device: Where it was trained: ``cuda`` (with mixed precision) or ``cpu``.
        calibrator: Maps a classifier's logits to calibrated probabilities, fitted on ``valid``; None for
            a regressor.
        categorical: The embedded columns and their codes, needed to rebuild ``model``.
        task: ``binary_classification`` or ``regression``.
        target: A regressor's map from ``model``'s output to label units; None for a classifier.
    """

    model: TabularMLP
    params: MLPParams
    best_epoch: int
    history: tuple[Mapping[str, float], ...] = field(default=())
    device: str = "cpu"
    calibrator: PlattCalibrator | None = field(default_factory=PlattCalibrator)
    categorical: tuple[CategoricalColumn, ...] = ()
    task: str = BINARY_CLASSIFICATION
    target: TargetScaling | None = None

    @property
    def summary(self) -> Mapping[str, Any]:
        facts: dict[str, Any] = {
            "best_epoch": self.best_epoch,
            "best_valid_loss": self.history[self.best_epoch - 1]["valid_loss"],
            "categorical": [
                {"column": c.column, "codes": list(c.codes), "embedding_dim": c.embedding_dim}
                for c in self.categorical
            ],
        }
        if self.target is not None:
            facts["target"] = self.target.as_dict()
        return facts


def fit(train: Dataset, valid: Dataset, params: Mapping[str, Any], seed: int) -> FittedMLP:
    """Trains the MLP for ``train.task`` with AdamW and keeps the epoch with the lowest validation loss.

    A binary classifier learns with weighted log loss and is then calibrated on ``valid``. A regressor
    learns ``TargetScaling.targets`` of the label with mean squared error or Poisson log loss on a
    log-rate (``loss``), and predicts in label units through ``RegressionHead``.
    Deterministic on CPU for a given seed; on CUDA it uses automatic mixed precision.

    Args:
        train: Rows to fit; NaN features are imputed with the train mean inside the model. The codes of
            each categorical column seen here get their own embedding slot.
        valid: Rows for choosing the best epoch and, for a classifier, fitting the Platt calibration.
        params: Keys of ``MLPParams``.
        seed: Seeds weight init, dropout and the batch order.

    Returns:
        The best-epoch model, moved to CPU in eval mode, with a classifier's calibrator or a regressor's
        target scaling.

    Raises:
        ParamsError: If ``params`` are invalid, a categorical column is unknown or does not hold
            integer codes spanning at most ``MAX_CODE_SPAN`` values, or the poisson loss meets a
            negative label.
    """
    if train.task != valid.task:
        raise ValueError(f"train is {train.task} but valid is {valid.task}")
    hp = MLPParams.from_dict(params, train.task)
    categorical = _categorical_columns(train, hp.categorical)
    target: TargetScaling | None = None
    if train.task == REGRESSION:
        target = target_scaling(train.y, hp.loss or REGRESSION_LOSSES[0])
        if target.log_link and (valid.y < 0).any():
            raise ParamsError("pytorch_mlp loss 'poisson' needs non-negative labels; valid has negative ones")
        train_target, valid_target = target.targets(train.y), target.targets(valid.y)
    else:
        train_target, valid_target = train.y.astype(np.float32), valid.y.astype(np.float32)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with _training_context(device, hp.num_threads):
        torch.manual_seed(seed)
        model = TabularMLP(train.n_features, hp.hidden, hp.dropout, categorical)
        mean, scale = _standardisation(np.delete(train.X, [c.column for c in categorical], axis=1))
        model.mean.copy_(torch.from_numpy(mean))
        model.scale.copy_(torch.from_numpy(scale))
        model.to(device)

        loss_fn = _loss_function(train, hp, target, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
        use_amp = device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        loader = DataLoader(
            TensorDataset(torch.from_numpy(train.X), torch.from_numpy(train_target)),
            batch_size=hp.batch_size,
            shuffle=True,
            # BatchNorm cannot train on a batch of one row.
            drop_last=len(train.y) % hp.batch_size == 1,
            generator=torch.Generator().manual_seed(seed),
            pin_memory=use_amp,
        )
        valid_x = torch.from_numpy(valid.X).to(device)
        valid_y = torch.from_numpy(valid_target).to(device)

        history: list[dict[str, float]] = []
        best_loss, best_state, best_epoch = float("inf"), copy.deepcopy(model.state_dict()), 1
        for epoch in range(1, hp.epochs + 1):
            model.train()
            # Summed on the device: a float() per batch would sync the GPU every step.
            total, rows = torch.zeros((), device=device), 0
            for xb, yb in loader:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    loss = loss_fn(model(xb), yb)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                total += loss.detach().float() * len(yb)
                rows += len(yb)
            model.eval()
            with (
                torch.no_grad(),
                torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp),
            ):
                valid_loss = float(loss_fn(model(valid_x).float(), valid_y))
            train_loss = float(total) / rows
            history.append({"train_loss": train_loss, "valid_loss": valid_loss})
            if valid_loss < best_loss:
                best_loss, best_epoch = valid_loss, epoch
                best_state = copy.deepcopy(model.state_dict())
            logger.info(
                "[pytorch_mlp] epoch %d/%d train_loss=%.5f valid_loss=%.5f%s",
                epoch,
                hp.epochs,
                train_loss,
                valid_loss,
                " *" if best_epoch == epoch else "",
            )
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    logger.info("[pytorch_mlp] best epoch %d valid_loss=%.5f on %s", best_epoch, best_loss, device.type)
    if target is not None:
        logger.info("[pytorch_mlp] regression target: %s", target.as_dict())
        return FittedMLP(
            model, hp, best_epoch, tuple(history), device.type, None, categorical, REGRESSION, target
        )
    calibrator = fit_platt(_logits(model, valid.X), valid.y)
    logger.info(
        "[pytorch_mlp] platt calibration: slope=%.5f intercept=%.5f", calibrator.slope, calibrator.intercept
    )
    return FittedMLP(model, hp, best_epoch, tuple(history), device.type, calibrator, categorical)


def _loss_function(
    train: Dataset, hp: MLPParams, target: TargetScaling | None, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if target is None:
        positives = train.positives
        pos_weight = hp.pos_weight if hp.pos_weight is not None else (len(train.y) - positives) / positives
        return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    # In float32 even under mixed precision: exp and squares of float16 outputs overflow early.
    if target.log_link:
        poisson = nn.PoissonNLLLoss(log_input=True, full=False)
        return lambda output, y: poisson(output.float(), y)
    mse = nn.MSELoss()
    return lambda output, y: mse(output.float(), y)


def predict_proba(fitted: FittedMLP, X: np.ndarray) -> np.ndarray:
    """Returns calibrated P(y=1) for each row of raw features ``X`` as a float64 array of shape [N].

    Raises:
        ValueError: For a regressor, which has no probabilities; use ``predict``.
    """
    if fitted.calibrator is None:
        raise ValueError(f"a {fitted.task} model has no probabilities; use predict")
    return fitted.calibrator.probabilities(predict_margin(fitted, X))


def predict_margin(fitted: FittedMLP, X: np.ndarray) -> np.ndarray:
    """Returns the network's output for each row of raw features ``X`` as float64 of shape [N].

    A classifier's uncalibrated logit; a regressor's output before ``RegressionHead`` maps it to label
    units (the standardised label for mse, the log of rate / scale for poisson).
    """
    return _logits(fitted.model, X)


def predict(fitted: FittedMLP, X: np.ndarray) -> np.ndarray:
    """Returns what the ONNX output carries, float64 of shape [N].

    A regressor's prediction in label units, computed by ``RegressionHead`` in float32 as the ONNX graph
    does; a classifier's calibrated P(y=1).
    """
    if fitted.target is None:
        return predict_proba(fitted, X)
    return _logits(RegressionHead(fitted.model, fitted.target), X)


def _logits(model: nn.Module, X: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)))
    return logits.numpy().astype(np.float64)


def save_native(fitted: FittedMLP, directory: Path) -> Path:
    """Writes the state_dict of the uncalibrated network to ``directory/model.pt`` and returns the path.

    Rebuild with ``TabularMLP(n_features, params.hidden, params.dropout, categorical)`` and
    ``load_state_dict``; ``models.train`` records the categorical codes and the calibrator in the manifest.
    A regressor saves ``RegressionHead(model, target)``'s state_dict instead: the network's keys under
    ``model.`` plus the ``shift`` and ``scale`` buffers; its loss (hence link) is in the manifest's params
    and ``fit.target``.
    """
    path = Path(directory) / NATIVE_FILENAME
    module: nn.Module = fitted.model if fitted.target is None else RegressionHead(fitted.model, fitted.target)
    torch.save(module.state_dict(), path)
    return path


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Returns an eval-mode copy with each BatchNorm1d folded into the Linear right before it.

    The folded BatchNorm becomes ``nn.Identity``; outputs match the eval-mode original up to float
    rounding. The input model is left unchanged.

    Args:
        model: Any module; Linear -> BatchNorm1d pairs inside its ``nn.Sequential`` children are folded.

    Returns:
        The folded copy, in eval mode.
    """
    folded = copy.deepcopy(model).eval()
    for sequential in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(sequential) - 1):
            linear, norm = sequential[i], sequential[i + 1]
            if isinstance(linear, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
                sequential[i] = _fold(linear, norm)
                sequential[i + 1] = nn.Identity()
    return folded


def export_onnx(fitted: FittedMLP, n_features: int, path: Path) -> None:
    """Exports BatchNorm-folded eval-mode weights to a single ONNX file.

    The graph takes ``input`` [N, F] raw float32 features (NaN allowed) and returns, with a dynamic
    batch axis, a classifier's ``probabilities`` [N, 2] = [1 - p, p] with p calibrated, or a regressor's
    ``prediction`` [N] float32 in label units (``RegressionHead`` is part of the graph).

    Args:
        fitted: The trained MLP and its calibrator or target scaling.
        n_features: Width of the input.
        path: Where to write the ONNX model; weights are embedded, not external.
    """
    module: nn.Module
    if fitted.target is not None:
        module, output = RegressionHead(fold_batchnorm(fitted.model), fitted.target).eval(), ONNX_PREDICTION
    else:
        module = ProbabilityHead(fold_batchnorm(fitted.model), fitted.calibrator).eval()
        output = ONNX_PROBABILITIES
    # Batch of 2: torch.export specialises sizes 0 and 1, which would pin the batch axis.
    example = torch.zeros(2, n_features, dtype=torch.float32)
    with _quiet_exporter():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            input_names=[ONNX_INPUT],
            output_names=[output],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            opset_version=ONNX_OPSET,
            external_data=False,
            verbose=False,
        )


def _fold(linear: nn.Linear, norm: nn.BatchNorm1d) -> nn.Linear:
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("cannot fold a BatchNorm1d that tracks no running statistics")
    # Fold in float64 so the folded weights round once, not twice.
    with torch.no_grad():
        ones = linear.weight.new_ones(linear.out_features, dtype=torch.float64)
        gamma = norm.weight.double() if norm.weight is not None else ones
        beta = norm.bias.double() if norm.bias is not None else ones * 0
        bias = linear.bias.double() if linear.bias is not None else ones * 0
        factor = gamma / torch.sqrt(norm.running_var.double() + norm.eps)
        fused = nn.Linear(linear.in_features, linear.out_features, device=linear.weight.device)
        fused.weight.copy_((linear.weight.double() * factor[:, None]).float())
        fused.bias.copy_(((bias - norm.running_mean.double()) * factor + beta).float())
    return fused


def _categorical_columns(train: Dataset, names: tuple[int | str, ...]) -> tuple[CategoricalColumn, ...]:
    columns: list[CategoricalColumn] = []
    for name in names:
        if isinstance(name, str):
            if name not in train.features:
                known = list(train.features) or "none: this dataset has no names, give column indices"
                raise ParamsError(f"categorical column '{name}' is not a feature; features: {known}")
            index = train.features.index(name)
        elif name < train.n_features:
            index = name
        else:
            raise ParamsError(f"categorical column {name} is out of range for {train.n_features} features")
        if index in {c.column for c in columns}:
            raise ParamsError(f"categorical column {name!r} is listed twice")
        values = train.X[:, index].astype(np.float64)
        seen = values[~np.isnan(values)]
        if not (np.abs(seen) <= _MAX_ABS_CODE).all() or (seen != np.floor(seen)).any():
            raise ParamsError(
                f"categorical column {name!r} must hold integer codes within +-{_MAX_ABS_CODE} (or NaN)"
            )
        codes = np.unique(seen).astype(np.int64)
        if len(codes) and codes[-1] - codes[0] >= MAX_CODE_SPAN:
            raise ParamsError(
                f"categorical column {name!r} spans codes {codes[0]}..{codes[-1]}, more than "
                f"{MAX_CODE_SPAN}; re-encode it as 0..n-1"
            )
        columns.append(CategoricalColumn(index, tuple(int(code) for code in codes)))
    return tuple(columns)


def _standardisation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # nan-aware: missing values must not poison the mean; an all-NaN or constant column scales by 1.
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(X.astype(np.float64), axis=0), nan=0.0)
        std = np.nan_to_num(np.nanstd(X.astype(np.float64), axis=0), nan=0.0)
    scale = np.where(std > 1e-12, std, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


@contextmanager
def _training_context(device: torch.device, num_threads: int) -> Iterator[None]:
    # Both settings are process-global: restore them so callers and later fits are unaffected.
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    if device.type == "cuda":
        # cuBLAS needs a fixed workspace to be deterministic; AMP kernels may still warn, not fail.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.set_num_threads(previous_threads)


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporter warns about torchvision ops (not installed, not used) and a pytree deprecation.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


FAMILY = Family(
    name="pytorch_mlp",
    native_filename=NATIVE_FILENAME,
    fit=fit,
    predict_proba=predict_proba,
    predict_margin=predict_margin,
    save_native=save_native,
    export_onnx=export_onnx,
    predict=predict,
)
