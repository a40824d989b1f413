"""Model registry: versions with their lineage, gate decisions, approvals and aliases, in the platform DB.

The schema is owned by the Alembic migrations in ``pipelines/migrations``; every engine is upgraded to
the head revision before first use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    select,
    text,
)
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pipelines import audit
from pipelines.settings import get_settings

ALIASES = ("champion", "challenger", "shadow", "archived")
LOCK_WAIT_MS = 600_000  # how long an attempt waits for another attempt of the same task to finish


def as_utc(moment: datetime) -> datetime:
    """A stored time as UTC: SQLite hands datetimes back naive, and every time the platform stores is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        list[dict[str, Any]]: JSON,
    }


class ModelVersion(Base):
    """One trained model and everything it came from."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("use_case", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    use_case: Mapped[str] = mapped_column(String(63), index=True)
    version: Mapped[int] = mapped_column(Integer)
    family: Mapped[str] = mapped_column(String(32))
    artifact_uri: Mapped[str] = mapped_column(String(1024))
    onnx_sha256: Mapped[str] = mapped_column(String(64))
    parity_max_abs_diff: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]]
    params: Mapped[dict[str, Any]]
    features: Mapped[list[str]]
    feature_service: Mapped[str] = mapped_column(String(63))
    training_set_uri: Mapped[str] = mapped_column(String(1024))
    training_set_sha256: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(64))
    bento_tag: Mapped[str | None] = mapped_column(String(255), default=None)
    lineage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(128), doc="Who trained it; they may not approve it.")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    retrain_required: Mapped[str | None] = mapped_column(
        String(255), default=None, doc="Why it may not be promoted again (an erasure of its training rows)."
    )

    @property
    def tag(self) -> str:
        return f"{self.use_case}:v{self.version}"


class GateDecision(Base):
    __tablename__ = "gate_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    use_case: Mapped[str] = mapped_column(String(63), index=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    champion_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    metric: Mapped[str] = mapped_column(String(32))
    candidate_value: Mapped[float] = mapped_column(Float)
    champion_value: Mapped[float | None] = mapped_column(Float, default=None)
    min_value: Mapped[float] = mapped_column(Float)
    min_improvement: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(1024))
    checks: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    decided_by: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class AliasEvent(Base):
    """Append-only history of alias moves: who pointed which alias at which version, when and why."""

    __tablename__ = "alias_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    use_case: Mapped[str] = mapped_column(String(63), index=True)
    alias: Mapped[str] = mapped_column(String(32))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), doc="None: cleared.")
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(1024))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Approval(Base):
    """A person's sign-off that a gated version may serve; never the version's own trainer."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("gate_decisions.id"))
    approver: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(1024))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class AuditEvent(Base):
    """One link of the audit chain (see ``pipelines/audit.py``); rows are only ever appended."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    at: Mapped[str] = mapped_column(String(40), doc="UTC, ISO 8601, as hashed.")
    actor: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    resource: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(255), doc="Where the action came from: host, address.")
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(2048))
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Erasure(Base):
    """A data subject erased from a use case, by pseudonym only; ingest drops their rows from then on."""

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    use_case: Mapped[str] = mapped_column(String(63), index=True)
    subject: Mapped[str] = mapped_column(String(64), index=True, doc="Keyed pseudonym of the subject.")
    requested_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(1024))
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Experiment(Base):
    """A live rollout of a challenger next to the champion: an A/B split, a shadow copy or a canary.

    ``pipelines/rollout.py`` owns the rules; ``revision`` grows on every change, so a server notices one
    cheaply.
    """

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    use_case: Mapped[str] = mapped_column(String(63), index=True)
    mode: Mapped[str] = mapped_column(String(16), doc="ab, shadow or canary.")
    challenger_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    champion_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), doc="The champion at start.")
    challenger_share: Mapped[float] = mapped_column(
        Float, doc="A/B: the weight; canary: the current step's share; shadow: 0 (it is never returned)."
    )
    steps: Mapped[list[float]] = mapped_column(JSON, default=list, doc="Canary shares, strictly increasing.")
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    budget: Mapped[dict[str, Any]] = mapped_column(doc="max_error_rate, max_p99_ms, min_requests per step.")
    status: Mapped[str] = mapped_column(String(16), doc="active, ended or rolled_back.")
    active_use_case: Mapped[str | None] = mapped_column(
        String(63), unique=True, default=None, doc="The use case while active, else None: one active each."
    )
    started_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(1024))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    ended_by: Mapped[str | None] = mapped_column(String(128), default=None)
    end_reason: Mapped[str | None] = mapped_column(String(1024), default=None)
    revision: Mapped[int] = mapped_column(Integer, default=1)


class Prediction(Base):
    """One score served (or scored in shadow); written by ``pipelines.predictions``, off the request path."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_use_case_at", "use_case", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    use_case: Mapped[str] = mapped_column(String(63))
    request_id: Mapped[str] = mapped_column(
        String(64), index=True, doc="The transaction id: labels join on it."
    )
    unit: Mapped[str] = mapped_column(String(64), doc="Pseudonym of the unit the arm was assigned by.")
    arm: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[int] = mapped_column(Integer)
    experiment_id: Mapped[int | None] = mapped_column(Integer, default=None)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, doc="Scored on a copy; never returned.")
    score: Mapped[float | None] = mapped_column(Float, doc="None when the model failed.")
    decision: Mapped[str | None] = mapped_column(String(16))
    threshold: Mapped[float | None] = mapped_column(Float, doc="None for a regression's answer.")
    latency_ms: Mapped[float] = mapped_column(Float)
    degraded: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(String(255), default=None)
    features: Mapped[dict[str, Any]] = mapped_column(default=dict)
    freshness: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ExperimentReview(Base):
    """One analysis of an experiment on its labelled predictions, and what it proposes to an approver.

    Written by ``pipelines/experiment_analysis.py``; a proposal never moves an alias by itself.
    """

    __tablename__ = "experiment_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"), index=True)
    use_case: Mapped[str] = mapped_column(String(63), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    window_start: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="The first prediction analysed; None without any."
    )
    window_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    metric: Mapped[str] = mapped_column(String(32))
    threshold: Mapped[float] = mapped_column(Float)
    arms: Mapped[dict[str, Any]] = mapped_column(doc="Per arm: counts and metrics on its labelled rows.")
    delta: Mapped[float | None] = mapped_column(Float, doc="Challenger − champion on the metric.")
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float, doc="Of the precision-at-threshold test.")
    proposal: Mapped[str] = mapped_column(String(32), doc="promote, rollback, continue or insufficient_data.")
    reason: Mapped[str] = mapped_column(String(1024))
    final: Mapped[bool] = mapped_column(Boolean, doc="The experiment had ended and no label was pending.")
    details: Mapped[dict[str, Any]] = mapped_column(doc="Tests, resamples, seed, minimums, look number.")
    reviewed_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class MonitorAlert(Base):
    """A monitoring finding someone must look at: drift, serving data quality or model performance.

    One row per condition (``dedup_key``) until it is resolved: a condition seen again adds an
    occurrence instead of a second alert. Lifecycle: open -> acknowledged -> resolved
    (``pipelines/alerts.py``).
    """

    __tablename__ = "monitor_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    use_case: Mapped[str] = mapped_column(String(63), index=True)
    kind: Mapped[str] = mapped_column(String(32), doc="drift, data_quality or performance.")
    subject: Mapped[str] = mapped_column(String(255), doc="What is affected: features, a metric.")
    model_version: Mapped[int | None] = mapped_column(Integer)
    dedup_key: Mapped[str] = mapped_column(String(400), index=True)
    severity: Mapped[str] = mapped_column(String(16), doc="warning or critical; only ever raised.")
    status: Mapped[str] = mapped_column(String(16), index=True, doc="open, acknowledged or resolved.")
    summary: Mapped[str] = mapped_column(String(1024))
    details: Mapped[dict[str, Any]] = mapped_column(doc="The latest occurrence's figures.")
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    first_window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_window_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    report_uri: Mapped[str | None] = mapped_column(String(1024), default=None)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128), default=None)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    resolved_by: Mapped[str | None] = mapped_column(String(128), default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    note: Mapped[str | None] = mapped_column(String(1024), default=None, doc="The last person's note.")


class MonitorRun(Base):
    """One monitoring window of a use case's champion: what drifted, input quality, and the report."""

    __tablename__ = "monitor_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    use_case: Mapped[str] = mapped_column(String(63), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    rows: Mapped[int] = mapped_column(Integer, doc="Predictions the champion served in the window.")
    insufficient: Mapped[bool] = mapped_column(Boolean, doc="Too few rows to judge: no alert either way.")
    drifted: Mapped[list[str]] = mapped_column(doc="Features (and 'prediction') that drifted.")
    quality: Mapped[list[str]] = mapped_column(doc="Features with a data-quality finding.")
    features: Mapped[dict[str, Any]] = mapped_column(doc="Per feature: PSI, adjusted p, rates, findings.")
    performance: Mapped[dict[str, Any]] = mapped_column(
        doc="On the labelled predictions of the lookback: counts, metrics, per slice, findings."
    )
    report_uri: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class PromotionRefusedError(RuntimeError):
    """A promotion or rollback the registry's rules forbid; the message says which rule."""


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def upgrade(connection: Any) -> None:
    """Bring the platform DB schema to the newest migration."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


@lru_cache(maxsize=4)
def engine(url: str | None = None) -> Engine:
    """The platform DB engine, migrated to the newest schema on first use.

    Raises:
        tls.InsecureConnectionError: TLS is required and the URL does not verify the server.
    """
    from pipelines import tls

    created = sa_create_engine(tls.secured(url or get_settings().platform_db_url, "FALAJ_DATABASE_URL"))
    if created.dialect.name == "sqlite" and created.url.database:
        Path(created.url.database).parent.mkdir(parents=True, exist_ok=True)
    with created.begin() as connection:
        if _behind_head(connection):
            _take_migration_turn(connection)
            upgrade(connection)
    return created


def _behind_head(connection: Any) -> bool:
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory(str(MIGRATIONS)).get_heads())
    return set(MigrationContext.configure(connection).get_current_heads()) != heads


def _take_migration_turn(connection: Any) -> None:
    """Two tasks opening a new database at once would both create its tables: they migrate in turn."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('falaj-migrations', 0))"))
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # alembic then reads the version under the lock


