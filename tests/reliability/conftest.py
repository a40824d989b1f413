"""The reliability suite's shared serving fixtures (`make reliability`; not part of `make test`).

``platform``: the `prod` profile on servers of the suite's own, built once per session by the steps
the ingest, features and training DAGs run (the small dataset, LightGBM only): a fresh PostgreSQL
database (platform DB and Feast registry) and a redis-server on a free port as the online store, so a
test may stop and restart it. ``serve_scorer`` serves the champion's Bento on it as production does
(``bentoml serve``, two workers, its own process group) and hands the test the process to signal;
``served`` is one such scorer, shared by the tests that leave it running. ``figures`` records what a
test measured: printed as the test runs, and again in the suite's summary.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as midnight
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import create_engine, text

from pipelines import registry, spec
from pipelines.demo import free_port
from pipelines.settings import get_settings
from tests.integration.conftest import POSTGRES

USE_CASE = "fraud"
WORKERS = 2  # bento/service.py's
SCORER_START_S = 180


@dataclass
class RedisServer:
    """A redis-server of the suite's own, stopped and restarted on the same port with its data.

    It saves nothing by itself (``--save ""``, no AOF); :meth:`snapshot` writes what it holds to its
    RDB file, which a restart loads, as a production Redis comes back from its last snapshot.
    """

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def connection(self) -> str:
        """The address as ``FALAJ_REDIS_CONNECTION`` takes it."""
        return f"127.0.0.1:{self.port},db=0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))

    def start(self, timeout_s: float = 15) -> None:
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.directory), "--dbfilename", "online.rdb",
            "--daemonize", "no",
        ]  # fmt: skip
        with (self.directory / "redis-server.log").open("a") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                # This one, not another that holds the port (this one then exits at once)
                if self.client().info("server")["process_id"] == self.process.pid:
                    return
            except redis.ConnectionError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on :{self.port} did not start; see {self.directory}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)

    def snapshot(self) -> None:
        self.client().save()


@dataclass(frozen=True)
class Platform:
    home: Path
    env: dict[str, str]  # the settings that point a process at this platform
    database_url: str
    online: RedisServer
    bento_tag: str
    consumer_key: str  # user scoring-client: endpoint.score
    admin_key: str  # user falaj-system: endpoint.admin too
    transactions: list[dict[str, Any]]  # the demo's five, just after the data window: fresh features


def _clear_caches() -> None:
    get_settings.cache_clear()
    spec._load_all.cache_clear()
    registry.engine.cache_clear()


def _build(days: int = 60, size: str = "small") -> tuple[str, list[dict[str, Any]], str, str]:
    """The ingest, features and training DAGs' steps, a second person's approval, the champion's Bento."""
    from pipelines.demo import approve_challenger, consumer_api_key, demo_transactions
    from pipelines.features import materialize
    from pipelines.gate import evaluate_gate
    from pipelines.packaging import package
    from pipelines.serving_auth import create_api_key
    from pipelines.training import train_local
    from pipelines.training_set import build_training_set
    from tests.reference_lake import prepare_features

    use_case, data = prepare_features(days, size)
    start = datetime.combine(data.start, midnight.min, UTC)
    end = datetime.combine(data.end, midnight.min, UTC)
    materialize(use_case, start, end)
    training_set = build_training_set(use_case, start, end)
    model_dir = train_local(use_case, training_set.uri, training_set.sha256, "lightgbm")
    decision = evaluate_gate(use_case, training_set.to_xcom(), [model_dir])
    assert decision.passed, f"the gate refused the suite's model: {decision.reason}"
    approve_challenger(USE_CASE)
    bento_tag = package(use_case)
    return bento_tag, demo_transactions(USE_CASE), consumer_api_key(), create_api_key("falaj-system")


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The `prod` profile on a PostgreSQL database and a redis-server of its own, the champion packaged."""
    home = tmp_path_factory.mktemp("reliability-home")
    database = f"falaj_reliability_{uuid.uuid4().hex[:10]}"
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    online = RedisServer(free_port(), tmp_path_factory.mktemp("online-redis"))
    online.start()
    env = {
        "FALAJ_HOME": str(home),
        "FALAJ_PROFILE": "prod",
        "FALAJ_REQUIRE_TLS": "false",  # the suite's servers listen on loopback in plaintext
        "FALAJ_USER": "falaj-system",  # prod has no default identity
        "FALAJ_TRAINING_BACKEND": "local",  # prod's default is a Kubernetes pod
        "FALAJ_DATABASE_URL": f"{POSTGRES}/{database}",
        "FALAJ_FEAST_REGISTRY_URL": f"{POSTGRES}/{database}",
        "FALAJ_REDIS_CONNECTION": online.connection,
        "FALAJ_STREAM_REDIS_URL": f"redis://127.0.0.1:{online.port}/1",
        "BENTOML_HOME": str(home / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    try:
        started = time.monotonic()
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            _clear_caches()
            try:
                bento_tag, transactions, consumer_key, admin_key = _build()
            finally:
                _clear_caches()
        online.snapshot()
        print(f"\nreliability platform built in {time.monotonic() - started:.0f}s: {bento_tag}", flush=True)
        yield Platform(
            home, env, env["FALAJ_DATABASE_URL"], online, bento_tag, consumer_key, admin_key, transactions
        )
    finally:
        online.stop()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


@dataclass(frozen=True)
class Scorer:
    url: str
    process: subprocess.Popen[bytes]  # `bentoml serve`, leader of its own process group
    log: Path


def scorer_workers_started(log: Path) -> int:
    return log.read_text(errors="replace").count("Service falaj-scorer initialized")


@contextmanager
def serve_scorer(platform: Platform, name: str, env: dict[str, str] | None = None) -> Iterator[Scorer]:
    """``bentoml serve`` of the platform's Bento on loopback, as ``pipelines.demo.bento_server`` runs it,
    until the block ends; yields once both workers have started. Its log is ``logs/scorer-<name>.log``.
    """
    port = free_port()
    log = platform.home / "logs" / f"scorer-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(Path(sys.executable).with_name("bentoml")), "serve", platform.bento_tag,
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            argv, env={**os.environ, **platform.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SCORER_START_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited {process.returncode}; see {log}")
            try:
                ready = httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                ready = False
            if ready and scorer_workers_started(log) >= WORKERS:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scorer was not ready after {SCORER_START_S}s; see {log}")
            time.sleep(0.25)
        time.sleep(0.5)  # a worker logs its start just before it accepts
        yield Scorer(url, process, log)
    finally:
        stop_scorer(process)


def stop_scorer(process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """SIGTERM to the server's process group, as ``bento_server`` stops it; SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def served(platform: Platform) -> Iterator[Scorer]:
    """One scorer shared by the tests that leave it running."""
    with serve_scorer(platform, "shared") as scorer:
        yield scorer


FIGURES = pytest.StashKey[list[tuple[str, str]]]()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``figures(label, **values)``: one line of what the test measured, printed now and in the summary."""

    def record(label: str, **values: Any) -> None:
        line = f"{label}: " + ", ".join(f"{name} {_shown(value)}" for name, value in values.items())
        print(f"\n  [{request.node.name}] {line}", flush=True)
        request.config.stash.setdefault(FIGURES, []).append((request.node.name, line))

    return record


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_shown(item)}" for key, item in value.items()) + "}"
    return str(value)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    recorded = config.stash.get(FIGURES, [])
    if not recorded:
        return
    terminalreporter.section("reliability figures")
    for test, line in recorded:
        terminalreporter.write_line(f"{test}: {line}")
