"""Feature pipeline: compute feature-view inputs from validated data, apply the Feast repo, materialize."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import lake, redis_online, residency
from pipelines.settings import get_settings
from pipelines.spec import UseCaseSpec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WRITE_BATCH_ROWS = 10_000  # rows compared and written per online-store round trip


@dataclass(frozen=True)
class FeatureTables:
    rows: dict[str, int]


def feature_store() -> Any:
    """The Feast store of the current profile; its YAML takes paths and URLs from the settings.

    Raises:
        tls.InsecureConnectionError: In ``prod``, the registry or Redis address does not use verified TLS.
    """
    from feast import FeatureStore

    from pipelines import tls

    settings = get_settings()
    registry_url, redis_connection = settings.feast_registry_url, settings.redis_connection
    if settings.profile == "prod":  # only the prod YAML connects to them
        registry_url = tls.secured(registry_url, "FALAJ_FEAST_REGISTRY_URL")
        redis_connection = tls.secured(redis_connection, "FALAJ_REDIS_CONNECTION")
    os.environ["FALAJ_HOME"] = str(settings.home.resolve())
    os.environ["FALAJ_FEAST_REGISTRY_URL"] = registry_url
    os.environ["FALAJ_REDIS_CONNECTION"] = redis_connection
    return FeatureStore(repo_path=str(settings.feature_repo_dir), fs_yaml_file=settings.feature_store_yaml)


def read_validated(spec: UseCaseSpec, dataset: str, latest_only: bool = False) -> pd.DataFrame:
    """All validated partitions of a dataset (or only the latest, for dimension snapshots)."""
    import pandas as pd

    paths = sorted(lake.zone_dir("validated", spec.name, dataset).glob("partition=*/data.parquet"))
    if not paths:
        raise FileNotFoundError(f"no validated partitions of {spec.name}/{dataset}; run ingest first")
    paths = paths[-1:] if latest_only else paths
    return pd.concat([pd.read_parquet(path) for path in paths], ignore_index=True)


def customer_behaviour(transactions: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    """Each customer's state just after each of their transactions (rolling windows closed on the right).

    Every customer also gets an opening row at sign-up (no transactions yet), so a point-in-time join
    always finds a row at or before any event: Feast's file offline store drops entity rows that
    match none, which would silently bias training sets against first transactions.
    """
    import numpy as np
    import pandas as pd

    frame = transactions[["customer_id", "event_timestamp", "amount_aed"]].sort_values(
        ["customer_id", "event_timestamp"], kind="stable"
    )
    grouped = frame.groupby("customer_id", sort=False)
    out = frame[["customer_id", "event_timestamp"]].copy()
    rolling = {
        window: grouped.rolling(window, on="event_timestamp")["amount_aed"] for window in ("1h", "24h", "30D")
    }
    out["txn_count_1h"] = rolling["1h"].count().to_numpy().astype("int64")
    out["txn_count_24h"] = rolling["24h"].count().to_numpy().astype("int64")
    out["spend_24h_aed"] = rolling["24h"].sum().to_numpy().round(2)
    out["avg_amount_30d_aed"] = rolling["30D"].mean().to_numpy().round(2)
    out["last_txn_unix"] = out["event_timestamp"].astype("int64") / 1e9
    opening = pd.DataFrame(
        {
            "customer_id": customers["customer_id"],
            "event_timestamp": customers["signup_timestamp"],
            "txn_count_1h": 0,
            "txn_count_24h": 0,
            "spend_24h_aed": 0.0,
            "avg_amount_30d_aed": np.nan,
            "last_txn_unix": np.nan,
        }
    )
    combined = pd.concat([opening, out], ignore_index=True)
    return one_row_per_instant(combined, "customer_id")


def one_row_per_instant(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Keep the state after the *last* event of each entity and instant.

    Two transactions of a card in the same second give two rows with one timestamp; a point-in-time
    join cannot tell them apart and would pick either, so the same data could build different
    training sets. The last row already counts both, which is also what the stream pushes.
    """
    ordered = frame.sort_values([key, "event_timestamp"], kind="stable")
    return ordered.drop_duplicates(subset=[key, "event_timestamp"], keep="last").reset_index(drop=True)


