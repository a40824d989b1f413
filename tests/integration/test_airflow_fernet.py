"""Airflow's Fernet key: kept in the home's key store, handed to Airflow, rotated the documented way."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet, InvalidToken

from pipelines import airflow_cli, audit, authz, registry
from pipelines.cli import main
from tests.integration.conftest import _clear

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh local home whose Fernet key is the platform's own (no operator-provided one)."""
    home = tmp_path / "home"
    monkeypatch.setenv("FALAJ_HOME", str(home))
    monkeypatch.setenv("FALAJ_USER", "falaj-system")
    for name in ("FALAJ_PROFILE", "FALAJ_DATABASE_URL", *airflow_cli.FERNET_KEY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    _clear()
    yield home
    _clear()


def airflow(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [airflow_cli.airflow_bin(), *args]
    return subprocess.run(argv, env=airflow_cli.airflow_env(), capture_output=True, text=True, check=False)


def stored_password(home: Path, conn_id: str) -> str:
    """The password column exactly as Airflow stored it."""
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        [(password, encrypted)] = db.execute(
            "SELECT password, is_encrypted FROM connection WHERE conn_id = ?", (conn_id,)
        ).fetchall()
    assert encrypted
    return str(password)


def test_a_connection_password_is_encrypted_and_survives_a_rotation(home: Path) -> None:
    # Given a migrated Airflow holding a connection whose password is s3cret
    airflow_cli.migrate()
    added = airflow("connections", "add", "warehouse", "--conn-type", "generic", "--conn-host", "db.internal",
                    "--conn-login", "etl", "--conn-password", "s3cret")  # fmt: skip
    assert added.returncode == 0, added.stderr[-2000:]
    key_file = airflow_cli.fernet_key_path()
    [old_key] = key_file.read_text().strip().split(",")
    before = stored_password(home, "warehouse")
    assert "s3cret" not in before
    assert Fernet(old_key.encode()).decrypt(before.encode()) == b"s3cret"
    assert old_key not in (home / "airflow" / "airflow.cfg").read_text()  # the key store is its only copy

    # When an admin rotates it with their second factor
    code = pyotp.TOTP(pyotp.parse_uri(authz.enroll("falaj-system")).secret).now()
    rotated = CliRunner().invoke(main, ["keys", "rotate-fernet", "--otp", code])
    assert rotated.exit_code == 0, rotated.output

    # Then the ciphertext is under the new key alone, and Airflow still reads the password
    [new_key] = key_file.read_text().strip().split(",")
    assert new_key != old_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    after = stored_password(home, "warehouse")
    assert Fernet(new_key.encode()).decrypt(after.encode()) == b"s3cret"
    with pytest.raises(InvalidToken):
        Fernet(old_key.encode()).decrypt(after.encode())
    got = airflow("connections", "get", "warehouse", "-o", "json")
    assert got.returncode == 0, got.stderr[-2000:]
    assert json.loads(got.stdout)[0]["password"] == "s3cret"
    # And the rotation is audited by name and fingerprint, never with a key
    with registry.session() as db:
        [event] = [e for e in audit.load(db) if e["action"] == "keys.rotate_fernet"]
    assert (event["actor"], event["outcome"]) == ("falaj-system", "succeeded")
    assert event["details"] == {"fingerprint": airflow_cli.fernet_fingerprint(new_key), "retired_keys": 1}
    assert old_key not in json.dumps(event) and new_key not in json.dumps(event)


def test_a_failed_rotation_keeps_every_key_and_a_rerun_finishes_it(home: Path) -> None:
    # Given a home whose key store holds one key, and whose Airflow metadata DB is not a database
    [old_key] = airflow_cli.fernet_keys()
    metadata = home / "airflow" / "airflow.db"
    metadata.parent.mkdir(parents=True)
    metadata.write_bytes(b"this is not a SQLite database\n" * 64)

    # When the rotation runs, Airflow's re-encryption fails
    with pytest.raises(airflow_cli.FernetRotationFailedError, match="keeps the old keys") as failed:
        airflow_cli.rotate_fernet_key()

    # Then the error carries Airflow's reason, and the list holds the new key and the old one
    assert "file is not a database" in failed.value.stderr
    assert "file is not a database" in str(failed.value)
    pending, kept = airflow_cli.fernet_key_path().read_text().strip().split(",")
    assert kept == old_key and pending != old_key
    assert stat.S_IMODE(airflow_cli.fernet_key_path().stat().st_mode) == 0o600

    # And once the cause is fixed, rotating again retires both
    metadata.unlink()
    airflow_cli.migrate()
    rotation = airflow_cli.rotate_fernet_key()
    [current] = airflow_cli.fernet_keys()
    assert rotation.retired == 2 and current not in (old_key, pending)
    assert rotation.fingerprint == airflow_cli.fernet_fingerprint(current)
