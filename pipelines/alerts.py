"""Monitoring alerts: one per condition, raised by the monitoring DAG and worked through by people.

A condition (use case, kind, model version, subject) has at most one unresolved alert: seeing it again
adds an occurrence and never a second alert, so a drift that lasts a week pages once. Its severity only
ever goes up, and going up is worth telling people again. People move an alert from open to acknowledged
to resolved (``falaj alerts ack|resolve``); every step is on the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipelines import audit
from pipelines.registry import MonitorAlert, as_utc

KINDS = ("drift", "data_quality", "performance")
SEVERITIES = ("warning", "critical")  # in rising order
STATUSES = ("open", "acknowledged", "resolved")


class AlertError(ValueError):
    """An alert that does not exist, or a step its lifecycle does not allow; the message says which."""


@dataclass(frozen=True)
class Finding:
    """What a monitoring run found about one subject in one window."""

    use_case: str
    kind: str
    subject: str
    severity: str
    summary: str
    model_version: int | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    report_uri: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AlertError(f"unknown alert kind {self.kind!r}: one of {', '.join(KINDS)}")
        if self.severity not in SEVERITIES:
            raise AlertError(f"unknown severity {self.severity!r}: one of {', '.join(SEVERITIES)}")

    @property
    def dedup_key(self) -> str:
        return f"{self.use_case}/{self.kind}/v{self.model_version}/{self.subject}"


def raise_alert(db: Session, finding: Finding, actor: str = "falaj-system") -> tuple[MonitorAlert, bool]:
    """Open an alert for ``finding``, or add an occurrence to the unresolved one of the same condition
    (none when the finding's window is the one the alert counted last).

    Returns:
        The alert, and whether to deliver it: it is new, or its severity just went up (or, for a
        window seen again, that window opened it or raised its severity).
    """
    now = datetime.now(UTC)
    alert = db.scalar(
        select(MonitorAlert)
        .where(MonitorAlert.dedup_key == finding.dedup_key, MonitorAlert.status != "resolved")
        .order_by(MonitorAlert.id.desc())
        .limit(1)
    )
    if alert is None:
        alert = MonitorAlert(
            use_case=finding.use_case, kind=finding.kind, subject=finding.subject[:255],
            model_version=finding.model_version, dedup_key=finding.dedup_key, severity=finding.severity,
            status="open", summary=finding.summary[:1024], details=finding.details, occurrences=1,
            first_window_start=finding.window_start, last_window_end=finding.window_end,
            report_uri=finding.report_uri, opened_at=now, updated_at=now,
        )  # fmt: skip
        db.add(alert)
        db.flush()
        _audit(db, "monitor.alert.open", alert, actor, finding.summary)
        return alert, True
    escalated = SEVERITIES.index(finding.severity) > SEVERITIES.index(alert.severity)
    # A window seen again (a retry after its commit, a rerun) counts once; what it opened or escalated
    # is delivered again, since the attempt that raised it may have died before it was delivered.
    again = alert.last_window_end is not None and as_utc(alert.last_window_end) == finding.window_end
    if not again:
        alert.occurrences += 1
    alert.summary = finding.summary[:1024]
    alert.details = finding.details
    alert.last_window_end = finding.window_end
    alert.report_uri = finding.report_uri or alert.report_uri
    alert.updated_at = now
    if escalated:
        alert.severity = finding.severity
        _audit(db, "monitor.alert.escalate", alert, actor, finding.summary)
    return alert, escalated or (again and _raised_in_last_window(db, alert))


def _raised_in_last_window(db: Session, alert: MonitorAlert) -> bool:
    """Whether the last window the alert counted opened it or raised its severity."""
    from pipelines.registry import AuditEvent

    if alert.occurrences == 1:
        return True
    escalation = db.scalar(
        select(AuditEvent.details)
        .where(AuditEvent.action == "monitor.alert.escalate", AuditEvent.resource == f"alert:{alert.id}")
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )
    return escalation is not None and escalation.get("occurrences") == alert.occurrences


def acknowledge(db: Session, alert_id: int, user: str, note: str) -> MonitorAlert:
    """Someone owns it now: an open alert becomes acknowledged."""
    alert = _get(db, alert_id)
    if alert.status != "open":
        raise AlertError(f"alert {alert_id} is {alert.status}; only an open alert can be acknowledged")
    alert.status, alert.acknowledged_by, alert.acknowledged_at = "acknowledged", user, datetime.now(UTC)
    alert.note, alert.updated_at = note[:1024], alert.acknowledged_at
    _audit(db, "monitor.alert.acknowledge", alert, user, note)
    return alert


def resolve(db: Session, alert_id: int, user: str, note: str) -> MonitorAlert:
    """The condition is dealt with (retrained, rolled back, the feed fixed, or judged harmless): say how."""
    alert = _get(db, alert_id)
    if alert.status == "resolved":
        raise AlertError(f"alert {alert_id} was resolved by {alert.resolved_by} at {alert.resolved_at}")
    if not note.strip():
        raise AlertError("say how the alert was resolved (--note)")
    alert.status, alert.resolved_by, alert.resolved_at = "resolved", user, datetime.now(UTC)
    alert.note, alert.updated_at = note[:1024], alert.resolved_at
    _audit(db, "monitor.alert.resolve", alert, user, note)
    return alert


def list_alerts(db: Session, use_case: str | None = None, status: str | None = None) -> list[MonitorAlert]:
    """Newest first; ``status`` "unresolved" means open or acknowledged."""
    query = select(MonitorAlert).order_by(MonitorAlert.id.desc())
    if use_case is not None:
        query = query.where(MonitorAlert.use_case == use_case)
    if status == "unresolved":
        query = query.where(MonitorAlert.status != "resolved")
    elif status is not None:
        if status not in STATUSES:
            raise AlertError(f"unknown status {status!r}: one of {', '.join(STATUSES)} or unresolved")
        query = query.where(MonitorAlert.status == status)
    return list(db.scalars(query))


def as_dict(alert: MonitorAlert) -> dict[str, Any]:
    """The alert as a delivery payload or a JSON listing carries it."""
    fields = ("id", "use_case", "kind", "subject", "model_version", "severity", "status", "summary",
              "occurrences", "first_window_start", "last_window_end", "report_uri", "opened_at",
              "acknowledged_by", "resolved_by", "note", "details")  # fmt: skip
    payload = {name: getattr(alert, name) for name in fields}
    return {key: as_utc(v).isoformat() if isinstance(v, datetime) else v for key, v in payload.items()}


def _get(db: Session, alert_id: int) -> MonitorAlert:
    alert = db.get(MonitorAlert, alert_id)
    if alert is None:
        raise AlertError(f"no alert {alert_id}: `falaj alerts list` shows them")
    return alert


def _audit(db: Session, action: str, alert: MonitorAlert, actor: str, reason: str) -> None:
    details = {"severity": alert.severity, "status": alert.status, "occurrences": alert.occurrences}
    audit.record(db, action, f"alert:{alert.id}", actor=actor, reason=reason[:500], details=details)