def lock(db: Session, name: str) -> None:
    """Hold the lock ``name`` until ``db``'s transaction ends; call it before the transaction reads.

    Attempts of one task instance can overlap (a retry next to the attempt it replaced, a zombie):
    taking the task's lock first makes the later one read what the earlier one committed. PostgreSQL
    takes a transaction-scoped advisory lock; SQLite has one writer at a time, so its write lock,
    taken now rather than at the first write, does the same for the whole database.
    """
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"), {"name": name})
        return
    db.execute(text(f"PRAGMA busy_timeout = {LOCK_WAIT_MS}"))  # wait the other attempt out
    db.execute(text("UPDATE alembic_version SET version_num = version_num WHERE 1 = 0"))  # takes it now


def session() -> Session:
    return Session(engine(), expire_on_commit=False)


def next_version(db: Session, use_case: str) -> int:
    latest = db.scalar(
        select(ModelVersion.version)
        .where(ModelVersion.use_case == use_case)
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )
    return (latest or 0) + 1


def set_alias(db: Session, use_case: str, alias: str, version: ModelVersion, actor: str, reason: str) -> None:
    if alias not in ALIASES:
        raise ValueError(f"unknown alias '{alias}'; one of {', '.join(ALIASES)}")
    db.add(AliasEvent(use_case=use_case, alias=alias, version_id=version.id, actor=actor, reason=reason))


