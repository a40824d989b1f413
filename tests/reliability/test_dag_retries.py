"""DAG tasks that die right after their commit are retried, and two attempts run at once: the state they
leave equals one clean run's, with no duplicate row (issue 9).

Each task is the DAG's own callable (``dags/*.py`` parsed by Airflow's DagBag, as a scheduler parses
them), called in one of two worker processes inside the context its run would give it: the same
logical date, run id and window, ``try_number`` 1 or 2. For every task, from the same starting state
restored at the same path:

- clean: one attempt;
- retry: attempt 1 raises right after its commit (a SQLAlchemy ``after_commit`` hook, or the task's
  lake or online-store write returning), then attempt 2 runs in the other worker, as a retry runs on
  another worker;
- concurrent: both workers run the attempt at the same moment.

The state each leaves (lake files, registry rows, online store, reports) is compared with the clean
run's; times, surrogate ids and the hashes that cover times are left out. The reference chain runs
on tiny data: ingest -> validate -> build_tables -> apply -> materialize -> build_training_set ->
train_<family> -> evaluate_gate; the monitoring window starts from a champion with a day already
judged. The registry-writing tasks are run again with the platform DB on PostgreSQL, as in ``prod``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import multiprocessing
import os
import shutil
import sqlite3
import sys
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[2]
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
USE_CASE = "fraud"
DATA_END = datetime(2026, 11, 1, tzinfo=UTC)
DATA_DAYS = 3
MONITOR_DAY0 = datetime(2026, 10, 1, tzinfo=UTC)  # as tests/unit/test_monitoring.py serves its traffic
# Left out of every comparison: when something happened and where, the hashes over those, surrogate keys.
VOLATILE_COLUMNS = {
    "id",
    "at",
    "created_at",
    "decided_at",
    "opened_at",
    "updated_at",
    "source",
    "prev_hash",
    "hash",
}
VOLATILE_KEYS = {"landed_at", "signed_at"}
MEASURED_CHECKS = {"latency_p99"}  # a gate check whose detail is a timing, different on every run
# Not compared as files: the platform DB and online store are compared as rows; Great Expectations'
# stores and Data Docs stamp every run; Feast's registry records when it was applied.
UNCOMPARED = {"platform.db", "feast", "gx", "audit"}


class InjectedFault(RuntimeError):
    """Raised on purpose right after a task's commit: the attempt dies with its work already durable."""


@dataclass(frozen=True)
class Attempt:
    """One try of one task instance: the run it belongs to, and the fault to inject, if any."""

    dag_id: str
    task_id: str
    window_end: datetime
    lookback_days: int = 1
    asset_triggered: bool = False  # the window comes from the upstream asset event, not the interval
    args: tuple[Any, ...] = ()
    try_number: int = 1
    fault: str | None = None  # "commit", or "module:function" that raises once it has returned
    database_url: str | None = None  # the platform DB; None: SQLite in the home

    @property
    def run_id(self) -> str:
        kind = "asset_triggered" if self.asset_triggered else "scheduled"
        return f"{kind}__{self.window_end.isoformat()}"


# --- the worker: runs attempts as a task runner would -------------------------------------------------


def serve_attempts(connection: Connection, env: dict[str, str]) -> None:
    """A worker process: parse the DAGs once, then run each attempt sent until ``None`` arrives."""
    for name in [name for name in os.environ if name.startswith("FALAJ_")]:
        del os.environ[name]
    os.environ.update(env)
    sys.path.insert(0, str(PROJECT / "plugins"))  # as Airflow puts its plugins folder on the path
    from airflow.dag_processing.dagbag import DagBag  # noqa: TID251 - the suite runs the DAGs' own tasks

    dags = DagBag(dag_folder=str(PROJECT / "dags")).dags
    # The figures, not every task's log, are this suite's output.
    logging.getLogger().setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    sys.stdout = Path(os.devnull).open("w")  # Feast prints what it applies; kept for the worker's life
    connection.send(("ready", sorted(dags)))
    while (attempt := connection.recv()) is not None:
        connection.send(run_attempt(dags, attempt))


