"""The platform at a glance for one user: models, monitoring, alerts and the audit chain's health.

A read model for the Airflow UI page (``plugins/falaj_airflow/ui.py``). Each section is authorized on
its own against ``policies/rbac.yaml``, with the resources the CLI uses for the same reads; a section
the user may not read is None and ``refused`` says why, so one missing permission never hides the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from pipelines.registry import as_utc

MODELS, MONITORING, ALERTS, AUDIT = "models", "monitoring", "alerts", "audit"
_ACTIONS = {MODELS: "model.read", MONITORING: "monitor.read", ALERTS: "monitor.read", AUDIT: "audit.verify"}


@dataclass(frozen=True)
class LineageSummary:
    data_version: str | None
    training_set_sha256: str
    code_version: str
    feature_service: str
    reference_profile: bool


@dataclass(frozen=True)
class ModelSummary:
    tag: str
    family: str
    created_at: datetime
    created_by: str
    aliases: tuple[str, ...]
    gate_passed: bool | None  # None: never evaluated
    gate_reason: str | None
    bento_tag: str | None
    lineage: LineageSummary


@dataclass(frozen=True)
class MonitorSummary:
    """The latest monitoring window of a use case's champion."""

    model_version: int
    window_start: datetime
    window_end: datetime
    rows: int
    insufficient: bool
    drifted: tuple[str, ...]
    quality: tuple[str, ...]
    performance: dict[str, Any]
    report_uri: str | None


@dataclass(frozen=True)
class AlertSummary:
    id: int
    use_case: str
    kind: str
    subject: str
    model_version: int | None
    severity: str
    status: str
    occurrences: int
    summary: str
    opened_at: datetime
    last_seen: datetime | None  # the end of the last window the condition was seen in
    report_uri: str | None


@dataclass(frozen=True)
class AuditStatus:
    ok: bool
    events: int
    checkpoints: int
    first_bad_seq: int | None
    problem: str  # empty when the chain holds


@dataclass(frozen=True)
class UseCaseOverview:
    name: str
    models: tuple[ModelSummary, ...] | None  # newest first
    monitoring: MonitorSummary | None  # None and not refused: no monitoring run yet
    refused: dict[str, str] = field(default_factory=dict)  # section -> the policy's reason


@dataclass(frozen=True)
class Overview:
    user: str
    use_cases: tuple[UseCaseOverview, ...]
    alerts: tuple[AlertSummary, ...] | None  # unresolved ones, newest first
    audit: AuditStatus | None
    refused: dict[str, str] = field(default_factory=dict)


def platform_overview(user: str) -> Overview:
    """What ``user`` may see of the platform now.

    Args:
        user: A platform identity (``policies/rbac.yaml`` users; the Airflow users are the same names).

    Returns:
        Per use case its models (``model.read`` on the use case) and latest monitoring run
        (``monitor.read`` on the use case); the unresolved alerts (``monitor.read *``, as
        ``falaj alerts list``) and the audit chain's verification (``audit.verify *``).
    """
    from pipelines import registry

    refused: dict[str, str] = {}
    with registry.session() as db:
        use_cases = tuple(
            _use_case(db, name, _allowed(user, MODELS, name), _allowed(user, MONITORING, name))
            for name in _use_case_names(db)
        )
        alerts = _alerts(db) if _check(user, ALERTS, "*", refused) else None
        audit = _audit(db) if _check(user, AUDIT, "*", refused) else None
    return Overview(user, use_cases, alerts, audit, refused)


def _allowed(user: str, section: str, resource: str) -> str | None:
    """None when allowed, else the reason."""
    from pipelines import authz

    decision = authz.decide(user, _ACTIONS[section], resource)
    return None if decision.allowed else decision.explain()


def _check(user: str, section: str, resource: str, refused: dict[str, str]) -> bool:
    reason = _allowed(user, section, resource)
    if reason is not None:
        refused[section] = reason
    return reason is None


def _use_case_names(db: Session) -> list[str]:
    """Every use case with a spec, and any the registry still holds rows of."""
    from sqlalchemy import select

    from pipelines import spec
    from pipelines.registry import ModelVersion, MonitorRun

    recorded = set(db.scalars(select(ModelVersion.use_case).distinct()))
    recorded |= set(db.scalars(select(MonitorRun.use_case).distinct()))
    return sorted(recorded | {loaded.name for loaded in spec.list_specs()})


