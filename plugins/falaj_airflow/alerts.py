"""Alerts for a failed data-quality gate, delivered by Airflow notifiers as the task fails."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseNotifier

from pipelines.settings import get_settings


class WebhookNotifier(BaseNotifier):
    """POST the alert as JSON to a webhook (a chat channel, an incident tool); non-2xx is an error."""

    def __init__(self, url: str, kind: str, severity: str) -> None:
        super().__init__()
        self.url = url
        self.kind = kind
        self.severity = severity

    def notify(self, context: Any) -> None:
        import httpx

        httpx.post(
            self.url, json=alert_payload(context, self.kind, self.severity), timeout=10
        ).raise_for_status()


def alert_payload(context: Any, kind: str, severity: str) -> dict[str, Any]:
    """What an on-call engineer needs first: what failed, where, why, and the link to the log."""
    instance = context["ti"]
    return {
        "kind": kind,
        "severity": severity,
        "dag_id": instance.dag_id,
        "task_id": instance.task_id,
        "run_id": instance.run_id,
        "try_number": instance.try_number,
        "reason": str(context.get("exception") or "see the task log")[:4000],
        "log_url": getattr(instance, "log_url", None),
    }


def data_quality_alerts() -> list[BaseNotifier]:
    """The notifiers configured for a failed quality gate; with none, the failed task is the alert."""
    url = get_settings().alert_webhook_url
    return [WebhookNotifier(url, kind="data_quality", severity="high")] if url else []
