"""Incremental reads from an on-prem database (MariaDB, PostgreSQL, anything SQLAlchemy reaches)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def extract_window(
    url: str, table: str, columns: list[str], watermark: str, low: datetime | None, high: datetime
) -> pd.DataFrame:
    """Rows of ``table`` whose ``watermark`` is in ``[low, high)``, oldest first, only ``columns``.

    The table is reflected, so a missing column fails here with its name, before anything lands.
    """
    import pandas as pd
    from sqlalchemy import MetaData, Table, create_engine, select

    engine = create_engine(url, pool_pre_ping=True)
    try:
        reflected = Table(table, MetaData(), autoload_with=engine)
        missing = [column for column in columns if column not in reflected.c]
        if missing:
            raise ValueError(f"table {table} has no column(s) {', '.join(missing)}")
        stamp = reflected.c[watermark]
        query = select(*[reflected.c[column] for column in columns]).where(stamp < _naive_utc(high))
        if low is not None:
            query = query.where(stamp >= _naive_utc(low))
        with engine.connect() as connection:
            frame = pd.read_sql(query.order_by(stamp, *reflected.primary_key.columns), connection)
    finally:
        engine.dispose()
    # Databases hand back naive UTC timestamps; the lake speaks ISO-8601 with an offset, like the files.
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = pd.to_datetime(frame[column], utc=True).map(lambda t: t.isoformat())
    return frame


def _naive_utc(moment: datetime) -> datetime:
    from datetime import UTC

    return moment.astimezone(UTC).replace(tzinfo=None)
