"""The reference profile a model is monitored against: each feature's and the score's distribution
on the rows it was trained on, as decile bins (numeric features) or category shares (the spec's
``monitoring.categorical`` features) the drift monitor can compare a window with."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from pipelines import lake

BINS = 10
#: More distinct values than this is a quantity, not a category: the spec names the wrong feature.
MAX_CATEGORIES = 10_000


class ProfileError(ValueError):
    """A feature cannot be profiled as the spec asks; the message names the feature and the fix."""


def category_key(value: float) -> str:
    """How a category code is written in a profile: ``5411`` rather than ``5411.0`` for whole numbers."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def column_profile(values: Any) -> dict[str, Any]:
    """Decile edges (outer edges open) and the share of non-null rows in each bin, plus the null rate."""
    import numpy as np

    values = np.asarray(values, dtype="float64")
    present = values[~np.isnan(values)]
    profile: dict[str, Any] = {
        "kind": "numeric",
        "rows": int(values.size),
        "null_rate": float(1 - present.size / max(values.size, 1)),
    }
    if present.size == 0:
        return profile
    edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)
    profile.update(
        {
            "edges": edges.tolist(),
            "shares": (counts / present.size).tolist(),
            "mean": float(present.mean()),
            "std": float(present.std()),
            "min": float(present.min()),
            "max": float(present.max()),
        }
    )
    return profile


def categorical_profile(values: Any, name: str = "feature") -> dict[str, Any]:
    """The share of non-null rows in each category code, plus the null rate.

    Raises:
        ProfileError: more than :data:`MAX_CATEGORIES` distinct values, a sign the feature is a quantity.
    """
    import numpy as np

    values = np.asarray(values, dtype="float64")
    present = values[~np.isnan(values)]
    codes, counts = np.unique(present, return_counts=True)
    if codes.size > MAX_CATEGORIES:
        raise ProfileError(
            f"feature '{name}' has {codes.size} distinct values, more than a category may have "
            f"({MAX_CATEGORIES}): remove it from monitoring.categorical in the use-case spec"
        )
    return {
        "kind": "categorical",
        "rows": int(values.size),
        "null_rate": float(1 - present.size / max(values.size, 1)),
        "categories": {
            category_key(code): float(count / present.size) for code, count in zip(codes, counts, strict=True)
        },
    }


def write_reference_profile(
    model_dir: Path,
    rows: Any,
    features: list[str],
    scores: Any,
    categorical: Collection[str] = (),
    split: str = "valid",
) -> Path:
    """Profile ``rows`` (the training set's ``split``) and the model's scores on them; written beside the
    model.

    ``categorical`` (the spec's ``monitoring.categorical``) names the features profiled as categories;
    names the model does not use are ignored, so one list serves every feature service of a use case.
    """

    def profile_of(name: str) -> dict[str, Any]:
        values = rows[name].to_numpy(dtype="float64")
        return categorical_profile(values, name) if name in categorical else column_profile(values)

    profile = {
        "rows": len(rows),
        "split": split,
        "bins": BINS,
        "features": {name: profile_of(name) for name in features},
        "prediction": column_profile(scores),
    }
    target = model_dir / "reference_profile.json"
    lake.write_json(target, profile)
    return target
