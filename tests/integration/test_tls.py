"""The `prod` profile over TLS: TLS-only PostgreSQL and Redis of our own, certificates from `falaj certs dev`.

The servers refuse plaintext (pg_hba.conf has only `hostssl` lines; Redis listens only on its TLS
port), so every assertion that reads data back also proves the connection was encrypted.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from pipelines import audit, certs, registry
from pipelines.features import feature_store, materialize
from pipelines.settings import get_settings
from pipelines.stream import open_broker
from pipelines.tls import InsecureConnectionError
from tests.integration.conftest import PROJECT, _clear
from tests.reference_lake import prepare_features

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The certificates `falaj certs dev` writes into a fresh home's default place."""
    home = tmp_path_factory.mktemp("certs-home")
    env = {key: value for key, value in os.environ.items() if not key.startswith("FALAJ_")}
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("falaj")), "certs", "dev"],
        cwd=PROJECT,
        env={**env, "FALAJ_HOME": str(home), "FALAJ_USER": "falaj-system"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    directory = home / "secrets" / "tls"
    assert str(directory / "server.pem") in completed.stdout
    return directory


@pytest.fixture(scope="module")
def tls_postgres(tls_dir: Path) -> Iterator[int]:
    """A PostgreSQL that accepts only TLS connections (hostssl), on a free port; yields the port."""
    root = Path(tempfile.mkdtemp(prefix="falaj-tls-pg-"))  # outside pytest's root-only tmp: postgres reads it
    shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()

    def as_postgres(*command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True)

    as_postgres("/usr/local/bin/initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
    (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n")
    for name in ("server.pem", "server.key"):
        shutil.copy(tls_dir / name, root / name)
        shutil.chown(root / name, "postgres", "postgres")
    (root / "server.key").chmod(0o600)
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on "
        f"-c ssl_cert_file={root / 'server.pem'} -c ssl_key_file={root / 'server.key'}"
    )
    as_postgres(
        "/usr/local/bin/pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start"
    )
    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=port,
            user="postgres",
            dbname="postgres",
            sslmode="verify-full",
            sslrootcert=str(tls_dir / "ca.pem"),
            autocommit=True,
        ) as admin:
            admin.execute("CREATE DATABASE falaj")
            admin.execute("CREATE DATABASE falaj_feast")
        yield port
    finally:
        as_postgres("/usr/local/bin/pg_ctl", "-D", str(data), "stop", "-m", "immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_redis(tls_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A Redis that listens only on a TLS port; yields the port."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(tls_dir / "server.pem"), "--tls-key-file", str(tls_dir / "server.key"),
         "--tls-ca-cert-file", str(tls_dir / "ca.pem"), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(tls_dir / "ca.pem"))
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail("the TLS Redis did not start")
        yield port
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def tls_prod(
    tls_dir: Path, tls_postgres: int, tls_redis: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The prod profile, TLS required (its default), every address on the TLS servers."""
    server = f"postgresql+psycopg://postgres@127.0.0.1:{tls_postgres}"
    env = {
        "FALAJ_HOME": str(tmp_path / "home"),
        "FALAJ_PROFILE": "prod",
        "FALAJ_USER": "data-engineer",
        "FALAJ_TLS_CA_FILE": str(tls_dir / "ca.pem"),
        "FALAJ_DATABASE_URL": f"{server}/falaj?sslmode=verify-full",
        "FALAJ_FEAST_REGISTRY_URL": f"{server}/falaj_feast?sslmode=verify-full",
        "FALAJ_REDIS_CONNECTION": f"127.0.0.1:{tls_redis},db=0,ssl=true",
        "FALAJ_STREAM_REDIS_URL": f"rediss://127.0.0.1:{tls_redis}/0",
    }
    monkeypatch.delenv("FALAJ_REQUIRE_TLS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _clear()
    yield env
    _clear()


def test_platform_db_and_audit_over_verify_full_tls(tls_prod: dict[str, str]) -> None:
    # Given the prod profile's platform DB on the TLS-only server
    assert get_settings().tls_required

    # When an event is audited through the registry's engine
    audit.emit("tls.check", "platform-db")

    # Then it is stored, and the server reports this very connection as TLS
    engine = registry.engine()
    assert "sslrootcert=" in engine.url.render_as_string()
    with engine.connect() as connection:
        ssl, version = connection.execute(
            text("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ).one()
    assert ssl is True and version.startswith("TLS")
    with registry.session() as db:
        assert [event["action"] for event in audit.load(db)] == ["tls.check"]


def test_plaintext_is_refused_by_us_before_connecting_and_by_the_server(
    tls_prod: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tls_prod["FALAJ_DATABASE_URL"].replace("?sslmode=verify-full", "")
    monkeypatch.setenv("FALAJ_DATABASE_URL", plain)
    _clear()
    with pytest.raises(InsecureConnectionError, match=r"FALAJ_DATABASE_URL has no sslmode.*verify-full"):
        registry.engine()

    # Even with the check switched off, the server itself refuses a plaintext session.
    disabled = create_engine(f"{plain}?sslmode=disable")
    with pytest.raises(OperationalError, match="no encryption"), disabled.connect():
        pass
    disabled.dispose()


def test_feast_prod_store_applies_materializes_and_serves_over_tls(tls_prod: dict[str, str]) -> None:
    # Given tiny reference data applied to Feast's SQL registry on the TLS PostgreSQL
    use_case, data = prepare_features(days=3)

    # When it is materialized into the TLS Redis
    start = datetime.combine(data.start, datetime.min.time(), UTC)
    materialize(use_case, start, datetime.combine(data.end, datetime.min.time(), UTC))

    # Then an online read over TLS returns the latest offline row
    behaviour = pd.read_parquet(
        get_settings().lake_dir / "features" / "fraud" / "customer_behaviour" / "data.parquet"
    )
    latest = behaviour.sort_values("event_timestamp").groupby("customer_id").tail(1).set_index("customer_id")
    customer = latest.index[0]
    store = feature_store()
    assert store.config.online_store.connection_string.endswith(
        f"ssl_ca_certs={tls_prod['FALAJ_TLS_CA_FILE']}"
    )
    online = store.get_online_features(
        features=["customer_behaviour:txn_count_24h"], entity_rows=[{"customer_id": customer}]
    ).to_dict()
    assert online["txn_count_24h"] == [int(latest.loc[customer, "txn_count_24h"])]
    assert [view.name for view in store.list_feature_views()]  # read back from the TLS registry


def test_stream_broker_connects_with_rediss(
    tls_prod: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, _ = open_broker("fraud", consumer="producer")
    client = broker.client
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert broker.publish([{"transaction_id": "T-1"}]) == 1
    assert client.xlen("falaj:fraud:transactions") >= 1

    monkeypatch.setenv(
        "FALAJ_STREAM_REDIS_URL", tls_prod["FALAJ_STREAM_REDIS_URL"].replace("rediss", "redis")
    )
    _clear()
    with pytest.raises(InsecureConnectionError, match="FALAJ_STREAM_REDIS_URL is a redis:// URL"):
        open_broker("fraud")


def test_a_server_certificate_from_another_ca_is_rejected(
    tls_prod: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given clients that trust only a different development CA
    other = certs.make_dev_certificates(tmp_path / "other-ca")
    monkeypatch.setenv("FALAJ_TLS_CA_FILE", str(other.ca_cert))
    _clear()

    # Then neither PostgreSQL nor Redis is reached
    with pytest.raises(OperationalError, match="certificate verify failed"):
        registry.engine()
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        open_broker("fraud")
