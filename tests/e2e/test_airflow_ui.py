"""The operator's day in the real Airflow UI (headless Debian chromium, driven by Playwright), and a script's
through Airflow's REST API. Screenshots are kept under ``.falaj/test-artifacts/e2e``."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines import stack
from pipelines.spec import list_specs

pytestmark = pytest.mark.integration

PLATFORM_DAGS = {"falaj_audit", "falaj_experiments", "falaj_monitoring"}
RUN_TIMEOUT_S = 420


def expected_dags() -> set[str]:
    """The platform's DAGs, and each use case's three (generated from its spec)."""
    stages = ("ingest", "features", "training")
    return PLATFORM_DAGS | {f"{spec.name}_{stage}" for spec in list_specs() for stage in stages}


def wait_for_run(api: httpx.Client, dag_id: str, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        assert run.status_code == 200, run.text
        if run.json()["state"] in ("success", "failed"):
            return dict(run.json())
        assert time.monotonic() < deadline, f"{dag_id} {run_id} still {run.json()['state']}"
        time.sleep(2)


def task_states(api: httpx.Client, dag_id: str, run_id: str) -> dict[str, str]:
    listed = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    return {task["task_id"]: task["state"] for task in listed}


def test_a_script_triggers_the_audit_export_through_the_rest_api(airflow_api: httpx.Client) -> None:
    # Given the audit DAG, paused as Airflow creates every DAG
    assert airflow_api.patch("/dags/falaj_audit", json={"is_paused": False}).status_code == 200
    # When a client triggers it over REST
    created = airflow_api.post("/dags/falaj_audit/dagRuns", json={"logical_date": None})
    assert created.status_code == 200, created.text
    run_id = created.json()["dag_run_id"]
    # Then the run succeeds, both tasks ran, and the verdict names the signed export it checked
    assert wait_for_run(airflow_api, "falaj_audit", run_id)["state"] == "success"
    assert task_states(airflow_api, "falaj_audit", run_id) == {"export": "success", "verify": "success"}
    verdict = airflow_api.get(
        f"/dags/falaj_audit/dagRuns/{run_id}/taskInstances/verify/xcomEntries/return_value"
    ).json()["value"]
    assert str(verdict).startswith("chain intact"), verdict
    assert Path(str(verdict).rsplit("exported ", 1)[-1]).exists(), verdict
    # And a wrong password gets no token
    refused = httpx.post(
        f"{str(airflow_api.base_url).removesuffix('/api/v2/')}/auth/token",
        json={"username": "falaj-system", "password": "not-the-password"},
        timeout=30,
    )
    assert refused.status_code == 401


def test_an_operator_trains_a_model_from_the_web_ui(
    running_stack: stack.Stack, airflow_api: httpx.Client, artifacts: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "the browser test drives Debian's chromium: apt-get install -y chromium"
    url, (user, password) = running_stack.airflow_url, running_stack.login
    before = {run["dag_run_id"] for run in airflow_api.get("/dags/fraud_training/dagRuns").json()["dag_runs"]}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            # Given the login page
            page.goto(url)
            page.get_by_label("Username").fill(user)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(rf"^{re.escape(url)}/(?!auth)"))
            # Then every DAG is listed
            page.goto(f"{url}/dags")
            for dag_id in sorted(expected_dags()):
                expect(page.get_by_role("link", name=dag_id, exact=True)).to_be_visible()
            page.screenshot(path=artifacts / "1-dag-list.png", full_page=True)
            # When the operator switches the training DAG on and triggers it
            page.goto(f"{url}/dags/fraud_training")
            switch = page.get_by_test_id("toggle-pause")
            if switch.get_attribute("data-state") == "unchecked":
                switch.click()
                expect(switch).to_have_attribute("data-state", "checked")
            page.get_by_role("button", name="Trigger Dag").click()
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_text("lookback_days")).to_be_visible()
            dialog.get_by_role("button", name="Trigger", exact=True).click()
            expect(dialog).to_be_hidden()
            # Then the run succeeds, every task with it, and the UI shows it
            [run_id] = _new_runs(airflow_api, before)
            finished = wait_for_run(airflow_api, "fraud_training", run_id)
            assert finished["state"] == "success", task_states(airflow_api, "fraud_training", run_id)
            assert set(task_states(airflow_api, "fraud_training", run_id).values()) == {"success"}
            page.goto(f"{url}/dags/fraud_training/runs/{run_id}")
            expect(page.get_by_text("success").first).to_be_visible()
            page.screenshot(path=artifacts / "2-training-run.png", full_page=True)
            # And the platform page inside the UI lists the models, the champion and the audit verdict
            page.goto(f"{url}/plugin/falaj")
            platform = page.frame_locator("iframe").first
            expect(platform.get_by_role("heading", name="Models")).to_be_visible()
            expect(platform.get_by_text("champion").first).to_be_visible()
            expect(platform.get_by_role("heading", name=re.compile("Audit"))).to_be_visible()
            page.screenshot(path=artifacts / "3-falaj-page.png", full_page=True)
        finally:
            page.screenshot(path=artifacts / "last.png", full_page=True)
            browser.close()


def _new_runs(api: httpx.Client, before: set[str]) -> list[str]:
    deadline = time.monotonic() + 30
    while True:
        runs = {run["dag_run_id"] for run in api.get("/dags/fraud_training/dagRuns").json()["dag_runs"]}
        if runs - before or time.monotonic() > deadline:
            return sorted(runs - before)
        time.sleep(1)
