"""`falaj up` and `falaj down`: the whole stack on this machine, as the operator uses it.

Airflow's api-server (REST API and web UI), scheduler, DAG processor and triggerer, and the champion's
Bento server, each a background process in its own session, logging under ``$FALAJ_HOME/logs/stack``.
``$FALAJ_HOME/run/stack.json`` records what runs, so ``falaj down`` stops exactly that. The profile is the
settings' (``FALAJ_PROFILE``): SQLite and files by default; with ``prod``, Airflow's metadata, the
platform DB, Feast and the stream on the servers the settings name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines import airflow_cli, registry
from pipelines.settings import get_settings

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# Airflow's health endpoint reports these by the heartbeat each writes to the metadata DB.
HEARTBEATS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
LOGIN_USER = "falaj-system"  # the policy's platform admin (policies/rbac.yaml), Airflow role admin


class StackError(RuntimeError):
    """The stack could not start or stop; says which part and where its log is."""


@dataclass(frozen=True)
class Process:
    name: str
    pid: int
    log: str
    url: str | None = None


@dataclass(frozen=True)
class Stack:
    processes: list[Process]
    airflow_url: str
    scoring_url: str | None
    login: tuple[str, str]  # user, password of the Airflow web UI
    passwords_file: str
    note: str = ""


def state_path() -> Path:
    return get_settings().home / "run" / "stack.json"


def bento_serve_command(
    use_case: str, host: str, port: int, tls: bool = False
) -> tuple[list[str], dict[str, str], registry.ModelVersion]:
    """``bentoml serve`` of the use case's packaged champion, and the environment it needs.

    Raises:
        StackError: no packaged champion, or ``tls`` without `falaj certs dev`'s certificate.
    """
    from pipelines.packaging import bentoml_home

    with registry.session() as db:
        champion = registry.resolve_alias(db, use_case, "champion")
    if champion is None or not champion.bento_tag:
        raise StackError(f"{use_case} has no packaged champion; run the training DAG first")
    argv = [str(Path(sys.executable).with_name("bentoml")), "serve", champion.bento_tag]
    argv += ["--host", host, "--port", str(port)]
    if tls:
        certificates = get_settings().secrets_dir / "tls"
        if not (certificates / "server.pem").exists():
            raise StackError("no server certificate: run `falaj certs dev` first")
        argv += ["--ssl-certfile", str(certificates / "server.pem")]
        argv += ["--ssl-keyfile", str(certificates / "server.key")]
    env = {
        **os.environ,
        "BENTOML_HOME": str(bentoml_home()),
        "FALAJ_HOME": str(get_settings().home.resolve()),
    }
    return argv, env, champion


def running() -> list[Process]:
    """The processes ``stack.json`` records that are still alive."""
    path = state_path()
    if not path.exists():
        return []
    recorded = [Process(**entry) for entry in json.loads(path.read_text())["processes"]]
    return [process for process in recorded if _alive(process.pid)]


def up(
    api_port: int = 8080, serve_port: int = 3000, use_case: str = "fraud", host: str = "127.0.0.1",
    timeout_s: float = 240,
) -> Stack:  # fmt: skip
    """Start Airflow's four components and the scoring service; return once each answers.

    Raises:
        StackError: the stack is already up, or a component exited or did not become healthy in time
            (everything started is stopped again).
    """
    if alive := running():
        raise StackError(f"the stack is already up ({', '.join(p.name for p in alive)}): `falaj down` first")
    settings = get_settings()
    if settings.profile == "prod" and not (settings.database_url and settings.airflow_database_url):
        raise StackError(
            "the prod profile runs on your PostgreSQL: set FALAJ_DATABASE_URL (the platform DB) and "
            "FALAJ_AIRFLOW_DATABASE_URL (Airflow's metadata), e.g. postgresql+psycopg://user@host/falaj"
        )
    try:
        airflow_cli.migrate()
    except airflow_cli.AirflowMigrationError as failed:
        raise StackError(f"Airflow's metadata DB: {failed}") from None
    airflow_url = f"http://{host}:{api_port}"
    env = airflow_cli.airflow_env() | {
        "FALAJ_UI_URL": airflow_url,  # alerts link their reports through the UI's Falaj page
        # Task processes report to the api-server's execution API: on this port, not the default 8080.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow_url}/execution/",
        "AIRFLOW__API__BASE_URL": airflow_url,
    }
    logs = get_settings().home / "logs" / "stack"
    logs.mkdir(parents=True, exist_ok=True)
    started: list[Process] = []
    note = ""
    try:
        for component in AIRFLOW_COMPONENTS:
            argv = [airflow_cli.airflow_bin(), component]
            if component == "api-server":
                argv += ["--host", host, "--port", str(api_port)]
            url = airflow_url if component == "api-server" else None
            started.append(_spawn(component, argv, env, logs, url))
            _record(started)
        try:
            argv, serve_env, champion = bento_serve_command(use_case, host, serve_port)
        except StackError as missing:
            note = f"scoring service not started: {missing}; then `falaj serve`"
        else:
            started.append(_spawn("scoring", argv, serve_env, logs, f"http://{host}:{serve_port}"))
            _record(started)
            note = f"serving {champion.tag}"
        _wait_healthy(started, airflow_url, timeout_s)
    except BaseException:
        _stop(started)
        state_path().unlink(missing_ok=True)
        raise
    passwords = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    scoring = next((p.url for p in started if p.name == "scoring"), None)
    return Stack(
        started, airflow_url, scoring, (LOGIN_USER, _password(passwords, LOGIN_USER)), str(passwords), note
    )


def down(timeout_s: float = 30) -> list[Process]:
    """Stop what ``falaj up`` started (SIGTERM, then SIGKILL after ``timeout_s``); the ones stopped."""
    alive = running()
    _stop(alive, timeout_s)
    state_path().unlink(missing_ok=True)
    return alive


def _spawn(name: str, argv: list[str], env: dict[str, str], logs: Path, url: str | None) -> Process:
    log = logs / f"{name}.log"
    with log.open("w") as out:
        child = subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Process(name, child.pid, str(log), url)


def _record(processes: list[Process]) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"processes": [asdict(p) for p in processes]}, indent=2))


def _wait_healthy(processes: list[Process], airflow_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = {p.name for p in processes}
    while waiting:
        for process in processes:
            if not _alive(process.pid):
                raise StackError(f"{process.name} exited while starting; see {process.log}")
        health = _get(f"{airflow_url}/api/v2/monitor/health")
        if health is not None:
            waiting.discard("api-server")
            for name, key in HEARTBEATS.items():
                if (health.json().get(key) or {}).get("status") == "healthy":
                    waiting.discard(name)
        scoring = next((p for p in processes if p.name == "scoring"), None)
        if scoring is not None and _get(f"{scoring.url}/readyz") is not None:
            waiting.discard("scoring")
        if not waiting:
            return
        if time.monotonic() > deadline:
            logs = ", ".join(p.log for p in processes if p.name in waiting)
            raise StackError(f"not healthy after {timeout_s:.0f}s: {', '.join(sorted(waiting))}; see {logs}")
        time.sleep(1)


def _get(url: str) -> Any | None:
    """The 200 response at ``url``, or None while the server is not answering yet."""
    import httpx

    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return response if response.status_code == 200 else None


def _password(passwords: Path, user: str) -> str:
    if not passwords.exists():
        raise StackError(f"Airflow wrote no passwords file at {passwords}")
    return str(json.loads(passwords.read_text())[user])


def _stop(processes: list[Process], timeout_s: float = 30) -> None:
    for process in processes:
        _signal(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(_alive(p.pid) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    for process in processes:
        _signal(process.pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # the whole session: BentoML's and Airflow's own children too
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # reaps it when it is our child
    except ChildProcessError:
        finished = 0
    if finished:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
