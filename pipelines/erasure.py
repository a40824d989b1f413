"""Erasure of a data subject (GDPR Art. 17, UAE PDPL): every row that identifies them, everywhere.

The subject is found by the spec's ``processing.subject_key`` (e.g. ``customer_id``); columns named in
``processing.linked_keys`` (their cards) identify them too, with the values found in their own rows.
Rows go from the lake's landing, validated and feature zones and from every training set (decrypted,
filtered, encrypted again); their keys go from the online store. Models trained on a training set that
held the subject are flagged for retraining. The subject is recorded, and audited, only as a keyed
pseudonym, in a register that ingest consults, so a re-delivered file does not bring them back.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import audit, crypto, lake, registry
from pipelines.pseudonymize import load_or_create_key, pseudonym
from pipelines.settings import get_settings
from pipelines.spec import UseCaseSpec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ZONES = ("landing", "validated", "features")


class ErasureError(ValueError):
    """The erasure cannot run as asked; the message says why."""


@dataclass(frozen=True)
class Subject:
    """A data subject's identifying values: their own key and the linked keys found in their rows."""

    key: str
    values: dict[str, frozenset[str]]

    def matches(self, frame: pd.DataFrame) -> Any:
        """A boolean mask of the rows that identify the subject (all False if no such column)."""
        import pandas as pd

        mask = pd.Series(False, index=frame.index)
        for column, values in self.values.items():
            if column in frame.columns:
                mask |= frame[column].astype("string").isin(values).fillna(False)
        return mask


@dataclass
class ErasureReport:
    erasure_id: int
    subject: str  # the keyed pseudonym; the raw identifier is never stored
    rows_removed: dict[str, int] = field(default_factory=dict)  # zone -> rows
    files_rewritten: list[str] = field(default_factory=list)
    training_sets: list[str] = field(default_factory=list)
    online_keys_deleted: int = 0
    models_flagged: list[str] = field(default_factory=list)


def subject_token(subject_id: str) -> str:
    return pseudonym(subject_id, load_or_create_key())


def erased_subjects(use_case: str) -> set[str]:
    """Pseudonyms of the subjects erased from a use case: ingest drops their rows at the door."""
    from sqlalchemy import select

    with registry.session() as db:
        return set(db.scalars(select(registry.Erasure.subject).where(registry.Erasure.use_case == use_case)))


def erase(spec: UseCaseSpec, subject_id: str, actor: str, reason: str) -> ErasureReport:
    """Remove every row of ``subject_id`` from the use case's stores; flag the models trained on them.

    Raises:
        ErasureError: The spec names no subject key, or the subject is unknown to the lake.
    """
    if spec.processing is None or spec.processing.subject_key is None:
        raise ErasureError(f"use case {spec.name} declares no processing.subject_key to erase by")
    subject = find_subject(spec, subject_id)
    token = subject_token(subject_id)
    report = ErasureReport(erasure_id=0, subject=token)
    for zone in ZONES:
        for path in sorted(lake.zone_dir(zone, spec.name, "").rglob("*.parquet")):
            removed = _rewrite_parquet(path, subject)
            if removed:
                report.rows_removed[zone] = report.rows_removed.get(zone, 0) + removed
                report.files_rewritten.append(str(path))
                _update_manifest(path, removed)
    changed_sets = _erase_from_training_sets(spec, subject, report)
    report.online_keys_deleted = delete_online(spec, subject)

    with registry.session() as db, db.begin():
        record = registry.Erasure(use_case=spec.name, subject=token, requested_by=actor, reason=reason)
        db.add(record)
        db.flush()
        report.erasure_id = record.id
        for version in registry.versions_trained_on(db, spec.name, changed_sets):
            version.retrain_required = f"erasure {record.id}: trained on rows of an erased subject"
            report.models_flagged.append(version.tag)
        record.summary = _summary(report)
        audit.record(
            db,
            "data.erase",
            f"{spec.name}:subject:{token}",
            actor=actor,
            reason=reason,
            details=record.summary,
        )
    log.info("erasure %d of %s: %s", report.erasure_id, token, report.rows_removed)
    return report


def find_subject(spec: UseCaseSpec, subject_id: str) -> Subject:
    """The subject's values of every identifying column, read from their rows in the validated zone."""
    assert spec.processing is not None and spec.processing.subject_key is not None
    import pandas as pd

    key = spec.processing.subject_key
    values: dict[str, set[str]] = {key: {subject_id}}
    for linked in spec.processing.linked_keys:
        values[linked] = set()
    found = False
    for path in sorted(lake.zone_dir("landing", spec.name, "").rglob("*.parquet")):
        frame = pd.read_parquet(path)
        if key not in frame.columns:
            continue
        rows = frame[frame[key].astype("string") == subject_id]
        found = found or not rows.empty
        for linked in spec.processing.linked_keys:
            if linked in rows.columns:
                values[linked].update(rows[linked].dropna().astype(str))
    if not found:
        raise ErasureError(f"no rows of {key} '{subject_id}' in the {spec.name} landing zone")
    return Subject(
        key=key, values={column: frozenset(found_values) for column, found_values in values.items()}
    )


