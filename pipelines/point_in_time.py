"""Feast's point-in-time join as one DuckDB ``ASOF LEFT JOIN`` per feature view.

Feast 0.67's DuckDB offline store joins every earlier row of an entity within the TTL and then keeps
the latest, so its intermediate result grows with each entity's history (29M rows for a 120k-event
training set). An ASOF join finds that latest row directly. Everything else stays Feast's: the feature
service is resolved to views and feature references by Feast's own helpers, the view's join keys,
source, timestamp, tie-break and TTL come from the registry, and on-demand views are applied by
Feast's ``transform_arrow`` to the joined table, so the frame equals ``get_historical_features(...).to_df()``.

Only views read from Parquet ``FileSource``s by the ``duckdb`` offline store take the fast path; any
other service is answered by ``get_historical_features`` itself (see `historical_features`).
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)
_ROW = "__falaj_entity_row"  # the entity frame's row position, to return rows in their given order


class UnsupportedPointInTimeJoin(ValueError):
    """A feature view or store the ASOF join does not reproduce Feast for."""


def historical_features(store: Any, entity_df: pd.DataFrame, service_name: str) -> pd.DataFrame:
    """``store.get_historical_features(entity_df, <service>).to_df()``, joined by DuckDB ASOF joins.

    A service the fast path does not support (see `UnsupportedPointInTimeJoin`) is answered by Feast's
    ``get_historical_features`` itself, with a warning saying why.
    """
    service = store.get_feature_service(service_name)
    try:
        job = asof_retrieval_job(store, entity_df, service)
    except UnsupportedPointInTimeJoin as unsupported:
        log.warning(
            "feature service %s: Feast's own point-in-time join, because %s", service_name, unsupported
        )
        job = store.get_historical_features(entity_df=entity_df, features=service)
    return job.to_df()


def asof_retrieval_job(store: Any, entity_df: pd.DataFrame, service: Any) -> Any:
    """A Feast ``RetrievalJob`` for ``service`` over ``entity_df``, prepared as
    ``FeatureStore.get_historical_features`` prepares it, whose join runs as DuckDB ASOF joins.

    Raises:
        UnsupportedPointInTimeJoin: The store, a view or its source is one the ASOF join does not cover.
        feast.errors.RequestDataNotFoundInEntityDfException: An on-demand view's request column is missing.
    """
    from feast import utils
    from feast.errors import RequestDataNotFoundInEntityDfException
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
    from feast.infra.offline_stores.ibis import _to_utc
    from feast.infra.offline_stores.offline_store import RetrievalMetadata

    if not isinstance(store.config.offline_store, DuckDBOfflineStoreConfig):
        raise UnsupportedPointInTimeJoin(
            f"the offline store is {store.config.offline_store.type!r}, not duckdb"
        )
    # As FeatureStore.get_historical_features resolves a feature service (Feast 0.67).
    refs = utils._get_features(store.registry, store.project, service, allow_cache=True)
    views, on_demand = utils._get_feature_views_to_use(store.registry, store.project, service)
    on_demand = copy.deepcopy(on_demand)
    for odfv in on_demand:
        odfv.write_to_online_store = False
    grouped_views, grouped_on_demand = utils._group_feature_refs(refs, views, on_demand)
    provider_refs = list(refs)
    for view, features in grouped_views:
        for feature in features:
            ref = f"{view.projection.name_to_use()}:{feature}"
            if ref not in provider_refs:
                provider_refs.append(ref)
    if store.config.coerce_tz_aware:
        entity_df = utils.make_df_tzaware(entity_df)
    on_demand_views = [view for view, _ in grouped_on_demand]
    for odfv in on_demand_views:
        for name in odfv.get_request_data_schema():
            if name not in entity_df.columns:
                raise RequestDataNotFoundInEntityDfException(feature_name=name, feature_view_name=odfv.name)
        if odfv.mode == "substrait":
            raise UnsupportedPointInTimeJoin(f"on-demand view {odfv.name} is a substrait transformation")
    utils._validate_feature_refs(refs, False)
    if "event_timestamp" not in entity_df.columns:
        raise UnsupportedPointInTimeJoin("the entity frame has no event_timestamp column")
    entity_df = _to_utc(entity_df.copy(), "event_timestamp")  # as the DuckDB store reads string times

    joined = asof_join(entity_df, [view for view, _ in grouped_views], provider_refs)
    times = entity_df["event_timestamp"]
    metadata = RetrievalMetadata(
        features=provider_refs,
        keys=[column for column in entity_df.columns if column != "event_timestamp"],
        min_event_timestamp=times.min().to_pydatetime(),
        max_event_timestamp=times.max().to_pydatetime(),
    )
    return _joined_job(joined, on_demand_views, metadata)


def _joined_job(table: pa.Table, on_demand_views: list[Any], metadata: Any) -> Any:
    """Feast's ``RetrievalJob`` over an already joined table, whose ``to_df`` adds the on-demand features.

    As Feast 0.67's ``RetrievalJob.to_arrow`` does, each on-demand view's ``transform_arrow`` runs over the
    joined table and its requested features are appended; but each view is given only the columns it
    declares (its request fields and source features): a Python-mode transformation converts every column
    it is given to Python objects, and the others would double its cost.
    """
    from feast.infra.offline_stores.offline_store import RetrievalJob

    class JoinedRetrievalJob(RetrievalJob):
        def to_arrow(self, validation_reference: Any = None, timeout: int | None = None) -> pa.Table:
            if validation_reference is not None:
                raise NotImplementedError("the ASOF retrieval does not validate against a reference")
            joined = table
            for odfv in on_demand_views:
                names = {odfv.name, odfv.projection.name_to_use()}
                requested = {
                    ref.split(":", 1)[1] for ref in metadata.features if ref.split(":", 1)[0] in names
                }
                declared = _declared_inputs(odfv)
                inputs = table.select([column for column in table.column_names if column in declared])
                transformed = odfv.transform_arrow(inputs, False)
                for column in transformed.column_names:
                    if not column.startswith("__index") and (not requested or column in requested):
                        joined = joined.append_column(column, transformed[column])
            return joined

        def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
            return table

        @property
        def full_feature_names(self) -> bool:
            return False

        @property
        def on_demand_feature_views(self) -> list[Any]:
            return on_demand_views

        @property
        def metadata(self) -> Any:
            return metadata

    return JoinedRetrievalJob()


def _declared_inputs(odfv: Any) -> set[str]:
    """The columns an on-demand view reads: its request fields and its source views' features."""
    features = {
        name
        for projection in odfv.source_feature_view_projections.values()
        for feature in projection.features
        for name in (feature.name, f"{projection.name}__{feature.name}")
    }
    return set(odfv.get_request_data_schema()) | features


