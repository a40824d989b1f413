"""The window a task owns comes from the scheduler (asset events, data interval), never from the clock."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from falaj_airflow.runs import run_window  # plugins/ is on sys.path, as Airflow puts it

from pipelines.windows import window_extra

NOV1 = datetime(2026, 11, 1, tzinfo=UTC)
OCT31 = datetime(2026, 10, 31, tzinfo=UTC)


def context(
    lookback_days: int = 1, events: list[dict[str, str]] | None = None, **extra: Any
) -> dict[str, Any]:
    asset_events = {"falaj.fraud.validated": [SimpleNamespace(extra=e) for e in events or []]}
    return {"params": {"lookback_days": lookback_days}, "triggering_asset_events": asset_events, **extra}


def test_scheduled_run_owns_its_data_interval(dag_env: dict[str, str]) -> None:
    assert run_window(context(data_interval_end=NOV1)) == (OCT31, NOV1)


def test_lookback_widens_the_interval_backwards(dag_env: dict[str, str]) -> None:
    start, end = run_window(context(lookback_days=60, data_interval_end=NOV1))
    assert (end - start).days == 60 and end == NOV1


def test_asset_triggered_run_takes_the_published_window(dag_env: dict[str, str]) -> None:
    published = [window_extra(OCT31, NOV1)]
    later_run = SimpleNamespace(run_after=datetime(2026, 11, 28, 13, 0, tzinfo=UTC))
    assert run_window(context(events=published, dag_run=later_run, data_interval_end=None)) == (OCT31, NOV1)


def test_training_lookback_reaches_back_from_the_published_end(dag_env: dict[str, str]) -> None:
    start, end = run_window(context(lookback_days=60, events=[window_extra(OCT31, NOV1)]))
    assert end == NOV1 and (end - start).days == 60


def test_manual_run_without_interval_ends_at_run_after_midnight(dag_env: dict[str, str]) -> None:
    run = SimpleNamespace(run_after=datetime(2026, 10, 31, 9, 30, tzinfo=UTC))
    assert run_window(context(dag_run=run, data_interval_end=None)) == (OCT31, NOV1)
