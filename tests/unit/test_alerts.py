"""Monitoring alerts: one per condition, severity only rises, and people move them open -> resolved."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipelines import alerts, audit, registry
from pipelines.cli import main

DAY = datetime(2026, 11, 1, tzinfo=UTC)


def finding(
    day: int = 0, severity: str = "warning", subject: str = "txn_amount_aed", **changes: Any
) -> alerts.Finding:
    fields: dict[str, Any] = {
        "use_case": "fraud", "kind": "drift", "subject": subject, "severity": severity,
        "summary": f"{subject} drifted: PSI 0.{30 + day}", "model_version": 3,
        "window_start": DAY + timedelta(days=day), "window_end": DAY + timedelta(days=day + 1),
        "report_uri": f"/reports/{day}.html", "details": {"psi": 0.3 + day / 100},
    }  # fmt: skip
    return alerts.Finding(**{**fields, **changes})


def falaj(user: str, *args: str) -> Any:
    return CliRunner().invoke(main, list(args), env={"FALAJ_USER": user})


def test_a_lasting_condition_is_one_alert_with_occurrences(falaj_home: Path) -> None:
    # Given the same drift seen on three daily windows
    with registry.session() as db, db.begin():
        delivered = [alerts.raise_alert(db, finding(day))[1] for day in range(3)]
        [alert] = alerts.list_alerts(db)
        # Then one alert, delivered once, that remembers when it started and what it saw last
        assert delivered == [True, False, False]
        assert (alert.occurrences, alert.status, alert.report_uri) == (3, "open", "/reports/2.html")
        shown = alerts.as_dict(alert)
        assert (shown["first_window_start"], shown["last_window_end"]) == (
            DAY.isoformat(), (DAY + timedelta(days=3)).isoformat(),
        )  # fmt: skip


def test_other_subjects_versions_and_kinds_are_other_alerts(falaj_home: Path) -> None:
    with registry.session() as db, db.begin():
        for changed in ({}, {"subject": "mcc"}, {"model_version": 4}, {"kind": "data_quality"}):
            assert alerts.raise_alert(db, finding(**changed))[1]
        assert len(alerts.list_alerts(db)) == 4


def test_severity_only_rises_and_rising_is_delivered_again(falaj_home: Path) -> None:
    with registry.session() as db, db.begin():
        alerts.raise_alert(db, finding(0, "warning"))
        alert, deliver = alerts.raise_alert(db, finding(1, "critical"))
        assert deliver and alert.severity == "critical"
        alert, deliver = alerts.raise_alert(db, finding(2, "warning"))
        assert not deliver and alert.severity == "critical"
        actions = [event["action"] for event in audit.load(db)]
    assert actions == ["monitor.alert.open", "monitor.alert.escalate"]


def test_the_lifecycle_refuses_steps_out_of_order(falaj_home: Path) -> None:
    with registry.session() as db, db.begin():
        alert, _ = alerts.raise_alert(db, finding())
        alerts.acknowledge(db, alert.id, "oncall", "looking")
        with pytest.raises(alerts.AlertError, match="only an open alert"):
            alerts.acknowledge(db, alert.id, "oncall", "again")
        with pytest.raises(alerts.AlertError, match="say how"):
            alerts.resolve(db, alert.id, "oncall", " ")
        alerts.resolve(db, alert.id, "oncall", "retrained as fraud:v4")
        with pytest.raises(alerts.AlertError, match="was resolved by oncall"):
            alerts.resolve(db, alert.id, "oncall", "again")
        with pytest.raises(alerts.AlertError, match="no alert 99"):
            alerts.acknowledge(db, 99, "oncall", "?")
        # A resolved condition seen again is a new alert
        again, deliver = alerts.raise_alert(db, finding(5))
        assert deliver and again.id != alert.id
    with pytest.raises(alerts.AlertError, match="unknown alert kind"):
        finding(kind="vibes")


def test_people_work_through_alerts_on_the_cli(falaj_home: Path) -> None:
    with registry.session() as db, db.begin():
        alert_id = alerts.raise_alert(db, finding())[0].id
    listed = falaj("auditor", "alerts", "list")
    assert listed.exit_code == 0 and f"#{alert_id} warning  open" in listed.output
    assert "txn_amount_aed drifted" in listed.output and "/reports/0.html" in listed.output
    denied = falaj("auditor", "alerts", "ack", str(alert_id), "--note", "mine")
    assert denied.exit_code != 0 and "monitor.manage" in denied.output
    acked = falaj("oncall", "alerts", "ack", str(alert_id), "--note", "on it")
    assert acked.exit_code == 0 and f"alert {alert_id} acknowledged by oncall" in acked.output
    again = falaj("oncall", "alerts", "ack", str(alert_id), "--note", "on it")
    assert again.exit_code == 1 and "only an open alert can be acknowledged" in again.output
    resolved = falaj("ml-engineer", "alerts", "resolve", str(alert_id), "--note", "retrained")
    assert resolved.exit_code == 0
    assert falaj("auditor", "alerts", "list").output.strip() == "no unresolved alerts"
    [row] = json.loads(falaj("auditor", "alerts", "list", "--status", "all", "--json").output)
    assert (row["status"], row["acknowledged_by"], row["resolved_by"], row["note"]) == (
        "resolved", "oncall", "ml-engineer", "retrained",
    )  # fmt: skip
