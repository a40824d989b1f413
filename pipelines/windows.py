"""The time window a run owns, derived from what the scheduler says, never from the clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any


def day_window(end: datetime, lookback_days: int) -> tuple[datetime, datetime]:
    """``[end - lookback_days, end)``, snapped to UTC midnights."""
    if lookback_days < 1:
        raise ValueError(f"lookback_days must be at least 1, got {lookback_days}")
    stop = end.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if stop != end.astimezone(UTC):
        stop += timedelta(days=1)
    return stop - timedelta(days=lookback_days), stop


def window_from_events(events: Iterable[Mapping[str, Any]]) -> tuple[datetime, datetime] | None:
    """The union of the windows that upstream runs published in their asset events' extra."""
    windows = [
        (datetime.fromisoformat(extra["start"]), datetime.fromisoformat(extra["end"]))
        for extra in events
        if "start" in extra and "end" in extra
    ]
    if not windows:
        return None
    return min(start for start, _ in windows), max(end for _, end in windows)


def window_extra(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": start.isoformat(), "end": end.isoformat()}
