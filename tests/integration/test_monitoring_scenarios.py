"""Injected drift end to end: the generator's scenarios go through ingest, validation and the
point-in-time features, the demo's champion scores them over HTTP, and the monitoring window judges what
it served.

Each scenario is the demo's own data (same seed, size and window) with drift from ``DRIFT_START``: the
days before it are byte-identical to what the champion was trained on. Two clean days are replayed, then
the first and second drifted days, each as its own monitoring window.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from sqlalchemy import func, select

from pipelines import alerts, crypto, registry
from pipelines.datagen import BROKEN_FEED_COLUMN, SIZES, DriftKind, DriftScenario, generate
from pipelines.demo import DATA_DAYS, DATA_END
from pipelines.monitoring import MonitorResult, monitor_window
from pipelines.predictions import Prediction
from pipelines.spec import load_spec
from tests.homes import falaj_home

pytestmark = pytest.mark.integration

DRIFT_START = DATA_END - timedelta(days=2)
CLEAN_DAYS = 2
# Every feature an amount reaches; a shifted amount must flag some of these and nothing else.
AMOUNT_FEATURES = {
    "txn_amount_aed", "amount_vs_avg_30d", "spend_24h_aed", "card_spend_1h_aed", "avg_amount_30d_aed",
    "merchant_avg_amount_30d_aed", "prediction",
}  # fmt: skip


def pipeline_features(kind: DriftKind, workdir: Path) -> subprocess.CompletedProcess[str] | pd.DataFrame:
    """The scenario's source files through the platform's pipeline (the DVC stage: ingest, validation,
    feature tables, point-in-time join) in a home of its own; the replayed days' feature rows, or the
    finished process when the pipeline refused the data."""
    source, home, out = workdir / "source", workdir / "home", workdir / "training-set"
    generate(source, SIZES["small"], days=DATA_DAYS, end=DATA_END, drift=DriftScenario(kind, DRIFT_START))
    stage = [sys.executable, "-m", "pipelines.dvc_stages", "training-set", "--use-case", "fraud",
             "--source", str(source), "--days", str(DATA_DAYS), "--out", str(out)]  # fmt: skip
    completed = subprocess.run(
        stage, env={**os.environ, "FALAJ_HOME": str(home)}, capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        return completed
    with falaj_home(home):
        frame = pd.read_parquet(io.BytesIO(crypto.unseal(out / "data.parquet")))
    day = pd.to_datetime(frame["event_timestamp"], utc=True).dt.date
    first = DRIFT_START - timedelta(days=CLEAN_DAYS)
    return frame[day >= first].assign(day=day).sort_values("event_timestamp")


@pytest.fixture(scope="module")
def scorer(demo_run: dict[str, Any]) -> Iterator[httpx.Client]:
    from pipelines.demo import bento_server, consumer_api_key, free_port

    with bento_server(demo_run["summary"]["bento_tag"], free_port()) as url:
        with httpx.Client(base_url=url, headers={"X-API-Key": consumer_api_key()}, timeout=30) as client:
            yield client


def replay(client: httpx.Client, rows: pd.DataFrame, features: list[str]) -> tuple[datetime, datetime]:
    """Score ``rows`` one request each, as a caller that computed the features does; the window of wall
    time the prediction log recorded them in, once every row is in it."""
    start = datetime.now(UTC)
    for row in rows.to_dict("records"):
        values = {name: (None if pd.isna(row[name]) else float(row[name])) for name in features}
        body = {"request": {"transaction_id": row["transaction_id"], "customer_id": row["customer_id"],
                            "features": values}}  # fmt: skip
        response = client.post("/v1/score/features", json=body)
        assert response.status_code == 200, response.text
    end = datetime.now(UTC)
    deadline = time.monotonic() + 30
    while logged(start, end) < len(rows):  # the log is written off the request path
        assert time.monotonic() < deadline, f"{logged(start, end)} of {len(rows)} predictions logged"
        time.sleep(0.2)
    return start, end


def logged(start: datetime, end: datetime) -> int:
    with registry.session() as db:
        query = select(func.count()).where(Prediction.at >= start, Prediction.at < end)
        return int(db.scalar(query) or 0)


def run_scenario(client: httpx.Client, kind: DriftKind, workdir: Path) -> list[MonitorResult]:
    """Clean window, first drifted day, second drifted day; the scenario's alerts resolved afterwards, as
    an operator would once the model is retrained, so the next scenario starts from a quiet board."""
    rows = pipeline_features(kind, workdir)
    assert isinstance(rows, pd.DataFrame), rows.stderr[-3000:]
    spec = load_spec("fraud")
    with registry.session() as db:
        champion = registry.resolve_alias(db, "fraud", "champion")
        assert champion is not None
        features = list(champion.features)
    windows = [
        rows[rows["day"] < DRIFT_START],
        rows[rows["day"] == DRIFT_START],
        rows[rows["day"] == DRIFT_START + timedelta(days=1)],
    ]
    results = [monitor_window(spec, *replay(client, window, features)) for window in windows]
    with registry.session() as db, db.begin():
        for alert in alerts.list_alerts(db, "fraud", status="open"):
            alerts.resolve(db, alert.id, "risk-officer", f"{kind} scenario closed")
    return results


def delivered_drift(result: MonitorResult) -> list[dict[str, Any]]:
    return [alert for alert in result.to_deliver if alert["kind"] == "drift"]


def test_an_amount_shift_flags_the_amount_features_on_its_first_day(
    scorer: httpx.Client, tmp_path: Path
) -> None:
    clean, first, second = run_scenario(scorer, "amount_shift", tmp_path)
    assert not clean.insufficient and clean.rows > 900
    assert clean.drifted == [] and clean.quality == [] and clean.to_deliver == [], clean.to_xcom()
    assert not first.insufficient
    assert "txn_amount_aed" in first.drifted and set(first.drifted) <= AMOUNT_FEATURES, first.drifted
    [alert] = delivered_drift(first)
    assert "txn_amount_aed" in alert["summary"] and first.retrain
    # The second drifted day is the same alert again: counted, not delivered, no second retraining
    assert "txn_amount_aed" in second.drifted and second.to_deliver == [] and not second.retrain
    with registry.session() as db:
        [recorded] = [a for a in alerts.list_alerts(db, "fraud") if a.id == alert["id"]]
        assert recorded.occurrences == 2


def test_a_new_merchant_category_is_reported_as_unseen_on_its_first_day(
    scorer: httpx.Client, tmp_path: Path
) -> None:
    clean, first, second = run_scenario(scorer, "new_merchant_category", tmp_path)
    assert clean.drifted == [] and clean.quality == [] and clean.to_deliver == [], clean.to_xcom()
    assert "mcc" in first.drifted and "mcc" in first.quality, first.to_xcom()
    assert "txn_amount_aed" not in first.drifted  # amounts did not move
    [alert] = delivered_drift(first)
    assert "mcc" in alert["summary"] and first.retrain
    [quality] = [a for a in first.to_deliver if a["kind"] == "data_quality"]
    assert "mcc" in quality["summary"] and "unseen at reference" in quality["summary"]
    assert second.to_deliver == [] and not second.retrain


def test_a_broken_feed_is_stopped_at_validation_before_any_model_sees_it(tmp_path: Path) -> None:
    refused = pipeline_features("broken_feed", tmp_path)
    assert isinstance(refused, subprocess.CompletedProcess), "the broken partitions passed validation"
    failure = (refused.stdout + refused.stderr).split("DataValidationError: ")[-1]
    assert failure.startswith("2 check(s) failed; nothing was published"), failure[-3000:]
    for n in (0, 1):
        day = DRIFT_START + timedelta(days=n)
        check = f"expect_column_values_to_not_be_null on column '{BROKEN_FEED_COLUMN}'"
        assert f"partition={day:%Y-%m-%d}: {check}" in failure
