"""Materialization into Redis: one atomic compare-and-write per entity, in the layout Feast reads.

Feast's Redis writer reads every stored event time in one round trip, compares them in Python and
writes in a second; a value the stream consumer pushes in between is overwritten by an older batch row,
and a row whose time equals the stored one is skipped, so a late correction never lands. Here a
server-side script compares and writes in one step per entity: a newer row is written, an equal-time
row only if its values differ, an older one never. Keys, field names and values are byte-for-byte
those of Feast's writer (``tests/integration/test_feature_store_profiles.py`` checks it), so Feast's
reader serves them unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

PIPELINE_ROWS = 1_000  # rows per pipelined round trip

# KEYS[1]: the entity's hash. ARGV[1]: key TTL in seconds (0: none). ARGV[2], ARGV[3]: the view's
# timestamp field and the row's serialized google.protobuf.Timestamp. ARGV[4..]: field, value pairs.
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

local stored = redis.call('HGET', KEYS[1], ARGV[2])
if stored then
  local stored_s, stored_n = instant(stored)
  local row_s, row_n = instant(ARGV[3])
  if stored_s > row_s or (stored_s == row_s and stored_n > row_n) then return 0 end
  if stored_s == row_s and stored_n == row_n then
    local changed = false
    for i = 4, #ARGV, 2 do
      if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then changed = true; break end
    end
    if not changed then return 0 end
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local ttl = tonumber(ARGV[1])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""

# Feast's proto field per scalar type; other types go through Feast's own converter.
_SCALAR_FIELDS = {"INT32": "int32_val", "INT64": "int64_val", "FLOAT": "float_val",
                  "DOUBLE": "double_val", "STRING": "string_val", "BOOL": "bool_val"}  # fmt: skip


def write_latest(store: Any, view: Any, latest: pa.Table) -> int:
    """Write each row of ``latest`` (one per entity) where it supersedes the stored one.

    Returns:
        How many entities were written.
    """
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.infra.online_stores.redis import _versioned_fv_name
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey

    config = store.config
    client = store._get_provider().online_store._get_client(config.online_store)
    sha = client.script_load(COMPARE_AND_WRITE)
    name = _versioned_fv_name(view, config)
    ttl = config.online_store.key_ttl_seconds or 0
    join_keys = [column.name for column in view.entity_columns]
    key_values = [
        _values(latest.column(column.name), column.dtype.to_value_type()) for column in view.entity_columns
    ]
    features = [
        (
            _mmh3(f"{name}:{feature.name}"),
            _serialized(latest.column(feature.name), feature.dtype.to_value_type()),
        )
        for feature in view.features
    ]
    instants = _serialized_instants(latest.column(view.batch_source.timestamp_field))
    written = 0
    pipe = client.pipeline(transaction=False)
    for row in range(latest.num_rows):
        entity = EntityKey(join_keys=join_keys, entity_values=[values[row] for values in key_values])
        key = _redis_key(
            config.project, entity, entity_key_serialization_version=config.entity_key_serialization_version
        )
        arguments = [ttl, f"_ts:{name}", instants[row]]
        for field, values in features:
            arguments += (field, values[row])
        pipe.evalsha(sha, 1, key, *arguments)
        if (row + 1) % PIPELINE_ROWS == 0:
            written += sum(pipe.execute())
    written += sum(pipe.execute())
    return written


def _values(column: pa.ChunkedArray, value_type: Any) -> list[Any]:
    from feast.type_map import python_values_to_proto_values

    return python_values_to_proto_values(column.to_pylist(), value_type)


def _serialized(column: pa.ChunkedArray, value_type: Any) -> list[bytes]:
    from feast.protos.feast.types.Value_pb2 import Value

    field = _SCALAR_FIELDS.get(value_type.name)
    if field is None:
        return [value.SerializeToString() for value in _values(column, value_type)]
    # Feast's converter, inlined for the common scalars: null and NaN alike become an empty value.
    return [
        b"" if value is None or value != value else Value(**{field: value}).SerializeToString()
        for value in column.to_pylist()
    ]


def _serialized_instants(column: pa.ChunkedArray) -> list[bytes]:
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