def resolve_alias(db: Session, use_case: str, alias: str) -> ModelVersion | None:
    """The version an alias points at now: its latest event wins."""
    event = db.scalar(
        select(AliasEvent)
        .where(AliasEvent.use_case == use_case, AliasEvent.alias == alias)
        .order_by(AliasEvent.id.desc())
        .limit(1)
    )
    return db.get(ModelVersion, event.version_id) if event and event.version_id is not None else None


def _require_role(user: str, action: str, resource: str) -> None:
    """The registry enforces roles itself, whoever calls it; the second factor is the caller's to check."""
    from pipelines import authz

    decision = authz.decide(user, action, resource)
    if not decision.allowed:
        raise PromotionRefusedError(decision.explain())


def find_version(db: Session, use_case: str, number: int) -> ModelVersion:
    version = db.scalar(
        select(ModelVersion).where(ModelVersion.use_case == use_case, ModelVersion.version == number)
    )
    if version is None:
        raise PromotionRefusedError(f"{use_case} has no version {number}")
    return version


def versions_trained_on(db: Session, use_case: str, training_set_sha256s: set[str]) -> list[ModelVersion]:
    return list(
        db.scalars(
            select(ModelVersion)
            .where(ModelVersion.use_case == use_case)
            .where(ModelVersion.training_set_sha256.in_(sorted(training_set_sha256s)))
            .order_by(ModelVersion.version)
        )
    )


