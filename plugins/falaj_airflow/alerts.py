"""Alerts delivered by Airflow notifiers: a failed data-quality gate (as the task fails) and the
monitoring DAG's alerts (``pipelines/alerts.py``), by webhook and by mail."""

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
    return failure_alerts("data_quality", "high")


def failure_alerts(kind: str, severity: str) -> list[BaseNotifier]:
    """The notifiers configured for a task whose failure someone must hear about."""
    url = get_settings().alert_webhook_url
    return [WebhookNotifier(url, kind=kind, severity=severity)] if url else []


class AlertWebhookNotifier(BaseNotifier):
    """POST a monitoring alert (``pipelines.alerts.as_dict``) with the run that raised it."""

    def __init__(self, url: str, alert: dict[str, Any]) -> None:
        super().__init__()
        self.url = url
        self.alert = alert

    def notify(self, context: Any) -> None:
        import httpx

        from pipelines.overview import report_link

        report = self.alert.get("report_uri")
        link = {"report_url": report_link(report)} if report else {}
        payload = {"kind": "monitor_alert", "alert": self.alert, **link, **_run_of(context)}
        httpx.post(self.url, json=payload, timeout=10).raise_for_status()


def _run_of(context: Any) -> dict[str, Any]:
    instance = context["ti"]
    return {
        "dag_id": instance.dag_id,
        "run_id": instance.run_id,
        "log_url": getattr(instance, "log_url", None),
    }


def monitoring_notifiers(alert: dict[str, Any]) -> list[BaseNotifier]:
    """The configured deliveries of one monitoring alert: the webhook, and mail to the on-call list."""
    from html import escape

    settings = get_settings()
    notifiers: list[BaseNotifier] = []
    if settings.alert_webhook_url:
        notifiers.append(AlertWebhookNotifier(settings.alert_webhook_url, alert))
    if settings.alert_email:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        subject = (
            f"[falaj {alert['severity']}] {alert['use_case']} {alert['kind']} alert #{alert['id']}: "
            f"{alert['subject']}"
        )
        from pipelines.overview import report_link

        report = report_link(alert["report_uri"]) if alert.get("report_uri") else None
        body = f"<p>{escape(alert['summary'])}</p>" + (
            f'<p>Report: <a href="{escape(report)}">{escape(report)}</a></p>' if report else ""
        )
        body += f"<p><code>falaj alerts ack {alert['id']} --note ...</code></p>"
        # Subject and body are Jinja templates to the notifier: what the alert says must stay text.
        notifiers.append(
            SmtpNotifier(
                to=[address.strip() for address in settings.alert_email.split(",") if address.strip()],
                from_email=settings.alert_email_from,
                subject=_verbatim(subject),
                html_content=_verbatim(body),
            )
        )
    return notifiers


def _verbatim(text: str) -> str:
    return "{% raw %}" + text.replace("{% endraw %}", "") + "{% endraw %}"
