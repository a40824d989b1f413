"""Live rollouts: sticky arms, the canary guard, and experiments kept in a real SQLite registry."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipelines import audit, authz, registry, rollout
from pipelines.rollout import Budget, CanaryGuard, assign_arm
from tests.registry_rows import add_version
from tests.registry_rows import decide as _decide

UNITS = [f"customer-{i:05d}" for i in range(10_000)]
TRAINER, APPROVER, ONCALL = "ml-engineer", "risk-officer", "oncall"


# --- sticky assignment -------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [0.01, 0.1, 0.5, 0.9])
def test_sticky_assignment_matches_the_weight_and_never_changes(weight: float) -> None:
    # Given 10,000 unit ids in experiment 7
    # When each is assigned twice at the weight
    first = [assign_arm(unit, 7, weight) for unit in UNITS]
    again = [assign_arm(unit, 7, weight) for unit in reversed(UNITS)][::-1]

    # Then the challenger's share is within 4 sigma of the weight
    observed = first.count("challenger") / len(UNITS)
    sigma = math.sqrt(weight * (1 - weight) / len(UNITS))
    assert abs(observed - weight) < 4 * sigma, (observed, weight)
    # And every unit got the same arm both times
    assert first == again


def test_another_experiment_reshuffles_the_units() -> None:
    # Given the same units at an even split in two experiments
    one = [assign_arm(unit, 1, 0.5) for unit in UNITS]
    two = [assign_arm(unit, 2, 0.5) for unit in UNITS]

    # Then about half the units changed arm (independent splits), not none and not all
    changed = sum(a != b for a, b in zip(one, two, strict=True)) / len(UNITS)
    assert abs(changed - 0.5) < 4 * math.sqrt(0.25 / len(UNITS)), changed


def test_growing_a_canary_only_moves_units_to_the_challenger() -> None:
    # Given a canary's steps
    steps = [0.0, *rollout.DEFAULT_STEPS, 1.0]

    # When the units are assigned at each step
    arms = [{unit for unit in UNITS if assign_arm(unit, 42, share) == "challenger"} for share in steps]

    # Then each step's challenger units include the previous step's (monotone), and the step adds some
    for before, after in pairwise(arms):
        assert before <= after
        assert len(after) > len(before)
    assert arms[0] == set() and arms[-1] == set(UNITS)


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="challenger_share must be in"):
        assign_arm("customer-1", 1, share)


# --- the canary guard --------------------------------------------------------------------------------

BUDGET = Budget(max_error_rate=0.01, max_p99_ms=50.0, min_requests=200)


def test_a_healthy_challenger_waits_for_min_requests_then_advances() -> None:
    # Given a guard fed a healthy challenger (1 error in 300, all fast) and a champion
    guard = CanaryGuard()
    for i in range(199):
        guard.record("challenger", ok=i != 10, latency_ms=5.0 + i % 20)
        guard.record("champion", ok=True, latency_ms=4.0)

    # Then it waits below min_requests, and advances at min_requests
    assert guard.verdict(BUDGET) == "wait"
    guard.record("challenger", ok=True, latency_ms=6.0)
    assert guard.verdict(BUDGET) == "advance"
    stats = guard.snapshot()
    assert (stats.challenger_requests, stats.challenger_errors, stats.champion_requests) == (200, 1, 199)
    assert stats.challenger_p99_ms is not None and stats.challenger_p99_ms < 50

    # And after a step change (reset) it starts over
    guard.reset()
    assert guard.verdict(BUDGET) == "wait"
    assert guard.snapshot().challenger_requests == 0


def test_a_slow_challenger_breaches_on_p99() -> None:
    # Given a challenger with no errors but 5% of its requests at 120 ms
    guard = CanaryGuard()
    for i in range(400):
        guard.record("challenger", ok=True, latency_ms=120.0 if i % 20 == 0 else 8.0)

    # When it is judged
    judgement = guard.judge(BUDGET)

    # Then it breaches on latency, and the evidence names the p99
    assert judgement.verdict == "breach"
    assert "p99 120.0 ms exceeds 50.0 ms" in judgement.reason
    assert judgement.evidence()["challenger_p99_ms"] == 120.0


def test_one_slow_request_in_a_hundred_is_within_a_p99_budget() -> None:
    # Given a challenger whose slow requests are exactly 1% of its traffic
    guard = CanaryGuard()
    for i in range(300):
        guard.record("challenger", ok=True, latency_ms=500.0 if i % 100 == 0 else 8.0)

    # Then its nearest-rank p99 is fast, and it advances
    assert guard.snapshot().challenger_p99_ms == 8.0
    assert guard.verdict(BUDGET) == "advance"


def test_the_p99_is_the_nearest_rank_99th_percentile() -> None:
    # Given latencies 1..200 ms, shuffled
    guard = CanaryGuard()
    for latency in sorted(range(1, 201), key=lambda n: (n * 7919) % 201):
        guard.record("challenger", ok=True, latency_ms=float(latency))

    # Then the p99 is the 198th smallest (ceil(0.99 * 200)), and a 197 ms budget is breached, 198 is not
    assert guard.snapshot().challenger_p99_ms == 198.0
    assert guard.verdict(Budget(max_p99_ms=197.0)) == "breach"
    assert guard.verdict(Budget(max_p99_ms=198.0)) == "advance"


def test_a_failing_challenger_breaches_early_once_errors_exceed_the_allowance() -> None:
    # Given a budget allowing 1% errors over 200 requests: 2 errors
    guard = CanaryGuard()
    for _ in range(20):
        guard.record("challenger", ok=True, latency_ms=5.0)

    # When a second error arrives, the allowance is not yet exceeded: wait
    guard.record("challenger", ok=False, latency_ms=5.0)
    guard.record("challenger", ok=False, latency_ms=5.0)
    assert guard.verdict(BUDGET) == "wait"

    # Then the third, at 23 requests, is a breach: the rate at 200 requests is over 1% whatever comes next
    guard.record("challenger", ok=False, latency_ms=5.0)
    judgement = guard.judge(BUDGET)
    assert judgement.verdict == "breach"
    assert "3 challenger errors in 23 requests" in judgement.reason


def test_after_min_requests_the_error_rate_itself_is_judged() -> None:
    # Given 400 challenger requests
    guard = CanaryGuard()
    for i in range(400):
        guard.record("challenger", ok=i >= 4, latency_ms=5.0)

    # Then 4 errors in 400 (1%) is within budget, a fifth (1.25%) is not
    assert guard.verdict(BUDGET) == "advance"
    guard.record("challenger", ok=False, latency_ms=5.0)
    assert guard.verdict(BUDGET) == "breach"


def test_slow_requests_breach_early_once_they_exceed_what_a_p99_of_min_requests_allows() -> None:
    # Given 10 fast requests and 2 slow ones: 200 requests may hold 2 above the p99 bound
    guard = CanaryGuard()
    for _ in range(10):
        guard.record("challenger", ok=True, latency_ms=5.0)
    guard.record("challenger", ok=True, latency_ms=300.0)
    guard.record("challenger", ok=True, latency_ms=300.0)
    assert guard.verdict(BUDGET) == "wait"

    # When a third slow one arrives, the p99 at 200 requests is over the bound whatever comes next
    guard.record("challenger", ok=True, latency_ms=300.0)
    assert guard.verdict(BUDGET) == "breach"


def test_the_champion_outcomes_never_decide_the_verdict() -> None:
    guard = CanaryGuard()
    for _ in range(500):
        guard.record("champion", ok=False, latency_ms=900.0)
    assert guard.verdict(BUDGET) == "wait"


def test_the_guard_keeps_a_bounded_window_and_counts_exactly_across_threads() -> None:
    # Given a guard with a 100-sample latency window, fed by 8 threads at once
    guard = CanaryGuard(window=100)

    def feed() -> None:
        for i in range(1_000):
            guard.record("challenger", ok=i % 500 != 0, latency_ms=float(i % 50))

    threads = [threading.Thread(target=feed) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then no request was lost and memory stayed bounded
    stats = guard.snapshot()
    assert (stats.challenger_requests, stats.challenger_errors) == (8_000, 16)
    assert stats.latency_samples == 100


def test_bad_records_and_budgets_are_refused() -> None:
    guard = CanaryGuard()
    with pytest.raises(ValueError, match="unknown arm"):
        guard.record("shadow", ok=True, latency_ms=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        guard.record("challenger", ok=True, latency_ms=float("nan"))
    with pytest.raises(ValueError, match="max_error_rate"):
        Budget(max_error_rate=1.5)
    with pytest.raises(ValueError, match="min_requests"):
        Budget(min_requests=0)
    with pytest.raises(ValueError, match="unknown budget key"):
        Budget.from_mapping({"max_p95_ms": 20})


# --- experiments in the registry ---------------------------------------------------------------------


@pytest.fixture
def db(falaj_home: Path) -> Iterator[Session]:
    """A session on the fresh platform DB of an isolated ``$FALAJ_HOME``, fraud v1 champion, v2 gated."""
    with registry.session() as session:
        champion, challenger = _add_version(session), _add_version(session)
        _decide(session, champion, passed=True)
        _decide(session, challenger, passed=True)
        registry.promote(session, "fraud", champion.version, approver="demo-approver", reason="first model")
        session.commit()
        yield session


def _add_version(db: Session, use_case: str = "fraud") -> registry.ModelVersion:
    return add_version(db, use_case, features=("txn_count_1h", "amount_aed"), created_by=TRAINER)


def _experiment_events(db: Session) -> list[dict[str, object]]:
    return [event for event in audit.load(db) if event["action"] == "model.experiment"]


def test_an_approver_starts_an_ab_experiment_and_the_plan_serves_it(db: Session) -> None:
    # When an approver starts an A/B test of v2 at 20%
    experiment = rollout.start_experiment(
        db, "fraud", "ab", 2, APPROVER, "try v2 on live traffic", weight=0.2
    )

    # Then it is active at revision 1, and v2 is the challenger
    assert (experiment.status, experiment.revision, experiment.challenger_share) == ("active", 1, 0.2)
    assert registry.resolve_alias(db, "fraud", "challenger").version == 2
    # And the plan names both models, the split and the default budget
    plan = rollout.serving_plan(db, "fraud")
    assert (plan.mode, plan.challenger_share, plan.experiment_id, plan.revision) == (
        "ab",
        0.2,
        experiment.id,
        1,
    )
    assert plan.champion == rollout.ModelRef(
        1, "fraud:v1", "/artifacts/fraud/lightgbm", "0" * 64, ("txn_count_1h", "amount_aed")
    )
    assert plan.challenger is not None and plan.challenger.tag == "fraud:v2"
    assert plan.budget == Budget(max_error_rate=0.01, max_p99_ms=50.0, min_requests=200)
    # And the start is audited with its details, on an intact chain
    [event] = _experiment_events(db)
    assert (event["actor"], event["resource"], event["reason"]) == (
        APPROVER,
        "fraud:v2",
        "try v2 on live traffic",
    )
    assert event["details"]["event"] == "start" and event["details"]["challenger_share"] == 0.2  # type: ignore[index]
    assert event["details"]["champion"] == "fraud:v1"  # type: ignore[index]
    assert audit.verify(audit.load(db)).ok


def test_without_an_experiment_the_plan_is_the_champion_alone(db: Session) -> None:
    plan = rollout.serving_plan(db, "fraud")
    assert (plan.mode, plan.challenger, plan.challenger_share, plan.experiment_id) == (
        "none",
        None,
        0.0,
        None,
    )
    assert plan.champion.tag == "fraud:v1"
    with pytest.raises(rollout.NoChampionError, match="aml has no champion"):
        rollout.serving_plan(db, "aml")


@pytest.mark.parametrize(
    ("user", "allowed"),
    [
        ("ml-engineer", False),
        ("data-engineer", False),
        ("auditor", False),
        ("scoring-client", False),
        ("risk-officer", True),
        ("falaj-system", True),
    ],
)
def test_only_approvers_and_admins_hold_model_experiment_and_it_is_privileged(
    user: str, allowed: bool
) -> None:
    decision = authz.decide(user, "model.experiment", "fraud:v2")
    assert decision.allowed == allowed, decision.explain()
    assert decision.privileged


def test_an_ml_engineer_may_not_start_an_experiment(db: Session) -> None:
    with pytest.raises(
        registry.PromotionRefusedError, match=r"ml-engineer \(ml-engineer\) may not model\.experiment"
    ):
        rollout.start_experiment(db, "fraud", "ab", 2, "ml-engineer", "my model is ready", weight=0.5)
    assert rollout.active_experiment(db, "fraud") is None
    assert registry.resolve_alias(db, "fraud", "challenger") is None
    assert _experiment_events(db) == []


@pytest.mark.parametrize(
    ("mode", "options", "refusal"),
    [
        ("blue-green", {}, "unknown experiment mode 'blue-green'"),
        ("ab", {}, r"needs a weight in \(0, 1\)"),
        ("ab", {"weight": 1.0}, r"needs a weight in \(0, 1\)"),
        ("ab", {"weight": 0.0}, r"needs a weight in \(0, 1\)"),
        ("ab", {"weight": 0.5, "steps": [0.1]}, "steps are for canary"),
        ("canary", {"weight": 0.1}, "a weight is for A/B"),
        ("canary", {"steps": [0.05, 0.05, 0.5]}, "must increase strictly"),
        ("canary", {"steps": [0.5, 0.1]}, "must increase strictly"),
        ("canary", {"steps": [0.0, 0.1]}, r"shares in \(0, 1\]"),
        ("canary", {"steps": [0.1, 1.5]}, r"shares in \(0, 1\]"),
        ("canary", {"steps": []}, "at least one step"),
        ("shadow", {"budget": {"max_error_rate": 2}}, "bad budget: max_error_rate"),
        ("shadow", {"budget": {"p95": 2}}, "bad budget: unknown budget key"),
    ],
)
def test_bad_modes_weights_steps_and_budgets_are_refused(
    db: Session, mode: str, options: dict[str, object], refusal: str
) -> None:
    with pytest.raises(rollout.ExperimentRefusedError, match=refusal):
        rollout.start_experiment(db, "fraud", mode, 2, APPROVER, "try it", **options)  # type: ignore[arg-type]
    assert rollout.active_experiment(db, "fraud") is None


def test_only_a_gated_version_that_is_not_the_champion_nor_its_trainers_own_goes_live(db: Session) -> None:
    # Given v3 refused by the gate, v4 never evaluated, v5 flagged for retraining
    refused, _, erased = _add_version(db), _add_version(db), _add_version(db)
    _decide(db, refused, passed=False)
    _decide(db, erased, passed=True)
    erased.retrain_required = "trained on rows of an erased subject"

    # Then each is refused with its reason
    start = rollout.start_experiment
    with pytest.raises(
        rollout.ExperimentRefusedError, match=r"fraud:v3 has not passed the gate: pr_auc 0\.4000"
    ):
        start(db, "fraud", "shadow", 3, APPROVER, "try it")
    with pytest.raises(rollout.ExperimentRefusedError, match="never evaluated"):
        start(db, "fraud", "shadow", 4, APPROVER, "try it")
    with pytest.raises(rollout.ExperimentRefusedError, match="must be retrained: trained on rows"):
        start(db, "fraud", "shadow", 5, APPROVER, "try it")
    with pytest.raises(rollout.ExperimentRefusedError, match="fraud:v1 is already the champion"):
        start(db, "fraud", "shadow", 1, APPROVER, "try it")
    with pytest.raises(registry.PromotionRefusedError, match="fraud has no version 9"):
        start(db, "fraud", "shadow", 9, APPROVER, "try it")
    with pytest.raises(rollout.ExperimentRefusedError, match="needs a reason"):
        start(db, "fraud", "shadow", 2, APPROVER, "  ")
    assert rollout.experiments(db, "fraud") == []


def test_the_trainer_may_not_put_their_own_model_live(db: Session) -> None:
    # Given v3, trained by someone who is also an approver, and passed by the gate
    own = _add_version(db)
    own.created_by = APPROVER
    _decide(db, own, passed=True)

    # Then they may not start an experiment with it; another approver may
    with pytest.raises(rollout.ExperimentRefusedError, match="risk-officer trained fraud:v3 and cannot"):
        rollout.start_experiment(db, "fraud", "shadow", 3, APPROVER, "mine")
    assert rollout.start_experiment(db, "fraud", "shadow", 3, ONCALL, "theirs").started_by == ONCALL


def test_an_experiment_needs_a_champion(falaj_home: Path) -> None:
    with registry.session() as db:
        version = _add_version(db)
        _decide(db, version, passed=True)
        with pytest.raises(rollout.ExperimentRefusedError, match="fraud has no champion to compare fraud:v1"):
            rollout.start_experiment(db, "fraud", "ab", 1, APPROVER, "try it", weight=0.5)


def test_one_active_experiment_per_use_case(db: Session) -> None:
    # Given an active A/B test
    first = rollout.start_experiment(db, "fraud", "ab", 2, APPROVER, "first", weight=0.5)

    # When a canary is started next to it, it is refused with what to do
    with pytest.raises(
        rollout.ExperimentRefusedError, match=r"already has an active ab experiment .*stop or roll"
    ):
        rollout.start_experiment(db, "fraud", "canary", 2, APPROVER, "second")

    # Then, once the first is stopped, another may start
    rollout.stop_experiment(db, "fraud", APPROVER, "enough data")
    second = rollout.start_experiment(db, "fraud", "canary", 2, APPROVER, "second")
    assert [e.id for e in rollout.experiments(db, "fraud")] == [first.id, second.id]
    assert rollout.active_experiment(db, "fraud") is second


def test_the_database_itself_refuses_a_second_active_experiment(db: Session) -> None:
    # Given an active experiment
    rollout.start_experiment(db, "fraud", "ab", 2, APPROVER, "first", weight=0.5)
    db.commit()

    # When a writer that skips the rules inserts another active one for the same use case
    db.add(
        registry.Experiment(
            use_case="fraud",
            mode="shadow",
            challenger_id=2,
            champion_id=1,
            challenger_share=0.0,
            budget={},
            status="active",
            active_use_case="fraud",
            started_by="mallory",
            reason="race",
        )
    )

    # Then the unique constraint refuses it
    with pytest.raises(IntegrityError):
        db.flush()
    db.rollback()


def test_a_canary_advances_step_by_step_and_stays_at_the_last(db: Session) -> None:
    # Given a canary with the default steps
    experiment = rollout.start_experiment(db, "fraud", "canary", 2, APPROVER, "gradual rollout")
    assert (experiment.challenger_share, experiment.steps) == (0.01, [0.01, 0.05, 0.25, 0.5])
    stamps = [rollout.plan_stamp(db, "fraud")]

    # When it is advanced four times
    steps = [rollout.advance_canary(db, "fraud", APPROVER, "guard: within budget") for _ in range(4)]

    # Then it walked 5% -> 25% -> 50%, bumping the revision each time, then stayed and said so
    assert [(s.challenger_share, s.advanced, s.revision) for s in steps] == [
        (0.05, True, 2),
        (0.25, True, 3),
        (0.5, True, 4),
        (0.5, False, 4),
    ]
    assert steps[2].last_step and "step 4 of 4" in steps[2].message
    assert "fraud:v2 is at the canary's last step (50%)" in steps[3].message
    plan = rollout.serving_plan(db, "fraud")
    assert (plan.mode, plan.challenger_share, plan.revision) == ("canary", 0.5, 4)
    # And each real step was audited, the stay was not
    advances = [e["details"] for e in _experiment_events(db) if e["details"]["event"] == "advance"]  # type: ignore[index]
    assert [(d["from_share"], d["to_share"]) for d in advances] == [(0.01, 0.05), (0.05, 0.25), (0.25, 0.5)]  # type: ignore[index]
    stamps.append(rollout.plan_stamp(db, "fraud"))
    assert stamps[0] != stamps[1] == plan.stamp


def test_a_stale_replica_cannot_skip_a_step(db: Session) -> None:
    # Given two replicas that read the canary at revision 1
    rollout.start_experiment(db, "fraud", "canary", 2, APPROVER, "gradual", steps=[0.1, 0.2, 0.4])
    seen = rollout.serving_plan(db, "fraud").revision

    # When the first advances it, the second's advance on the same judgement is refused
    rollout.advance_canary(db, "fraud", "falaj-system", "guard: advance", expected_revision=seen)
    with pytest.raises(
        rollout.ExperimentRefusedError, match=r"changed since it was read \(revision 1, now 2\)"
    ):
        rollout.advance_canary(db, "fraud", "falaj-system", "guard: advance", expected_revision=seen)

    # Then the canary is at its second step, not its third
    assert rollout.serving_plan(db, "fraud").challenger_share == 0.2


def test_only_a_canary_advances(db: Session) -> None:
    rollout.start_experiment(db, "fraud", "ab", 2, APPROVER, "split", weight=0.3)
    with pytest.raises(rollout.ExperimentRefusedError, match="is ab, not a canary"):
        rollout.advance_canary(db, "fraud", APPROVER, "more")
    with pytest.raises(registry.PromotionRefusedError, match=r"may not model\.experiment"):
        rollout.stop_experiment(db, "fraud", "auditor", "I saw enough")


def test_a_breached_canary_is_rolled_back_with_its_evidence(db: Session) -> None:
    # Given a canary and a guard that saw the challenger fail
    rollout.start_experiment(db, "fraud", "canary", 2, APPROVER, "gradual")
    guard = CanaryGuard()
    for i in range(30):
        guard.record("challenger", ok=i % 10 != 0, latency_ms=5.0)
    judgement = guard.judge(rollout.serving_plan(db, "fraud").budget or Budget())
    assert judgement.verdict == "breach"

    # When the server rolls it back on that evidence
    experiment = rollout.roll_back_experiment(
        db, "fraud", "falaj-system", judgement.reason, judgement.evidence()
    )

    # Then it is rolled back, ended, no longer active, and v2 is off the challenger alias
    assert (experiment.status, experiment.ended_by, experiment.revision) == ("rolled_back", "falaj-system", 2)
    assert experiment.ended_at is not None and experiment.end_reason == judgement.reason
    assert rollout.active_experiment(db, "fraud") is None
    assert registry.resolve_alias(db, "fraud", "challenger") is None
    cleared = registry.alias_history(db, "fraud")[-1]
    assert (cleared.alias, cleared.version_id, cleared.actor) == ("challenger", None, "falaj-system")
    # And the plan is the champion alone again
    assert rollout.serving_plan(db, "fraud").mode == "none"
    # And the audit event carries the evidence
    event = _experiment_events(db)[-1]
    assert event["details"]["event"] == "roll_back"  # type: ignore[index]
    assert event["details"]["evidence"]["challenger_errors"] == 3  # type: ignore[index]
    assert event["details"]["evidence"]["verdict"] == "breach"  # type: ignore[index]
    # And nothing more can be done to it
    with pytest.raises(rollout.ExperimentRefusedError, match="fraud has no active experiment"):
        rollout.advance_canary(db, "fraud", APPROVER, "continue")
    with pytest.raises(rollout.ExperimentRefusedError, match="fraud has no active experiment"):
        rollout.stop_experiment(db, "fraud", APPROVER, "stop")


def test_a_shadow_scores_a_copy_and_its_alias_ends_with_it(db: Session) -> None:
    # Given the gate left v2 as the challenger awaiting approval
    v2 = registry.find_version(db, "fraud", 2)
    registry.set_alias(db, "fraud", "challenger", v2, "falaj-system", "gate passed, awaits approval")

    # When v2 runs as a shadow
    experiment = rollout.start_experiment(db, "fraud", "shadow", 2, APPROVER, "watch it on live traffic")

    # Then it is on the shadow alias with no share of the answers
    assert registry.resolve_alias(db, "fraud", "shadow").id == v2.id
    plan = rollout.serving_plan(db, "fraud")
    assert (plan.mode, plan.challenger_share, plan.challenger.tag) == ("shadow", 0.0, "fraud:v2")  # type: ignore[union-attr]

    # When it is stopped
    rollout.stop_experiment(db, "fraud", APPROVER, "seen enough")

    # Then the shadow alias is cleared, the challenger alias (awaiting approval) is left, the revision moved
    assert registry.resolve_alias(db, "fraud", "shadow") is None
    assert registry.resolve_alias(db, "fraud", "challenger").id == v2.id
    assert (experiment.status, experiment.revision, experiment.active_use_case) == ("ended", 2, None)
    assert [e["details"]["event"] for e in _experiment_events(db)] == ["start", "stop"]  # type: ignore[index]


def test_a_stopped_ab_test_leaves_the_challenger_awaiting_approval_and_changes_the_stamp(db: Session) -> None:
    # Given an A/B test
    rollout.start_experiment(db, "fraud", "ab", 2, APPROVER, "split", weight=0.5)
    during = rollout.serving_plan(db, "fraud")
    assert rollout.plan_stamp(db, "fraud") == during.stamp

    # When it is stopped
    rollout.stop_experiment(db, "fraud", ONCALL, "enough data")

    # Then the stamp changed, the plan is the champion alone and v2 still awaits an approver
    after = rollout.serving_plan(db, "fraud")
    assert rollout.plan_stamp(db, "fraud") == after.stamp != during.stamp
    assert after.mode == "none"
    assert registry.resolve_alias(db, "fraud", "challenger").version == 2

    # And a promotion (an alias move) changes the stamp too
    registry.promote(db, "fraud", 2, approver=ONCALL, reason="won the A/B test")
    assert rollout.plan_stamp(db, "fraud") != after.stamp
    assert rollout.serving_plan(db, "fraud").champion.tag == "fraud:v2"


def test_the_migration_creates_the_experiments_table_on_a_fresh_db_and_reverts(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    # Given a brand-new platform DB, migrated on first use
    engine = registry.engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    columns = {column["name"] for column in inspect(engine).get_columns("experiments")}
    assert {
        "use_case",
        "mode",
        "challenger_id",
        "champion_id",
        "challenger_share",
        "steps",
        "step_index",
    } <= columns
    assert {"budget", "status", "started_by", "ended_at", "end_reason", "revision"} <= columns

    # When it is downgraded below 0004 and upgraded again
    config = Config()
    config.set_main_option("script_location", str(registry.MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
        assert not inspect(connection).has_table("experiments")
        command.upgrade(config, "head")

    # Then the table is back and takes a row
    with Session(engine) as session:
        assert session.scalars(select(registry.Experiment)).all() == []
    engine.dispose()


def test_promoting_the_challenger_ends_its_experiment(db: Session) -> None:
    # Given an A/B test of v2 against v1
    experiment = rollout.start_experiment(db, "fraud", "ab", 2, APPROVER, "try v2", weight=0.5)
    # When an approver promotes v2
    registry.promote(db, "fraud", 2, approver="oncall", reason="v2 won the A/B test")
    # Then the experiment is over, and the plan serves v2 alone
    assert experiment.status == "ended" and experiment.end_reason == "the champion is now fraud:v2"
    assert rollout.active_experiment(db, "fraud") is None
    plan = rollout.serving_plan(db, "fraud")
    assert (plan.champion.tag, plan.mode, plan.experiment_id) == ("fraud:v2", "none", None)
    assert _experiment_events(db)[-1]["details"]["event"] == "champion_changed"