def _source_path(view: Any) -> str:
    from feast.data_format import ParquetFormat
    from feast.infra.offline_stores.file_source import FileSource

    source = view.batch_source
    if type(source) is not FileSource:
        raise UnsupportedPointInTimeJoin(
            f"view {view.name} reads {type(source).__name__} {source.name!r}, not a FileSource"
        )
    is_parquet = isinstance(source.file_format, ParquetFormat) or (
        source.file_format is None and source.path.endswith(".parquet")
    )
    if not is_parquet or "://" in source.path:
        raise UnsupportedPointInTimeJoin(f"view {view.name} reads {source.path!r}, not a local Parquet file")
    if source.field_mapping:
        raise UnsupportedPointInTimeJoin(f"view {view.name}'s source renames columns (field_mapping)")
    return str(source.path)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _entity_column(name: str, dtype: pa.DataType) -> str:
    """An entity column as Feast returns it: DuckDB holds zoned times at microseconds."""
    import pyarrow as pa

    if pa.types.is_timestamp(dtype):
        if dtype.tz is None:
            raise UnsupportedPointInTimeJoin(f"entity column {name} holds times without a time zone")
        return f"CAST(e.{_quoted(name)} AS TIMESTAMPTZ) AS {_quoted(name)}"
    return f"e.{_quoted(name)}"


