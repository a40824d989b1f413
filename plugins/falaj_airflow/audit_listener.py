"""Airflow listener: every DAG run (with the user who triggered it) and task outcome goes to the audit trail.

Listeners run inside the scheduler and the task runners, so a failure here must never fail the run:
``audit.emit`` spools to local disk and alerts when the platform DB cannot be reached.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)


def _emit(
    action: str, resource: str, outcome: str, actor: str | None, reason: str, details: dict[str, Any]
) -> None:
    try:
        from pipelines import audit

        audit.emit(
            action,
            resource,
            outcome=outcome,
            actor=actor or "airflow-scheduler",
            reason=reason,
            details=details,
        )
    except Exception:  # auditing must not break the pipeline it records
        log.exception("could not record audit event %s %s", action, resource)


def _dag_run(dag_run: Any, outcome: str, msg: str) -> None:
    _emit(
        "dag_run",
        dag_run.dag_id,
        outcome,
        getattr(dag_run, "triggering_user_name", None),
        msg or "",
        {"run_id": dag_run.run_id, "run_type": str(getattr(dag_run, "run_type", ""))},
    )


def _task(task_instance: Any, outcome: str, reason: str) -> None:
    _emit(
        "task_instance",
        f"{task_instance.dag_id}.{task_instance.task_id}",
        outcome,
        None,
        reason,
        {"run_id": task_instance.run_id, "try_number": getattr(task_instance, "try_number", None)},
    )


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    _dag_run(dag_run, "started", msg)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _dag_run(dag_run, "succeeded", msg)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _dag_run(dag_run, "failed", msg)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _task(task_instance, "succeeded", "")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    _task(task_instance, "failed", str(error or "")[:2000])
