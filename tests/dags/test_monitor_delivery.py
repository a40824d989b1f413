"""A monitoring alert reaches people: posted to the webhook and mailed through Airflow's SMTP connection."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from tests.http_sink import http_sink
from tests.smtp_sink import smtp_sink

ALERT = {
    "id": 7, "use_case": "fraud", "kind": "drift", "subject": "features", "model_version": 3,
    "severity": "critical", "status": "open", "summary": "txn_amount_aed drifted: PSI 0.61 {not a template}",
    "occurrences": 1, "report_uri": "file:///reports/fraud/2026-11-20.html",
}  # fmt: skip


def test_an_alert_is_posted_and_mailed(dag_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from falaj_airflow.alerts import monitoring_notifiers

    from pipelines.settings import get_settings

    context: dict[str, Any] = {
        "ti": SimpleNamespace(
            dag_id="falaj_monitoring", run_id="scheduled__2026-11-20", log_url="http://ui/log"
        )
    }
    with http_sink() as (url, posted), smtp_sink() as (port, mailed):
        monkeypatch.setenv("FALAJ_ALERT_WEBHOOK_URL", url)
        monkeypatch.setenv("FALAJ_ALERT_EMAIL", "oncall@bank.example, risk@bank.example")
        connection = {"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                      "extra": {"disable_ssl": True, "disable_tls": True}}  # fmt: skip
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(connection))
        get_settings.cache_clear()
        try:
            for notifier in monitoring_notifiers(ALERT):
                notifier(context)
        finally:
            get_settings.cache_clear()
    [payload] = posted
    assert payload["alert"]["summary"] == ALERT["summary"] and payload["run_id"] == "scheduled__2026-11-20"
    [mail] = mailed
    assert mail["To"] == "oncall@bank.example, risk@bank.example"
    assert mail["Subject"] == "[falaj critical] fraud drift alert #7: features"
    html = next(part for part in mail.walk() if part.get_content_type() == "text/html").get_payload(
        decode=True
    )
    assert b"{not a template}" in html and b"file:///reports/fraud/2026-11-20.html" in html


def test_nothing_configured_delivers_nothing(
    dag_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from falaj_airflow.alerts import monitoring_notifiers

    from pipelines.settings import get_settings

    monkeypatch.delenv("FALAJ_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("FALAJ_ALERT_EMAIL", raising=False)
    get_settings.cache_clear()
    assert monitoring_notifiers(ALERT) == []


def test_the_alert_links_its_report_through_the_ui(
    dag_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from falaj_airflow.alerts import monitoring_notifiers

    from pipelines.settings import get_settings

    context: dict[str, Any] = {"ti": SimpleNamespace(dag_id="falaj_monitoring", run_id="r", log_url=None)}
    with http_sink() as (url, posted), smtp_sink() as (port, mailed):
        monkeypatch.setenv("FALAJ_ALERT_WEBHOOK_URL", url)
        monkeypatch.setenv("FALAJ_ALERT_EMAIL", "oncall@bank.example")
        monkeypatch.setenv("FALAJ_UI_URL", "http://airflow.bank.example:8080")
        connection = {"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                      "extra": {"disable_ssl": True, "disable_tls": True}}  # fmt: skip
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(connection))
        get_settings.cache_clear()
        try:
            name = "20261120T000000-20261121T000000.html"
            report = get_settings().reports_dir / "monitoring" / "fraud" / name
            for notifier in monitoring_notifiers({**ALERT, "report_uri": str(report)}):
                notifier(context)
        finally:
            get_settings.cache_clear()
    link = "http://airflow.bank.example:8080/falaj/reports/fraud/20261120T000000-20261121T000000.html"
    [payload] = posted
    assert payload["report_url"] == link and payload["alert"]["report_uri"] == str(report)
    [mail] = mailed
    html = next(part for part in mail.walk() if part.get_content_type() == "text/html").get_payload(
        decode=True
    )
    assert f'<a href="{link}">'.encode() in html
