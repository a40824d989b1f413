"""The monitoring DAG through `airflow dags test`: a drifted day is alerted once and asks for retraining."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipelines import airflow_cli, alerts, registry
from pipelines.spec import load_spec
from tests.homes import falaj_home
from tests.http_sink import http_sink
from tests.unit.test_monitoring import ROWS_PER_DAY, register_champion, serve, traffic

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, list[dict]]]:
    with http_sink() as (url, received), falaj_home(tmp_path / "home") as platform:
        monkeypatch.setenv("FALAJ_ALERT_WEBHOOK_URL", url)
        registry.engine.cache_clear()
        yield platform, received
        registry.engine.cache_clear()


def retrain_events(platform: Path) -> int:
    with sqlite3.connect(platform / "airflow" / "airflow.db") as db:
        [(count,)] = db.execute(
            "SELECT count(*) FROM asset_event JOIN asset ON asset.id = asset_event.asset_id "
            "WHERE asset.name = 'falaj.fraud.retrain'"
        ).fetchall()
    return int(count)


def test_a_drifted_day_alerts_once_and_requests_retraining(home: tuple[Path, list[dict]]) -> None:
    platform, received = home
    # Given a champion that served a clean 1 October and a drifted 2 and 3 October (amounts x2.5)
    champion = register_champion(platform, load_spec("fraud"))
    rng = np.random.default_rng(7)
    for day, factor in enumerate((1.0, 2.5, 2.5)):
        serve(champion, day, traffic(rng, ROWS_PER_DAY, amount_factor=factor))
    airflow_cli.migrate()
    # When the daily monitoring runs for each day
    for day in ("2026-10-02", "2026-10-03", "2026-10-04"):  # each run owns the day before its date
        airflow_cli.dags_test("falaj_monitoring", day, {})
    # Then the clean day was quiet, the first drifted day delivered one alert and asked for retraining,
    # and the second drifted day added an occurrence without a second page or a second retraining
    [posted] = received
    assert posted["kind"] == "monitor_alert" and posted["alert"]["kind"] == "drift"
    assert "txn_amount_aed" in posted["alert"]["summary"] and posted["run_id"]
    assert retrain_events(platform) == 1
    with registry.session() as db:
        [alert] = alerts.list_alerts(db)
        assert alert.occurrences == 2
    report = Path(posted["alert"]["report_uri"])
    assert report.exists() and "txn_amount_aed" in report.read_text()
    log = (platform / "logs" / "falaj_monitoring.log").read_text()
    last_report = "monitoring/fraud/20261003T000000-20261004T000000.html"
    assert "report: " in log and last_report in log
