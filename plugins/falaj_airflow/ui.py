"""The Falaj page in the Airflow UI: models, monitoring, alerts and audit status for the signed-in user.

Airflow's api-server mounts ``app`` under ``/falaj`` (``plugins/falaj_ui_plugin.py``) and shows it in an
iframe. The Airflow user (from the JWT cookie) is a platform identity, so every route authorizes that name
against ``policies/rbac.yaml`` (``pipelines/overview.py``); no login answers 401, as Airflow's API does.
"""

from __future__ import annotations

import re
from html import escape
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

if TYPE_CHECKING:
    from pipelines.overview import AlertSummary, AuditStatus, MonitorSummary, Overview, UseCaseOverview

AirflowUser = Annotated[BaseUser, Depends(get_user)]
# Reports are monitoring's own HTML files: no script, no remote resource; inline styles and SVG only.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
}
USE_CASE = re.compile(r"[a-z][a-z0-9_]*")
REPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.html")

app = FastAPI(title="Falaj platform", docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/", response_class=HTMLResponse)
def page(user: AirflowUser) -> HTMLResponse:
    """The overview as one server-rendered page."""
    from pipelines.overview import platform_overview

    return HTMLResponse(render(platform_overview(user.get_name())), headers=HEADERS)


@app.get("/overview.json")
def overview_json(user: AirflowUser) -> JSONResponse:
    """The same overview as JSON."""
    from fastapi.encoders import jsonable_encoder

    from pipelines.overview import platform_overview

    return JSONResponse(jsonable_encoder(platform_overview(user.get_name())))


@app.get("/reports/{use_case}/{name}")
def report(use_case: str, name: str, user: AirflowUser) -> FileResponse:
    """A monitoring report of ``$FALAJ_HOME/reports/monitoring/<use_case>/``: a plain ``*.html`` name only."""
    from pipelines import authz
    from pipelines.settings import get_settings

    if not USE_CASE.fullmatch(use_case) or not REPORT_NAME.fullmatch(name):
        raise HTTPException(404, "no such report")
    decision = authz.decide(user.get_name(), "monitor.read", use_case)
    if not decision.allowed:
        raise HTTPException(403, decision.explain())
    folder = (get_settings().reports_dir / "monitoring" / use_case).resolve()
    path = folder / name
    # A link planted in the folder must not lead out of it.
    if not path.is_file() or path.resolve().parent != folder:
        raise HTTPException(404, "no such report")
    return FileResponse(path, media_type="text/html", headers=HEADERS)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1rem 1.5rem; color: #1f2933; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 1.8rem; } h3 { font-size: 1rem; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .875rem; }
th, td { border: 1px solid #d5dbe1; padding: .3rem .55rem; text-align: left; vertical-align: top; }
th { background: #f1f4f7; }
code { font-size: .8rem; }
.refused { color: #7b8794; font-style: italic; }
.badge { display: inline-block; padding: .15rem .6rem; border-radius: .3rem; font-weight: 700; color: #fff; }
.badge.ok { background: #2f855a; } .badge.broken { background: #c53030; }
tr.critical td { background: #fde2e2; } tr.warning td { background: #fff4d6; }
.yes { color: #2f855a; } .no { color: #c53030; }
"""


PASSED, REFUSED = "<span class='yes'>passed</span>", "<span class='no'>refused</span>"
TOO_FEW = " <span class='no'>(too few to judge)</span>"


def render(overview: Overview) -> str:
    """The whole page; every value from the platform goes through ``html.escape``."""
    sections = [
        f"<h1>Falaj platform</h1><p>Signed in as <b>{escape(overview.user)}</b>.</p>",
        "<h2>Models</h2>",
        *(_models(use_case) for use_case in overview.use_cases),
        "<h2>Monitoring</h2>",
        _monitoring(overview.use_cases),
        "<h2>Open alerts</h2>",
        _alerts(overview.alerts, overview.refused.get("alerts")),
        "<h2>Audit trail</h2>",
        _audit(overview.audit, overview.refused.get("audit")),
    ]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Falaj platform</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    """``rows`` hold HTML already escaped; ``classes`` style whole rows."""
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join(
        f"<tr class='{row_class}'>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
        for row, row_class in zip(rows, classes or [""] * len(rows), strict=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _refused(reason: str) -> str:
    return f"<p class='refused'>Not shown: {escape(reason)}</p>"


def _text(value: Any) -> str:
    return "" if value is None else escape(str(value))


def _when(moment: Any) -> str:
    return "" if moment is None else escape(f"{moment:%Y-%m-%d %H:%M} UTC")


def _models(use_case: UseCaseOverview) -> str:
    title = f"<h3>{escape(use_case.name)}</h3>"
    if use_case.models is None:
        return title + _refused(use_case.refused.get("models", ""))
    if not use_case.models:
        return title + "<p>No model versions yet.</p>"
    rows = []
    for model in use_case.models:
        if model.gate_passed is None:
            gate = "not evaluated"
        else:
            verdict = PASSED if model.gate_passed else REFUSED
            gate = f"{verdict}: {_text(model.gate_reason)}"
        lineage = model.lineage
        rows.append(
            [
                f"<b>{escape(model.tag)}</b>",
                escape(model.family),
                f"{_when(model.created_at)}<br>by {escape(model.created_by)}",
                escape(", ".join(model.aliases)),
                gate,
                _text(model.bento_tag) or "not packaged",
                f"data <code>{_text(lineage.data_version)[:12] or 'unrecorded'}</code><br>"
                f"training set <code>{escape(lineage.training_set_sha256[:12])}</code><br>"
                f"code <code>{escape(lineage.code_version[:12])}</code><br>"
                f"features {escape(lineage.feature_service)}<br>"
                f"reference profile {'recorded' if lineage.reference_profile else 'missing'}",
            ]
        )
    header = ["version", "family", "trained", "aliases", "gate", "bento", "lineage"]
    return title + _table(header, rows)


def _report_link(use_case: str, uri: str | None) -> str:
    """A link relative to the page, so it works under whatever prefix Airflow mounts the app at."""
    name = (uri or "").rsplit("/", 1)[-1]
    if not REPORT_NAME.fullmatch(name):
        return ""
    href = f"reports/{quote(use_case, safe='')}/{quote(name, safe='')}"
    return f"<a href='{escape(href)}'>report</a>"


def _performance(performance: dict[str, Any]) -> str:
    metrics = performance.get("metrics") or {}
    if not performance.get("judged") or not metrics:
        return escape(f"not judged yet ({performance.get('labelled', 0)} labelled)")
    shown = ", ".join(
        f"{name} {value:.3f}" for name, value in sorted(metrics.items()) if isinstance(value, int | float)
    )
    findings = "; ".join(str(finding) for finding in performance.get("findings") or [])
    return escape(shown + (f" ({findings})" if findings else ""))


def _monitoring(use_cases: tuple[UseCaseOverview, ...]) -> str:
    rows = []
    for use_case in use_cases:
        name = f"<b>{escape(use_case.name)}</b>"
        run: MonitorSummary | None = use_case.monitoring
        if "monitoring" in use_case.refused:
            rows.append([name, _refused(use_case.refused["monitoring"]), "", "", "", "", "", ""])
        elif run is None:
            rows.append([name, "no monitoring run yet", "", "", "", "", "", ""])
        else:
            rows.append(
                [
                    name,
                    f"v{run.model_version}",
                    f"{_when(run.window_start)} to<br>{_when(run.window_end)}",
                    f"{run.rows:,}" + (TOO_FEW if run.insufficient else ""),
                    escape(", ".join(run.drifted)) or "none",
                    escape(", ".join(run.quality)) or "none",
                    _performance(run.performance),
                    _report_link(use_case.name, run.report_uri),
                ]
            )
    header = ["use case", "champion", "window", "rows", "drifted", "input quality", "performance", ""]
    return _table(header, rows)


def _alerts(alerts: tuple[AlertSummary, ...] | None, refused: str | None) -> str:
    if alerts is None:
        return _refused(refused or "")
    if not alerts:
        return "<p>No open alerts.</p>"
    rows = [
        [
            f"#{alert.id}",
            escape(alert.severity),
            escape(alert.status),
            escape(f"{alert.use_case} v{alert.model_version}" if alert.model_version else alert.use_case),
            escape(alert.kind),
            f"{escape(alert.subject)}: {escape(alert.summary)}",
            str(alert.occurrences),
            f"{_when(alert.opened_at)} /<br>{_when(alert.last_seen) or 'n/a'}",
            _report_link(alert.use_case, alert.report_uri),
        ]
        for alert in alerts
    ]
    classes = [alert.severity if alert.severity in ("warning", "critical") else "" for alert in alerts]
    header = ["alert", "severity", "status", "model", "kind", "what", "seen", "opened / last seen", ""]
    return _table(header, rows, classes)


def _audit(status: AuditStatus | None, refused: str | None) -> str:
    if status is None:
        return _refused(refused or "")
    checkpoints = f"{status.checkpoints} signed checkpoints"
    if status.ok:
        return f"<p><span class='badge ok'>OK</span> chain intact: {status.events} events, {checkpoints}.</p>"
    where = f"at seq {status.first_bad_seq}" if status.first_bad_seq is not None else "in its checkpoints"
    return (
        f"<p><span class='badge broken'>BROKEN</span> chain broken {escape(where)}: "
        f"{escape(status.problem)} ({status.events} events, {checkpoints}).</p>"
    )
