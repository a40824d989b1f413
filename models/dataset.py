"""Training sets on disk: an encrypted ``data.parquet`` plus a ``manifest.json`` that pins its sha256.

The data lies encrypted at rest (``data.parquet.enc``, see ``pipelines.crypto``); it is decrypted in
memory only, and the manifest's sha256 is that of the plaintext, so the same data keeps the same id.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pipelines import crypto

DATA = "data.parquet"
SPLITS = ("train", "valid", "test")
#: Task of a training set whose manifest names none: 0/1 labels, probabilities out.
BINARY_CLASSIFICATION = "binary_classification"
#: A finite float label, e.g. units sold; models predict it in label units.
REGRESSION = "regression"
TASKS = (BINARY_CLASSIFICATION, REGRESSION)


class TrainingSetError(ValueError):
    """The training set is missing, tampered with or unusable; the message says why."""


@dataclass(frozen=True)
class Dataset:
    """One split: a float32 feature matrix and its labels.

    Attributes:
        X: Features, shape [N, F], float32; NaN marks a missing value.
        y: Labels, shape [N]: int8 0 and 1 for binary classification, finite float32 for regression.
        features: The F column names, so params can name columns; empty when unknown.
        task: ``binary_classification`` or ``regression``; the families fit and export accordingly.
    """

    X: np.ndarray
    y: np.ndarray
    features: tuple[str, ...] = ()
    task: str = BINARY_CLASSIFICATION

    def __post_init__(self) -> None:
        if self.X.ndim != 2 or self.y.ndim != 1 or len(self.X) != len(self.y):
            raise ValueError(f"X must be [N, F] and y [N]; got {self.X.shape} and {self.y.shape}")
        if self.features and len(self.features) != self.X.shape[1]:
            raise ValueError(f"{len(self.features)} feature names for {self.X.shape[1]} columns")
        if self.task not in TASKS:
            raise ValueError(f"unknown task '{self.task}'; choose one of {', '.join(TASKS)}")
        if self.task == REGRESSION and not np.isfinite(self.y).all():
            raise ValueError(f"regression labels must be finite; {non_finite(self.y)} are NaN or infinite")

    @property
    def is_regression(self) -> bool:
        return self.task == REGRESSION

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def positives(self) -> int:
        return int(self.y.sum())


@dataclass(frozen=True)
class TrainingSet:
    """A verified training set split into train, valid and test.

    Attributes:
        features: Feature column names, in model input order.
        label: Label column name.
        sha256: Hex sha256 of ``data.parquet``, checked against the manifest.
        train: Rows used to fit.
        valid: Rows used for early stopping.
        test: Held-out rows for the reported metrics and the ONNX parity check.
        task: The manifest's ``task``; ``binary_classification`` when it names none.
    """

    features: tuple[str, ...]
    label: str
    sha256: str
    train: Dataset
    valid: Dataset
    test: Dataset
    task: str = BINARY_CLASSIFICATION


def local_path(uri_or_path: str) -> Path:
    """Turns a local path or a ``file://`` URI into a path.

    Args:
        uri_or_path: ``/some/dir``, ``relative/dir`` or ``file:///some/dir``.

    Returns:
        The local path.

    Raises:
        TrainingSetError: For any other URI scheme.
    """
    parsed = urlparse(uri_or_path)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise TrainingSetError(f"file URI with a remote host is not supported: {uri_or_path}")
        return Path(unquote(parsed.path))
    # A single letter is a Windows drive, not a scheme.
    if parsed.scheme and len(parsed.scheme) > 1:
        raise TrainingSetError(f"only local paths and file:// URIs are supported, got {uri_or_path}")
    return Path(uri_or_path)


def save_training_set(
    directory: Path,
    frame: pd.DataFrame,
    features: list[str],
    label: str,
    use_case: str,
    split_column: str = "split",
    task: str = BINARY_CLASSIFICATION,
) -> Path:
    """Write the encrypted data and the manifest ``load_training_set`` reads, its sha256 pinning the data.

    The manifest names ``task`` only for regression, so binary training sets keep their manifest.
    """
    if task not in TASKS:
        raise TrainingSetError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    directory.mkdir(parents=True)
    data = frame.to_parquet(index=False)
    crypto.seal(directory / DATA, data)
    manifest = {
        "use_case": use_case,
        "sha256": hashlib.sha256(data).hexdigest(),
        "features": features,
        "label": label,
        "split_column": split_column,
        "rows": len(frame),
    }
    if task != BINARY_CLASSIFICATION:
        manifest["task"] = task
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def load_training_set(directory: Path) -> TrainingSet:
    """Reads and verifies a training-set directory.

    Args:
        directory: Holds the encrypted ``data.parquet`` and ``manifest.json`` with keys ``features``,
            ``label``, ``split_column`` and ``sha256``, and optionally ``task`` (``binary_classification``,
            the default, or ``regression``).

    Returns:
        The train, valid and test splits as float32 features; labels are 0/1 int8 for binary
        classification and float32 for regression.

    Raises:
        TrainingSetError: If a file is missing, the data does not decrypt or its sha256 does not match,
            a column is missing or not numeric, or a split is empty; for binary classification if the
            label is not 0/1 or a split has a single class; for regression if a label is not numeric
            or not finite.
    """
    data_path, manifest_path = directory / DATA, directory / "manifest.json"
    for path in (directory, crypto.sealed_path(data_path), manifest_path):
        if not path.exists():
            raise TrainingSetError(f"training set not found: {path}")
    manifest = _read_manifest(manifest_path)
    try:
        data = crypto.unseal(data_path)
    except crypto.ArtifactTamperedError as exc:
        raise TrainingSetError(f"{data_path}: {exc}; refusing to train") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != manifest["sha256"]:
        raise TrainingSetError(
            f"sha256 of {data_path} is {actual} but the manifest says {manifest['sha256']}; refusing to train"
        )
    features: list[str] = manifest["features"]
    label: str = manifest["label"]
    split_column: str = manifest["split_column"]
    columns = [*features, label, split_column]
    if len(set(columns)) != len(columns):
        raise TrainingSetError(f"{manifest_path}: features, label and split_column must be distinct columns")
    try:
        available = set(pq.read_schema(io.BytesIO(data)).names)
        missing = [name for name in columns if name not in available]
        if missing:
            raise TrainingSetError(f"{data_path} lacks columns {missing}")
        frame = pd.read_parquet(io.BytesIO(data), columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise TrainingSetError(f"cannot read {data_path}: {exc}") from exc
    for name in features:
        if not (pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(frame[name])):
            raise TrainingSetError(
                f"feature '{name}' has dtype {frame[name].dtype}; features must be numeric"
            )
    task: str = manifest["task"]
    labels = frame[label]
    if task == REGRESSION:
        if pd.api.types.is_bool_dtype(labels) or not pd.api.types.is_numeric_dtype(labels):
            raise TrainingSetError(
                f"label '{label}' has dtype {labels.dtype}; a regression label must be numeric"
            )
    elif labels.isna().any() or not labels.isin([0, 1]).all():
        raise TrainingSetError(f"label '{label}' must hold only 0 and 1")

    splits = {}
    for split in SPLITS:
        rows = frame[frame[split_column] == split]
        if rows.empty:
            raise TrainingSetError(f"split '{split}' has no rows (column '{split_column}')")
        if task == REGRESSION:
            y = rows[label].to_numpy(dtype=np.float32, na_value=np.nan)
            # Checked after the float32 cast: a float64 label beyond float32's range becomes infinite.
            bad = non_finite(y)
            if bad:
                raise TrainingSetError(
                    f"label '{label}' has {bad} NaN or infinite value(s) in split '{split}'; "
                    "regression labels must be finite"
                )
        else:
            y = rows[label].to_numpy(dtype=np.int8)
            if y.min() == y.max():
                raise TrainingSetError(f"label '{label}' has a single class ({y[0]}) in split '{split}'")
        X = rows[features].to_numpy(dtype=np.float32, na_value=np.nan)
        splits[split] = Dataset(X=X, y=y, features=tuple(features), task=task)
    return TrainingSet(
        tuple(features), label, actual, splits["train"], splits["valid"], splits["test"], task=task
    )


def non_finite(values: np.ndarray) -> int:
    """Counts the NaN and infinite entries of ``values``."""
    return int(np.count_nonzero(~np.isfinite(np.asarray(values, dtype=np.float64))))


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingSetError(f"cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise TrainingSetError(f"{path} must hold a JSON object")
    expected = {"features": list, "label": str, "split_column": str, "sha256": str}
    for key, kind in expected.items():
        if not isinstance(manifest.get(key), kind):
            raise TrainingSetError(f"{path}: key '{key}' is missing or not a {kind.__name__}")
    if not manifest["features"] or not all(isinstance(name, str) for name in manifest["features"]):
        raise TrainingSetError(f"{path}: 'features' must be a non-empty list of column names")
    manifest.setdefault("task", BINARY_CLASSIFICATION)
    if manifest["task"] not in TASKS:
        raise TrainingSetError(f"{path}: unknown task {manifest['task']!r}; choose one of {', '.join(TASKS)}")
    return manifest
