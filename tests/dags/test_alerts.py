"""Quality gates and the monitor carry the configured alert notifiers; without one configured, none."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dags.conftest import DAGS


def gate_callbacks(monkeypatch: pytest.MonkeyPatch, url: str | None) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    from pipelines.settings import get_settings

    if url:
        monkeypatch.setenv("FALAJ_ALERT_WEBHOOK_URL", url)
    else:
        monkeypatch.delenv("FALAJ_ALERT_WEBHOOK_URL", raising=False)
    get_settings.cache_clear()
    try:
        bag = DagBag(dag_folder=str(DAGS))
    finally:
        get_settings.cache_clear()
    return {
        "validate": bag.dags["fraud_ingest"].get_task("validate").on_failure_callback,
        "build_tables": bag.dags["fraud_features"].get_task("build_tables").on_failure_callback,
        "monitor": bag.dags["falaj_monitoring"].get_task("monitor_fraud").on_failure_callback,
    }


def test_quality_gates_post_to_the_configured_webhook(
    dag_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from falaj_airflow.alerts import WebhookNotifier

    expected = {"validate": ("data_quality", "high"), "build_tables": ("data_quality", "high"),
                "monitor": ("monitoring_failed", "critical")}  # fmt: skip
    for task, callbacks in gate_callbacks(monkeypatch, "http://alerts.example/hook").items():
        [notifier] = callbacks
        assert isinstance(notifier, WebhookNotifier)
        assert (notifier.url, notifier.kind, notifier.severity) == (
            "http://alerts.example/hook",
            *expected[task],
        )


def test_no_webhook_configured_no_notifier(dag_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(not callbacks for callbacks in gate_callbacks(monkeypatch, None).values())
