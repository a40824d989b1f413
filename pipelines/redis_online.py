"""Feast's Redis layout, written and read directly where Feast's own path costs too much.

Writing (materialization): one atomic compare-and-write per entity.

Feast's Redis writer reads every stored event time in one round trip, compares them in Python and
writes in a second; a value the stream consumer pushes in between is overwritten by an older batch row,
and a row whose time equals the stored one is skipped, so a late correction never lands. Here a
server-side script compares and writes in one step per entity: a newer row is written, an equal-time
row only if its values differ, an older one never. Keys, field names and values are byte-for-byte
those of Feast's writer (``tests/integration/test_feature_store_profiles.py`` checks it), so Feast's
reader serves them unchanged.

Reading (serving): :class:`OnlineReader` fetches a feature service's features for a scoring request in
one pipelined round trip, one HMGET per entity hash with the fields of all its views, then runs the
service's on-demand views through Feast's own ``transform_dict``. Feast's ``get_online_features`` sends
one pipeline per view and builds its response through protos and lists: 0.6 ms per transaction where
the read itself takes 0.06 (bench/serving.py). Its answer is the same, value for value, as Feast's
``to_dict(include_event_timestamps=True)`` (``tests/integration/test_redis_online.py``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

SCRIPT_ROWS = 500  # entities per script call: one round trip, a few milliseconds of server time

# KEYS: the entities' hashes. ARGV[1]: key TTL in seconds (0: none). ARGV[2]: the view's timestamp
# field. ARGV[3]: n, then n feature field names; then for each key its serialized
# google.protobuf.Timestamp and its n values. Returns how many keys it wrote.
COMPARE_AND_WRITE = """
local function instant(timestamp)
  local seconds, nanos, i = 0, 0, 1
  while i <= #timestamp do
    local tag = string.byte(timestamp, i)
    local value, scale = 0, 1
    repeat
      i = i + 1
      local byte = string.byte(timestamp, i)
      value = value + (byte % 128) * scale
      scale = scale * 128
    until byte < 128
    i = i + 1
    if tag == 8 then seconds = value elseif tag == 16 then nanos = value end
  end
  return seconds, nanos
end

local ttl, ts_field, n = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local fields = {}
for i = 1, n do fields[i] = ARGV[3 + i] end
local written = 0
for k = 1, #KEYS do
  local row = 3 + n + (k - 1) * (n + 1)
  local row_ts = ARGV[row + 1]
  local write = true
  local stored = redis.call('HGET', KEYS[k], ts_field)
  if stored then
    local stored_s, stored_n = instant(stored)
    local row_s, row_n = instant(row_ts)
    if stored_s > row_s or (stored_s == row_s and stored_n > row_n) then
      write = false
    elseif stored_s == row_s and stored_n == row_n then
      write = false
      local current = redis.call('HMGET', KEYS[k], unpack(fields))
      for i = 1, n do
        if current[i] ~= ARGV[row + 1 + i] then write = true; break end
      end
    end
  end
  if write then
    local pairs = {ts_field, row_ts}
    for i = 1, n do
      pairs[2 * i + 1] = fields[i]
      pairs[2 * i + 2] = ARGV[row + 1 + i]
    end
    redis.call('HSET', KEYS[k], unpack(pairs))
    if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
    written = written + 1
  end
