"""`falaj stream consume` as a real process against the real broker of each profile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis

from pipelines.features import feature_store
from pipelines.settings import get_settings
from pipelines.stream import open_broker, source_events
from tests.integration.conftest import PROJECT, REDIS_DB
from tests.reference_lake import prepare_features

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning")]
FALAJ = str(Path(sys.executable).with_name("falaj"))
COLUMNS = ["txn_count_1h", "txn_count_24h", "spend_24h_aed", "avg_amount_30d_aed", "last_txn_unix"]


@pytest.fixture
def published(profile: str) -> dict[str, Any]:
    """Feature definitions applied (nothing materialized) and the window's events on the broker."""
    _, data = prepare_features(days=8)
    broker, _ = open_broker("fraud", consumer="producer")
    events = [
        event
        for path in sorted((data.source_dir / "transactions").glob("*.csv"))
        for event in source_events(path)
    ]
    broker.publish(events)
    broker.publish([{"transaction_id": "BAD-1", "amount_aed": "a lot"}])
    return {"events": events}


def consume(*extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FALAJ, "stream", "consume", "--until-idle", "--claim-idle-ms", "0", *extra],
        cwd=PROJECT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def expected_state(events: list[dict[str, Any]]) -> pd.DataFrame:
    from pipelines.features import use_case_module

    frame = pd.DataFrame(events).assign(
        event_timestamp=lambda f: pd.to_datetime(f["event_timestamp"], utc=True)
    )
    rows = use_case_module("fraud").customer_behaviour_table(
        frame, pd.DataFrame({"customer_id": [], "signup_timestamp": []})
    )
    return (
        rows.sort_values("event_timestamp")
        .groupby("customer_id")
        .tail(1)
        .set_index("customer_id")
        .sort_index()
    )


def online_state(customers: list[str]) -> pd.DataFrame:
    online = (
        feature_store()
        .get_online_features(
            features=[f"customer_behaviour:{column}" for column in COLUMNS],
            entity_rows=[{"customer_id": customer} for customer in customers],
        )
        .to_df()
    )
    return online.set_index("customer_id").sort_index()


def dead_letters(profile: str) -> list[dict[str, str]]:
    if profile == "local":
        path = get_settings().home / "stream" / "fraud" / "dead-letter.log"
        return [json.loads(line) for line in path.read_text().splitlines()]
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    entries = client.xrange("falaj:fraud:transactions:dead-letter")
    return [{key.decode(): value.decode() for key, value in fields.items()} for _, fields in entries]


def test_consumer_serves_what_the_batch_pipeline_computes(published: dict[str, Any], profile: str) -> None:
    completed = consume()
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"{len(published['events']) + 1} events consumed" in completed.stdout
    expected = expected_state(published["events"])
    online = online_state(list(expected.index))
    pd.testing.assert_frame_equal(
        online[COLUMNS].astype(float), expected[COLUMNS].astype(float), check_names=False
    )
    letters = dead_letters(profile)
    assert len(letters) == 1 and "BAD-1" in letters[0]["event"] and "amount_aed" in letters[0]["reason"]


def test_killed_consumer_rerun_equals_a_clean_run(published: dict[str, Any], profile: str) -> None:
    # Given a consumer killed without warning right after its first pushed batch
    process = subprocess.Popen(
        [FALAJ, "stream", "consume", "--batch-size", "25"],
        cwd=PROJECT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "consumed" in line:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    # When it is run again, it picks up what the first left (redelivering an unacknowledged batch)
    rerun = consume()
    assert rerun.returncode == 0
    resumed = int(rerun.stdout.split("stopped: ")[1].split(" events")[0])
    assert 0 < resumed < len(published["events"]) + 1
    # Then every customer's online state is exactly the clean result: nothing lost, nothing doubled
    expected = expected_state(published["events"])
    online = online_state(list(expected.index))
    pd.testing.assert_frame_equal(
        online[COLUMNS].astype(float), expected[COLUMNS].astype(float), check_names=False
    )


def test_sigterm_stops_cleanly(published: dict[str, Any]) -> None:
    process = subprocess.Popen(
        [FALAJ, "stream", "consume", "--batch-size", "25"],
        cwd=PROJECT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "consumed" in line:
            break  # it is working: now ask it to stop
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert stdout.startswith("stopped: ")
