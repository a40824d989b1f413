"""Model registry: versions with their lineage, gate decisions and aliases, in the platform DB."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pipelines.settings import get_settings

ALIASES = ("champion", "challenger", "shadow", "archived")


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[str]: JSON}


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
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)

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
    decided_by: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class AliasEvent(Base):
    """Append-only history of alias moves: who pointed which alias at which version, when and why."""

    __tablename__ = "alias_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    use_case: Mapped[str] = mapped_column(String(63), index=True)
    alias: Mapped[str] = mapped_column(String(32))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(1024))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


@lru_cache(maxsize=4)
def engine(url: str | None = None) -> Engine:
    """The platform DB engine; tables are created on first use."""
    created = sa_create_engine(url or get_settings().platform_db_url)
    Base.metadata.create_all(created)
    return created


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
    return db.get(ModelVersion, event.version_id) if event else None