end
return written
"""

# Feast's proto field per scalar type; other types go through Feast's own converter.
_SCALAR_FIELDS = {"INT32": "int32_val", "INT64": "int64_val", "FLOAT": "float_val",
                  "DOUBLE": "double_val", "STRING": "string_val", "BOOL": "bool_val"}  # fmt: skip


def write_latest(store: Any, view: Any, latest: pa.Table) -> int:
    """Write each row of ``latest`` (one per entity) where it supersedes the stored one.

    One script call per batch of rows stays in flight while the next batch is prepared, so Redis
    runs the comparisons while Python serializes.

    Returns:
        How many entities were written.
    """
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import _versioned_fv_name

    config = store.config
    # Feast's own client, so the TLS options tls.secured added to the connection string apply here too.
    client = store._get_provider().online_store._get_client(config.online_store)
    sha = client.script_load(COMPARE_AND_WRITE)
    name = _versioned_fv_name(view, config)
    fields = [_mmh3(f"{name}:{feature.name}") for feature in view.features]
    header = [config.online_store.key_ttl_seconds or 0, f"_ts:{name}", len(fields), *fields]
    written, in_flight = 0, False
    connection = client.connection_pool.get_connection()
    try:
        for batch in latest.to_batches(max_chunksize=SCRIPT_ROWS):
            keys = _redis_keys(config, view, batch)
            rows = zip(
                _serialized_instants(batch.column(view.batch_source.timestamp_field)),
                *(
                    _serialized(batch.column(feature.name), feature.dtype.to_value_type())
                    for feature in view.features
                ),
                strict=True,
            )
            connection.send_command("EVALSHA", sha, len(keys), *keys, *header, *chain.from_iterable(rows))
            if in_flight:
                written += connection.read_response()
            in_flight = True
        if in_flight:
            written += connection.read_response()
    except BaseException:
        connection.disconnect()  # replies may be left unread on it
        raise
    finally:
        client.connection_pool.release(connection)
    return written


def _redis_keys(config: Any, view: Any, batch: pa.RecordBatch) -> list[bytes]:
    """Feast's Redis keys: the serialized entity key, then the project."""
    from feast.infra.key_encoding_utils import (
        _serialize_val,
        serialize_entity_key,
        serialize_entity_key_prefix,
    )
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey

    version = config.entity_key_serialization_version
    project = config.project.encode("utf-8")
    columns = view.entity_columns
    values = [_values(batch.column(column.name), column.dtype.to_value_type()) for column in columns]
    if len(columns) > 1 or version < 3:
        join_keys = [column.name for column in columns]
        return [
            serialize_entity_key(EntityKey(join_keys=join_keys, entity_values=list(row)), version) + project
            for row in zip(*values, strict=True)
        ]
    # One join key: its part of the key is constant, so only each value is serialized, as Feast does.
    prefix = serialize_entity_key_prefix([columns[0].name], version)
    keys = []
    for value in values[0]:
        encoded, value_type = _serialize_val(value.WhichOneof("val"), value, version)
        keys.append(b"".join((prefix, struct.pack("<II", value_type, len(encoded)), encoded, project)))
    return keys


def _values(column: Any, value_type: Any) -> list[Any]:
    """Feast's value protos for a column: null and NaN alike become an empty value."""
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values

    field = _SCALAR_FIELDS.get(value_type.name)
    if field is None:
        return python_values_to_proto_values(column.to_pylist(), value_type)
    return [
        Value() if value is None or value != value else Value(**{field: value})
        for value in column.to_pylist()
    ]


def _serialized(column: Any, value_type: Any) -> list[bytes]:
    return [value.SerializeToString() for value in _values(column, value_type)]