def latest_decision(db: Session, version: ModelVersion) -> GateDecision | None:
    return db.scalar(
        select(GateDecision)
        .where(GateDecision.candidate_id == version.id)
        .order_by(GateDecision.id.desc())
        .limit(1)
    )


def promote(db: Session, use_case: str, number: int, approver: str, reason: str) -> ModelVersion:
    """Make a gated version the champion on a second person's approval; the old champion is archived."""
    version = find_version(db, use_case, number)
    _require_role(approver, "model.promote", version.tag)
    if version.retrain_required:
        raise PromotionRefusedError(f"{version.tag} must be retrained: {version.retrain_required}")
    decision = latest_decision(db, version)
    if decision is None or not decision.passed:
        why = decision.reason if decision else "it was never evaluated"
        raise PromotionRefusedError(f"{version.tag} has not passed the gate: {why}")
    if approver == version.created_by:
        raise PromotionRefusedError(f"{approver} trained {version.tag} and cannot also approve it")
    if not reason.strip():
        raise PromotionRefusedError("an approval needs a reason")
    champion = resolve_alias(db, use_case, "champion")
    if champion is not None and champion.id == version.id:
        raise PromotionRefusedError(f"{version.tag} is already the champion")
    db.add(Approval(version_id=version.id, decision_id=decision.id, approver=approver, reason=reason))
    challenger = resolve_alias(db, use_case, "challenger")
    if challenger is not None and challenger.id == version.id:
        db.add(
            AliasEvent(
                use_case=use_case, alias="challenger", version_id=None, actor=approver, reason="promoted"
            )
        )
    if champion is not None:
        set_alias(db, use_case, "archived", champion, approver, f"replaced by {version.tag}")
    set_alias(db, use_case, "champion", version, approver, f"approved: {reason}")
    replaced = champion.tag if champion else None
    details = {"decision_id": decision.id, "replaced": replaced}
    audit.record(db, "model.promote", version.tag, actor=approver, reason=reason, details=details)
    _end_experiment(db, use_case, approver, version.tag)
    return version


def _end_experiment(db: Session, use_case: str, actor: str, champion_tag: str) -> None:
    from pipelines import rollout  # rollout builds on this module

    rollout.end_for_new_champion(db, use_case, actor, champion_tag)


def rollback(db: Session, use_case: str, actor: str, reason: str, to: int | None = None) -> ModelVersion:
    """Point ``champion`` back at an earlier champion: the one before the current, or version ``to``."""
    _require_role(actor, "model.rollback", use_case)
    current = resolve_alias(db, use_case, "champion")
    if current is None:
        raise PromotionRefusedError(f"{use_case} has no champion to roll back")
    former = [
        event.version_id
        for event in db.scalars(
            select(AliasEvent)
            .where(AliasEvent.use_case == use_case, AliasEvent.alias == "champion")
            .order_by(AliasEvent.id.desc())
        )
        if event.version_id not in (current.id, None)
    ]
    if to is None:
        if not former:
            raise PromotionRefusedError(f"{current.tag} is the only champion {use_case} has had")
        target = db.get(ModelVersion, former[0])
        assert target is not None
    else:
        target = find_version(db, use_case, to)
        if target.id not in former:
            raise PromotionRefusedError(f"{target.tag} was never a champion; promote it through the gate")
    set_alias(db, use_case, "archived", current, actor, f"rolled back to {target.tag}: {reason}")
    set_alias(db, use_case, "champion", target, actor, f"rollback from {current.tag}: {reason}")
    audit.record(db, "model.rollback", target.tag, actor=actor, reason=reason, details={"from": current.tag})
    _end_experiment(db, use_case, actor, target.tag)
    return target


def alias_history(db: Session, use_case: str) -> list[AliasEvent]:
    return list(db.scalars(select(AliasEvent).where(AliasEvent.use_case == use_case).order_by(AliasEvent.id)))
