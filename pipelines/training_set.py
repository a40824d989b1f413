"""Point-in-time training sets from Feast, content-addressed and recorded with a manifest."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import audit, crypto, lake
from pipelines.features import feature_store, read_validated
from pipelines.point_in_time import historical_features
from pipelines.spec import UseCaseSpec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
SPLIT_COLUMN = "split"


@dataclass(frozen=True)
class TrainingSetRef:
    uri: str
    sha256: str
    rows: int
    positives: int | None  # binary classification: rows labelled 1
    features: tuple[str, ...]

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)


def feature_names(store: Any, service_name: str) -> list[str]:
    """The model's inputs, in the order the feature service declares them."""
    service = store.get_feature_service(service_name)
    return [
        feature.name for projection in service.feature_view_projections for feature in projection.features
    ]


def entity_frame(spec: UseCaseSpec, transactions: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled event, timed a microsecond before the event itself.

    Feast joins the latest feature row at or before the entity time; the customer's own aggregates
    include each transaction, so stepping back keeps the event from seeing itself (no leakage) and
    matches what the online store holds when that transaction is scored.
    """
    import pandas as pd

    columns = spec.training_set
    event_time = transactions[spec.event_source.event_time or "event_timestamp"]
    entity = transactions[
        [*spec.entities.values(), columns.id_column, *columns.request_columns, spec.label]
    ].copy()
    if columns.request_time_column:
        entity[columns.request_time_column] = event_time.astype("int64") / 1e9
    entity["event_timestamp"] = event_time - pd.Timedelta(microseconds=1)
    return entity


def assign_splits(
    frame: pd.DataFrame, valid_fraction: float, test_fraction: float, id_column: str = "transaction_id"
) -> pd.DataFrame:
    """Split by time: the newest rows test, the ones before them validate, the rest train."""
    import numpy as np

    ordered = frame.sort_values(["event_timestamp", id_column], kind="stable").reset_index(drop=True)
    position = np.arange(len(ordered)) / max(len(ordered), 1)
    ordered[SPLIT_COLUMN] = np.select(
        [position >= 1 - test_fraction, position >= 1 - test_fraction - valid_fraction],
        ["test", "valid"],
        default="train",
    )
    return ordered


def point_current_at(target: Path) -> None:
    """Move the ``current`` link (what `dvc repro` trains on) to the newest training set, atomically."""
    link = target.parent / "current"
    staging_link = target.parent / ".current.tmp"
    staging_link.unlink(missing_ok=True)
    staging_link.symlink_to(target.name, target_is_directory=True)
    staging_link.replace(link)


def build_training_set(
    spec: UseCaseSpec, start: datetime, end: datetime, *, make_current: bool = True
) -> TrainingSetRef:
    """Join point-in-time features for every labelled event in ``[start, end)`` and store the result.

    ``make_current`` moves the ``current`` link to it; a replay of an old version leaves the link alone.
    """
    transactions = read_validated(spec, spec.training_set.entity_source)
    event_time = transactions[spec.event_source.event_time or "event_timestamp"]
    transactions = transactions[(event_time >= start) & (event_time < end)]
    if transactions.empty:
        raise ValueError(f"no labelled events of {spec.name} between {start} and {end}")

    store = feature_store()
    features = feature_names(store, spec.feature_service)
    entities = entity_frame(spec, transactions)
    plan = spec.training_set
    joined = assign_splits(
        historical_features(store, entities, spec.feature_service),
        plan.valid_fraction,
        plan.test_fraction,
        plan.id_column,
    )
    if len(joined) != len(entities):
        raise RuntimeError(
            f"point-in-time join returned {len(joined)} rows for {len(entities)} events; "
            "an entity without any feature row was dropped"
        )
    # The gate judges the model per slice (channel, emirate, ...): carry those columns, not as features.
    keys = list(spec.entities.values())
    slices = [column for column in spec.gate.slices if column not in (*features, *keys)]
    carried = [column for column in slices if column not in joined.columns]
    if carried:
        joined = joined.merge(transactions[[plan.id_column, *carried]], on=plan.id_column, how="left")
    columns = [
        plan.id_column,
        *keys,
        "event_timestamp",
        *features,
        *slices,
        spec.label,
        SPLIT_COLUMN,
    ]
    joined = joined[columns]

    root = lake.zone_dir("training_sets", spec.name, "")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
    try:
        data = joined.to_parquet(index=False)
        crypto.seal(staging / "data.parquet", data)  # encrypted at rest; its id is the plaintext's sha256
        digest = hashlib.sha256(data).hexdigest()
        target = root / digest[:16]
        positives = int(joined[spec.label].sum()) if spec.task == "binary_classification" else None
        lake.write_json(
            staging / "manifest.json",
            {
                "use_case": spec.name,
                "sha256": digest,
                "feature_service": spec.feature_service,
                "features": features,
                "label": spec.label,
                "task": spec.task,
                "split_column": SPLIT_COLUMN,
                "rows": len(joined),
                "positives": positives,
                "splits": joined[SPLIT_COLUMN].value_counts().to_dict(),
                "window": {"start": start.isoformat(), "end": end.isoformat()},
                "created_at": datetime.now(UTC).isoformat(),
            },
        )
        if not target.exists():  # content-addressed: the same data is the same training set
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    audit.emit(
        "features.export",
        f"{spec.name}:training_set:{target.name}",
        details={
            "feature_service": spec.feature_service,
            "rows": len(joined),
            "window": [start.isoformat(), end.isoformat()],
        },
    )
    if make_current:
        point_current_at(target)
    log.info("training set %s: %d rows, %s positives", target.name, len(joined), positives)
    return TrainingSetRef(str(target), digest, len(joined), positives, tuple(features))
