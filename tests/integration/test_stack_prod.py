"""`falaj up --profile prod`: Airflow's components on PostgreSQL metadata, the platform DB on PostgreSQL,
started and stopped with the CLI as an operator does."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from pipelines.demo import free_port

pytestmark = pytest.mark.integration

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
FALAJ = str(Path(sys.executable).with_name("falaj"))


@pytest.fixture
def prod_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A new home whose Airflow metadata and platform DB are two fresh PostgreSQL databases."""
    names = {role: f"falaj_up_{role}_{uuid.uuid4().hex[:8]}" for role in ("airflow", "platform")}
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in names.values():
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALAJ_")}
    env |= {
        "FALAJ_HOME": str(tmp_path / "home"), "FALAJ_USER": "falaj-system",
        "FALAJ_AIRFLOW_DATABASE_URL": f"{POSTGRES}/{names['airflow']}",
        "FALAJ_DATABASE_URL": f"{POSTGRES}/{names['platform']}",
        "FALAJ_REQUIRE_TLS": "false",  # the shared server is plaintext; test_tls.py covers verified TLS
    }  # fmt: skip
    try:
        yield env | {"AIRFLOW_DB": names["airflow"]}
    finally:
        subprocess.run([FALAJ, "down"], env=env, capture_output=True, timeout=120, check=False)
        with admin.connect() as connection:
            for name in names.values():
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_up_runs_airflow_on_postgresql_and_down_stops_it(prod_env: dict[str, str]) -> None:
    port = free_port()
    # When the operator starts the stack on the prod profile
    started = subprocess.run(
        [FALAJ, "up", "--profile", "prod", "--port", str(port), "--serve-port", str(free_port())],
        env=prod_env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    # Then Airflow answers with every component healthy, and says why nothing is served yet
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    assert f"Airflow web UI   http://127.0.0.1:{port}  (login falaj-system / " in started.stdout
    assert "scoring service not started: fraud has no packaged champion" in started.stdout
    health = httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=10).json()
    parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
    assert {health[part]["status"] for part in parts} == {"healthy"}
    # And its metadata lives in PostgreSQL: the scheduler's heartbeat is a row there
    airflow_db = create_engine(f"{POSTGRES}/{prod_env['AIRFLOW_DB']}")
    with airflow_db.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM job WHERE job_type = 'SchedulerJob'")).scalar()
    airflow_db.dispose()
    # When it is stopped, nothing answers any more
    stopped = subprocess.run([FALAJ, "down"], env=prod_env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0
    assert "stopped api-server, scheduler, dag-processor, triggerer" in stopped.stdout
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5)


def test_an_unreachable_metadata_db_is_named_not_a_traceback(prod_env: dict[str, str]) -> None:
    env = prod_env | {"FALAJ_AIRFLOW_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/airflow"}
    failed = subprocess.run(
        [FALAJ, "up", "--profile", "prod", "--port", str(free_port())], env=env, capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "Error: Airflow's metadata DB: `airflow db migrate` failed (exit 1): " in failed.stderr