def run_attempt(dags: dict[str, Any], attempt: Attempt) -> tuple[str, Any]:
    from airflow.sdk.execution_time.context import set_current_context  # noqa: TID251

    _use_database(attempt.database_url)
    task = dags[attempt.dag_id].get_task(attempt.task_id)
    context: Any = task_context(attempt)  # the keys the tasks read of Airflow's Context
    try:
        with injected(attempt.fault), set_current_context(context):
            return "succeeded", task.python_callable(*attempt.args)
    except Exception as failed:  # the outcome goes back to the test, as the task's state would
        return "failed", f"{type(failed).__name__}: {failed}"
    finally:
        _close_connections()


def task_context(attempt: Attempt) -> dict[str, Any]:
    """What the task reads from its Airflow context: its run, its window, its params and its outlets."""
    from pipelines.windows import window_extra

    start = attempt.window_end - timedelta(days=attempt.lookback_days)
    events = {"upstream": [SimpleNamespace(extra=window_extra(start, attempt.window_end))]}
    dag_run = SimpleNamespace(dag_id=attempt.dag_id, run_id=attempt.run_id, run_after=attempt.window_end)
    return {
        "params": {"lookback_days": attempt.lookback_days},
        "data_interval_start": start,
        "data_interval_end": attempt.window_end,
        "dag_run": dag_run,
        "run_id": attempt.run_id,
        "ti": SimpleNamespace(task_id=attempt.task_id, run_id=attempt.run_id, try_number=attempt.try_number),
        "triggering_asset_events": events if attempt.asset_triggered else {},
        "outlet_events": defaultdict(lambda: SimpleNamespace(extra=None)),
    }


@contextmanager
def injected(fault: str | None) -> Iterator[None]:
    """Make the attempt fail right after its commit: the first commit of a platform DB session, or the
    first return of the function that writes the task's output."""
    if fault is None:
        yield
    elif fault == "commit":
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        def fail(session: Any) -> None:
            raise InjectedFault("the attempt died right after its commit")

        event.listen(Session, "after_commit", fail)
        try:
            yield
        finally:
            event.remove(Session, "after_commit", fail)
    else:
        module_name, name = fault.split(":")
        module = importlib.import_module(module_name)
        original = getattr(module, name)

        def write_then_fail(*args: Any, **kwargs: Any) -> Any:
            original(*args, **kwargs)
            raise InjectedFault(f"the attempt died right after {fault} returned")

        setattr(module, name, write_then_fail)
        try:
            yield
        finally:
            setattr(module, name, original)


def _use_database(url: str | None) -> None:
    from pipelines import registry, spec
    from pipelines.settings import get_settings

    if url is None:
        os.environ.pop("FALAJ_DATABASE_URL", None)
    else:
        os.environ["FALAJ_DATABASE_URL"] = url
    get_settings.cache_clear()
    spec._load_all.cache_clear()
    registry.engine.cache_clear()


def _close_connections() -> None:
    """Leave no connection open between attempts: the state under them is restored from a copy."""
    from pipelines import registry

    if registry.engine.cache_info().currsize:
        registry.engine().dispose()
    registry.engine.cache_clear()


class Workers:
    """Two worker processes, each with the DAGs parsed, that run attempts on command."""

    def __init__(self, env: dict[str, str]) -> None:
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter each, as a task runner
        self.connections: list[Connection] = []
        self.processes = []
        for _ in range(2):
            ours, theirs = spawn.Pipe()
            process = spawn.Process(target=serve_attempts, args=(theirs, env), daemon=True)
            process.start()
            self.connections.append(ours)
            self.processes.append(process)
        for connection in self.connections:
            assert connection.poll(120), "a worker did not parse the DAGs within 2 minutes"
            status, dags = connection.recv()
            assert status == "ready" and f"{USE_CASE}_ingest" in dags, dags

    def run(self, attempt: Attempt, worker: int = 0) -> tuple[str, Any]:
        self.connections[worker].send(attempt)
        return self._receive(self.connections[worker])

    def run_both(self, attempt: Attempt) -> list[tuple[str, Any]]:
        """The same attempt on both workers at the same moment (each worker is idle and warm)."""
        for connection in self.connections:
            connection.send(attempt)
        return [self._receive(connection) for connection in self.connections]

    @staticmethod
    def _receive(connection: Connection) -> tuple[str, Any]:
        assert connection.poll(300), "an attempt ran for more than 5 minutes"
        outcome: tuple[str, Any] = connection.recv()
        return outcome

    def close(self) -> None:
        for connection, process in zip(self.connections, self.processes, strict=True):
            connection.send(None)
            process.join(30)
            if process.is_alive():
                process.kill()