def _serialized_instants(column: Any) -> list[bytes]:
    """Event times as Feast stores them: a protobuf Timestamp at microsecond precision."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from google.protobuf.timestamp_pb2 import Timestamp

    if pa.types.is_string(column.type):  # how DuckDB hands over nanosecond times with a zone
        column = pc.cast(column, pa.timestamp("ns", tz="UTC"))
    micros = pc.cast(column, pa.timestamp("us", tz=column.type.tz), safe=False).cast(pa.int64()).to_pylist()
    return [
        Timestamp(seconds=value // 1_000_000, nanos=value % 1_000_000 * 1_000).SerializeToString()
        for value in micros
    ]


# --- reading ----------------------------------------------------------------------------------------

OnlineRead = Callable[[list[dict[str, Any]]], dict[str, list[Any]]]


class CompositeKeyError(ValueError):
    """A feature view has several join keys; :class:`OnlineReader` reads views keyed by one column."""


def online_reader(store: Any, feature_service: Any) -> OnlineRead:
    """How the scorer reads ``feature_service``: :class:`OnlineReader` on Redis, Feast's call elsewhere.

    Either returns, for a list of entity rows (join keys and request fields), the columns Feast's
    ``get_online_features(...).to_dict(include_event_timestamps=True)`` gives: each feature by name,
    and for each stored feature ``<name>__ts``, its view's event time in whole seconds (0 if none).
    """
    from feast.infra.online_stores.redis import RedisOnlineStore

    if isinstance(store._get_provider().online_store, RedisOnlineStore):
        try:
            return OnlineReader(store, feature_service).read
        except CompositeKeyError:
            pass  # a view keyed by several columns (store x product): Feast reads it

    def read(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        response = store.get_online_features(features=feature_service, entity_rows=rows)
        return response.to_dict(include_event_timestamps=True)

    return read


@dataclass(frozen=True)
class _EntityHash:
    """One HMGET per entity: the fields of every view keyed by ``join_key``."""

    join_key: str
    value_type: Any  # feast ValueType of the join key
    fields: list[bytes | str]
    # per field: (view, feature name), the feature name None for the view's event time
    names: list[tuple[str, str | None]]


class OnlineReader:
    """A feature service's features from Redis in one round trip, decoded as Feast decodes them."""

    def __init__(self, store: Any, feature_service: Any) -> None:
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import _versioned_fv_name
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        config = store.config
        self._project = config.project
        self._version = config.entity_key_serialization_version
        # Feast's own client: the TLS options tls.secured added to the connection string apply.
        self._client = store._get_provider().online_store._get_client(config.online_store)
        # A scoring request cannot wait out redis-py's default retries (three, backing off about 7 s in
        # all) when Redis is down: one retry at once, then the caller hears of it (the scorer answers 503).
        self._client.set_retry(Retry(NoBackoff(), 1))
        self._on_demand: list[tuple[Any, list[str]]] = []
        self._stored: list[tuple[str, str]] = []  # (view, feature) the answer names
        needed: dict[str, set[str]] = {}  # view -> features to read (answered or an on-demand input)
        views: dict[str, Any] = {}
        for projection in feature_service.feature_view_projections:
            wanted = [feature.name for feature in projection.features]
            try:
                view = store.get_feature_view(projection.name)
            except Exception:  # not a stored view: an on-demand one
                on_demand = store.get_on_demand_feature_view(projection.name)
                self._on_demand.append((on_demand, wanted))
                for source in on_demand.source_feature_view_projections.values():
                    views[source.name] = store.get_feature_view(source.name)
                    needed.setdefault(source.name, set()).update(f.name for f in source.features)
                continue
            views[view.name] = view
            needed.setdefault(view.name, set()).update(wanted)
            self._stored += [(view.name, name) for name in wanted]
        by_key: dict[str, _EntityHash] = {}
        for name, features in needed.items():
            view = views[name]
            if len(view.entity_columns) != 1:
                raise CompositeKeyError(f"feature view {name} has several join keys: read it through Feast")
            [column] = view.entity_columns
            entity = by_key.setdefault(
                column.name, _EntityHash(column.name, column.dtype.to_value_type(), [], [])
            )
            stored_name = _versioned_fv_name(view, config)
            for feature in sorted(features):
                entity.fields.append(_mmh3(f"{stored_name}:{feature}"))
                entity.names.append((name, feature))
            entity.fields.append(f"_ts:{stored_name}")
            entity.names.append((name, None))
        self._entities = list(by_key.values())

    def read(self, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """The columns Feast's ``to_dict(include_event_timestamps=True)`` gives for ``rows``."""
        from feast.infra.online_stores.helpers import _redis_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.type_map import python_values_to_proto_values

        pipe = self._client.pipeline(transaction=False)
        for entity in self._entities:
            values = python_values_to_proto_values([row[entity.join_key] for row in rows], entity.value_type)
            for value in values:
                key = EntityKey(join_keys=[entity.join_key], entity_values=[value])
                pipe.hmget(_redis_key(self._project, key, self._version), entity.fields)
        replies = iter(pipe.execute())
        # per row: view -> {feature: value}, and view -> event time in seconds
        features: list[dict[str, dict[str, Any]]] = [{} for _ in rows]
        stamps: list[dict[str, int]] = [{} for _ in rows]
        for entity in self._entities:
            for row_features, row_stamps in zip(features, stamps, strict=True):
                for (view, name), raw in zip(entity.names, next(replies), strict=True):
                    if name is None:
                        row_stamps[view] = _seconds(raw)
                    else:
                        row_features.setdefault(view, {})[name] = _decoded(raw)
        columns: dict[str, list[Any]] = {}
        for view, name in self._stored:
            columns[name] = [row[view][name] for row in features]
            columns[f"{name}__ts"] = [row[view] for row in stamps]
        for on_demand, wanted in self._on_demand:
            inputs = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
            for source in on_demand.source_feature_view_projections.values():
                for feature in source.features:
                    inputs[feature.name] = [row[source.name][feature.name] for row in features]
            output = on_demand.transform_dict(inputs)
            for name in wanted:
                columns[name] = list(output[name])
        return columns


def _decoded(raw: bytes | None) -> Any:
    """A stored Value as Feast's response gives it."""
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(Value.FromString(raw)) if raw else None


def _seconds(raw: bytes | None) -> int:
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp.FromString(raw).seconds if raw else 0
