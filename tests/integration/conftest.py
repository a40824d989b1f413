"""Integration tests run the real thing: Airflow DAGs, Feast, the Bento server over HTTP, PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text

from pipelines import registry, spec
from pipelines.settings import get_settings
from tests.homes import falaj_home
from tests.http_sink import http_sink

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def platform_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A FALAJ_HOME for the whole session, visible to this process's cached settings too."""
    with falaj_home(tmp_path_factory.mktemp("falaj-home")) as home:
        yield home


@pytest.fixture(scope="session")
def demo_run(platform_home: Path) -> dict[str, Any]:
    """`falaj demo` on the small dataset: every DAG through `airflow dags test`, then five HTTP scores."""
    falaj = str(Path(sys.executable).with_name("falaj"))
    completed = subprocess.run(
        [falaj, "demo", "--size", "small"],
        cwd=PROJECT,
        env={**os.environ, "FALAJ_HOME": str(platform_home)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = json.loads((platform_home / "reports" / "demo-summary.json").read_text())
    return {"stdout": completed.stdout, "summary": summary}


POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
REDIS_DB = 13


def _clear() -> None:
    get_settings.cache_clear()
    spec._load_all.cache_clear()
    registry.engine.cache_clear()


@pytest.fixture(params=["local", "prod"])
def profile(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("FALAJ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FALAJ_PROFILE", request.param)
    monkeypatch.setenv("FALAJ_USER", "data-engineer")  # prod has no default identity
    # The shared servers on :5432 and :6379 are plaintext; test_tls.py runs prod over verified TLS.
    monkeypatch.setenv("FALAJ_REQUIRE_TLS", "false")
    database = f"falaj_feast_{uuid.uuid4().hex[:10]}"
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    if request.param == "prod":
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{database}"'))
        client.flushdb()
        monkeypatch.setenv("FALAJ_FEAST_REGISTRY_URL", f"{POSTGRES}/{database}")
        monkeypatch.setenv("FALAJ_REDIS_CONNECTION", f"127.0.0.1:6379,db={REDIS_DB}")
        monkeypatch.setenv("FALAJ_STREAM_REDIS_URL", f"redis://127.0.0.1:6379/{REDIS_DB}")
    _clear()
    yield request.param
    _clear()
    if request.param == "prod":
        client.flushdb()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    admin.dispose()


def online_dump(profile: str) -> list[Any]:
    """Everything the online store holds, in a stable order, as raw bytes."""
    if profile == "local":
        with sqlite3.connect(get_settings().home / "feast" / "online.db") as db:
            # S608 below: the table names come from SQLite's own catalogue.
            tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            return [(t, sorted(db.execute(f'SELECT * FROM "{t}"').fetchall())) for t in sorted(tables)]  # noqa: S608
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    return sorted((key, sorted(client.hgetall(key).items())) for key in client.scan_iter())


def clear_online(profile: str) -> None:
    """Empty the online store, keeping its tables."""
    if profile == "local":
        with sqlite3.connect(get_settings().home / "feast" / "online.db") as db:
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
                db.execute(f'DELETE FROM "{table}"')  # noqa: S608 - a name from SQLite's catalogue
        return
    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()


@pytest.fixture
def webhook_sink() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with http_sink() as sink:
        yield sink
