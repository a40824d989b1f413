"""Development certificates (`falaj certs dev`) and the one TLS check every `prod` connection passes."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from pipelines import audit, certs, registry, tls
from pipelines.cli import main
from pipelines.settings import get_settings


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> set[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in names}


def test_dev_certificates_are_a_ca_and_a_server_certificate_it_signs(falaj_home: Path) -> None:
    made = certs.make_dev_certificates(hosts=["db.internal", "10.0.0.5"])

    assert made.server_cert.parent == get_settings().secrets_dir / "tls"
    ca, server = load(made.ca_cert), load(made.server_cert)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert sans(server) == {"localhost", "127.0.0.1", "::1", "db.internal", "10.0.0.5"}
    ips = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("::1") in ips.get_values_for_type(x509.IPAddress)
    now = datetime.now(UTC)
    assert now + timedelta(days=89) < server.not_valid_after_utc <= now + timedelta(days=90)
    assert ca.not_valid_after_utc > now + timedelta(days=365)
    assert {path.stat().st_mode & 0o777 for path in (made.ca_key, made.server_key)} == {0o600}
    assert made.ca_cert.stat().st_mode & 0o077 != 0o077  # certificates are public, but never writable by all


def test_an_existing_ca_is_kept_unless_forced(tmp_path: Path) -> None:
    first = certs.make_dev_certificates(tmp_path)
    ca_bytes, server_bytes = first.ca_cert.read_bytes(), first.server_cert.read_bytes()

    again = certs.make_dev_certificates(tmp_path)
    assert again.ca_reused and again.ca_cert.read_bytes() == ca_bytes
    assert again.server_cert.read_bytes() != server_bytes
    load(again.server_cert).verify_directly_issued_by(load(first.ca_cert))

    forced = certs.make_dev_certificates(tmp_path, force=True)
    assert not forced.ca_reused and forced.ca_cert.read_bytes() != ca_bytes
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_ca_about_to_expire_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(certs, "CA_DAYS", 30)
    certs.make_dev_certificates(tmp_path)
    with pytest.raises(certs.CertificateError, match=r"falaj certs dev --force"):
        certs.make_dev_certificates(tmp_path)


def test_cli_writes_and_prints_the_paths_and_audits(falaj_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "tls"
    result = CliRunner().invoke(main, ["certs", "dev", "--out", str(out), "--host", "feast.local"])
    assert result.exit_code == 0, result.output
    assert f"FALAJ_TLS_CA_FILE={out / 'ca.pem'}" in result.output
    assert str(out / "server.key") in result.output and "feast.local" in result.output
    assert sorted(path.name for path in out.iterdir()) == ["ca.key", "ca.pem", "server.key", "server.pem"]
    with registry.session() as db:
        [event] = [event for event in audit.load(db) if event["action"] == "certs.dev"]
    assert event["details"]["new_ca"] is True


def test_only_platform_admins_make_certificates(falaj_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "tls"
    result = CliRunner().invoke(main, ["certs", "dev", "--out", str(out)], env={"FALAJ_USER": "ml-engineer"})
    assert result.exit_code == 1 and "may not certs.dev" in result.output
    assert not out.exists()


@pytest.fixture
def prod(falaj_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALAJ_PROFILE", "prod")
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("postgresql+psycopg://u:secret@db:5432/x", "has no sslmode"),
        ("postgresql+psycopg://u:secret@db:5432/x?sslmode=require", "has sslmode=require"),
        ("postgresql://u:secret@db:5432/x?sslmode=disable", "has sslmode=disable"),
        ("redis://:secret@db:6379/0", "is a redis:// URL"),
        ("rediss://:secret@db:6379/0?ssl_cert_reqs=none", "has ssl_cert_reqs=none"),
        ("db:6379,db=0,password=secret", "has no ssl=true"),
        ("db:6379,ssl=false,password=secret", "has no ssl=true"),
        ("db:6379,ssl=true,ssl_cert_reqs=optional,password=secret", "has ssl_cert_reqs=optional"),
        ("mysql://u:secret@db/x", "uses mysql://"),
    ],
)
def test_prod_refuses_addresses_without_verified_tls(prod: None, address: str, problem: str) -> None:
    with pytest.raises(tls.InsecureConnectionError) as refused:
        tls.secured(address, "FALAJ_SOME_URL")
    message = str(refused.value)
    assert message.startswith(f"FALAJ_SOME_URL {problem}") and "FALAJ_REQUIRE_TLS" in message
    assert "refusing to connect to db" in message and "secret" not in message


@pytest.mark.parametrize(
    "address",
    [
        "postgresql+psycopg://u@db:5432/x?sslmode=verify-full",
        "postgresql+psycopg2://u@db:5432/x?sslmode=verify-ca",
        "rediss://db:6379/0",
        "db:6379,db=0,ssl=true",
    ],
)
def test_prod_accepts_verified_tls_and_adds_the_ca(
    prod: None, address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls.secured(address, "FALAJ_SOME_URL") == address  # no CA file set: the system's trust store
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("FALAJ_TLS_CA_FILE", str(ca))
    get_settings.cache_clear()
    option = "sslrootcert" if address.startswith("postgres") else "ssl_ca_certs"
    assert tls.secured(address, "FALAJ_SOME_URL").endswith(f"{option}={ca}")


def test_the_ca_file_replaces_one_in_the_address(
    prod: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "ca.pem"
    ca.touch()
    monkeypatch.setenv("FALAJ_TLS_CA_FILE", str(ca))
    get_settings.cache_clear()
    secured = tls.secured("postgresql://db/x?sslmode=verify-full&sslrootcert=/old.pem", "FALAJ_DATABASE_URL")
    assert secured == f"postgresql://db/x?sslmode=verify-full&sslrootcert={ca}"
    assert tls.secured("db:1,ssl=true,ssl_ca_certs=/old.pem", "X") == f"db:1,ssl=true,ssl_ca_certs={ca}"


def test_a_missing_ca_file_is_named(prod: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FALAJ_TLS_CA_FILE", str(tmp_path / "nowhere.pem"))
    get_settings.cache_clear()
    with pytest.raises(tls.InsecureConnectionError, match=r"FALAJ_TLS_CA_FILE .*nowhere\.pem is not a file"):
        tls.secured("rediss://db:6379/0", "FALAJ_STREAM_REDIS_URL")


def test_local_and_an_explicit_opt_out_pass_plaintext_through(
    falaj_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not get_settings().tls_required
    assert tls.secured("redis://db:6379/0", "FALAJ_STREAM_REDIS_URL") == "redis://db:6379/0"
    monkeypatch.setenv("FALAJ_PROFILE", "prod")
    monkeypatch.setenv("FALAJ_REQUIRE_TLS", "false")
    get_settings.cache_clear()
    assert tls.secured("db:6379,db=0", "FALAJ_REDIS_CONNECTION") == "db:6379,db=0"
    monkeypatch.setenv("FALAJ_PROFILE", "local")
    monkeypatch.setenv("FALAJ_REQUIRE_TLS", "true")
    get_settings.cache_clear()
    with pytest.raises(tls.InsecureConnectionError):
        tls.secured("redis://db:6379/0", "FALAJ_STREAM_REDIS_URL")


def test_sqlite_opens_no_socket_and_passes_in_prod(prod: None) -> None:
    url = get_settings().platform_db_url
    assert url.startswith("sqlite") and tls.secured(url, "FALAJ_DATABASE_URL") == url


def test_the_registry_engine_refuses_before_connecting(prod: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 1: had it tried to connect, the error would be an OperationalError.
    monkeypatch.setenv("FALAJ_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/falaj")
    get_settings.cache_clear()
    registry.engine.cache_clear()
    with pytest.raises(tls.InsecureConnectionError, match="FALAJ_DATABASE_URL has no sslmode"):
        registry.engine()
