"""Serving's freshness policy: what a stale or missing time-sensitive feature becomes before scoring."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipelines.spec import FreshnessPolicy


class StaleFeaturesError(ValueError):
    """Policy ``reject``: the features are too old (or absent) to score on."""


@dataclass(frozen=True)
class Freshened:
    values: dict[str, float]
    stale_views: tuple[str, ...]
    degraded: bool


def apply_policy(
    values: dict[str, float | None],
    ages_seconds: dict[str, float | None],
    view_of: dict[str, str],
    policy: FreshnessPolicy,
) -> Freshened:
    """Apply ``policy`` to one feature vector.

    Args:
        values: feature name -> online value (None when the store has none).
        ages_seconds: feature view -> age of its row at the event's time (None when absent).
        view_of: feature name -> the feature view it comes from.
        policy: the use case's policy for this feature service.

    Raises:
        StaleFeaturesError: the policy is ``reject`` and a watched view is stale or absent.
    """
    limit = policy.max_age_hours * 3600
    stale = tuple(
        view for view in policy.views if ages_seconds.get(view) is None or (ages_seconds[view] or 0.0) > limit
    )
    if not stale:
        return Freshened({k: math.nan if v is None else float(v) for k, v in values.items()}, (), False)
    if policy.policy == "reject":
        described = ", ".join(f"{view} ({_age(ages_seconds.get(view))})" for view in stale)
        raise StaleFeaturesError(f"features too old to score: {described}; limit {policy.max_age_hours:g} h")
    replaced: dict[str, float] = {}
    for name, value in values.items():
        if view_of.get(name) in stale:
            replaced[name] = policy.defaults.get(name, math.nan) if policy.policy == "default" else math.nan
        else:
            replaced[name] = math.nan if value is None else float(value)
    return Freshened(replaced, stale, True)


def _age(seconds: float | None) -> str:
    return "absent" if seconds is None else f"{seconds / 3600:.1f} h old"
