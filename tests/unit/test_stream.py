"""The stream consumer's logic on the local broker: state, poison events, at-least-once, idempotence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines.datagen import SIZES, generate
from pipelines.features import use_case_module
from pipelines.stream import EventLog, SQLiteState, behaviour_at, consume_batch, parse, source_events


class OnlineSink:
    """Collects what would be pushed; can be told to fail once, like a store that is briefly down."""

    def __init__(self, fail_times: int = 0) -> None:
        self.frames: list[pd.DataFrame] = []
        self.fail_times = fail_times

    def __call__(self, frame: pd.DataFrame) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("online store unavailable")
        self.frames.append(frame)

    def latest(self) -> pd.DataFrame:
        rows = pd.concat(self.frames).sort_values("event_timestamp")
        return rows.groupby("customer_id").tail(1).set_index("customer_id").sort_index()


@pytest.fixture
def day_files(tmp_path: Path) -> list[Path]:
    data = generate(tmp_path / "source", SIZES["tiny"], days=5)
    return sorted((data.source_dir / "transactions").glob("*.csv"))


def drain(log: EventLog, state: SQLiteState, sink: OnlineSink, batch: int = 50) -> int:
    total = 0
    while (stats := consume_batch(log, state, sink, batch, 0)).batches:
        total += stats.consumed
    return total


def test_stream_state_equals_the_batch_features(tmp_path: Path, day_files: list[Path]) -> None:
    # Given the same transactions streamed as events and computed in batch
    log, state, sink = EventLog(tmp_path / "stream"), SQLiteState(tmp_path / "state.db"), OnlineSink()
    events = [event for path in day_files for event in source_events(path)]
    log.publish(events)
    drain(log, state, sink)
    frame = pd.DataFrame(events).assign(
        event_timestamp=lambda f: pd.to_datetime(f["event_timestamp"], utc=True)
    )
    batch = use_case_module("fraud").customer_behaviour_table(
        frame, pd.DataFrame({"customer_id": [], "signup_timestamp": []})
    )
    batch_latest = (
        batch.sort_values("event_timestamp").groupby("customer_id").tail(1).set_index("customer_id")
    )

    # Then every customer's online state is exactly the batch pipeline's latest row
    streamed = sink.latest()
    columns = ["txn_count_1h", "txn_count_24h", "spend_24h_aed", "avg_amount_30d_aed", "last_txn_unix"]
    pd.testing.assert_frame_equal(
        streamed[columns].astype(float), batch_latest.sort_index()[columns].astype(float), check_names=False
    )


def test_poison_events_go_to_the_dead_letter_log_and_the_rest_flows(tmp_path: Path) -> None:
    log, state, sink = EventLog(tmp_path / "stream"), SQLiteState(tmp_path / "state.db"), OnlineSink()
    good = {
        "transaction_id": "T1",
        "event_timestamp": "2026-10-01T10:00:00+00:00",
        "customer_id": "C1",
        "merchant_id": "M1",
        "amount_aed": 50.0,
    }
    log.publish([good, {**good, "transaction_id": "T2", "amount_aed": -3}])
    with log.log.open("a") as handle:
        handle.write("{not json\n")
    log.publish([{**good, "transaction_id": "T3", "event_timestamp": "2026-10-01T10:05:00"}])  # no timezone

    stats = consume_batch(log, state, sink, 10, 0)

    assert (stats.consumed, stats.dead_lettered, stats.pushed) == (4, 3, 1)
    letters = [json.loads(line) for line in log.dead_letters.read_text().splitlines()]
    assert [letter["offset"] for letter in letters] == ["1", "2", "3"]
    assert "amount_aed: Input should be greater than 0" in letters[0]["reason"]
    assert letters[1]["reason"].startswith("not JSON")
    assert "event_timestamp" in letters[2]["reason"] and "timezone" in letters[2]["reason"]
    assert log.committed() == 4


def test_nothing_is_acknowledged_before_the_push_succeeds(tmp_path: Path, day_files: list[Path]) -> None:
    # Given a store that fails the first push
    log, state = EventLog(tmp_path / "stream"), SQLiteState(tmp_path / "state.db")
    log.publish(source_events(day_files[0]))
    flaky = OnlineSink(fail_times=1)
    with pytest.raises(ConnectionError):
        consume_batch(log, state, flaky, 30, 0)
    # Then the batch is still unacknowledged, is redelivered, and the result equals a clean run
    assert log.committed() == 0
    drain(log, state, flaky, 30)
    clean_log, clean_state, clean = (
        EventLog(tmp_path / "clean"),
        SQLiteState(tmp_path / "clean.db"),
        OnlineSink(),
    )
    clean_log.publish(source_events(day_files[0]))
    drain(clean_log, clean_state, clean, 30)
    pd.testing.assert_frame_equal(flaky.latest(), clean.latest())


def test_a_redelivered_event_changes_nothing(tmp_path: Path) -> None:
    state = SQLiteState(tmp_path / "state.db")
    event = parse_event("T1", "2026-10-01T10:00:00+00:00", 80.0)
    state.add(event)
    state.add(event)
    assert state.history("C1") == [(event.event_timestamp.timestamp(), 80.0)]


def test_behaviour_windows_close_on_the_right() -> None:
    at = 10_000.0
    history = [(at - 3600, 10.0), (at - 3599, 20.0), (at, 30.0), (at + 1, 999.0)]
    state = behaviour_at(history, at)
    assert (state["txn_count_1h"], state["txn_count_24h"], state["spend_24h_aed"]) == (2, 3, 60.0)
    assert state["avg_amount_30d_aed"] == 20.0


def parse_event(transaction_id: str, when: str, amount: float) -> Any:
    from pipelines.stream import Delivery

    payload = {
        "transaction_id": transaction_id,
        "event_timestamp": when,
        "customer_id": "C1",
        "merchant_id": "M1",
        "amount_aed": amount,
    }
    return parse(Delivery("0", json.dumps(payload)))


def test_bootstrap_gives_the_first_streamed_event_its_history(falaj_home: Path) -> None:
    from pipelines.ingest import ingest
    from pipelines.spec import load_spec
    from pipelines.stream import bootstrap_from_lake
    from pipelines.validate import validate

    # Given seven days in the lake, and the eighth day arriving as a stream
    use_case = load_spec("fraud")
    data = generate(falaj_home / "source", SIZES["tiny"], days=8)
    days = sorted((data.source_dir / "transactions").glob("*.csv"))
    landed = ingest(use_case, data.start, data.end - (data.end - data.start) / 8)
    validate(use_case, [(item.dataset, item.partition) for item in landed])
    log, state, sink = EventLog(falaj_home / "stream"), SQLiteState(falaj_home / "state.db"), OnlineSink()
    log.publish(source_events(days[-1]))

    # When the consumer is bootstrapped from the lake, then drains the stream
    assert bootstrap_from_lake("fraud", state) > 0
    drain(log, state, sink)

    # Then each streamed customer's state is the batch state over all eight days
    events = [event for path in days for event in source_events(path)]
    frame = pd.DataFrame(events).assign(
        event_timestamp=lambda f: pd.to_datetime(f["event_timestamp"], utc=True)
    )
    batch = use_case_module("fraud").customer_behaviour_table(
        frame, pd.DataFrame({"customer_id": [], "signup_timestamp": []})
    )
    expected = batch.sort_values("event_timestamp").groupby("customer_id").tail(1).set_index("customer_id")
    streamed = sink.latest()
    columns = ["txn_count_24h", "spend_24h_aed", "avg_amount_30d_aed"]
    pd.testing.assert_frame_equal(
        streamed[columns].astype(float),
        expected.loc[streamed.index, columns].astype(float),
        check_names=False,
    )
