"""Point-in-time training-set build against a hand-written DuckDB ASOF join of the same data.

The inputs come from the platform's own steps on the `local` profile in a scratch ``FALAJ_HOME``:
``pipelines.datagen`` writes ``--size`` transactions over 60 days (default `demo`: 120,000), then
``ingest``, ``validate``, ``build_feature_tables`` and ``apply_definitions`` (Feast's DuckDB offline store
over the feature tables' Parquet files).

- the platform: ``pipelines.training_set.build_training_set`` over the whole window, as the training DAG
  and the DVC stage call it: ``pipelines.point_in_time`` (one DuckDB ASOF join per view of the spec's
  feature service, ``fraud_v2``, driven by the Feast definitions, then Feast's own transform of the
  on-demand ``transaction_context``), time split, Parquet, encryption, manifest and audit event;
- the floor: one DuckDB query over the same validated transactions and feature Parquet files: each event
  stepped back 1 microsecond (as ``entity_frame`` does), one ``ASOF LEFT JOIN`` per feature view with the
  view's TTL (read from the Feast definitions) applied to the row it finds, and ``transaction_context``
  written as SQL expressions; fetched as a pandas frame.

Before anything is timed, the training set the platform stored must equal the floor's frame: the same
events, times, labels and all 18 features (floats to 1e-9, missing where missing). Target, reported and
never asserted: the platform <= 3x the floor. Each time is the median of ``--repeats`` runs, alternating.
The report's context also counts the rows Feast's own range join (``get_historical_features``, which the
platform used before: 30.8x the floor) would materialise per view (every earlier row of the entity
within the TTL, before it keeps the latest) against the events.

Run: `make bench` (or `.venv/bin/python -m bench.training_set --size demo`; `--quick` uses `tiny`).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.common import Figure, alternating, rates, write_report

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

# The fraud_v2 feature views the floor joins: each view's join key and the columns it reads (the
# service's features, plus last_txn_unix, which transaction_context needs).
VIEWS: dict[str, tuple[str, list[str]]] = {
    "customer_behaviour": (
        "customer_id",
        ["txn_count_1h", "txn_count_24h", "spend_24h_aed", "avg_amount_30d_aed", "last_txn_unix"],
    ),
    "card_velocity": ("card_id", ["card_txn_count_1h", "card_txn_count_24h", "card_spend_1h_aed"]),
    "customer_profile": ("customer_id", ["credit_limit_aed", "birth_year"]),
    "merchant_profile": ("merchant_id", ["mcc", "merchant_is_online"]),
    "merchant_activity": (
        "merchant_id",
        ["merchant_txn_count_24h", "merchant_avg_amount_30d_aed", "merchant_ecommerce_share_30d"],
    ),
}
# transaction_context (feature_repo/fraud.py) as SQL over the joined row.
ON_DEMAND = """
    amount_aed AS txn_amount_aed,
    CASE WHEN avg_amount_30d_aed IS NULL OR avg_amount_30d_aed = 0 THEN 'NaN'::DOUBLE
         ELSE amount_aed / avg_amount_30d_aed END AS amount_vs_avg_30d,
    (request_unix - last_txn_unix) / 60.0 AS minutes_since_last_txn,
    (channel = 'ecommerce')::BIGINT AS is_ecommerce
"""


def prepare(size: int) -> tuple[Any, datetime, datetime]:
    """Source data through the platform's steps up to the feature tables; the spec and its window."""
    from pipelines.datagen import generate
    from pipelines.features import apply_definitions, build_feature_tables
    from pipelines.ingest import ingest
    from pipelines.settings import get_settings
    from pipelines.spec import load_spec
    from pipelines.validate import validate

    spec = load_spec("fraud")
    data = generate(get_settings().source_dir, size, days=60)
    landed = ingest(spec, data.start, data.end)
    validate(spec, [(item.dataset, item.partition) for item in landed])
    build_feature_tables(spec)
    apply_definitions()
    start = datetime.combine(data.start, datetime.min.time(), UTC)
    end = datetime.combine(data.end, datetime.min.time(), UTC)
    return spec, start, end


