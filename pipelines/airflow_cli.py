"""Drive this environment's `airflow` CLI as a subprocess (the platform library never imports airflow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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


class FernetKeyError(RuntimeError):
    """Airflow's Fernet key list is unusable, or cannot be rotated from here; the message says why."""


class FernetRotationFailedError(FernetKeyError):
    """`airflow rotate-fernet-key` failed; the key list still holds the old keys, so nothing is unreadable."""

    def __init__(self, message: str, stderr: str) -> None:
        super().__init__(message)
        self.stderr = stderr


@dataclass(frozen=True)
class FernetRotation:
    """What a rotation did, without key material: the new key's fingerprint and how many keys retired."""

    fingerprint: str
    retired: int


# Airflow reads its Fernet key from any of these before it looks at airflow.cfg.
FERNET_KEY_VARIABLES = (
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__CORE__FERNET_KEY_CMD",
    "AIRFLOW__CORE__FERNET_KEY_SECRET",
)


def airflow_env() -> dict[str, str]:
    """Airflow on the embedded default: SQLite metadata under ``$FALAJ_HOME/airflow`` (or the settings'
    ``airflow_database_url``), Fernet keys from
    ``$FALAJ_HOME/secrets/airflow-fernet`` (see ``fernet_keys``)."""
    settings = get_settings()
    home = settings.home.resolve()
    env = {
        **os.environ,
        "FALAJ_HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.project_dir / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.project_dir / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The web UI's users are the policy's identities, at the nearest Airflow role.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": authz.airflow_users(),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.airflow_database_url
        or f"sqlite:///{home / 'airflow' / 'airflow.db'}",
        # `airflow standalone` starts its components as `airflow ...` from PATH: this environment's first.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(settings.project_dir / "plugins"), os.environ.get("PYTHONPATH")])
        ),
    }
    if (settings.airflow_database_url or "").startswith("postgresql+psycopg://"):
        # Airflow derives its async engine's URL by swapping in asyncpg, which is not installed;
        # psycopg 3 serves SQLAlchemy's async engine itself.
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = str(settings.airflow_database_url)
    # A Fernet key the operator hands Airflow (production: from its secret store, by any of Airflow's
    # three variables) wins, and this home's key store is then neither read nor made: a platform default
    # must never override, or silently fork, the key that real secrets are encrypted with.
    if fernet_managed_by() is None:
        env["AIRFLOW__CORE__FERNET_KEY"] = ",".join(fernet_keys())
    return env


def fernet_key_path() -> Path:
    return get_settings().secrets_dir / "airflow-fernet"


def fernet_managed_by() -> str | None:
    """The environment variable through which the operator provides Airflow's Fernet key, if any."""
    return next((name for name in FERNET_KEY_VARIABLES if os.environ.get(name)), None)


def fernet_fingerprint(key: str) -> str:
    """A public name for a key (a SHA-256 prefix) for audit records and messages; reveals nothing of it."""
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:16]


def fernet_keys() -> list[str]:
    """Airflow's Fernet keys, newest first, from the owner-only key store; made on first use.

    The first key encrypts and every key decrypts (Airflow's ``MultiFernet``). A home that Airflow set up
    before the store existed has its key in ``airflow.cfg``: that key is adopted, so nothing it encrypted
    becomes unreadable, and removed from the config so the store is the only copy.
    """
    from cryptography.fernet import Fernet

    path = fernet_key_path()
    if not path.exists():
        adopted = _airflow_cfg_fernet_key()
        _write_atomically(path, (adopted or Fernet.generate_key().decode()) + "\n", exclusive=True)
        if adopted:
            _clear_airflow_cfg_fernet_key()
    keys = [key.strip() for key in path.read_text().strip().split(",") if key.strip()]
    try:
        for key in keys:
            Fernet(key.encode())
    except ValueError:
        raise FernetKeyError(f"{path} holds something other than comma-separated Fernet keys") from None
    if not keys:
        raise FernetKeyError(f"{path} is empty: restore it from a backup, or nothing Airflow encrypted reads")
    return keys


