"""The evaluation gate's decision: an absolute floor first, then the champion plus the improvement."""

from __future__ import annotations

import pytest

from pipelines.gate import decide
from pipelines.spec import GatePolicy

# Binary fractions keep the equality edges exact: 0.5 + 0.125 == 0.625 in floating point.
POLICY = GatePolicy(metric="pr_auc", min_value=0.5, min_improvement=0.125)


def test_candidate_below_the_floor_is_refused_even_without_a_champion() -> None:
    # Given no champion yet
    # When the first model scores under the floor
    passed, reason = decide(POLICY, 0.4999, None)

    # Then it is refused and the reason names the metric, the value and the floor
    assert passed is False
    assert reason == "pr_auc 0.4999 is below the floor 0.5000"


def test_floor_applies_even_when_the_champion_is_worse() -> None:
    # Given a champion weaker than the candidate (a champion from an older, laxer policy)
    # When the candidate is still under today's floor
    passed, reason = decide(POLICY, 0.45, 0.1)

    # Then the floor wins: beating a bad champion is not enough
    assert passed is False
    assert "below the floor" in reason


@pytest.mark.parametrize("value", [0.5, 0.9])
def test_first_model_passes_on_the_floor_alone(value: float) -> None:
    # Given no champion
    # When the candidate reaches the floor (exactly, or comfortably)
    passed, reason = decide(POLICY, value, None)

    # Then it passes and the reason says there was nothing to beat
    assert passed is True
    assert "no champion yet" in reason


def test_challenger_must_beat_champion_by_the_required_improvement() -> None:
    # Given a champion at 0.6 and a required improvement of 0.125 (so 0.725 is needed)
    # When the challenger is better, but not by enough
    passed, reason = decide(POLICY, 0.7, 0.6)

    # Then it is refused with the champion and the margin in the reason
    assert passed is False
    assert reason == "pr_auc 0.7000 does not reach champion 0.6000 + 0.125"


def test_challenger_clearing_the_margin_passes() -> None:
    # Given a champion at 0.6 (0.725 needed)
    # When the challenger scores 0.75
    passed, reason = decide(POLICY, 0.75, 0.6)

    # Then it passes and says whom it beat
    assert passed is True
    assert reason == "pr_auc 0.7500 beats champion 0.6000 + 0.125"


def test_reaching_exactly_champion_plus_improvement_passes() -> None:
    # Given a champion at 0.5 and a required improvement of 0.125
    # When the challenger scores exactly 0.625 (and a hair less)
    # Then the bound is inclusive: exactly enough is enough, a hair less is not
    assert decide(POLICY, 0.625, 0.5)[0] is True
    assert decide(POLICY, 0.625 - 1e-12, 0.5)[0] is False


def test_equal_to_champion_passes_when_no_improvement_is_required() -> None:
    # Given a policy that only asks not to be worse than the champion
    policy = GatePolicy(metric="roc_auc", min_value=0.5, min_improvement=0.0)

    # When the challenger ties the champion, or is slightly worse
    # Then the tie passes (named by the policy's metric) and the regression does not
    passed, reason = decide(policy, 0.8, 0.8)
    assert passed is True and reason.startswith("roc_auc 0.8000 beats champion 0.8000")
    assert decide(policy, 0.79, 0.8)[0] is False


def test_negative_improvement_tolerates_a_bounded_regression() -> None:
    # Given a policy that accepts up to 0.125 worse than the champion (e.g. for a cheaper model)
    policy = GatePolicy(min_value=0.25, min_improvement=-0.125)

    # When challengers score against a champion at 0.75 (so 0.625 is needed)
    # Then a regression within the tolerance passes, up to its edge, and a larger one is refused
    assert decide(policy, 0.7, 0.75)[0] is True
    assert decide(policy, 0.625, 0.75)[0] is True
    assert decide(policy, 0.5, 0.75)[0] is False
