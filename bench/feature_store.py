"""Feature store against its floors, in one run on the `prod` profile's real Redis and PostgreSQL.

- online fetch of one customer's behaviour features through the platform (Feast on Redis) vs a raw
  pipelined Redis read of the same hash: p50 and p99;
- materialization rows/s vs raw pipelined Redis writes of exactly the hashes it wrote, over one day's
  window (what the daily DAG run loads) of a bank-sized customer base: the demo's behaviour table is
  tiled ``--copies`` times under new customer ids (100 copies: 200,000 customers, about 107,000 active
  in the day). Feast's own materialization of the same window is reported beside it.

Run: `make bench` (or `.venv/bin/python -m bench.feature_store --size demo --copies 100`).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import Figure, latencies_ms, median_of_runs, percentile, write_report

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
REDIS_DB = 14
FEATURES = ["txn_count_1h", "txn_count_24h", "spend_24h_aed", "avg_amount_30d_aed", "last_txn_unix"]


def main(size: str, copies: int, repeats: int, runs: int) -> Path:
    import redis
    from sqlalchemy import create_engine, text

    database = f"falaj_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    client.flushdb()
    home = Path(tempfile.mkdtemp(prefix="falaj-bench-"))
    os.environ.update(
        {
            "FALAJ_HOME": str(home),
            "FALAJ_PROFILE": "prod",
            "FALAJ_REQUIRE_TLS": "false",  # the shared servers on :5432 and :6379 are plaintext
            "FALAJ_FEAST_REGISTRY_URL": f"{POSTGRES}/{database}",
            "FALAJ_REDIS_CONNECTION": f"127.0.0.1:6379,db={REDIS_DB}",
        }
    )
    try:
        return measure(client, size, copies, repeats, runs)
    finally:
        client.flushdb()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def measure(client, size: str, copies: int, repeats: int, runs: int) -> Path:  # type: ignore[no-untyped-def]
    from pipelines.datagen import SIZES, generate
    from pipelines.features import apply_definitions, build_feature_tables, feature_store, materialize_view
    from pipelines.ingest import ingest
    from pipelines.settings import get_settings
    from pipelines.spec import load_spec
    from pipelines.validate import validate

    spec = load_spec("fraud")
    data = generate(get_settings().source_dir, SIZES[size], days=60)
    landed = ingest(spec, data.start, data.end)
    validate(spec, [(item.dataset, item.partition) for item in landed])
    build_feature_tables(spec)
    customers_total = _tile_customers(spec, copies)
    apply_definitions()
    store = feature_store()
    view = store.get_feature_view("customer_behaviour")
    start = datetime.combine(data.start, datetime.min.time(), UTC)
    end = datetime.combine(data.end, datetime.min.time(), UTC)
    day = end - timedelta(days=1)

    def rate(materialize) -> float:  # type: ignore[no-untyped-def]
        client.flushdb()
        started = time.perf_counter()
        materialize()
        return client.dbsize() / (time.perf_counter() - started)

    feast_rate, feast_spread = median_of_runs(
        lambda: rate(lambda: store.materialize(start_date=day, end_date=end, feature_views=[view.name])), runs
    )
    platform_rate, platform_spread = median_of_runs(
        lambda: rate(lambda: materialize_view(store, view, day, end)), runs
    )
    written = {key: client.hgetall(key) for key in client.scan_iter(count=1000)}

    def raw_write_once() -> float:
        client.flushdb()
        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for index, (key, fields) in enumerate(written.items(), start=1):
            pipe.hset(key, mapping=fields)
            if index % 1000 == 0:
                pipe.execute()
        pipe.execute()
        return len(written) / (time.perf_counter() - started)

    raw_rate, raw_spread = median_of_runs(raw_write_once, runs)
    client.flushdb()
    materialize_view(store, view, start, end)

    customers = _customers(get_settings().lake_dir)
    rng = random.Random(7)
    refs = [f"customer_behaviour:{name}" for name in FEATURES]
    platform_fetch = latencies_ms(
        lambda: store.get_online_features(
            features=refs, entity_rows=[{"customer_id": rng.choice(customers)}]
        ),
        repeats,
    )
    keys = list(written)

    def raw_read() -> None:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(rng.choice(keys))
        pipe.execute()

    raw_fetch = latencies_ms(raw_read, repeats)
    p99 = percentile(platform_fetch, 99) / percentile(raw_fetch, 99)
    figures = [
        Figure(
            "online fetch p50 (1 customer, 5 features)",
            "ms",
            percentile(platform_fetch, 50),
            percentile(raw_fetch, 50),
            "raw pipelined HGETALL",
            "-",
            True,
        ),
        Figure(
            "online fetch p99 (1 customer, 5 features)",
            "ms",
            percentile(platform_fetch, 99),
            percentile(raw_fetch, 99),
            "raw pipelined HGETALL",
            "ratio <= 10",
            p99 <= 10,
        ),
        Figure(
            "materialization, platform (1 day, customer_behaviour)",
            "rows/s",
            platform_rate,
            raw_rate,
            "raw pipelined HSET of the same hashes",
            "ratio >= 0.3",
            platform_rate / raw_rate >= 0.3,
            _spread(platform_spread, raw_spread),
        ),
        Figure(
            "materialization, Feast's own writer (same window)",
            "rows/s",
            feast_rate,
            raw_rate,
            "raw pipelined HSET of the same hashes",
            "-",
            True,
            _spread(feast_spread, raw_spread),
        ),
    ]
    return write_report(
        "feature_store",
        figures,
        {
            "size": size,
            "transactions": data.n_transactions,
            "customers": customers_total,
            "entities_materialized": len(written),
            "window": f"[{day:%Y-%m-%d}, {end:%Y-%m-%d})",
            "fetch_repeats": repeats,
            "materialization_runs": runs,
            "online_store": "redis 127.0.0.1",
        },
    )


def _spread(value: dict[str, float], floor: dict[str, float]) -> dict[str, float]:
    return {"min": value["min"], "max": value["max"], "floor_min": floor["min"], "floor_max": floor["max"]}


def _tile_customers(spec, copies: int) -> int:  # type: ignore[no-untyped-def]
    """Repeat the behaviour table under new customer ids: same values and times, ``copies`` times."""
    import pandas as pd

    from pipelines.features import write_feature_table
    from pipelines.settings import get_settings

    path = get_settings().lake_dir / "features" / "fraud" / "customer_behaviour" / "data.parquet"
    table = pd.read_parquet(path)
    tiled = pd.concat(
        [
            table.assign(customer_id=table["customer_id"] + f"-{copy}") if copy else table
            for copy in range(copies)
        ],
        ignore_index=True,
    )
    write_feature_table(spec, "customer_behaviour", tiled)
    return int(tiled["customer_id"].nunique())


def _customers(lake: Path) -> list[str]:
    import pandas as pd

    frame = pd.read_parquet(lake / "features" / "fraud" / "customer_behaviour" / "data.parquet")
    return sorted(frame["customer_id"].unique())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="demo", choices=["tiny", "small", "demo", "large"])
    parser.add_argument("--copies", type=int, default=100, help="Tiles of the customer base.")
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    main(arguments.size, arguments.copies, arguments.repeats, arguments.runs)
