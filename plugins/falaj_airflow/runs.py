"""What a task needs from its Airflow context: its window and its asset names."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pipelines.windows import day_window, window_from_events

DEFAULT_ARGS = {"owner": "falaj", "retries": 2, "retry_delay": timedelta(minutes=1)}


def asset_name(use_case: str, stage: str) -> str:
    return f"falaj.{use_case}.{stage}"


def run_window(context: Any) -> tuple[datetime, datetime]:
    """The window this run owns: what upstream runs published, else the data interval, else run_after.

    The run's ``lookback_days`` param widens a scheduled window backwards.
    """
    events = context.get("triggering_asset_events") or {}
    extras = [event.extra for asset_events in events.values() for event in asset_events]
    published = window_from_events(extras)
    if published:
        return published
    end = context.get("data_interval_end") or context["dag_run"].run_after
    return day_window(end, int(context["params"].get("lookback_days", 1)))