def view_ttls() -> dict[str, int]:
    """Each joined view's TTL in seconds, from the applied Feast definitions (0: never expires)."""
    from pipelines.features import feature_store

    store = feature_store()
    return {view: int(store.get_feature_view(view).ttl.total_seconds()) for view in VIEWS}


def asof_query(spec: Any, ttls: dict[str, int]) -> str:
    """One ASOF LEFT JOIN per view from the events of ``$start``..``$end``, then the on-demand features."""
    from pipelines import lake

    transactions = lake.zone_dir("validated", spec.name, spec.training_set.entity_source)
    selected, joins = [], []
    for index, (view, (key, columns)) in enumerate(VIEWS.items()):
        alias = f"v{index}"
        path = lake.zone_dir("features", spec.name, view) / "data.parquet"
        joins.append(
            f"ASOF LEFT JOIN read_parquet('{path}') AS {alias} "
            f"ON e.{key} = {alias}.{key} AND e.event_timestamp >= {alias}.event_timestamp"
        )
        fresh = f"{alias}.event_timestamp >= e.event_timestamp - INTERVAL {ttls[view]} SECOND"
        selected += [
            f"CASE WHEN {fresh} THEN {alias}.{column} END AS {column}" if ttls[view] else f"{alias}.{column}"
            for column in columns
        ]
    return f"""
WITH events AS (
    SELECT transaction_id, customer_id, card_id, merchant_id, amount_aed, channel, is_fraud,
           event_timestamp - INTERVAL 1 MICROSECOND AS event_timestamp,
           epoch_ns(event_timestamp) / 1e9 AS request_unix
    FROM read_parquet('{transactions}/partition=*/data.parquet', hive_partitioning = false)
    WHERE event_timestamp >= $start AND event_timestamp < $end
),
joined AS (
    SELECT e.*, {", ".join(selected)}
    FROM events AS e
    {" ".join(joins)}
)
SELECT *, {ON_DEMAND} FROM joined
"""


def floor_frame(connection: duckdb.DuckDBPyConnection, query: str, start: datetime, end: datetime) -> Any:
    return connection.execute(query, {"start": start, "end": end}).df()


def stored_training_set(uri: str) -> pd.DataFrame:
    import pandas as pd

    from pipelines import crypto

    return pd.read_parquet(io.BytesIO(crypto.unseal(Path(uri) / "data.parquet")))


def disagreement(stored: pd.DataFrame, direct: pd.DataFrame, columns: list[str], id_column: str) -> str:
    """Why the two training sets differ, or "" when they hold the same events and times, and the same
    values in ``columns`` (features and label)."""
    import pandas as pd

    if len(stored) != len(direct):
        return f"{len(stored)} rows stored vs {len(direct)} from the ASOF join"
    left = stored.sort_values(id_column).reset_index(drop=True)
    right = direct.sort_values(id_column).reset_index(drop=True)
    if not (left[id_column].astype(str).to_numpy() == right[id_column].astype(str).to_numpy()).all():
        return "the two hold different events"
    times = [pd.to_datetime(side["event_timestamp"], utc=True).dt.as_unit("us") for side in (left, right)]
    if not times[0].equals(times[1]):
        return "event times differ"
    for column in columns:
        ours, theirs = (side[column].astype("float64").to_numpy() for side in (left, right))
        differs = ~np.isclose(ours, theirs, rtol=1e-9, atol=1e-9, equal_nan=True)
        if differs.any():
            first = int(np.flatnonzero(differs)[0])
            return (
                f"{column} differs on {int(differs.sum())} rows, e.g. {left[id_column].iloc[first]}: "
                f"{ours[first]} stored vs {theirs[first]} from the ASOF join"
            )
    return ""


