"""`falaj alerts`: the monitoring alerts people work through (list, acknowledge, resolve)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from pipelines.cli_guard import guarded


@click.group("alerts")
def alerts_group() -> None:
    """Drift, data-quality and performance alerts: one per condition, open -> acknowledged -> resolved."""


@alerts_group.command("list")
@click.option("--use-case", default=None, help="Only this use case's alerts.")
@click.option(
    "--status", type=click.Choice(["open", "acknowledged", "resolved", "unresolved", "all"]),
    default="unresolved", show_default=True,
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@guarded("monitor.read")
def alerts_list(use_case: str | None, status: str, as_json: bool) -> None:
    """Newest first."""
    from pipelines import alerts, registry

    with registry.session() as db:
        found = alerts.list_alerts(db, use_case, None if status == "all" else status)
        rows = [alerts.as_dict(alert) for alert in found]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no {status} alerts")
    for row in rows:
        seen = f"seen {row['occurrences']}x" if row["occurrences"] > 1 else "seen once"
        click.echo(
            f"#{row['id']} {row['severity']:<8} {row['status']:<12} {row['use_case']} {row['kind']} "
            f"v{row['model_version']} {row['subject']}: {row['summary']} ({seen}"
            + (f"; report {row['report_uri']})" if row["report_uri"] else ")")
        )


@alerts_group.command("ack")
@click.argument("alert_id", type=int)
@click.option("--note", required=True, help="Who is on it and what happens next, for the audit trail.")
@guarded("monitor.manage")
def alerts_ack(alert_id: int, note: str) -> None:
    """Take ownership of an open alert."""
    _step("acknowledge", alert_id, note)


@alerts_group.command("resolve")
@click.argument("alert_id", type=int)
@click.option("--note", required=True, help="How it was dealt with: retrained, rolled back, feed fixed...")
@guarded("monitor.manage")
def alerts_resolve(alert_id: int, note: str) -> None:
    """Close an alert; the same condition seen again later opens a new one."""
    _step("resolve", alert_id, note)


def _step(step: str, alert_id: int, note: str) -> None:
    from pipelines import alerts, authz, registry

    user = authz.current_user()
    try:
        with registry.session() as db, db.begin():
            alert = getattr(alerts, step)(db, alert_id, user, note)
            status = alert.status
    except alerts.AlertError as refused:
        raise click.ClickException(str(refused)) from None
    click.echo(f"alert {alert_id} {status} by {user}")


@click.group("monitor")
def monitor_group() -> None:
    """Drift and input-quality monitoring of the served champion (the daily `falaj_monitoring` DAG)."""


@monitor_group.command("report")
@click.option("--use-case", default="fraud", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Copy it here (an .html file).")
@guarded("monitor.read", lambda a: a["use_case"])
def monitor_report(use_case: str, out: Path | None) -> None:
    """The latest monitoring run's HTML report: its path, or a copy at --out."""
    from sqlalchemy import select

    from pipelines import registry
    from pipelines.registry import MonitorRun

    with registry.session() as db:
        run = db.scalar(
            select(MonitorRun).where(MonitorRun.use_case == use_case).order_by(MonitorRun.window_end.desc())
        )
    if run is None or not run.report_uri:
        raise click.ClickException(
            f"no monitoring run for {use_case} yet: the falaj_monitoring DAG makes them"
        )
    report = Path(run.report_uri)
    if not report.exists():
        raise click.ClickException(f"the latest report {report} is gone (was its folder cleaned?)")
    if out is not None:
        shutil.copyfile(report, out)
        report = out
    verdict = f"{len(run.drifted)} drifted, {len(run.quality)} with input-quality findings"
    click.echo(f"{report}  ({use_case} v{run.model_version}, {run.window_start:%Y-%m-%d}: {verdict})")
