"""Airflow's Fernet key store, without Airflow: made owner-only on first use, adopted, or left alone."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from pipelines import airflow_cli


@pytest.fixture
def home(falaj_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in airflow_cli.FERNET_KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return falaj_home


def test_the_key_is_made_once_owner_only_and_handed_to_airflow(home: Path) -> None:
    env = airflow_cli.airflow_env()
    key_file = home / "secrets" / "airflow-fernet"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    [key] = key_file.read_text().strip().split(",")
    assert Fernet(key.encode()).decrypt(Fernet(key.encode()).encrypt(b"x")) == b"x"
    assert env["AIRFLOW__CORE__FERNET_KEY"] == key
    assert airflow_cli.airflow_env()["AIRFLOW__CORE__FERNET_KEY"] == key  # not remade
    assert [p.name for p in key_file.parent.iterdir()] == ["airflow-fernet"]  # no staging file left


@pytest.mark.parametrize("variable", airflow_cli.FERNET_KEY_VARIABLES)
def test_an_operator_provided_key_wins_and_is_rotated_by_its_owner(
    home: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "from-the-secret-store")
    env = airflow_cli.airflow_env()
    assert env[variable] == "from-the-secret-store"
    if variable != "AIRFLOW__CORE__FERNET_KEY":
        assert "AIRFLOW__CORE__FERNET_KEY" not in env  # it would take precedence over the operator's
    assert not (home / "secrets" / "airflow-fernet").exists()
    with pytest.raises(airflow_cli.FernetKeyError, match=f"{variable} is set.*rotate it there"):
        airflow_cli.rotate_fernet_key()


def test_a_key_airflow_wrote_into_its_config_is_adopted_and_removed_there(home: Path) -> None:
    legacy = Fernet.generate_key().decode()
    cfg = home / "airflow" / "airflow.cfg"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f"[core]\ndags_folder = /dags\nfernet_key = {legacy}\n\n[api_auth]\njwt_secret = abc\n")
    cfg.chmod(0o600)
    assert airflow_cli.fernet_keys() == [legacy]
    assert cfg.read_text() == "[core]\ndags_folder = /dags\nfernet_key =\n\n[api_auth]\njwt_secret = abc\n"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


def test_a_damaged_key_file_is_refused_by_name(home: Path) -> None:
    key_file = home / "secrets" / "airflow-fernet"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(f"{Fernet.generate_key().decode()},not-a-key\n")
    with pytest.raises(airflow_cli.FernetKeyError, match="airflow-fernet holds something other than"):
        airflow_cli.airflow_env()
