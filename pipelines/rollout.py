"""Live rollouts: how a use case's traffic is shared between the champion and one challenger.

Configured in the registry, switchable without a rebuild; three modes:

- ``ab``: a fixed share of units (customers, cards) goes to the challenger, sticky by a hash of the unit id;
- ``shadow``: the challenger scores a copy of live traffic asynchronously and its answer is never returned;
- ``canary``: a small sticky share that grows by steps and is rolled back on its own when the challenger
  breaks its error or latency budget (:class:`CanaryGuard` judges; the server calls :func:`advance_canary` or
  :func:`roll_back_experiment`).

A server reads :func:`serving_plan`, then polls :func:`plan_stamp` (one small query) and reads the plan again
only when the stamp differs from ``plan.stamp``. Every change is authorized (``model.experiment``), audited in
the caller's transaction and bumps the experiment's ``revision``.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Literal, cast, get_args

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipelines import audit, registry
from pipelines.registry import AliasEvent, Experiment, ModelVersion

Mode = Literal["ab", "shadow", "canary"]
PlanMode = Literal["none", "ab", "shadow", "canary"]
Arm = Literal["champion", "challenger"]
Verdict = Literal["wait", "advance", "breach"]

ACTION = "model.experiment"
DEFAULT_STEPS = (0.01, 0.05, 0.25, 0.5)
_HASH_SPACE = 2**64


class ExperimentRefusedError(registry.PromotionRefusedError):
    """An experiment change the registry's rules forbid; the message says which rule and what to do."""


class NoChampionError(LookupError):
    """The use case has no champion, so there is nothing to serve and nothing to compare a challenger with."""


