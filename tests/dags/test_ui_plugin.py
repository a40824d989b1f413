"""The Falaj page in the Airflow UI: registered by the plugin, showing each user what the policy lets them."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pipelines import alerts, registry
from pipelines.settings import get_settings
from tests.dags.conftest import PLUGINS
from tests.unit.test_overview import drift, populate

REPORT = "20261101T000000-20261102T000000.html"
SECTIONS = ("models", "monitoring", "alerts", "audit")
# What each Airflow user may read, by policies/rbac.yaml.
SHOWN = {
    "auditor": {"models", "monitoring", "alerts", "audit"},
    "ml-engineer": {"models", "monitoring", "alerts"},
    "scoring-client": set(),
}


@pytest.fixture
def ui(dag_env: dict[str, str]) -> ModuleType:
    from falaj_airflow import ui

    return ui


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh platform home with models, a monitoring run and its report, alerts and audit events."""
    home = tmp_path / "falaj"
    monkeypatch.setenv("FALAJ_HOME", str(home))
    for name in ("FALAJ_PROFILE", "FALAJ_DATABASE_URL", "FALAJ_REQUIRE_TLS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    registry.engine.cache_clear()
    report = Path(populate(home))
    report.parent.mkdir(parents=True)
    report.write_text("<h1>fraud drift report</h1>")
    with registry.session() as db, db.begin():
        alerts.raise_alert(db, drift("<img src=x onerror=alert(1)>", str(report), kind="data_quality"))
    yield home
    get_settings.cache_clear()
    registry.engine.cache_clear()


@pytest.fixture
def as_user(ui: ModuleType, home: Path) -> Iterator[Any]:
    """A test client of the app for an Airflow user, as if their JWT cookie had named them."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    def client(name: str, app: Any = ui.app) -> TestClient:
        ui.app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username=name, role="viewer")
        return TestClient(app)

    yield client
    ui.app.dependency_overrides.clear()


def test_the_plugin_registers_the_app_and_the_view(ui: ModuleType) -> None:
    from airflow._shared.plugins_manager.plugins_manager import _load_plugins_from_plugin_directory
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse, FastAPIAppResponse

    # Given the plugins folder loaded as Airflow loads it: every file as a top-level module by its stem
    before = set(sys.modules)
    try:
        plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS))
    finally:  # names like `alerts` and `training` must not linger in this process
        for name in {path.stem for path in PLUGINS.rglob("*.py")} - before:
            sys.modules.pop(name, None)
    assert errors == {}
    [plugin] = [plugin for plugin in plugins if plugin.name == "falaj_ui"]

    [mounted] = plugin.fastapi_apps
    assert mounted["app"] is ui.app and mounted["url_prefix"] == "/falaj"
    assert not any(mounted["url_prefix"].startswith(reserved) for reserved in RESERVED_URL_PREFIXES)
    FastAPIAppResponse.model_validate({**mounted, "app": "falaj_airflow.ui.app"})
    # The same serializer the UI's plugin listing goes through: a missing or misspelt key fails here
    [view] = [ExternalViewResponse.model_validate(view) for view in plugin.external_views]
    assert (view.name, view.href, view.url_route) == ("Falaj platform", "/falaj/", "falaj")
    assert view.destination == "nav"


def page_sections(html: str) -> dict[str, bool]:
    """Whether each section shows content (True) or the policy's refusal (False)."""
    parts = zip(SECTIONS, re.split(r"<h2>[^<]*</h2>", html)[1:], strict=True)
    return {section: "Not shown: DENY" not in text for section, text in parts}


@pytest.mark.parametrize("user", SHOWN)
def test_the_page_shows_each_user_what_they_may_read(as_user: Any, user: str) -> None:
    response = as_user(user).get("/")

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert f"Signed in as <b>{user}</b>" in html
    assert page_sections(html) == {section: section in SHOWN[user] for section in SECTIONS}
    assert ("fraud:v1" in html) == ("models" in SHOWN[user])
    assert ("txn_amount_aed, prediction" in html) == ("monitoring" in SHOWN[user])
    assert ("<tr class='critical'>" in html) == ("alerts" in SHOWN[user])
    assert ("<span class='badge ok'>OK</span> chain intact" in html) == ("audit" in SHOWN[user])
    assert "<img src=x" not in html  # an alert's subject is data, never markup
    assert "script" not in response.headers["content-security-policy"]


def test_the_json_is_the_same_overview(as_user: Any) -> None:
    from fastapi.encoders import jsonable_encoder

    from pipelines.overview import platform_overview

    for user in SHOWN:
        body = as_user(user).get("/overview.json").json()
        assert body == jsonable_encoder(platform_overview(user))
        assert (body["audit"] is None) == (user != "auditor")
    assert body["refused"]["alerts"].startswith("DENY: scoring-client (consumer) may not monitor.read *")


def test_a_broken_chain_is_a_broken_badge(as_user: Any) -> None:
    from sqlalchemy import text

    # Given an intruder who can get past the append-only trigger and rewrites who promoted the model
    with registry.session() as db, db.begin():
        db.execute(text("DROP TRIGGER audit_events_no_update"))
        db.execute(text("UPDATE audit_events SET actor = 'intruder' WHERE seq = 1"))

    html = as_user("auditor").get("/").text

    assert "<span class='badge broken'>BROKEN</span> chain broken at seq 1" in html


def test_the_linked_report_is_served_under_the_prefix(as_user: Any, ui: ModuleType) -> None:
    from fastapi import FastAPI

    # Given the app mounted where the api-server mounts it
    airflow = FastAPI()
    airflow.mount("/falaj", ui.app)
    client = as_user("ml-engineer", airflow)
    links = set(re.findall(r"href='([^']+)'", client.get("/falaj/").text))
    assert links == {f"reports/fraud/{REPORT}"}  # the run's and the alerts' report, relative

    response = client.get(f"/falaj/{links.pop()}")

    assert response.status_code == 200 and response.text == "<h1>fraud drift report</h1>"
    assert response.headers["content-type"].startswith("text/html")


def test_only_plain_html_reports_inside_the_folder_are_served(as_user: Any, home: Path) -> None:
    folder = home / "reports" / "monitoring" / "fraud"
    (folder / "notes.txt").write_text("not a report")
    (home / "secret.html").write_text("outside the reports")
    (folder / "link.html").symlink_to(home / "secret.html")
    client = as_user("auditor")
    assert client.get(f"/reports/fraud/{REPORT}").status_code == 200

    for path in (
        "/reports/fraud/..%2F..%2F..%2Fsecret.html",
        "/reports/fraud/%2E%2E",
        "/reports/%2E%2E/secret.html",
        "/reports/fraud/notes.txt",
        "/reports/fraud/.hidden.html",
        "/reports/fraud/missing.html",
        "/reports/fraud/link.html",
    ):
        assert client.get(path).status_code == 404, path


def test_a_report_needs_monitor_read(as_user: Any) -> None:
    response = as_user("scoring-client").get(f"/reports/fraud/{REPORT}")

    assert response.status_code == 403 and "may not monitor.read fraud" in response.json()["detail"]


def test_without_a_login_every_route_answers_401(ui: ModuleType, home: Path) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(ui.app)
    for path in ("/", "/overview.json", f"/reports/fraud/{REPORT}"):
        response = client.get(path)
        assert response.status_code == 401 and response.json() == {"detail": "Not authenticated"}, path