def card_velocity(transactions: pd.DataFrame) -> pd.DataFrame:
    """Each card's pace just after each of its transactions: a compromised card bursts while the
    customer's other card carries on as usual, so the card sees what the customer total blurs."""
    frame = transactions[["card_id", "event_timestamp", "amount_aed"]].sort_values(
        ["card_id", "event_timestamp"], kind="stable"
    )
    grouped = frame.groupby("card_id", sort=False)
    out = frame[["card_id", "event_timestamp"]].copy()
    hour = grouped.rolling("1h", on="event_timestamp")["amount_aed"]
    day = grouped.rolling("24h", on="event_timestamp")["amount_aed"]
    out["card_txn_count_1h"] = hour.count().to_numpy().astype("int64")
    out["card_txn_count_24h"] = day.count().to_numpy().astype("int64")
    out["card_spend_1h_aed"] = hour.sum().to_numpy().round(2)
    return one_row_per_instant(out, "card_id")


def merchant_activity(transactions: pd.DataFrame) -> pd.DataFrame:
    """Each merchant's recent activity just after each of its transactions: a merchant suddenly busy
    with unusually large or online payments is where takeover bursts tend to land."""
    frame = transactions[["merchant_id", "event_timestamp", "amount_aed", "channel"]].sort_values(
        ["merchant_id", "event_timestamp"], kind="stable"
    )
    frame = frame.assign(ecommerce=(frame["channel"] == "ecommerce").astype("float64"))
    grouped = frame.groupby("merchant_id", sort=False)
    out = frame[["merchant_id", "event_timestamp"]].copy()
    day = grouped.rolling("24h", on="event_timestamp")
    month = grouped.rolling("30D", on="event_timestamp")
    out["merchant_txn_count_24h"] = day["amount_aed"].count().to_numpy().astype("int64")
    out["merchant_avg_amount_30d_aed"] = month["amount_aed"].mean().to_numpy().round(2)
    out["merchant_ecommerce_share_30d"] = month["ecommerce"].mean().to_numpy().round(4)
    return one_row_per_instant(out, "merchant_id")


def customer_profile(customers: pd.DataFrame) -> pd.DataFrame:
    return customers.assign(birth_year=customers["date_of_birth"].astype("int64"))[
        ["customer_id", "signup_timestamp", "credit_limit_aed", "birth_year"]
    ].rename(columns={"signup_timestamp": "event_timestamp"})


def merchant_profile(merchants: pd.DataFrame) -> pd.DataFrame:
    return merchants.assign(merchant_is_online=merchants["is_online"].astype("int64"))[
        ["merchant_id", "created_timestamp", "mcc", "merchant_is_online"]
    ].rename(columns={"created_timestamp": "event_timestamp"})


def write_feature_table(spec: UseCaseSpec, view: str, frame: pd.DataFrame) -> Path:
    """Write one view's input; times at microseconds, the precision Feast serves them at (and one
    DuckDB's readers all type as a timestamp)."""
    target = lake.zone_dir("features", spec.name, view) / "data.parquet"
    times = frame.select_dtypes(include=["datetimetz"]).columns
    with lake.atomic_path(target) as tmp:
        frame.astype({column: "datetime64[us, UTC]" for column in times}).to_parquet(tmp, index=False)
    return target


def build_feature_tables(spec: UseCaseSpec) -> FeatureTables:
    """Recompute every feature-view input from the whole validated history (deterministic, idempotent).

    Each table must pass its ``expectations/<view>.features.json`` suite before any is written, so a
    broken aggregation never reaches the offline store, a training set or the online store.
    """
    from pipelines.validate import check_feature_tables

    customers = read_validated(spec, "customers", latest_only=True)
    transactions = read_validated(spec, "transactions")
    tables = {
        "customer_behaviour": customer_behaviour(transactions, customers),
        "card_velocity": card_velocity(transactions),
        "merchant_activity": merchant_activity(transactions),
        "customer_profile": customer_profile(customers),
        "merchant_profile": merchant_profile(read_validated(spec, "merchants", latest_only=True)),
    }
    check_feature_tables(tables)
    for view, frame in tables.items():
        write_feature_table(spec, view, frame)
        log.info("feature table %s: %d rows", view, len(frame))
    return FeatureTables(rows={view: len(frame) for view, frame in tables.items()})


