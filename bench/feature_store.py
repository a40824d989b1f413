"""Feature store against its floors, in one run on the `prod` profile's real Redis and PostgreSQL.

- online fetch of one customer's behaviour features through the platform (Feast on Redis) vs a raw
  pipelined Redis read of the same hash: p50 and p99;
- materialization rows/s vs raw pipelined Redis writes of exactly the hashes it wrote.

Run: `make bench` (or `.venv/bin/python -m bench.feature_store --size demo`).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Figure, latencies_ms, median_of_runs, percentile, write_report

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
REDIS_DB = 14
FEATURES = ["txn_count_1h", "txn_count_24h", "spend_24h_aed", "avg_amount_30d_aed", "last_txn_unix"]


def main(size: str, repeats: int, runs: int) -> Path:
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
            "FALAJ_FEAST_REGISTRY_URL": f"{POSTGRES}/{database}",
            "FALAJ_REDIS_CONNECTION": f"127.0.0.1:6379,db={REDIS_DB}",
        }
    )
    try:
        return measure(client, size, repeats, runs)
    finally:
        client.flushdb()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def measure(client, size: str, repeats: int, runs: int) -> Path:  # type: ignore[no-untyped-def]
    from pipelines.datagen import SIZES, generate
    from pipelines.features import apply_definitions, build_feature_tables, feature_store
    from pipelines.ingest import ingest
    from pipelines.settings import get_settings
    from pipelines.spec import load_spec
    from pipelines.validate import validate

    spec = load_spec("fraud")
    data = generate(get_settings().source_dir, SIZES[size], days=60)
    landed = ingest(spec, data.start, data.end)
    validate(spec, [(item.dataset, item.partition) for item in landed])
    build_feature_tables(spec)
    apply_definitions()
    store = feature_store()
    start = datetime.combine(data.start, datetime.min.time(), UTC)
    end = datetime.combine(data.end, datetime.min.time(), UTC)

    def materialize_once() -> float:
        client.flushdb()
        started = time.perf_counter()
        store.materialize(start_date=start, end_date=end, feature_views=["customer_behaviour"])
        return client.dbsize() / (time.perf_counter() - started)

    platform_rate, platform_spread = median_of_runs(materialize_once, runs)
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
    store.materialize(start_date=start, end_date=end, feature_views=["customer_behaviour"])

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
            "materialization (customer_behaviour)",
            "rows/s",
            platform_rate,
            raw_rate,
            "raw pipelined HSET of the same hashes",
            "ratio >= 0.3",
            platform_rate / raw_rate >= 0.3,
            {
                "platform_min": platform_spread["min"],
                "platform_max": platform_spread["max"],
                "raw_min": raw_spread["min"],
                "raw_max": raw_spread["max"],
            },
        ),
    ]
    return write_report(
        "feature_store",
        figures,
        {
            "size": size,
            "transactions": data.n_transactions,
            "entities_materialized": len(written),
            "fetch_repeats": repeats,
            "materialization_runs": runs,
            "online_store": "redis 127.0.0.1",
        },
    )


def _customers(lake: Path) -> list[str]:
    import pandas as pd

    frame = pd.read_parquet(lake / "features" / "fraud" / "customer_behaviour" / "data.parquet")
    return sorted(frame["customer_id"].unique())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="demo", choices=["tiny", "small", "demo", "large"])
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    main(arguments.size, arguments.repeats, arguments.runs)
