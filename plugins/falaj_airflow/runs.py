"""What a task needs from its Airflow context: its window and its asset names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param

from pipelines.spec import UseCaseSpec
from pipelines.windows import day_window, window_from_events

DEFAULT_ARGS = {"owner": "falaj", "retries": 2, "retry_delay": timedelta(minutes=1)}


def dag_args(spec: UseCaseSpec, stage: str, schedule: Any, lookback_days: int = 1) -> dict[str, Any]:
    """What every Falaj DAG shares: its id `<use_case>_<stage>`, tags, retries, one run at a time,
    no catch-up, and a `lookback_days` param that widens the window it owns."""
    return {
        "dag_id": f"{spec.name}_{stage}",
        "schedule": schedule,
        "start_date": datetime(2026, 1, 1, tzinfo=UTC),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": DEFAULT_ARGS,
        "params": {"lookback_days": Param(lookback_days, type="integer", minimum=1, maximum=3660)},
        "tags": ["falaj", spec.name, stage],
    }


def platform_dag_args(name: str, schedule: Any) -> dict[str, Any]:
    """The same shared settings for a platform DAG, one that serves every use case: `falaj_<name>`."""
    return {
        "dag_id": f"falaj_{name}",
        "schedule": schedule,
        "start_date": datetime(2026, 1, 1, tzinfo=UTC),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": DEFAULT_ARGS,
        "tags": ["falaj", "platform", name],
    }


def asset_name(use_case: str, stage: str) -> str:
    return f"falaj.{use_case}.{stage}"


def run_window(context: Any) -> tuple[datetime, datetime]:
    """The window this run owns: it ends where upstream runs' published windows end, else at the data
    interval's end, else at run_after; the run's ``lookback_days`` param can only widen it backwards.
    """
    lookback_days = int(context["params"].get("lookback_days", 1))
    events = context.get("triggering_asset_events") or {}
    published = window_from_events([event.extra for batch in events.values() for event in batch])
    if published:
        start, end = published
        return min(start, end - timedelta(days=lookback_days)), end
    end = context.get("data_interval_end") or context["dag_run"].run_after
    return day_window(end, lookback_days)
