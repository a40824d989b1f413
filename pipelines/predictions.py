"""The prediction log: every score served (and every shadow score), for monitoring and experiment analysis.

Rows are written off the request path by a :class:`~pipelines.buffered.BufferedWriter`. Inputs are
recorded as the feature vector the model saw and the unit as a keyed pseudonym, never a raw identifier.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from pipelines import audit, registry
from pipelines.buffered import BufferedWriter
from pipelines.registry import Prediction

__all__ = ["Prediction", "prediction_writer", "write_rows"]


COLUMNS = [column.name for column in Prediction.__table__.columns if column.name != "id"]
JSON_COLUMNS = {"features", "freshness"}


def write_rows(rows: list[dict[str, Any]]) -> None:
    """Insert a batch in one transaction (the writer thread's ``write``)."""
    for row in rows:
        if isinstance(row["at"], str):
            row["at"] = datetime.fromisoformat(row["at"])  # spooled rows come back as text
    with registry.engine().begin() as connection:
        if connection.dialect.driver == "psycopg":
            _copy(connection, rows)
        else:
            connection.execute(insert(Prediction), rows)


def _copy(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL's COPY through psycopg 3, which encodes rows in C: the writer thread holds the
    scorer's GIL for a fraction of what an INSERT of the same rows takes."""
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {Prediction.__tablename__} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([_json(row[name]) if name in JSON_COLUMNS else row[name] for name in COLUMNS])


def _json(value: dict[str, Any]) -> Any:
    """A feature the scorer lacked is NaN in its row, and PostgreSQL's JSON has no NaN (one such row would
    fail each batch it is in, and the spool after it): it is stored as null."""
    from psycopg.types.json import Json

    return Json({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in value.items()})


def prediction_writer() -> BufferedWriter:
    """The scorer's writer: a store outage spools the rows and alerts the webhook once."""
    from pipelines.settings import get_settings

    spool = get_settings().home / "spool" / "predictions.jsonl"
    return BufferedWriter(
        "prediction log", write_rows, spool, functools.partial(audit.alert, kind="prediction_log")
    )