def apply_definitions() -> None:
    """``feast apply`` of the feature repository, in process."""
    from feast.repo_operations import apply_total

    store = feature_store()
    if store.repo_path not in sys.path:
        sys.path.append(str(store.repo_path))  # as `feast apply` does: repo files import as top-level modules
    for module in Path(store.repo_path).glob("*.py"):
        # Definitions resolve lake paths from the settings when imported: import them afresh each apply,
        # or a process that switches homes would register the first home's files.
        sys.modules.pop(module.stem, None)
    working_dir = Path.cwd()
    try:
        apply_total(store.config, Path(store.repo_path), skip_source_validation=False)
    finally:
        os.chdir(working_dir)  # apply_total leaves the process in the repo's directory


@dataclass(frozen=True)
class Materialized:
    view: str
    latest_rows: int  # one per entity seen in the window
    written: int  # of those, rows new to serving, newer than it, or correcting it


def materialize(start: datetime, end: datetime) -> list[Materialized]:
    """Load ``[start, end)`` of every event feature view into the online store.

    Profile views (tag ``kind: profile``) are keyed by when a profile began, not by the window, so
    they are loaded whole; their rows are few.
    """
    residency.require_storage("the online store")
    store = feature_store()
    results = []
    for view in store.list_feature_views():
        view_start = min(start, EPOCH) if view.tags.get("kind") == "profile" else start
        results.append(materialize_view(store, view, view_start, end))
    return results


def materialize_view(store: Any, view: Any, start: datetime, end: datetime) -> Materialized:
    """Write each entity's latest row of ``[start, end)`` where it supersedes what serving holds.

    Feast's own materialization gets two cases wrong for a rerun window: its Redis writer skips a row
    unless it is strictly newer, so a late correction of the latest row never reaches serving; its
    SQLite writer overwrites unconditionally, so rerunning an old window clobbers newer values the
    stream pushed. Comparing against the stored time and values gets both right (atomically per
    entity on Redis), and rows equal to the stored ones are not rewritten, so a rerun changes no byte.
    """
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType

    provider = store._get_provider()
    source = view.batch_source
    keys = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
    names = [feature.name for feature in view.features]
    latest = provider.offline_store.pull_latest_from_table_or_query(
        config=store.config,
        data_source=source,
        join_key_columns=list(keys),
        feature_name_columns=names,
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        start_date=start,
        end_date=end,
    ).to_arrow()
    online = store.config.online_store
    if isinstance(online, RedisOnlineStoreConfig) and online.redis_type != RedisType.redis_cluster:
        written = redis_online.write_latest(store, view, latest)
    else:
        written = _write_superseding(store, view, latest)
    store.registry.apply_materialization(view, store.project, start, end)
    log.info("%s: %d latest rows in window, %d written", view.name, latest.num_rows, written)
    return Materialized(view=view.name, latest_rows=latest.num_rows, written=written)


def _write_superseding(store: Any, view: Any, latest: Any) -> int:
    """Any online store: read what is stored, write the rows that are new, newer or corrections."""
    from feast.utils import _convert_arrow_to_proto, make_tzaware

    provider = store._get_provider()
    keys = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
    names = [feature.name for feature in view.features]
    written = 0
    for batch in latest.to_batches(max_chunksize=WRITE_BATCH_ROWS):
        rows = _convert_arrow_to_proto(batch, view, keys)
        stored = provider.online_read(store.config, view, [row[0] for row in rows], names)
        changed = [
            row
            for row, (stored_at, stored_values) in zip(rows, stored, strict=True)
            if stored_at is None
            or make_tzaware(row[2]) > make_tzaware(stored_at)
            or (make_tzaware(row[2]) == make_tzaware(stored_at) and row[1] != stored_values)
        ]
        if changed:
            with _overwriting(store.config.online_store):
                provider.online_write_batch(store.config, view, changed, progress=None)
        written += len(changed)
    return written


@contextmanager
def _overwriting(online_store: Any) -> Iterator[None]:
    """Turn off the Redis writer's own time check: the rows were compared already, ties included."""
    dedup = getattr(online_store, "skip_dedup", None)
    if dedup is not None:
        online_store.skip_dedup = True
    try:
        yield
    finally:
        if dedup is not None:
            online_store.skip_dedup = dedup