# --- the state a run leaves ----------------------------------------------------------------------------


@dataclass
class State:
    files: dict[str, Any]
    rows: dict[str, list[str]]
    online: list[Any]
    data_rows: int  # rows of the lake's Parquet files, for the figures

    def differences(self, other: State) -> list[str]:
        names = sorted(set(self.files) | set(other.files))
        found = [
            f"file {name}: {self.files.get(name)} != {other.files.get(name)}"[:600]
            for name in names
            if self.files.get(name) != other.files.get(name)
        ]
        for table in sorted(set(self.rows) | set(other.rows)):
            mine, theirs = self.rows.get(table, []), other.rows.get(table, [])
            if mine != theirs:
                extra = sorted(set(theirs) - set(mine))[:2] or sorted(set(mine) - set(theirs))[:2]
                found.append(f"table {table}: {len(mine)} rows != {len(theirs)} rows, e.g. {extra}"[:600])
        if self.online != other.online:
            found.append(f"online store: {sum(len(r) for _, r in self.online)} rows differ")
        return found

    @property
    def registry_rows(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    @property
    def online_rows(self) -> int:
        return sum(len(rows) for _, rows in self.online)


def read_state(home: Path, database_url: str | None) -> State:
    files, data_rows = {}, 0
    for path in sorted(home.rglob("*")):
        relative = path.relative_to(home)
        if UNCOMPARED & set(relative.parts) or (path.is_dir() and not path.is_symlink()):
            continue
        files[str(relative)] = _content(path)
        if path.suffix == ".parquet" and relative.parts[0] == "lake":
            import pyarrow.parquet as pq

            data_rows += pq.read_metadata(path).num_rows
    return State(files, _registry_rows(home, database_url), _online_rows(home), data_rows)


def _content(path: Path) -> Any:
    if path.is_symlink():
        return f"-> {path.readlink()}"
    if path.suffix == ".json":
        return _without_volatile(json.loads(path.read_text()))
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("name") in MEASURED_CHECKS:
            value = {key: item for key, item in value.items() if key != "detail"}
        return {key: _without_volatile(item) for key, item in value.items() if key not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_without_volatile(item) for item in value]
    return value


def _registry_rows(home: Path, database_url: str | None) -> dict[str, list[str]]:
    from sqlalchemy import create_engine, inspect, select

    from pipelines.registry import Base

    if database_url is None and not (home / "platform.db").exists():
        return {}  # nothing has opened the platform DB yet
    engine = create_engine(database_url or f"sqlite:///{home / 'platform.db'}")
    try:
        with engine.connect() as connection:
            present = set(inspect(connection).get_table_names())
            tables = [table for table in Base.metadata.sorted_tables if table.name in present]
            return {
                table.name: sorted(_row(row) for row in connection.execute(select(table))) for table in tables
            }
    finally:
        engine.dispose()


def _row(row: Any) -> str:
    kept = {column: value for column, value in row._mapping.items() if column not in VOLATILE_COLUMNS}
    return json.dumps(_without_volatile(kept), sort_keys=True, default=str)


def _online_rows(home: Path) -> list[Any]:
    path = home / "feast" / "online.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        tables = sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'"))
        return [(t, sorted(db.execute(f'SELECT * FROM "{t}"').fetchall())) for t in tables]  # noqa: S608


# --- the tasks and the states they start from ---------------------------------------------------------