def asof_join(entity_df: pd.DataFrame, views: list[Any], feature_refs: list[str]) -> pa.Table:
    """The entity frame with each view's latest feature row at or before its ``event_timestamp``.

    Per view, as Feast's ``point_in_time_join`` decides: the row of the same join keys (the projection's
    join_key_map maps view keys to entity columns) with the latest timestamp at or before the entity's,
    ties broken by the latest created timestamp where the source has one; its features are missing when
    that row is older than the view's TTL (a zero or absent TTL never expires). Columns: the entity
    frame's, then each view's referenced features in the order given; rows in the entity frame's order.

    Raises:
        UnsupportedPointInTimeJoin: A view's source is not a local Parquet FileSource, or renames columns.
    """
    import duckdb
    import pyarrow as pa

    entity_columns = list(entity_df.columns)
    selected, joins = [], []
    for index, view in enumerate(views):
        path = _source_path(view)
        prefix = f"{view.projection.name_to_use()}:"
        features = [ref.removeprefix(prefix) for ref in feature_refs if ref.startswith(prefix)]
        clashing = [feature for feature in features if feature in entity_columns]
        if clashing:
            raise UnsupportedPointInTimeJoin(
                f"view {view.name}'s features {clashing} clash with entity columns"
            )
        source = view.batch_source
        keys = view.projection.join_key_map or {column.name: column.name for column in view.entity_columns}
        alias = f"v{index}"
        created = source.created_timestamp_column
        latest_created = (
            f" QUALIFY row_number() OVER (PARTITION BY {', '.join(_quoted(key) for key in keys)}, __ts "
            f"ORDER BY {_quoted(created)} DESC) = 1"
            if created
            else ""
        )
        columns = ", ".join(_quoted(name) for name in [*keys, *features])
        timestamp = _quoted(source.timestamp_field)
        joins.append(
            f"ASOF LEFT JOIN (SELECT {columns}, CAST({timestamp} AS TIMESTAMPTZ) AS __ts "  # noqa: S608
            f"FROM read_parquet('{path.replace(chr(39), chr(39) * 2)}'){latest_created}) AS {alias} ON "
            + " AND ".join(f"e.{_quoted(entity)} = {alias}.{_quoted(key)}" for key, entity in keys.items())
            + f" AND e.__ts >= {alias}.__ts"
        )
        ttl_us = round(view.ttl.total_seconds() * 1_000_000) if view.ttl else 0
        fresh = f"{alias}.__ts + INTERVAL {ttl_us} MICROSECOND >= e.__ts"
        selected += [
            f"CASE WHEN {fresh} THEN {alias}.{_quoted(feature)} END AS {_quoted(feature)}"
            if ttl_us
            else f"{alias}.{_quoted(feature)}"
            for feature in features
        ]
    entities = pa.Table.from_pandas(entity_df, preserve_index=False)
    entities = entities.append_column(_ROW, pa.array(range(len(entities)), pa.int64()))
    outputs = [_entity_column(column, entities.schema.field(column).type) for column in entity_columns]
    # Every name is quoted and the one literal (a path from the registry) escaped.
    query = f"""
        SELECT {", ".join(outputs)}
               {"".join(", " + column for column in selected)}
        FROM (SELECT *, CAST(event_timestamp AS TIMESTAMPTZ) AS __ts FROM entities) AS e
        {" ".join(joins)}
        ORDER BY e.{_ROW}
    """  # noqa: S608
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        connection.register("entities", entities)
        return connection.sql(query).to_arrow_table()
