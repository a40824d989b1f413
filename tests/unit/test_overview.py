"""The platform overview: what one user may see of models, monitoring, alerts and the audit chain."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipelines import alerts, registry
from pipelines.overview import platform_overview, report_link
from pipelines.registry import AuditEvent, MonitorRun
from pipelines.settings import get_settings
from tests.audit_chains import chain, mutate
from tests.registry_rows import add_version, decide

DAY = datetime(2026, 11, 1, tzinfo=UTC)


def drift(subject: str, report: str, **changes: Any) -> alerts.Finding:
    fields: dict[str, Any] = {
        "use_case": "fraud", "kind": "drift", "subject": subject, "severity": "critical",
        "summary": f"{subject} drifted: PSI 0.41", "model_version": 1, "window_start": DAY,
        "window_end": DAY + timedelta(days=1), "report_uri": report,
    }  # fmt: skip
    return alerts.Finding(**{**fields, **changes})


def populate(home: Path) -> str:
    """A champion, a refused challenger, a monitoring run, an open and a resolved alert; the report's path."""
    report = str(home / "reports" / "monitoring" / "fraud" / "20261101T000000-20261102T000000.html")
    with registry.session() as db, db.begin():
        champion = add_version(db)
        decide(db, champion, passed=True)
        registry.promote(db, "fraud", champion.version, approver="demo-approver", reason="first model")
        challenger = add_version(db, family="pytorch_mlp", created_by="ml-engineer")
        challenger.bento_tag = "fraud_scoring:2"
        challenger.lineage = {"data_version": "d" * 64, "reference_profile": {"uri": "/m/p.json"}}
        decide(db, challenger, passed=False)
        registry.set_alias(db, "fraud", "challenger", challenger, "ml-engineer", "shadow it first")
        db.add(
            MonitorRun(
                use_case="fraud", model_version=1, window_start=DAY, window_end=DAY + timedelta(days=1),
                rows=800, insufficient=False, drifted=["txn_amount_aed", "prediction"], quality=[],
                features={}, performance={"judged": True, "metrics": {"pr_auc": 0.61}, "findings": []},
                report_uri=report,
            )
        )  # fmt: skip
        alerts.raise_alert(db, drift("txn_amount_aed", report))
        gone, _ = alerts.raise_alert(db, drift("mcc", report, severity="warning"))
        alerts.resolve(db, gone.id, "oncall", "feed fixed")
    return report


def test_an_auditor_sees_every_section(falaj_home: Path) -> None:
    report = populate(falaj_home)

    overview = platform_overview("auditor")

    [fraud] = overview.use_cases
    assert fraud.name == "fraud" and fraud.refused == {}
    assert fraud.models is not None
    challenger, champion = fraud.models  # newest first
    assert (champion.tag, champion.aliases, champion.gate_passed) == ("fraud:v1", ("champion",), True)
    assert champion.gate_reason == "pr_auc 0.8000 clears the floor" and champion.bento_tag is None
    assert not champion.lineage.reference_profile and champion.lineage.data_version is None
    assert (challenger.tag, challenger.family, challenger.aliases) == (
        "fraud:v2",
        "pytorch_mlp",
        ("challenger",),
    )
    assert challenger.gate_passed is False and "below the floor" in (challenger.gate_reason or "")
    assert challenger.bento_tag == "fraud_scoring:2" and challenger.created_by == "ml-engineer"
    lineage = challenger.lineage
    assert (lineage.data_version, lineage.training_set_sha256, lineage.code_version) == (
        "d" * 64,
        "1" * 64,
        "abc123",
    )
    assert lineage.feature_service == "fraud_v1" and lineage.reference_profile
    assert challenger.created_at.tzinfo is not None

    run = fraud.monitoring
    assert run is not None
    assert (run.model_version, run.rows, run.insufficient) == (1, 800, False)
    assert run.drifted == ("txn_amount_aed", "prediction") and run.quality == ()
    assert run.window_end == DAY + timedelta(days=1) and run.performance["metrics"] == {"pr_auc": 0.61}
    assert run.report_uri == report

    assert overview.alerts is not None
    [alert] = overview.alerts  # the resolved one is not listed
    assert (alert.subject, alert.severity, alert.status, alert.occurrences) == (
        "txn_amount_aed",
        "critical",
        "open",
        1,
    )
    assert alert.last_seen == DAY + timedelta(days=1) and alert.report_uri == report

    # promote and the alerts' lifecycle each left an event; the chain holds
    assert overview.audit is not None and overview.refused == {}
    assert (overview.audit.ok, overview.audit.events, overview.audit.problem) == (True, 4, "")


def test_each_section_is_refused_on_its_own_with_the_reason(falaj_home: Path) -> None:
    populate(falaj_home)

    client = platform_overview("scoring-client")
    [fraud] = client.use_cases
    assert fraud.models is None and fraud.monitoring is None
    assert fraud.refused["models"].startswith("DENY: scoring-client (consumer) may not model.read fraud")
    assert "may not monitor.read fraud" in fraud.refused["monitoring"]
    assert client.alerts is None and "may not monitor.read *" in client.refused["alerts"]
    assert client.audit is None and "may not audit.verify *" in client.refused["audit"]

    # An ML engineer reads models and monitoring but is no auditor
    engineer = platform_overview("ml-engineer")
    assert engineer.use_cases[0].models is not None and engineer.use_cases[0].monitoring is not None
    assert engineer.alerts is not None and engineer.audit is None
    assert set(engineer.refused) == {"audit"}


def test_a_use_case_without_rows_has_empty_sections(falaj_home: Path) -> None:
    overview = platform_overview("auditor")

    [fraud] = overview.use_cases  # from its spec, with nothing recorded yet
    assert (fraud.models, fraud.monitoring, fraud.refused) == ((), None, {})
    assert overview.alerts == () and overview.audit is not None
    assert (overview.audit.ok, overview.audit.events) == (True, 0)


def test_a_tampered_chain_shows_as_broken(falaj_home: Path) -> None:
    # Given a chain in which someone with write access flipped a byte of one event
    rng = random.Random(3)
    tampered, first_bad = mutate(chain(8, rng), "byte_flip", rng)
    with registry.session() as db, db.begin():
        db.add_all(AuditEvent(**event) for event in tampered)

    status = platform_overview("auditor").audit

    assert status is not None and not status.ok
    assert (status.events, status.first_bad_seq) == (8, first_bad)
    assert "does not match" in status.problem


def test_a_report_is_linked_through_the_ui_when_the_settings_name_it(
    falaj_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = falaj_home / "reports" / "monitoring" / "fraud" / "20261001T000000-20261002T000000.html"
    elsewhere = falaj_home / "elsewhere.html"
    assert report_link(str(report)) == str(report)  # no UI named: the path
    monkeypatch.setenv("FALAJ_UI_URL", "http://airflow.bank.example:8080/")
    get_settings.cache_clear()
    assert report_link(str(report)) == (
        "http://airflow.bank.example:8080/falaj/reports/fraud/20261001T000000-20261002T000000.html"
    )
    assert report_link(str(elsewhere)) == str(elsewhere)  # not a report the page serves