@dataclass(frozen=True)
class Budget:
    """What a challenger may cost live before it is rolled back, judged per canary step.

    Attributes:
        max_error_rate: Largest tolerated share of failed challenger requests, in [0, 1).
        max_p99_ms: Largest tolerated 99th percentile latency of the challenger, in milliseconds.
        min_requests: Challenger requests a step needs before it may advance (and before a rate is judged).
    """

    max_error_rate: float = 0.01
    max_p99_ms: float = 50.0
    min_requests: int = 200

    def __post_init__(self) -> None:
        if not 0 <= self.max_error_rate < 1:
            raise ValueError(f"max_error_rate must be in [0, 1), not {self.max_error_rate}")
        if not self.max_p99_ms > 0 or math.isinf(self.max_p99_ms):
            raise ValueError(f"max_p99_ms must be a positive number of milliseconds, not {self.max_p99_ms}")
        if (
            isinstance(self.min_requests, bool)
            or not isinstance(self.min_requests, int)
            or self.min_requests < 1
        ):
            raise ValueError(f"min_requests must be a whole number of at least 1, not {self.min_requests!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Budget:
        """A budget from stored or given keys; missing keys take the defaults, unknown ones are refused."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown budget key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelRef:
    """What a server needs to load one registered version."""

    version: int
    tag: str
    artifact_uri: str
    onnx_sha256: str
    features: tuple[str, ...]

    @classmethod
    def of(cls, version: ModelVersion) -> ModelRef:
        return cls(
            version=version.version,
            tag=version.tag,
            artifact_uri=version.artifact_uri,
            onnx_sha256=version.onnx_sha256,
            features=tuple(version.features),
        )


@dataclass(frozen=True)
class ServingPlan:
    """How a use case's traffic is served right now.

    ``mode`` is ``none`` when no experiment is active. A promotion or rollback ends the active experiment
    (:func:`end_for_new_champion`); ``mode`` is also ``none`` if a challenger is champion some other way.

    Attributes:
        challenger_share: A/B weight or the canary's current share; 0 for ``none`` and ``shadow``.
        revision: The active experiment's revision (0 without one).
        alias_event_id: The use case's latest alias event, so a champion move changes :attr:`stamp` too.
    """

    use_case: str
    champion: ModelRef
    challenger: ModelRef | None
    mode: PlanMode
    challenger_share: float
    experiment_id: int | None
    budget: Budget | None
    revision: int
    alias_event_id: int = 0

    @classmethod
    def champion_only(cls, use_case: str, champion: ModelRef, alias_event_id: int = 0) -> ServingPlan:
        """Every request to the champion: no experiment."""
        return cls(
            use_case=use_case,
            champion=champion,
            challenger=None,
            mode="none",
            challenger_share=0.0,
            experiment_id=None,
            budget=None,
            revision=0,
            alias_event_id=alias_event_id,
        )

    @property
    def stamp(self) -> tuple[int, int, int]:
        """Compare with :func:`plan_stamp`: different means the plan changed and must be read again."""
        return (self.alias_event_id, self.experiment_id or 0, self.revision)


@dataclass(frozen=True)
class CanaryStep:
    """What :func:`advance_canary` did; ``advanced`` is False at the last step and ``message`` says so."""

    experiment_id: int
    step_index: int
    challenger_share: float
    advanced: bool
    last_step: bool
    revision: int
    message: str


def _latest_alias_event_id(use_case: str) -> Any:
    return select(func.max(AliasEvent.id)).where(AliasEvent.use_case == use_case).scalar_subquery()


def plan_stamp(db: Session, use_case: str) -> tuple[int, int, int]:
    """(latest alias event id, active experiment id, its revision) in one query; 0 where there is none.

    A server polls this and rereads :func:`serving_plan` only when it differs from ``plan.stamp``.
    """
    active = Experiment.active_use_case == use_case
    row = db.execute(
        select(
            _latest_alias_event_id(use_case),
            select(Experiment.id).where(active).scalar_subquery(),
            select(Experiment.revision).where(active).scalar_subquery(),
        )
    ).one()
    return (row[0] or 0, row[1] or 0, row[2] or 0)


def active_experiment(db: Session, use_case: str) -> Experiment | None:
    """The use case's active experiment, if any (there is at most one)."""
    return db.scalar(select(Experiment).where(Experiment.active_use_case == use_case))


def experiments(db: Session, use_case: str) -> list[Experiment]:
    """Every experiment the use case has had, oldest first."""
    return list(db.scalars(select(Experiment).where(Experiment.use_case == use_case).order_by(Experiment.id)))


def serving_plan(db: Session, use_case: str) -> ServingPlan:
    """The champion, the active experiment and its challenger, read in two queries.

    Raises:
        NoChampionError: nothing has been promoted yet (or the champion alias was cleared).
    """
    champion_id = (
        select(AliasEvent.version_id)
        .where(AliasEvent.use_case == use_case, AliasEvent.alias == "champion")
        .order_by(AliasEvent.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    found = db.execute(
        select(ModelVersion, _latest_alias_event_id(use_case)).where(ModelVersion.id == champion_id)
    ).first()
    if found is None:
        raise NoChampionError(f"{use_case} has no champion: promote a version that passed the gate first")
    champion, alias_event_id = found[0], found[1] or 0
    running = db.execute(
        select(Experiment, ModelVersion)
        .join(ModelVersion, ModelVersion.id == Experiment.challenger_id)
        .where(Experiment.active_use_case == use_case)
    ).first()
    plan = ServingPlan.champion_only(use_case, ModelRef.of(champion), alias_event_id)
    if running is None:
        return plan
    experiment, challenger = running[0], running[1]
    if challenger.id == champion.id:  # promoted mid-experiment: nothing left to compare
        return replace(plan, experiment_id=experiment.id, revision=experiment.revision)
    return ServingPlan(
        use_case=use_case,
        champion=plan.champion,
        challenger=ModelRef.of(challenger),
        mode=cast(PlanMode, experiment.mode),
        challenger_share=experiment.challenger_share,
        experiment_id=experiment.id,
        budget=Budget.from_mapping(experiment.budget),
        revision=experiment.revision,
        alias_event_id=alias_event_id,
    )


def _refuse_blank(reason: str) -> None:
    if not reason.strip():
        raise ExperimentRefusedError("an experiment change needs a reason")


def _validated_share_plan(
    mode: str, weight: float | None, steps: Sequence[float] | None
) -> tuple[float, list[float]]:
    """(initial challenger share, canary steps) for a mode, or a refusal naming the bad argument."""
    if mode not in get_args(Mode):
        raise ExperimentRefusedError(f"unknown experiment mode '{mode}'; one of {', '.join(get_args(Mode))}")
    if mode != "ab" and weight is not None:
        raise ExperimentRefusedError(f"a weight is for A/B experiments; a {mode} experiment takes none")
    if mode != "canary" and steps is not None:
        raise ExperimentRefusedError(f"steps are for canary experiments; a {mode} experiment takes none")
    if mode == "ab":
        if weight is None or not 0 < weight < 1:
            raise ExperimentRefusedError(
                f"an A/B experiment needs a weight in (0, 1), the challenger's share of units; got {weight}"
            )
        return float(weight), []
    if mode == "shadow":
        return 0.0, []
    shares = [float(share) for share in (DEFAULT_STEPS if steps is None else steps)]
    if not shares:
        raise ExperimentRefusedError("a canary needs at least one step")
    if not all(0 < share <= 1 for share in shares):
        raise ExperimentRefusedError(f"canary steps must be shares in (0, 1]; got {shares}")
    if any(later <= earlier for earlier, later in pairwise(shares)):
        raise ExperimentRefusedError(f"canary steps must increase strictly; got {shares}")
    return shares[0], shares


def start_experiment(
    db: Session,
    use_case: str,
    mode: str,
    challenger_version: int,
    actor: str,
    reason: str,
    *,
    weight: float | None = None,
    steps: Sequence[float] | None = None,
    budget: Budget | Mapping[str, Any] | None = None,
) -> Experiment:
    """Put a gated version live next to the champion, as an A/B split, a shadow or a canary.

    Args:
        mode: ``ab``, ``shadow`` or ``canary``.
        challenger_version: The version number (as in ``fraud:v3``) to try.
        actor: Who starts it; needs ``model.experiment`` and may not be the version's trainer.
        weight: A/B only: the challenger's share of units, in (0, 1).
        steps: Canary only: strictly increasing shares in (0, 1]; default 1%, 5%, 25%, 50%.
        budget: Error and latency budget (see :class:`Budget`); defaults where omitted.

    Raises:
        ExperimentRefusedError: the role, the gate, a pending retrain, separation of duties, another active
            experiment or a bad weight, step or budget forbids it; ``PromotionRefusedError`` for an unknown
            version or a missing role.
    """
    from pipelines.spec import load_spec

    version = registry.find_version(db, use_case, challenger_version)
    registry._require_role(actor, ACTION, version.tag)
    _refuse_blank(reason)
    if (task := load_spec(use_case).task) != "binary_classification":
        raise ExperimentRefusedError(f"{use_case} is a {task} use case: experiments judge binary ones only")
    share, shares = _validated_share_plan(mode, weight, steps)
    try:
        limits = budget if isinstance(budget, Budget) else Budget.from_mapping(budget or {})
    except (TypeError, ValueError) as bad:
        raise ExperimentRefusedError(f"bad budget: {bad}") from None
    if version.retrain_required:
        raise ExperimentRefusedError(f"{version.tag} must be retrained: {version.retrain_required}")
    decision = registry.latest_decision(db, version)
    if decision is None or not decision.passed:
        why = decision.reason if decision else "it was never evaluated"
        raise ExperimentRefusedError(f"{version.tag} has not passed the gate: {why}")
    if actor == version.created_by:
        raise ExperimentRefusedError(f"{actor} trained {version.tag} and cannot also put it live")
    champion = registry.resolve_alias(db, use_case, "champion")
    if champion is None:
        raise ExperimentRefusedError(f"{use_case} has no champion to compare {version.tag} with; promote one")
    if champion.id == version.id:
        raise ExperimentRefusedError(f"{version.tag} is already the champion")
    running = active_experiment(db, use_case)
    if running is not None:
        raise ExperimentRefusedError(
            f"{use_case} already has an active {running.mode} experiment (#{running.id}); "
            "stop or roll it back before starting another"
        )
    experiment = Experiment(
        use_case=use_case,
        mode=mode,
        challenger_id=version.id,
        champion_id=champion.id,
        challenger_share=share,
        steps=shares,
        step_index=0,
        budget=limits.as_dict(),
        status="active",
        active_use_case=use_case,
        started_by=actor,
        reason=reason,
        revision=1,
    )
    db.add(experiment)
    alias = "shadow" if mode == "shadow" else "challenger"
    registry.set_alias(db, use_case, alias, version, actor, f"{mode} experiment: {reason}")
    db.flush()
    details = {
        "event": "start",
        "experiment_id": experiment.id,
        "mode": mode,
        "champion": champion.tag,
        "challenger_share": share,
        "steps": shares,
        "budget": limits.as_dict(),
        "revision": experiment.revision,
    }
    audit.record(db, ACTION, version.tag, actor=actor, reason=reason, details=details)
    return experiment


def _active_for_change(db: Session, use_case: str, expected_revision: int | None) -> Experiment:
    # FOR UPDATE: two replicas acting on one breach or step serialize on the row (PostgreSQL).
    experiment = db.scalar(select(Experiment).where(Experiment.active_use_case == use_case).with_for_update())
    if experiment is None:
        raise ExperimentRefusedError(f"{use_case} has no active experiment")
    if expected_revision is not None and experiment.revision != expected_revision:
        raise ExperimentRefusedError(
            f"experiment #{experiment.id} changed since it was read (revision {expected_revision}, now "
            f"{experiment.revision}); read the plan again"
        )
    return experiment


def _end(experiment: Experiment, status: str, actor: str, reason: str) -> None:
    experiment.status = status
    experiment.active_use_case = None
    experiment.ended_at = datetime.now(UTC)
    experiment.ended_by = actor
    experiment.end_reason = reason
    experiment.revision += 1


def _clear_alias(db: Session, experiment: Experiment, alias: str, actor: str, reason: str) -> None:
    """Clear the alias if it still points at this experiment's challenger, as ``registry.promote`` does."""
    current = registry.resolve_alias(db, experiment.use_case, alias)
    if current is not None and current.id == experiment.challenger_id:
        db.add(
            AliasEvent(use_case=experiment.use_case, alias=alias, version_id=None, actor=actor, reason=reason)
        )


def _challenger_tag(db: Session, experiment: Experiment) -> str:
    challenger = db.get(ModelVersion, experiment.challenger_id)
    assert challenger is not None  # a foreign key
    return challenger.tag


def stop_experiment(db: Session, use_case: str, actor: str, reason: str) -> Experiment:
    """End the active experiment: all traffic goes back to the champion.

    A shadow's ``shadow`` alias is cleared; an A/B or canary challenger keeps its ``challenger`` alias, which
    (as the gate left it) means "awaits an approver's decision": promote it or leave it.
    """
    registry._require_role(actor, ACTION, use_case)
    _refuse_blank(reason)
    experiment = _active_for_change(db, use_case, None)
    _end(experiment, "ended", actor, reason)
    if experiment.mode == "shadow":
        _clear_alias(db, experiment, "shadow", actor, f"shadow experiment ended: {reason}")
    db.flush()
    details = {
        "event": "stop",
        "experiment_id": experiment.id,
        "mode": experiment.mode,
        "challenger_share": experiment.challenger_share,
        "revision": experiment.revision,
    }
    audit.record(db, ACTION, _challenger_tag(db, experiment), actor=actor, reason=reason, details=details)
    return experiment


def end_for_new_champion(db: Session, use_case: str, actor: str, champion_tag: str) -> Experiment | None:
    """End the active experiment because the champion moved (a promotion or a rollback did it).

    Its comparison was against the old champion, so it no longer holds; the caller's own role check
    already covered the move, and the end is audited with it.
    """
    experiment = active_experiment(db, use_case)
    if experiment is None:
        return None
    reason = f"the champion is now {champion_tag}"
    _end(experiment, "ended", actor, reason)
    if experiment.mode == "shadow":
        _clear_alias(db, experiment, "shadow", actor, f"shadow experiment ended: {reason}")
    db.flush()
    details = {"event": "champion_changed", "experiment_id": experiment.id, "revision": experiment.revision}
    audit.record(db, ACTION, _challenger_tag(db, experiment), actor=actor, reason=reason, details=details)
    return experiment


def advance_canary(
    db: Session, use_case: str, actor: str, reason: str, *, expected_revision: int | None = None
) -> CanaryStep:
    """Move the active canary to its next step; at the last step it stays there and the result says so.

    Args:
        expected_revision: The revision the caller judged (``plan.revision``); if the experiment changed
            since, the call is refused, so two replicas never skip a step between them.
    """
    registry._require_role(actor, ACTION, use_case)
    _refuse_blank(reason)
    experiment = _active_for_change(db, use_case, expected_revision)
    if experiment.mode != "canary":
        raise ExperimentRefusedError(f"experiment #{experiment.id} is {experiment.mode}, not a canary")
    tag = _challenger_tag(db, experiment)
    last = len(experiment.steps) - 1
    if experiment.step_index >= last:
        return CanaryStep(
            experiment_id=experiment.id,
            step_index=experiment.step_index,
            challenger_share=experiment.challenger_share,
            advanced=False,
            last_step=True,
            revision=experiment.revision,
            message=(
                f"{tag} is at the canary's last step ({experiment.challenger_share:.0%}); "
                "promote it or stop the experiment"
            ),
        )
    before = experiment.challenger_share
    experiment.step_index += 1
    experiment.challenger_share = experiment.steps[experiment.step_index]
    experiment.revision += 1
    db.flush()
    details = {
        "event": "advance",
        "experiment_id": experiment.id,
        "from_share": before,
        "to_share": experiment.challenger_share,
        "step_index": experiment.step_index,
        "revision": experiment.revision,
    }
    audit.record(db, ACTION, tag, actor=actor, reason=reason, details=details)
    return CanaryStep(
        experiment_id=experiment.id,
        step_index=experiment.step_index,
        challenger_share=experiment.challenger_share,
        advanced=True,
        last_step=experiment.step_index == last,
        revision=experiment.revision,
        message=(
            f"{tag} now serves {experiment.challenger_share:.0%} "
            f"(step {experiment.step_index + 1} of {last + 1})"
        ),
    )


def roll_back_experiment(
    db: Session, use_case: str, actor: str, reason: str, evidence: Mapping[str, Any]
) -> Experiment:
    """End the active experiment as failed and take its challenger off the ``challenger``/``shadow`` alias.

    Args:
        evidence: What showed the failure (a guard's :meth:`Judgement.evidence`, an alert); kept in the audit
            event as JSON (values it cannot hold are written as their text).
    """
    registry._require_role(actor, ACTION, use_case)
    _refuse_blank(reason)
    experiment = _active_for_change(db, use_case, None)
    _end(experiment, "rolled_back", actor, reason)
    alias = "shadow" if experiment.mode == "shadow" else "challenger"
    _clear_alias(db, experiment, alias, actor, f"{experiment.mode} experiment rolled back: {reason}")
    db.flush()
    details = {
        "event": "roll_back",
        "experiment_id": experiment.id,
        "mode": experiment.mode,
        "challenger_share": experiment.challenger_share,
        "revision": experiment.revision,
        "evidence": json.loads(json.dumps(dict(evidence), default=str)),
    }
    audit.record(db, ACTION, _challenger_tag(db, experiment), actor=actor, reason=reason, details=details)
    return experiment


def assign_arm(unit_id: str, experiment_id: int, challenger_share: float) -> Arm:
    """The arm a unit (a customer, a card) is served by, the same on every call and every server.

    SHA-256 of ``"{experiment_id}:{unit_id}"`` mapped to [0, 1); the challenger's iff below the share. A
    unit's point never moves within an experiment, so growing the share only moves units from the champion
    to the challenger, never back; another experiment draws a fresh, independent split.
    """
    if not 0 <= challenger_share <= 1:
        raise ValueError(f"challenger_share must be in [0, 1], not {challenger_share}")
    digest = hashlib.sha256(f"{experiment_id}:{unit_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / _HASH_SPACE
    return "challenger" if point < challenger_share else "champion"


@dataclass(frozen=True)
class GuardStats:
    """Outcomes since the last reset; latencies cover the challenger's most recent ``latency_samples``."""

    challenger_requests: int
    challenger_errors: int
    challenger_p99_ms: float | None
    latency_samples: int
    champion_requests: int
    champion_errors: int


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str
    stats: GuardStats

    def evidence(self) -> dict[str, Any]:
        """For :func:`roll_back_experiment`: the verdict, why, and the counts behind it."""
        return {"verdict": self.verdict, "reason": self.reason, **asdict(self.stats)}


def _allowed_over(limit: int) -> int:
    """Of ``limit`` samples, how many may exceed a bound their p99 keeps (nearest rank: ceil(0.99 n)-th)."""
    return limit - (-(-99 * limit // 100))


class CanaryGuard:
    """Judges the challenger's live outcomes against a :class:`Budget`, in memory, one per server process.

    Counts are exact; latencies are kept in a bounded window of the challenger's most recent ``window``
    requests (O(1) memory whatever the traffic), which should be at least the budget's ``min_requests``.
    ``record`` is O(1) under a lock; ``judge`` copies the window under the lock and scans the copy
    (O(window), no full sort), so call it from a timer or every k-th request rather than on every request.
    Warm a model up before it takes canary traffic: a cold start's slow first calls count.

    The rule, over the challenger's requests since the last :meth:`reset` (n requests, e errors, s of the
    windowed latencies above ``max_p99_ms``, m = ``min_requests``, r = ``max_error_rate``):

    - ``breach`` on errors when e > r * max(n, m). From m requests on that is the error rate above r; before
      m it fires as soon as the errors alone exceed the allowance of the first m requests, because then the
      rate at m is above r whatever the remaining requests do: a failing challenger is stopped early.
    - ``breach`` on latency when the nearest-rank p99 of the window exceeds ``max_p99_ms``, i.e. s > the
      samples a p99 allows above it; before m, by the same argument, when s already exceeds what m samples
      allow (3 of the first 200).
    - ``advance`` once n >= m with neither breach; ``wait`` before that.
    """

    def __init__(self, window: int = 4096) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=window)
        self._counts = {"challenger": [0, 0], "champion": [0, 0]}  # arm: [requests, errors]

    def record(self, arm: Arm, ok: bool, latency_ms: float) -> None:
        """One served request of ``arm``: whether it succeeded and how long it took."""
        if arm not in self._counts:
            raise ValueError(f"unknown arm '{arm}'; champion or challenger")
        if not latency_ms >= 0:  # also refuses NaN, which would poison every comparison
            raise ValueError(f"latency_ms must be a non-negative number, not {latency_ms}")
        with self._lock:
            counts = self._counts[arm]
            counts[0] += 1
            counts[1] += not ok
            if arm == "challenger":
                self._latencies.append(latency_ms)

    def reset(self) -> None:
        """Forget everything: call it when the step (the plan's revision) changes."""
        with self._lock:
            self._latencies.clear()
            for counts in self._counts.values():
                counts[0] = counts[1] = 0

    def _read(self) -> tuple[GuardStats, list[float]]:
        with self._lock:
            (requests, errors), (champion, champion_errors) = (
                self._counts["challenger"],
                self._counts["champion"],
            )
            latencies = list(self._latencies)
        samples = len(latencies)
        p99 = heapq.nlargest(_allowed_over(samples) + 1, latencies)[-1] if samples else None
        return GuardStats(requests, errors, p99, samples, champion, champion_errors), latencies

    def snapshot(self) -> GuardStats:
        """The counts and the challenger's p99 since the last reset."""
        return self._read()[0]

    def judge(self, budget: Budget) -> Judgement:
        """The verdict, why, and the counts it rests on (see the class docstring for the rule)."""
        stats, latencies = self._read()
        requests, errors, samples, p99 = (
            stats.challenger_requests,
            stats.challenger_errors,
            stats.latency_samples,
            stats.challenger_p99_ms,
        )
        judged_over = max(requests, budget.min_requests)
        if errors > budget.max_error_rate * judged_over:
            why = (
                f"challenger error rate {errors}/{requests} exceeds {budget.max_error_rate:.2%}"
                if requests >= budget.min_requests
                else f"{errors} challenger errors in {requests} requests already exceed the "
                f"{budget.max_error_rate:.2%} allowed over {budget.min_requests}"
            )
            return Judgement("breach", why, stats)
        slow = sum(1 for latency in latencies if latency > budget.max_p99_ms)
        if slow > _allowed_over(samples if requests >= budget.min_requests else budget.min_requests):
            why = (
                f"challenger p99 {p99:.1f} ms exceeds {budget.max_p99_ms:.1f} ms"
                if requests >= budget.min_requests
                else f"{slow} challenger requests over {budget.max_p99_ms:.1f} ms in {requests} already "
                f"exceed what a p99 allows over {budget.min_requests}"
            )
            return Judgement("breach", why, stats)
        if requests >= budget.min_requests:
            return Judgement("advance", f"{requests} challenger requests within budget", stats)
        return Judgement("wait", f"{requests} of {budget.min_requests} challenger requests so far", stats)

    def verdict(self, budget: Budget) -> Verdict:
        """``wait``, ``advance`` or ``breach`` for the challenger since the last reset."""
        return self.judge(budget).verdict
