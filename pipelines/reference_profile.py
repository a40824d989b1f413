"""The reference profile a model is monitored against: each feature's and the score's distribution
on the rows it was trained on, as decile bins the drift monitor can compare a window with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines import lake

BINS = 10


def column_profile(values: Any) -> dict[str, Any]:
    """Decile edges (outer edges open) and the share of non-null rows in each bin, plus the null rate."""
    import numpy as np

    values = np.asarray(values, dtype="float64")
    present = values[~np.isnan(values)]
    profile: dict[str, Any] = {
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


def write_reference_profile(model_dir: Path, train: Any, features: list[str], scores: Any) -> Path:
    """Profile the training rows' features and the model's scores on them; written beside the model."""
    profile = {
        "rows": len(train),
        "split": "train",
        "bins": BINS,
        "features": {name: column_profile(train[name].to_numpy(dtype="float64")) for name in features},
        "prediction": column_profile(scores),
    }
    target = model_dir / "reference_profile.json"
    lake.write_json(target, profile)
    return target