def rotate_fernet_key() -> FernetRotation:
    """Rotate Airflow's Fernet key the documented way, safe against a crash or failure at any step.

    1. The key list becomes ``new,old...`` (durably, before anything is re-encrypted).
    2. ``airflow rotate-fernet-key`` re-encrypts connections, variables and triggers under ``new``.
    3. Only after it succeeds does the list become ``new``.

    A failure or crash before step 3 leaves every key in the list, so every secret stays readable; run the
    rotation again. Airflow processes started before a rotation keep the key list they started with:
    restart them afterwards. The metadata DB must be migrated (``migrate()``).

    Raises:
        FernetKeyError: the key is the operator's (see ``airflow_env``), or another rotation is running.
        FernetRotationFailedError: ``airflow rotate-fernet-key`` failed; carries its stderr.
    """
    from cryptography.fernet import Fernet

    managed = fernet_managed_by()
    if managed:
        raise FernetKeyError(
            f"{managed} is set, so Airflow's Fernet key comes from the operator's secret store: rotate it "
            "there (set NEW,OLD, run `airflow rotate-fernet-key`, then set NEW alone)"
        )
    path = fernet_key_path()
    with _exclusive(path.with_name(f"{path.name}.lock")):
        old = fernet_keys()
        new = Fernet.generate_key().decode()
        _write_atomically(path, ",".join([new, *old]) + "\n")
        argv = [airflow_bin(), "rotate-fernet-key"]
        completed = subprocess.run(argv, env=airflow_env(), capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            stderr = completed.stderr.strip()
            reason = "\n    ".join(stderr.splitlines()[-6:]) or "(no stderr)"  # a traceback ends in its cause
            raise FernetRotationFailedError(
                f"`airflow rotate-fernet-key` failed (exit {completed.returncode}); {path} keeps the old "
                f"keys after the new one, so every secret still reads. Fix the cause and rotate again.\n"
                f"  airflow: {reason}",
                stderr,
            )
        _write_atomically(path, new + "\n")
    return FernetRotation(fingerprint=fernet_fingerprint(new), retired=len(old))


def _write_atomically(path: Path, text: str, *, exclusive: bool = False, mode: int = 0o600) -> None:
    """Write a secret file durably in one step (readers see the old text or the new), owner-only throughout.

    ``exclusive`` creates the file only if it is absent, so two first uses cannot each make a key.
    """
    import tempfile

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    staging = Path(name)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        staging.chmod(mode)
        if exclusive:
            try:
                path.hardlink_to(staging)
            except FileExistsError:
                return
        else:
            staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold ``lock`` for one rotation: two at once would trim away the key the other just re-encrypted to."""
    import fcntl

    lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with os.fdopen(os.open(lock, os.O_RDWR | os.O_CREAT, 0o600), "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FernetKeyError(f"another Fernet key rotation holds {lock}; let it finish first") from None
        yield


def _airflow_cfg_path() -> Path:
    return get_settings().home.resolve() / "airflow" / "airflow.cfg"


def _airflow_cfg_fernet_key() -> str | None:
    import configparser

    config = configparser.ConfigParser(interpolation=None, strict=False)
    config.read(_airflow_cfg_path())
    return config.get("core", "fernet_key", fallback="").strip() or None


def _clear_airflow_cfg_fernet_key() -> None:
    import re

    cfg = _airflow_cfg_path()
    text = cfg.read_text()
    cleared = re.sub(r"^(fernet_key\s*=).*$", r"\1", text, count=1, flags=re.MULTILINE)
    _write_atomically(cfg, cleared, mode=cfg.stat().st_mode & 0o777)


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


class AirflowMigrationError(RuntimeError):
    """`airflow db migrate` failed; the message carries Airflow's last error line."""


def migrate() -> None:
    (get_settings().home / "airflow").mkdir(parents=True, exist_ok=True)
    argv = [airflow_bin(), "db", "migrate"]
    completed = subprocess.run(argv, env=airflow_env(), capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        last = (completed.stderr.strip() or completed.stdout.strip() or "no output").splitlines()[-1]
        raise AirflowMigrationError(f"`airflow db migrate` failed (exit {completed.returncode}): {last}")


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