def _rewrite_parquet(path: Path, subject: Subject) -> int:
    import pandas as pd

    frame = pd.read_parquet(path)
    mask = subject.matches(frame)
    removed = int(mask.sum())
    if removed:
        with lake.atomic_path(path) as staging:  # erasure is the one rewrite the lake allows
            frame[~mask].to_parquet(staging, index=False)
    return removed


def _update_manifest(path: Path, removed: int) -> None:
    """A partition's manifest counts its rows; the count follows the erasure."""
    manifest_path = path.parent / "_manifest.json"
    if not manifest_path.exists():
        return
    manifest = lake.read_json(manifest_path)
    if "rows" in manifest and manifest.get("file", path.name) == path.name:
        manifest["rows"] = int(manifest["rows"]) - removed
        manifest["erased_rows"] = int(manifest.get("erased_rows", 0)) + removed
        lake.write_json(manifest_path, manifest)


def _erase_from_training_sets(spec: UseCaseSpec, subject: Subject, report: ErasureReport) -> set[str]:
    """Rewrite each training set that held the subject; returns the sha256 each had before."""
    import pandas as pd

    changed = set()
    for manifest_path in sorted(lake.zone_dir("training_sets", spec.name, "").glob("*/manifest.json")):
        directory = manifest_path.parent
        if directory.is_symlink():  # ``current`` points at one of the others
            continue
        frame = pd.read_parquet(io.BytesIO(crypto.unseal(directory / "data.parquet")))
        mask = subject.matches(frame)
        if not mask.any():
            continue
        data = frame[~mask].to_parquet(index=False)
        manifest = lake.read_json(manifest_path)
        changed.add(str(manifest["sha256"]))
        crypto.seal(directory / "data.parquet", data)
        manifest["erasures"] = [
            *manifest.get("erasures", []),
            {"rows": int(mask.sum()), "sha256_before": manifest["sha256"]},
        ]
        manifest.update(sha256=hashlib.sha256(data).hexdigest(), rows=int((~mask).sum()))
        lake.write_json(manifest_path, manifest)
        report.rows_removed["training_sets"] = report.rows_removed.get("training_sets", 0) + int(mask.sum())
        report.training_sets.append(str(directory))
    return changed


def delete_online(spec: UseCaseSpec, subject: Subject) -> int:
    """Delete the subject's entity keys from every online view keyed by one of their columns."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    from pipelines.features import feature_store

    store = feature_store()
    config = store.config
    version = config.entity_key_serialization_version
    online = store._get_provider().online_store
    deleted = 0
    for view in store.list_feature_views():
        columns = view.entity_columns
        if len(columns) != 1 or columns[0].name not in subject.values:
            continue
        value_type = columns[0].dtype.to_value_type()
        values: list[Any] = sorted(subject.values[columns[0].name])
        if value_type in (ValueType.INT32, ValueType.INT64):
            values = [int(value) for value in values]
        for value in python_values_to_proto_values(values, value_type):
            key = EntityKey(join_keys=[columns[0].name], entity_values=[value])
            deleted += _delete_key(online, config, view, key, version)
    return deleted


def _delete_key(online: Any, config: Any, view: Any, key: Any, version: int) -> int:
    """Delete one entity key where Feast's own store keeps it (a Redis hash, or SQLite rows)."""
    if config.online_store.type == "redis":
        from feast.infra.online_stores.helpers import _redis_key

        client = online._get_client(config.online_store)
        return int(client.delete(_redis_key(config.project, key, version)))
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.sqlite import _table_id

    serialized = serialize_entity_key(key, entity_key_serialization_version=version)
    connection = online._get_conn(config)
    table = _table_id(config.project, view)
    # S608: the table name is Feast's own, from the project and view names; the key is a bound parameter.
    cursor = connection.execute(f'DELETE FROM "{table}" WHERE entity_key = ?', (serialized,))  # noqa: S608
    connection.commit()
    return 1 if cursor.rowcount else 0


def _summary(report: ErasureReport) -> dict[str, Any]:
    home = str(get_settings().home)
    return {
        "rows_removed": report.rows_removed,
        "files_rewritten": [path.replace(home, "$FALAJ_HOME") for path in report.files_rewritten],
        "training_sets": [path.replace(home, "$FALAJ_HOME") for path in report.training_sets],
        "online_keys_deleted": report.online_keys_deleted,
        "models_flagged": report.models_flagged,
    }