def _use_case(
    db: Session, name: str, models_refused: str | None, monitoring_refused: str | None
) -> UseCaseOverview:
    refused = {MODELS: models_refused, MONITORING: monitoring_refused}
    return UseCaseOverview(
        name=name,
        models=None if models_refused else _models(db, name),
        monitoring=None if monitoring_refused else _latest_run(db, name),
        refused={section: reason for section, reason in refused.items() if reason},
    )


def _models(db: Session, use_case: str) -> tuple[ModelSummary, ...]:
    from sqlalchemy import select

    from pipelines import registry

    holders = {alias: registry.resolve_alias(db, use_case, alias) for alias in registry.ALIASES}
    versions = db.scalars(
        select(registry.ModelVersion)
        .where(registry.ModelVersion.use_case == use_case)
        .order_by(registry.ModelVersion.version.desc())
    )
    summaries = []
    for version in versions:
        decision = registry.latest_decision(db, version)
        lineage = version.lineage or {}
        summaries.append(
            ModelSummary(
                tag=version.tag,
                family=version.family,
                created_at=as_utc(version.created_at),
                created_by=version.created_by,
                aliases=tuple(a for a, held in holders.items() if held is not None and held.id == version.id),
                gate_passed=decision.passed if decision else None,
                gate_reason=decision.reason if decision else None,
                bento_tag=version.bento_tag,
                lineage=LineageSummary(
                    data_version=lineage.get("data_version"),
                    training_set_sha256=version.training_set_sha256,
                    code_version=version.code_version,
                    feature_service=version.feature_service,
                    reference_profile=bool((lineage.get("reference_profile") or {}).get("uri")),
                ),
            )
        )
    return tuple(summaries)


def _latest_run(db: Session, use_case: str) -> MonitorSummary | None:
    from sqlalchemy import select

    from pipelines.registry import MonitorRun

    run = db.scalar(
        select(MonitorRun)
        .where(MonitorRun.use_case == use_case)
        .order_by(MonitorRun.window_end.desc(), MonitorRun.id.desc())
        .limit(1)
    )
    if run is None:
        return None
    return MonitorSummary(
        model_version=run.model_version,
        window_start=as_utc(run.window_start),
        window_end=as_utc(run.window_end),
        rows=run.rows,
        insufficient=run.insufficient,
        drifted=tuple(run.drifted),
        quality=tuple(run.quality),
        performance=dict(run.performance),
        report_uri=run.report_uri,
    )


def _alerts(db: Session) -> tuple[AlertSummary, ...]:
    from pipelines import alerts

    return tuple(
        AlertSummary(
            id=alert.id,
            use_case=alert.use_case,
            kind=alert.kind,
            subject=alert.subject,
            model_version=alert.model_version,
            severity=alert.severity,
            status=alert.status,
            occurrences=alert.occurrences,
            summary=alert.summary,
            opened_at=as_utc(alert.opened_at),
            last_seen=as_utc(alert.last_window_end) if alert.last_window_end else None,
            report_uri=alert.report_uri,
        )
        for alert in alerts.list_alerts(db, status="unresolved")
    )


def _audit(db: Session) -> AuditStatus:
    """As ``falaj audit verify``: every link, and every signed checkpoint exported so far."""
    from pipelines import audit
    from pipelines.settings import get_settings

    exports = get_settings().home / "audit" / "exports"
    events = audit.load(db)
    try:
        checkpoints = audit.load_checkpoints(exports) if exports.exists() else []
    except ValueError as bad:  # a checkpoint whose signature does not hold
        return AuditStatus(False, len(events), 0, None, str(bad))
    verdict = audit.verify(events, checkpoints)
    return AuditStatus(verdict.ok, len(events), len(checkpoints), verdict.first_bad_seq, verdict.reason)


def report_link(report_uri: str) -> str:
    """Where a person opens a monitoring report: its page under the Airflow UI's Falaj page when the
    settings name the UI and the report lies in this home's report folder, else its path."""
    from pathlib import Path
    from urllib.parse import quote

    from pipelines.settings import get_settings

    settings = get_settings()
    path = Path(report_uri)
    folder = settings.reports_dir / "monitoring"
    if not settings.ui_url or not path.is_relative_to(folder) or len(path.relative_to(folder).parts) != 2:
        return report_uri
    use_case, name = path.relative_to(folder).parts
    return f"{settings.ui_url.rstrip('/')}/falaj/reports/{quote(use_case, safe='')}/{quote(name, safe='')}"
