"""The compare-and-write script on the real Redis: which rows supersede the stored one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from pipelines.redis_online import COMPARE_AND_WRITE

pytestmark = pytest.mark.integration
KEY = b"entity"
TS_FIELD = "_ts:view"


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=12)
    client.flushdb()
    yield client
    client.flushdb()


def instant(seconds: int, nanos: int = 0) -> bytes:
    return Timestamp(seconds=seconds, nanos=nanos).SerializeToString()


def write(client: redis.Redis, seconds: int, nanos: int, value: bytes, ttl: int = 0) -> int:
    header = (ttl, TS_FIELD, 1, b"f1")
    return int(client.eval(COMPARE_AND_WRITE, 1, KEY, *header, instant(seconds, nanos), value))  # type: ignore[arg-type]


def stored(client: redis.Redis) -> bytes | None:
    return client.hget(KEY, b"f1")  # type: ignore[return-value]


def test_first_row_is_written_with_its_ttl(client: redis.Redis) -> None:
    assert write(client, 1_790_000_000, 0, b"a", ttl=3600) == 1
    assert stored(client) == b"a"
    assert 0 < client.ttl(KEY) <= 3600


def test_older_rows_never_overwrite(client: redis.Redis) -> None:
    write(client, 1_790_000_000, 500, b"new")
    assert write(client, 1_789_999_999, 999_999_999, b"older second") == 0
    assert write(client, 1_790_000_000, 499, b"older nanos") == 0
    assert stored(client) == b"new"


def test_newer_rows_overwrite(client: redis.Redis) -> None:
    write(client, 1_790_000_000, 500, b"old")
    assert write(client, 1_790_000_000, 501, b"newer nanos") == 1
    assert write(client, 1_790_000_001, 0, b"newer second") == 1
    assert stored(client) == b"newer second"


def test_an_equal_time_rewrites_only_a_correction(client: redis.Redis) -> None:
    write(client, 1_790_000_000, 0, b"first")
    assert write(client, 1_790_000_000, 0, b"first") == 0
    assert write(client, 1_790_000_000, 0, b"corrected") == 1
    assert stored(client) == b"corrected"


def test_times_before_a_varint_boundary_compare_as_numbers(client: redis.Redis) -> None:
    # 127 is one varint byte, 128 two: byte order and numeric order differ here
    write(client, 128, 0, b"later")
    assert write(client, 127, 0, b"earlier") == 0
    assert stored(client) == b"later"


def test_one_call_decides_each_entity_of_a_batch_on_its_own(client: redis.Redis) -> None:
    client.hset(b"kept", mapping={TS_FIELD: instant(200), b"f1": b"x", b"f2": b"y"})
    client.hset(b"corrected", mapping={TS_FIELD: instant(200), b"f1": b"x", b"f2": b"y"})
    rows = [(b"new", instant(100), b"a", b"b"), (b"kept", instant(200), b"x", b"y"),
            (b"corrected", instant(200), b"x", b"z"), (b"stale", instant(50), b"c", b"d")]  # fmt: skip
    client.hset(b"stale", mapping={TS_FIELD: instant(60), b"f1": b"old", b"f2": b"old"})
    keys = [row[0] for row in rows]
    values = [part for row in rows for part in row[1:]]

    written = client.eval(COMPARE_AND_WRITE, len(keys), *keys, 0, TS_FIELD, 2, b"f1", b"f2", *values)  # type: ignore[arg-type]

    assert written == 2
    assert client.hmget(b"new", [b"f1", b"f2"]) == [b"a", b"b"]
    assert client.hmget(b"corrected", [b"f1", b"f2"]) == [b"x", b"z"]
    assert client.hmget(b"stale", [b"f1", b"f2"]) == [b"old", b"old"]
    assert client.ttl(b"new") == -1
