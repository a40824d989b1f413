"""Ingest: land source files as immutable Parquet partitions, with PII treated at the door."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import lake, residency
from pipelines.pseudonymize import key_id, load_or_create_key, pseudonym
from pipelines.settings import get_settings
from pipelines.spec import Source, UseCaseSpec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
MANIFEST = "_manifest.json"


class SourceMissingError(FileNotFoundError):
    """A source file the window needs has not been delivered."""


@dataclass(frozen=True)
class LandedPartition:
    """One landed partition; ``created`` is False when a rerun found it already landed."""

    dataset: str
    partition: str
    version: str
    rows: int
    created: bool

    def to_xcom(self) -> dict[str, object]:
        return asdict(self)


def source_file(source: Source, day: date) -> Path:
    return get_settings().source_dir / str(source.path).format(date=day.isoformat())


def drop_erased_subjects(spec: UseCaseSpec, frame: pd.DataFrame, key: bytes) -> tuple[pd.DataFrame, int]:
    """Rows of subjects erased earlier never land again, even when a source delivers them anew."""
    from pipelines.erasure import erased_subjects

    column = spec.processing.subject_key if spec.processing else None
    if column is None or column not in frame.columns:
        return frame, 0
    erased = erased_subjects(spec.name)
    if not erased:
        return frame, 0
    mask = frame[column].astype(str).map(lambda value: pseudonym(value, key)).isin(erased)
    return frame[~mask], int(mask.sum())


def treat_pii(frame: pd.DataFrame, source: Source, key: bytes) -> pd.DataFrame:
    """Replace direct identifiers before any byte is written to the lake."""
    treated = frame.copy()
    for column, treatment in source.pii.items():
        if column not in treated:
            continue  # a missing column is the suite's finding, not ingest's
        values = treated[column]
        if treatment == "drop":
            treated = treated.drop(columns=[column])
        elif treatment == "pseudonymize":
            treated[column] = values.map(lambda v: pseudonym(str(v), key), na_action="ignore")
        elif treatment == "year_only":
            treated[column] = values.map(lambda v: str(v)[:4], na_action="ignore")
    return treated


def land_partition(spec: UseCaseSpec, dataset: str, partition: str, path: Path) -> LandedPartition:
    """Land one source file; landing the same bytes again is a no-op, changed bytes a new version."""
    import pandas as pd

    source_sha = lake.sha256_file(path)
    landed = _already_landed(spec, dataset, partition, source_sha)
    if landed:
        return landed
    source = spec.sources[dataset]
    # Text stays text (a phone is not a number); other types are inferred, not forced, so a malformed
    # value reaches validation and is named there.
    text_columns = {column: "string" for column, kind in source.columns.items() if kind == "string"}
    frame = pd.read_csv(path, dtype=text_columns, keep_default_na=True)
    return _land_frame(spec, dataset, partition, frame, source_sha, {})


def land_sql_increment(spec: UseCaseSpec, dataset: str, end: date) -> LandedPartition:
    """Land the rows of a SQL source whose watermark is new since the last window, up to ``end``.

    The window is ``[low, end)`` where ``low`` is where the previous partition stopped; rerunning a
    window reuses its ``low``, so it reads the same rows (a no-op) or, after a late correction upstream,
    lands a new version of the same partition.
    """
    import pandas as pd

    from pipelines.sql_source import extract_window

    source = spec.sources[dataset]
    assert source.sql is not None  # the spec validator guarantees it for format sql
    partition = (end - timedelta(days=1)).isoformat()
    high = datetime.combine(end, datetime.min.time(), UTC)
    low = _watermark_low(spec, dataset, partition)
    url = os.environ.get(source.sql.connection_env)
    if not url:
        raise SourceMissingError(f"{dataset}: set {source.sql.connection_env} to the source database's URL")
    frame = extract_window(
        url, source.sql.table, list(source.columns), source.sql.watermark_column, low, high
    )
    source_sha = hashlib.sha256(
        pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
    ).hexdigest()
    bounds = {"watermark_low": low.isoformat() if low else None, "watermark_high": high.isoformat()}
    return _already_landed(spec, dataset, partition, source_sha) or _land_frame(
        spec, dataset, partition, frame, source_sha, bounds
    )


def _watermark_low(spec: UseCaseSpec, dataset: str, partition: str) -> datetime | None:
    manifests = sorted(lake.zone_dir("landing", spec.name, dataset).glob(f"partition=*/{MANIFEST}"))
    same = [m for m in manifests if m.parent.name == f"partition={partition}"]
    if same:
        low = lake.read_json(same[0]).get("watermark_low")
        return datetime.fromisoformat(low) if low else None
    earlier = [
        lake.read_json(m)["watermark_high"] for m in manifests if m.parent.name < f"partition={partition}"
    ]
    return datetime.fromisoformat(max(earlier)) if earlier else None


def _already_landed(
    spec: UseCaseSpec, dataset: str, partition: str, source_sha: str
) -> LandedPartition | None:
    version = source_sha[:16] + "-" + key_id(load_or_create_key())[:8]
    manifest_path = lake.partition_dir("landing", spec.name, dataset, partition) / MANIFEST
    if manifest_path.exists():
        current = lake.read_json(manifest_path)
        if current["version"] == version:
            return LandedPartition(dataset, partition, version, int(current["rows"]), created=False)
    return None


def _land_frame(
    spec: UseCaseSpec,
    dataset: str,
    partition: str,
    frame: pd.DataFrame,
    source_sha: str,
    extra: dict[str, Any],
) -> LandedPartition:
    key = load_or_create_key()
    version = source_sha[:16] + "-" + key_id(key)[:8]
    target_dir = lake.partition_dir("landing", spec.name, dataset, partition)
    frame, erased_rows = drop_erased_subjects(spec, frame, key)
    treated = treat_pii(frame, spec.sources[dataset], key)
    data_path = target_dir / f"data-{version}.parquet"
    with lake.atomic_path(data_path) as tmp:
        treated.to_parquet(tmp, index=False)
    lake.write_json(
        target_dir / MANIFEST,
        {
            "version": version,
            "file": data_path.name,
            "rows": len(treated),
            "source_sha256": source_sha,
            "pseudonym_key_id": key_id(key),
            "erased_rows": erased_rows,
            "landed_at": datetime.now(UTC).isoformat(),
            **extra,
        },
    )
    log.info("landed %s/%s partition=%s rows=%d", spec.name, dataset, partition, len(treated))
    return LandedPartition(dataset, partition, version, len(treated), created=True)


def ingest(spec: UseCaseSpec, start: date, end: date) -> list[LandedPartition]:
    """Land every source partition of ``[start, end)`` and a snapshot of each dimension source.

    Raises:
        SourceMissingError: a daily file or dimension file of the window has not arrived.
    """
    residency.require(spec.region, f"use case {spec.name}")
    landed = []
    for dataset, source in spec.sources.items():
        if source.format == "sql":
            landed.append(land_sql_increment(spec, dataset, end))
            continue
        if source.partitioned:
            wanted = [(day.isoformat(), source_file(source, day)) for day in lake.days(start, end)]
        else:
            snapshot_day = end - timedelta(days=1)
            wanted = [(snapshot_day.isoformat(), source_file(source, snapshot_day))]
        for partition, path in wanted:
            if not path.exists():
                raise SourceMissingError(
                    f"{dataset}: source file {path} for partition {partition} is missing"
                )
            landed.append(land_partition(spec, dataset, partition, path))
    return landed


def read_landed(spec: UseCaseSpec, dataset: str, partition: str) -> tuple[pd.DataFrame, dict[str, object]]:
    """The current version of a landed partition, and its manifest."""
    import pandas as pd

    directory = lake.partition_dir("landing", spec.name, dataset, partition)
    manifest = lake.read_json(directory / MANIFEST)
    return pd.read_parquet(directory / str(manifest["file"])), manifest
