"""Drive this environment's `airflow` CLI as a subprocess (the platform library never imports airflow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipelines import authz
from pipelines.settings import get_settings


class DagRunFailedError(RuntimeError):
    """An `airflow dags test` run failed; the message carries the task error."""


@dataclass(frozen=True)
class DagRunResult:
    dag_id: str
    log: Path
    seconds: float


def airflow_env() -> dict[str, str]:
    """Airflow on the embedded default: SQLite metadata under ``$FALAJ_HOME/airflow``."""
    settings = get_settings()
    home = settings.home.resolve()
    return {
        **os.environ,
        "FALAJ_HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.project_dir / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.project_dir / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The web UI's users are the policy's identities, at the nearest Airflow role.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": authz.airflow_users(),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow' / 'airflow.db'}",
        # `airflow standalone` starts its components as `airflow ...` from PATH: this environment's first.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(settings.project_dir / "plugins"), os.environ.get("PYTHONPATH")])
        ),
    }


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def migrate() -> None:
    (get_settings().home / "airflow").mkdir(parents=True, exist_ok=True)
    subprocess.run([airflow_bin(), "db", "migrate"], env=airflow_env(), check=True, capture_output=True)


def dags_test(dag_id: str, logical_date: str, conf: Mapping[str, object]) -> DagRunResult:
    """Run one DAG in process with `airflow dags test`; its full log goes to ``$FALAJ_HOME/logs``."""
    import time

    log = get_settings().home / "logs" / f"{dag_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as out:
        completed = subprocess.run(
            [airflow_bin(), "dags", "test", dag_id, logical_date, "--conf", json.dumps(conf)],
            env=airflow_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    text = log.read_text(errors="replace")
    if completed.returncode != 0 or "state=failed" in text:
        raise DagRunFailedError(f"{dag_id} failed: {task_error(text)}\n  full log: {log}")
    return DagRunResult(dag_id, log, time.monotonic() - started)


def task_error(log_text: str) -> str:
    """The last exception line of a task log, which is where a task's reason lives."""
    lines = [line.strip() for line in log_text.splitlines()]
    errors = [
        i
        for i, line in enumerate(lines)
        if line.startswith(("pipelines.", "airflow.sdk.exceptions.", "AirflowFailException", "ValueError"))
    ]
    if not errors:
        return "see the log"
    start = errors[-1]
    block = [lines[start]]
    for line in lines[start + 1 : start + 12]:
        if not line or line.startswith(("20", "[")):
            break
        block.append(line)
    return "\n    ".join(block)
