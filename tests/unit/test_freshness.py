"""The freshness policy turns stale or absent time-sensitive features into a decision, per the spec."""

from __future__ import annotations

import math

import pytest

from pipelines.freshness import StaleFeaturesError, apply_policy
from pipelines.spec import FreshnessPolicy

VIEW_OF = {"txn_count_1h": "customer_behaviour", "credit_limit_aed": "customer_profile"}
VALUES: dict[str, float | None] = {"txn_count_1h": 4.0, "credit_limit_aed": 5000.0}
HOUR = 3600.0


def policy(kind: str) -> FreshnessPolicy:
    return FreshnessPolicy(
        views=["customer_behaviour"], max_age_hours=48, policy=kind, defaults={"txn_count_1h": 0.0}
    )


@pytest.mark.parametrize("kind", ["reject", "default", "degrade"])
def test_fresh_features_pass_untouched_under_every_policy(kind: str) -> None:
    result = apply_policy(
        VALUES, {"customer_behaviour": 47 * HOUR, "customer_profile": 9e9}, VIEW_OF, policy(kind)
    )
    assert result.values == {"txn_count_1h": 4.0, "credit_limit_aed": 5000.0}
    assert not result.degraded and result.stale_views == ()


def test_reject_names_the_view_and_its_age() -> None:
    with pytest.raises(StaleFeaturesError, match=r"customer_behaviour \(49\.0 h old\); limit 48 h"):
        apply_policy(VALUES, {"customer_behaviour": 49 * HOUR}, VIEW_OF, policy("reject"))


def test_reject_also_refuses_an_absent_view() -> None:
    with pytest.raises(StaleFeaturesError, match=r"customer_behaviour \(absent\)"):
        apply_policy({"txn_count_1h": None, "credit_limit_aed": 1.0}, {}, VIEW_OF, policy("reject"))


def test_default_fills_declared_defaults_and_leaves_unwatched_views() -> None:
    result = apply_policy(VALUES, {"customer_behaviour": 72 * HOUR}, VIEW_OF, policy("default"))
    assert result.values == {"txn_count_1h": 0.0, "credit_limit_aed": 5000.0}
    assert result.degraded and result.stale_views == ("customer_behaviour",)


def test_degrade_scores_the_stale_view_as_missing() -> None:
    result = apply_policy(VALUES, {"customer_behaviour": 72 * HOUR}, VIEW_OF, policy("degrade"))
    assert math.isnan(result.values["txn_count_1h"]) and result.values["credit_limit_aed"] == 5000.0
    assert result.degraded
