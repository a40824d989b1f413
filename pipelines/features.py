"""Feature pipeline: compute feature-view inputs from validated data, apply the Feast repo, materialize.

What each use case computes is declared beside its Feast definitions (``feature_repo/<use_case>.py``,
see `pipelines.feature_tables`); nothing here knows a use case.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pipelines import lake, redis_online, residency
from pipelines.feature_tables import FeatureTable, FeatureTableError, declared_tables
from pipelines.settings import get_settings
from pipelines.spec import Source, UseCaseSpec

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


def write_feature_table(spec: UseCaseSpec, view: str, frame: pd.DataFrame) -> Path:
    """Write one view's input; times at microseconds, the precision Feast serves them at (and one
    DuckDB's readers all type as a timestamp)."""
    target = lake.zone_dir("features", spec.name, view) / "data.parquet"
    times = frame.select_dtypes(include=["datetimetz"]).columns
    with lake.atomic_path(target) as tmp:
        frame.astype({column: "datetime64[us, UTC]" for column in times}).to_parquet(tmp, index=False)
    return target


def is_snapshot(source: Source) -> bool:
    """A dimension file landed whole each run (no ``{date}`` in its path): only its latest partition is
    current. Daily files and SQL increments each land a part of the history: all of them are read."""
    return source.format == "csv" and not source.partitioned


def use_case_module(use_case: str) -> ModuleType:
    """``feature_repo/<use_case>.py``, imported afresh as a top-level module, as `feast apply` imports it.

    Raises:
        FeatureTableError: The feature repository has no module for the use case.
    """
    import importlib.util

    repo = get_settings().feature_repo_dir
    path = repo / f"{use_case}.py"
    if not path.is_file():
        raise FeatureTableError(
            f"use case {use_case!r} has no feature definitions: {path} does not exist "
            "(its Feast definitions and @feature_table builders belong there)"
        )
    _repo_on_path(repo)
    loader_spec = importlib.util.spec_from_file_location(use_case, path)
    assert loader_spec is not None and loader_spec.loader is not None  # a .py file always has a loader
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[use_case] = module  # definitions resolve lake paths when imported: never reuse a stale one
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(use_case, None)
        raise
    return module


def _repo_on_path(repo: Path) -> None:
    if str(repo) not in sys.path:
        sys.path.append(str(repo))  # as `feast apply` does: repo files import as top-level modules


def _view_columns(module: ModuleType, table: FeatureTable[Any], use_case: str) -> list[str]:
    """The columns the table's feature view reads: entity keys, event timestamp, features."""
    from feast import Entity, FeatureView

    where = getattr(module, "__file__", None) or module.__name__
    views = {value.name: value for value in vars(module).values() if isinstance(value, FeatureView)}
    view = views.get(table.view)
    if view is None:
        raise FeatureTableError(
            f"{where}: {table.name} feeds feature view {table.view!r}, which the module does not define"
        )
    if view.tags.get("use_case") != use_case:
        raise FeatureTableError(
            f"{where}: feature view {table.view!r} needs the tag use_case={use_case!r}: "
            "materialization loads only the views tagged with their use case"
        )
    if view.batch_source is None:
        raise FeatureTableError(f"{where}: feature view {table.view!r} has no batch source to read the table")
    join_keys = {value.name: value.join_key for value in vars(module).values() if isinstance(value, Entity)}
    keys = [column.name for column in view.entity_columns]
    if not keys:
        unknown = [name for name in view.entities if name not in join_keys]
        if unknown:
            raise FeatureTableError(
                f"{where}: entities {unknown} of view {table.view!r} are not defined there"
            )
        keys = [join_keys[name] for name in view.entities]
    return [*keys, view.batch_source.timestamp_field, *(feature.name for feature in view.features)]


def build_feature_tables(spec: UseCaseSpec) -> FeatureTables:
    """Recompute every feature-view input from the whole validated history (deterministic, idempotent).

    The tables are the ones ``feature_repo/<spec.name>.py`` declares with ``@feature_table``; each
    builder gets its input datasets from the validated zone. Each table must have its view's entity
    keys, timestamp and features, and pass its ``expectations/<view>.features.json`` suite, before any
    is written, so a broken aggregation never reaches the offline store, a training set or the online
    store.

    Raises:
        FeatureTableError: The use case declares no tables, or a table does not fit its view or spec.
        DataValidationError: A table fails its feature suite; nothing was written.
    """
    import pandas as pd

    from pipelines.validate import check_feature_tables

    module = use_case_module(spec.name)
    declared = declared_tables(module)
    columns = {table.view: _view_columns(module, table, spec.name) for table in declared}
    datasets = list(dict.fromkeys(dataset for table in declared for dataset in table.inputs))
    unknown = [dataset for dataset in datasets if dataset not in spec.sources]
    if unknown:
        raise FeatureTableError(
            f"{module.__file__}: tables read {unknown}, which are not sources of use case {spec.name!r} "
            f"(its sources: {sorted(spec.sources)})"
        )
    frames = {
        dataset: read_validated(spec, dataset, latest_only=is_snapshot(spec.sources[dataset]))
        for dataset in datasets
    }
    tables = {}
    for table in declared:
        frame = table.build(frames)
        if not isinstance(frame, pd.DataFrame):
            raise FeatureTableError(f"{table.name} returned {type(frame).__name__}, not a pandas DataFrame")
        missing = [column for column in columns[table.view] if column not in frame.columns]
        if missing:
            raise FeatureTableError(
                f"{table.name} returned a table without {missing}, which feature view {table.view!r} "
                f"reads (entity keys, event timestamp, features: {columns[table.view]})"
            )
        tables[table.view] = frame
    check_feature_tables(tables)
    for view, frame in tables.items():
        write_feature_table(spec, view, frame)
        log.info("feature table %s: %d rows", view, len(frame))
    return FeatureTables(rows={view: len(frame) for view, frame in tables.items()})


def apply_definitions() -> None:
    """``feast apply`` of the feature repository, in process."""
    from feast.repo_operations import apply_total

    store = feature_store()
    _repo_on_path(Path(store.repo_path))
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


def materialize(spec: UseCaseSpec, start: datetime, end: datetime) -> list[Materialized]:
    """Load ``[start, end)`` of the use case's feature views into the online store.

    A use case's views are the ones tagged ``use_case: <spec.name>`` (as its feature services are),
    so one use case's run never loads, or waits on, another's tables. Profile views (tag
    ``kind: profile``) are keyed by when a profile began, not by the window, so they are loaded whole;
    their rows are few.

    Raises:
        FeatureTableError: No view in the registry is tagged with the use case.
    """
    residency.require_storage("the online store")
    store = feature_store()
    views = store.list_feature_views(tags={"use_case": spec.name})
    if not views:
        raise FeatureTableError(
            f"no feature view in the registry is tagged use_case={spec.name!r}: tag the views in "
            f"feature_repo/{spec.name}.py and apply the definitions"
        )
    results = []
    for view in views:
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