def range_join_rows(connection: duckdb.DuckDBPyConnection, spec: Any, ttls: dict[str, int]) -> dict[str, int]:
    """Rows Feast's point-in-time join materialises per view: every row of the event's entity at or before
    it (within the TTL), of which it keeps the latest."""
    from pipelines import lake

    transactions = lake.zone_dir("validated", spec.name, spec.training_set.entity_source)
    counts = {}
    for view, (key, _) in VIEWS.items():
        path = lake.zone_dir("features", spec.name, view) / "data.parquet"
        within = f"AND v.event_timestamp >= e.ts - INTERVAL {ttls[view]} SECOND" if ttls[view] else ""
        counts[view] = int(
            connection.execute(
                f"""
                WITH e AS (
                    SELECT {key}, event_timestamp - INTERVAL 1 MICROSECOND AS ts
                    FROM read_parquet('{transactions}/partition=*/data.parquet', hive_partitioning = false)
                )
                SELECT count(*) FROM e JOIN read_parquet('{path}') AS v
                ON e.{key} = v.{key} AND v.event_timestamp <= e.ts {within}
                """
            ).fetchone()[0]  # type: ignore[index]
        )
    return counts


def main(size: str, repeats: int) -> Path:
    with tempfile.TemporaryDirectory(prefix="falaj-bench-training-set-") as home:
        os.environ.update({"FALAJ_HOME": home, "FALAJ_PROFILE": "local"})
        return measure(size, repeats)


def measure(size: str, repeats: int) -> Path:
    import duckdb

    from pipelines.datagen import SIZES
    from pipelines.training_set import build_training_set

    spec, start, end = prepare(SIZES[size])
    ttls = view_ttls()
    query = asof_query(spec, ttls)
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")

    reference = build_training_set(spec, start, end)  # also the untimed warm-up of Feast's caches
    problem = disagreement(
        stored_training_set(reference.uri),
        floor_frame(connection, query, start, end),
        [*reference.features, spec.label],
        spec.training_set.id_column,
    )
    if problem:
        raise SystemExit(f"the platform's training set and the DuckDB ASOF join disagree: {problem}")

    platform_samples, floor_samples = alternating(
        [lambda: build_training_set(spec, start, end), lambda: floor_frame(connection, query, start, end)],
        repeats,
    )
    platform_s, floor_s = statistics.median(platform_samples), statistics.median(floor_samples)
    spread = {
        "min": min(platform_samples),
        "max": max(platform_samples),
        "floor_min": min(floor_samples),
        "floor_max": max(floor_samples),
        "runs": float(repeats),
    }
    rows = reference.rows
    shape = f"{rows:,} events x {len(reference.features)} features"
    figures = [
        Figure(
            f"build_training_set (ASOF per view from the Feast definitions), {shape}",
            "s",
            platform_s,
            floor_s,
            "DuckDB ASOF LEFT JOIN per view",
            "ratio <= 3",
            platform_s <= 3 * floor_s,
            spread,
        ),
        Figure(
            f"build_training_set throughput, {shape}",
            "rows/s",
            rows / platform_s,
            rows / floor_s,
            "DuckDB ASOF LEFT JOIN per view",
            "-",
            True,
            rates(rows, spread),
        ),
    ]
    return write_report(
        "training_set",
        figures,
        {
            "size": size,
            "events": rows,
            "window": f"[{start:%Y-%m-%d}, {end:%Y-%m-%d})",
            "feature_service": spec.feature_service,
            "ttl_s": ttls,
            "range_join_rows": range_join_rows(connection, spec, ttls),
            "repeats": repeats,
            "duckdb": duckdb.__version__,
            "cpus": os.cpu_count(),
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="demo", choices=["tiny", "small", "demo", "large"])
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per side; the median counts.")
    parser.add_argument("--quick", action="store_true", help="The tiny size, one run per side.")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.size, arguments.repeats = "tiny", 1
    if arguments.repeats < 1:
        parser.error("--repeats must be at least 1")
    main(arguments.size, arguments.repeats)
