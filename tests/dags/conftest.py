"""DAG tests parse the real dags/ folder with Airflow, on a throwaway AIRFLOW_HOME."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[2]
DAGS = PROJECT / "dags"
PLUGINS = PROJECT / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))  # as Airflow does for its plugins folder


def airflow_env(tmp: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(tmp / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "FALAJ_HOME": str(tmp / "falaj"),
    }


@pytest.fixture(scope="session")
def dag_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = airflow_env(tmp_path_factory.mktemp("dags"))
    os.environ.update(env)
    return env


@pytest.fixture(scope="session")
def dagbag(dag_env: dict[str, str]) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))
