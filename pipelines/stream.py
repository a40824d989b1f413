"""Streaming feature ingestion: transaction events in, each customer's behaviour state pushed online.

The broker is Redis Streams with a consumer group in ``prod`` and an append-only event log under
``$FALAJ_HOME/stream`` in ``local``. Delivery is at least once: an event is acknowledged only after its
state was pushed, and a redelivered event changes nothing (the state store keys events by id). An
event that cannot be parsed goes to a dead-letter stream with the reason and the consumer carries on.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from pipelines.settings import get_settings

log = logging.getLogger(__name__)
PUSH_SOURCE = "customer_behaviour_push"
HOUR, DAY = 3600.0, 86400.0
STATE_HORIZON = 30 * DAY  # the longest window a behaviour feature looks back over


class TransactionEvent(BaseModel):
    """What a source system publishes for each card transaction (extra fields are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    transaction_id: str = Field(min_length=1, max_length=64)
    event_timestamp: AwareDatetime
    customer_id: str = Field(min_length=1, max_length=64)
    merchant_id: str = Field(min_length=1, max_length=64)
    amount_aed: float = Field(gt=0, le=1_000_000)


def behaviour_at(history: Iterable[tuple[float, float]], at: float) -> dict[str, float | int]:
    """The behaviour features just after the event at ``at``, from (time, amount) pairs up to ``at``.

    Mirrors the batch computation (``customer_behaviour_table`` in ``feature_repo/fraud.py``): windows
    closed on the right, (at - window, at].
    """
    within = [(time, amount) for time, amount in history if time <= at]
    hour = [amount for time, amount in within if time > at - HOUR]
    day = [amount for time, amount in within if time > at - DAY]
    month = [amount for time, amount in within if time > at - STATE_HORIZON]
    return {
        "txn_count_1h": len(hour),
        "txn_count_24h": len(day),
        "spend_24h_aed": round(sum(day), 2),
        "avg_amount_30d_aed": round(sum(month) / len(month), 2),
        "last_txn_unix": at,
    }


class StateStore(Protocol):
    def add(self, event: TransactionEvent) -> None: ...

    def add_many(self, rows: Iterable[tuple[str, str, float, float]]) -> None: ...

    def history(self, customer_id: str) -> list[tuple[float, float]]: ...


class SQLiteState:
    """Each customer's last 30 days of (time, amount), keyed by transaction id: re-adding is a no-op."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS events (transaction_id TEXT PRIMARY KEY, customer_id TEXT, "
            "at REAL, amount REAL)"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS by_customer ON events (customer_id, at)")

    def add(self, event: TransactionEvent) -> None:
        at = event.event_timestamp.timestamp()
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)",
                (event.transaction_id, event.customer_id, at, event.amount_aed),
            )
            self.db.execute(
                "DELETE FROM events WHERE customer_id = ? AND at < "
                "(SELECT MAX(at) FROM events WHERE customer_id = ?) - ?",
                (event.customer_id, event.customer_id, STATE_HORIZON),
            )

    def add_many(self, rows: Iterable[tuple[str, str, float, float]]) -> None:
        """Bulk (transaction_id, customer_id, at, amount); existing ids are left as they are."""
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)", rows)

    def history(self, customer_id: str) -> list[tuple[float, float]]:
        rows = self.db.execute("SELECT at, amount FROM events WHERE customer_id = ?", (customer_id,))
        return [(float(at), float(amount)) for at, amount in rows]


class RedisState:
    """The same state in Redis, shared by every consumer of the group: one sorted set per customer."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client, self.prefix = client, prefix

    def add(self, event: TransactionEvent) -> None:
        key = f"{self.prefix}:{event.customer_id}"
        at = event.event_timestamp.timestamp()
        self.client.zadd(key, {f"{event.transaction_id}|{event.amount_aed!r}": at})
        newest = self.client.zrange(key, -1, -1, withscores=True)
        if newest:
            self.client.zremrangebyscore(key, "-inf", f"({newest[0][1] - STATE_HORIZON}")

    def add_many(self, rows: Iterable[tuple[str, str, float, float]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for index, (transaction_id, customer_id, at, amount) in enumerate(rows, start=1):
            pipe.zadd(f"{self.prefix}:{customer_id}", {f"{transaction_id}|{amount!r}": at})
            if index % 5000 == 0:
                pipe.execute()
        pipe.execute()

    def history(self, customer_id: str) -> list[tuple[float, float]]:
        members = self.client.zrange(f"{self.prefix}:{customer_id}", 0, -1, withscores=True)
        return [(float(score), float(member.decode().rsplit("|", 1)[1])) for member, score in members]


@dataclass(frozen=True)
class Delivery:
    id: str
    raw: str
    end: int = 0  # local log only: the byte offset just past this event


class EventSource(Protocol):
    def publish(self, events: Iterable[dict[str, Any]]) -> int: ...

    def read(self, count: int, block_ms: int) -> list[Delivery]: ...

    def ack(self, deliveries: list[Delivery]) -> None: ...

    def dead_letter(self, delivery: Delivery, reason: str) -> None: ...


class EventLog:
    """The `local` broker: JSON lines appended to a file; the committed offset is a line count."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.log, self.offset_file = directory / "transactions.log", directory / "consumer.offset"
        self.dead_letters = directory / "dead-letter.log"
        self.log.touch()

    def publish(self, events: Iterable[dict[str, Any]]) -> int:
        lines = [json.dumps(event, default=str) + "\n" for event in events]
        with self.log.open("a") as handle:
            handle.writelines(lines)
        return len(lines)

    def _position(self) -> tuple[int, int]:
        """The committed (line, byte) offset: the line counts events, the byte lets a read seek."""
        if not self.offset_file.exists():
            return 0, 0
        line, byte = self.offset_file.read_text().split()
        return int(line), int(byte)

    def committed(self) -> int:
        return self._position()[0]

    def read(self, count: int, block_ms: int = 0) -> list[Delivery]:
        line, byte = self._position()
        deliveries: list[Delivery] = []
        with self.log.open("rb") as handle:
            handle.seek(byte)
            while len(deliveries) < count:
                raw = handle.readline()
                if not raw.endswith(b"\n"):
                    break  # end of the log, or an event still being written
                deliveries.append(Delivery(str(line + len(deliveries)), raw[:-1].decode(), handle.tell()))
        if not deliveries and block_ms:
            threading.Event().wait(block_ms / 1000)
        return deliveries

    def ack(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            tmp = self.offset_file.with_suffix(".tmp")
            tmp.write_text(f"{int(deliveries[-1].id) + 1} {deliveries[-1].end}")
            tmp.replace(self.offset_file)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        with self.dead_letters.open("a") as handle:
            handle.write(json.dumps({"offset": delivery.id, "event": delivery.raw, "reason": reason}) + "\n")


class RedisStream:
    """The `prod` broker: a Redis stream read through a consumer group.

    Entries another consumer read but never acknowledged (it crashed) are claimed back after
    ``claim_idle_ms`` and processed again: at least once.
    """

    def __init__(
        self, client: Any, stream: str, group: str, consumer: str, claim_idle_ms: int = 30_000
    ) -> None:
        self.client, self.stream, self.group, self.consumer = client, stream, group, consumer
        self.claim_idle_ms = claim_idle_ms
        import redis

        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exists:
            if "BUSYGROUP" not in str(exists):  # the group is already there: join it
                raise

    def publish(self, events: Iterable[dict[str, Any]]) -> int:
        pipe = self.client.pipeline(transaction=False)
        count = 0
        for event in events:
            pipe.xadd(self.stream, {"event": json.dumps(event, default=str)})
            count += 1
        pipe.execute()
        return count

    def read(self, count: int, block_ms: int) -> list[Delivery]:
        _, claimed, _ = self.client.xautoclaim(
            self.stream, self.group, self.consumer, self.claim_idle_ms, start_id="0-0", count=count
        )
        entries = list(claimed)
        if not entries:
            response = self.client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms or None
            )
            entries = [entry for _, stream_entries in response or [] for entry in stream_entries]
        return [Delivery(_text(entry_id), _text(fields.get(b"event", b""))) for entry_id, fields in entries]

    def ack(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            self.client.xack(self.stream, self.group, *[delivery.id for delivery in deliveries])

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.client.xadd(
            f"{self.stream}:dead-letter", {"id": delivery.id, "event": delivery.raw, "reason": reason}
        )
        self.client.xack(self.stream, self.group, delivery.id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse(delivery: Delivery) -> TransactionEvent:
    """Raises ValueError with a readable reason for anything that is not a valid transaction event."""
    try:
        payload = json.loads(delivery.raw)
    except json.JSONDecodeError as bad:
        raise ValueError(f"not JSON: {bad.msg} at position {bad.pos}") from None
    try:
        return TransactionEvent.model_validate(payload)
    except ValidationError as bad:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in bad.errors())
        raise ValueError(reasons) from None


@dataclass
class ConsumeStats:
    consumed: int = 0
    pushed: int = 0
    dead_lettered: int = 0
    batches: int = 0
    reasons: list[str] = field(default_factory=list)


def consume_batch(
    source: EventSource, state: StateStore, push: Any, count: int, block_ms: int
) -> ConsumeStats:
    """Read, update state, push, then acknowledge: one at-least-once step."""
    import pandas as pd

    stats = ConsumeStats()
    deliveries = source.read(count, block_ms)
    if not deliveries:
        return stats
    touched: set[str] = set()
    for delivery in deliveries:
        try:
            event = parse(delivery)
        except ValueError as poison:
            source.dead_letter(delivery, str(poison))
            stats.dead_lettered += 1
            stats.reasons.append(str(poison))
            continue
        state.add(event)
        touched.add(event.customer_id)
    # The online store holds each customer's latest state, so push the state as of their newest event
    # (a late event changes that state too, and an older row must never overwrite a newer one).
    rows = []
    for customer_id in sorted(touched):
        history = state.history(customer_id)
        latest = max(time for time, _ in history)
        rows.append(
            {
                "customer_id": customer_id,
                "event_timestamp": datetime.fromtimestamp(latest, tz=UTC),
                **behaviour_at(history, latest),
            }
        )
    if rows:
        push(pd.DataFrame(rows))
    source.ack(deliveries)  # dead letters are handled too: the log's offset moves past them
    stats.consumed, stats.pushed, stats.batches = len(deliveries), len(rows), 1
    return stats


def open_broker(
    use_case: str, consumer: str = "consumer-1", claim_idle_ms: int = 30_000
) -> tuple[EventSource, StateStore]:
    """The broker and state store of the current profile."""
    settings = get_settings()
    if settings.profile == "local":
        directory = settings.home / "stream" / use_case
        return EventLog(directory), SQLiteState(directory / "state.db")
    import redis

    from pipelines import tls

    client = redis.Redis.from_url(tls.secured(settings.stream_redis_url, "FALAJ_STREAM_REDIS_URL"))
    stream = RedisStream(client, f"falaj:{use_case}:transactions", "falaj-features", consumer, claim_idle_ms)
    return stream, RedisState(client, f"falaj:{use_case}:velocity")


def run_consumer(
    use_case: str,
    stop: threading.Event,
    *,
    batch_size: int = 200,
    block_ms: int = 1000,
    until_idle: bool = False,
    claim_idle_ms: int = 30_000,
    bootstrap: bool = False,
) -> ConsumeStats:
    """Consume until ``stop`` is set (or, with ``until_idle``, until the broker has nothing more)."""
    from feast.data_source import PushMode

    from pipelines.features import feature_store

    store = feature_store()
    source, state = open_broker(use_case, claim_idle_ms=claim_idle_ms)
    if bootstrap:
        bootstrap_from_lake(use_case, state)

    def push(frame: Any) -> None:
        store.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)

    total = ConsumeStats()
    while not stop.is_set():
        stats = consume_batch(source, state, push, batch_size, block_ms)
        total.consumed += stats.consumed
        total.pushed += stats.pushed
        total.dead_lettered += stats.dead_lettered
        total.batches += stats.batches
        total.reasons.extend(stats.reasons)
        if stats.batches:
            log.info(
                "stream: %d consumed, %d pushed, %d dead-lettered so far",
                total.consumed,
                total.pushed,
                total.dead_lettered,
            )
        elif until_idle:
            break
    return total


def bootstrap_from_lake(use_case: str, state: StateStore) -> int:
    """Seed the state store with the validated transactions of the last 30 days the lake holds, so the
    first streamed event of a long-standing customer already sees their history. Idempotent."""
    import pandas as pd

    from pipelines.features import read_validated
    from pipelines.spec import load_spec

    transactions = read_validated(load_spec(use_case), "transactions")
    newest = transactions["event_timestamp"].max()
    recent = transactions[transactions["event_timestamp"] > newest - pd.Timedelta(seconds=STATE_HORIZON)]
    seconds = recent["event_timestamp"].astype("int64") / 1e9
    state.add_many(
        zip(
            recent["transaction_id"].astype(str),
            recent["customer_id"].astype(str),
            seconds,
            recent["amount_aed"].astype(float),
            strict=True,
        )
    )
    log.info("stream state bootstrapped with %d transactions from the lake", len(recent))
    return len(recent)


def source_events(path: Path) -> list[dict[str, Any]]:
    """A day file of the source system as the events it would have published (labels stay behind)."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str).drop(columns=["is_fraud"], errors="ignore")
    frame["amount_aed"] = frame["amount_aed"].astype(float)
    return [dict(row) for row in frame.to_dict(orient="records")]