def _previous(name: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    return lambda results: (results[name],)


@dataclass(frozen=True)
class Step:
    """A task of the chain; ``fault`` is set for the ones exercised, ``args`` come from upstream XComs."""

    name: str
    attempt: Attempt
    fault: str | None = None
    args: Callable[[dict[str, Any]], tuple[Any, ...]] = field(default=lambda results: ())


def _features(task: str, fault: str | None = None) -> Step:
    attempt = Attempt(f"{USE_CASE}_features", task, DATA_END, DATA_DAYS, asset_triggered=True)
    return Step(task, attempt, fault)


def _training(task: str, fault: str | None = None) -> Step:
    attempt = Attempt(f"{USE_CASE}_training", task, DATA_END, 60, asset_triggered=True)
    args = _previous("build_training_set") if task != "build_training_set" else (lambda results: ())
    return Step(task, attempt, fault, args)


CHAIN = [
    Step("ingest", Attempt(f"{USE_CASE}_ingest", "ingest", DATA_END, DATA_DAYS), "pipelines.lake:write_json"),
    Step(
        "validate",
        Attempt(f"{USE_CASE}_ingest", "validate", DATA_END, DATA_DAYS),
        "pipelines.validate:publish",
        _previous("ingest"),
    ),
    _features("build_tables", "pipelines.features:write_feature_table"),
    _features("apply"),
    _features("materialize", "pipelines.features:materialize_view"),
    _training("build_training_set"),
    _training("train_lightgbm"),
    _training("train_pytorch_mlp"),
    _training("evaluate_gate", "commit"),
]
MONITOR = Step(
    "monitor",
    Attempt("falaj_monitoring", f"monitor_{USE_CASE}", MONITOR_DAY0 + timedelta(days=2), args=(USE_CASE,)),
    "commit",
)
STEPS = {step.name: step for step in [*CHAIN, MONITOR]}


def seed_monitoring() -> None:
    """A champion with its reference profile and day 0 judged: counts a little higher than at reference
    (a drift warning). Day 1 is served: amounts jump (the warning becomes critical) and a feed loses
    values (a new input-quality alert), so day 1's window escalates one alert and opens another."""
    import numpy as np

    from pipelines.monitoring import monitor_window
    from pipelines.settings import get_settings
    from pipelines.spec import load_spec
    from tests.unit.test_monitoring import register_champion, serve, traffic

    spec = load_spec(USE_CASE)
    champion = register_champion(get_settings().home, spec)
    rng = np.random.default_rng(11)
    for day, changes in enumerate([{}, {"amount_factor": 2.5, "null_share": 0.4}]):
        frame = traffic(rng, 800, **changes)
        frame.loc[frame.index[:700], "txn_count_24h"] += 1.0
        serve(champion, day, frame)
        if day == 0:
            monitor_window(spec, MONITOR_DAY0, MONITOR_DAY0 + timedelta(days=1))


# --- the harness -------------------------------------------------------------------------------------


@dataclass
class Figure:
    task: str
    database: str
    attempts: int
    files: int
    data_rows: int
    registry_rows: int
    online_rows: int
    seconds: float


class Harness:
    """The home every attempt runs in, always at the same path, and the states saved to restore it."""

    def __init__(self, root: Path, workers: Workers) -> None:
        self.home = root / "home"
        self.saved = root / "saved"
        self.workers = workers
        self.results: dict[str, Any] = {}
        self.figures: list[Figure] = []
        self.databases: list[str] = []

    def save(self, name: str) -> None:
        shutil.copytree(self.home, self.saved / name, symlinks=True)

    def restore(self, name: str, database_url: str | None = None) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.copytree(self.saved / name, self.home, symlinks=True)
        if database_url is not None:
            self._restore_database(name, database_url)

    def before(self, step: Step) -> str:
        """The saved state ``step`` starts from, made by clean runs of the steps before it."""
        name = f"before_{step.name}"
        if (self.saved / name).exists():
            return name
        if step is MONITOR:
            shutil.rmtree(self.home, ignore_errors=True)
            with self.platform(None):
                seed_monitoring()
            self.save(name)
        elif step is CHAIN[0]:
            self._provision()
            self.save(name)
        else:
            self.clean(CHAIN[CHAIN.index(step) - 1])  # saves what it leaves as ``name``
        return name

    def clean(self, step: Step, database_url: str | None = None) -> tuple[Any, State]:
        self.restore(self.before(step), database_url)
        status, result = self.workers.run(self.attempt(step, database_url))
        assert status == "succeeded", f"{step.name}: {result}"
        self.results[step.name] = result
        following = CHAIN[CHAIN.index(step) + 1 :][:1] if step in CHAIN and database_url is None else []
        if following and not (self.saved / f"before_{following[0].name}").exists():
            self.save(f"before_{following[0].name}")
        return result, read_state(self.home, database_url)

    def attempt(self, step: Step, database_url: str | None) -> Attempt:
        return replace(
            step.attempt, args=step.attempt.args or step.args(self.results), database_url=database_url
        )

    def _provision(self) -> None:
        """Tiny source data and the home's keys, as a provisioned platform has them before any run."""
        from pipelines import crypto, keys, signing
        from pipelines.datagen import SIZES, generate
        from pipelines.pseudonymize import load_or_create_key
        from pipelines.settings import get_settings

        shutil.rmtree(self.home, ignore_errors=True)
        with self.platform(None):
            generate(get_settings().source_dir, SIZES["tiny"], days=DATA_DAYS, end=DATA_END.date())
            load_or_create_key()
            keys.private_key(signing.PURPOSE)
            crypto.LocalKeyProvider().current()

    @contextmanager
    def platform(self, database_url: str | None) -> Iterator[None]:
        """This process's settings on the harness's home (and the given platform DB) for a while."""
        from pipelines import registry, spec
        from pipelines.settings import get_settings

        names = ("FALAJ_HOME", "FALAJ_DATABASE_URL")
        previous = {name: os.environ.get(name) for name in names}
        os.environ["FALAJ_HOME"] = str(self.home)
        if database_url:
            os.environ["FALAJ_DATABASE_URL"] = database_url
        else:
            os.environ.pop("FALAJ_DATABASE_URL", None)
        for cache in (get_settings, spec._load_all, registry.engine):
            cache.cache_clear()
        try:
            yield
        finally:
            if registry.engine.cache_info().currsize:
                registry.engine().dispose()
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            for cache in (get_settings, spec._load_all, registry.engine):
                cache.cache_clear()

    def postgres(self) -> str:
        name = f"falaj_retries_{uuid.uuid4().hex[:10]}"
        self.databases.append(name)
        return f"{POSTGRES}/{name}"

    def _restore_database(self, name: str, url: str) -> None:
        """The PostgreSQL platform DB as ``name`` left it: copied from its template, made on first use."""
        from sqlalchemy import create_engine, text

        database = url.rsplit("/", 1)[1]
        template = f"{database}_{name}"
        admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            made = template in self.databases
            connection.execute(
                text(f'CREATE DATABASE "{database}"' + (f' TEMPLATE "{template}"' if made else ""))
            )
        if not made:
            if name == "before_monitor":
                with self.platform(url):
                    seed_monitoring()
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{template}" TEMPLATE "{database}"'))
            self.databases.append(template)
        admin.dispose()

    def drop_databases(self) -> None:
        from sqlalchemy import create_engine, text

        admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for name in self.databases:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    def exercise(self, step: Step, database_url: str | None = None) -> None:
        """Clean, retried after a fault and concurrent runs of ``step``: the same state each time."""
        started = time.monotonic()
        before = self.before(step)
        clean_result, clean = self.clean(step, database_url)
        attempt = self.attempt(step, database_url)

        # Given the first attempt dies right after its commit
        self.restore(before, database_url)
        starting = read_state(self.home, database_url)
        status, reason = self.workers.run(replace(attempt, fault=step.fault), worker=0)
        assert (status, reason.split(":")[0]) == ("failed", "InjectedFault"), reason
        assert starting.differences(read_state(self.home, database_url)), f"{step.name} committed nothing"
        # When Airflow retries it, on the other worker
        status, retried_result = self.workers.run(replace(attempt, try_number=2), worker=1)
        # Then the retry succeeds and leaves exactly what one clean run leaves
        assert status == "succeeded", retried_result
        assert not (diff := clean.differences(read_state(self.home, database_url))), "\n".join(diff)

        # Given two attempts of the same task instance at once (a zombie and its replacement)
        self.restore(before, database_url)
        outcomes = self.workers.run_both(attempt)
        # Then both succeed and the state is one clean run's
        assert [status for status, _ in outcomes] == ["succeeded", "succeeded"], outcomes
        assert not (diff := clean.differences(read_state(self.home, database_url))), "\n".join(diff)
        if step.fault == "commit":  # what downstream tasks act on (the package, the alert delivery)
            expected = _without_times(clean_result)
            assert [_without_times(r) for r in (retried_result, *(r for _, r in outcomes))] == [expected] * 3

        database = "PostgreSQL" if database_url else "SQLite"
        rows = (clean.data_rows, clean.registry_rows, clean.online_rows)
        self.figures.append(
            Figure(step.name, database, 5, len(clean.files), *rows, time.monotonic() - started)
        )


def _without_times(xcom: Any) -> Any:
    """An XCom without the moments it mentions (when an alert opened, when a report was made)."""
    if isinstance(xcom, dict):
        return {k: _without_times(v) for k, v in xcom.items() if k not in {"opened_at"}}
    if isinstance(xcom, list):
        return [_without_times(item) for item in xcom]
    return xcom


def print_figures(figures: list[Figure]) -> None:
    row = "{:<14} {:<11} {:>8} {:>6} {:>9} {:>13} {:>11} {:>7}"
    print("\n\nDAG tasks retried after a fault past their commit, and run twice at once:")
    print(
        row.format(
            "task", "platform DB", "attempts", "files", "lake rows", "registry rows", "online rows", "seconds"
        )
    )
    for f in figures:
        cells = (f.attempts, f.files, f.data_rows, f.registry_rows, f.online_rows, f"{f.seconds:.1f}")
        print(row.format(f.task, f.database, *cells))
    attempts = sum(f.attempts for f in figures)
    compared = sum(2 * (f.data_rows + f.registry_rows + f.online_rows) for f in figures)
    print(
        f"{len(figures)} tasks exercised, {attempts} attempts, {compared:,} rows compared with a clean run "
        "(after a retry, after two concurrent attempts): all equal, none duplicated"
    )


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("dag-retries")
    env = {
        "FALAJ_HOME": str(root / "home"),
        "FALAJ_PROFILE": "local",
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
    }
    workers = Workers(env)
    built = Harness(root, workers)
    try:
        yield built
    finally:
        workers.close()
        built.drop_databases()
        print_figures(built.figures)


@pytest.mark.parametrize("task", ["ingest", "validate", "build_tables", "materialize", "evaluate_gate"])
def test_retried_and_concurrent_attempts_equal_one_clean_run(harness: Harness, task: str) -> None:
    harness.exercise(STEPS[task])


@pytest.mark.parametrize("database", ["SQLite", "PostgreSQL"])
def test_a_retried_monitoring_window_counts_once_and_delivers_what_it_raised(
    harness: Harness, database: str
) -> None:
    harness.exercise(MONITOR, harness.postgres() if database == "PostgreSQL" else None)

    # The retry and both concurrent attempts handed the deliver task the same alerts as the clean run
    # (checked in exercise): the escalated drift alert and the new input-quality alert.
    delivered = {
        (a["kind"], a["severity"], a["occurrences"]) for a in harness.results["monitor"]["to_deliver"]
    }
    assert delivered == {("drift", "critical", 2), ("data_quality", "warning", 1)}


def test_the_gate_on_postgresql(harness: Harness) -> None:
    harness.exercise(STEPS["evaluate_gate"], harness.postgres())
