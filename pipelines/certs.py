"""Development TLS certificates: a local CA and a server certificate it signs, for servers on this machine.

``falaj certs dev`` writes them so that a developer (and the tests) can run PostgreSQL and Redis with TLS
the way the ``prod`` profile requires. They are for development only: production servers get their
certificates from the organisation's CA, and clients trust that CA through ``FALAJ_TLS_CA_FILE``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.settings import get_settings

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 730
SERVER_DAYS = 90


class CertificateError(RuntimeError):
    """The existing development CA cannot be used; the message says what to run instead."""


@dataclass(frozen=True)
class DevCertificates:
    """Where the certificates and keys were written, and whether an existing CA signed the new one."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    hosts: tuple[str, ...]
    ca_reused: bool


def default_dir() -> Path:
    return get_settings().secrets_dir / "tls"


def make_dev_certificates(
    out: Path | None = None, hosts: Sequence[str] = (), *, force: bool = False
) -> DevCertificates:
    """Write ``ca.pem``/``ca.key`` and ``server.pem``/``server.key`` into ``out``.

    An existing CA in ``out`` is kept (clients that trust it keep working) and only the server
    certificate is made anew, unless ``force`` is set. Keys are written owner-only (0600).

    Args:
        out: The directory; ``$FALAJ_HOME/secrets/tls`` if None.
        hosts: Names or IP addresses the server certificate covers besides localhost, 127.0.0.1 and ::1.
        force: Make a new CA too.

    Raises:
        CertificateError: The existing CA has expired (run again with ``force``).
    """
    directory = out or default_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = {name: directory / name for name in ("ca.pem", "ca.key", "server.pem", "server.key")}
    names = tuple(dict.fromkeys([*DEFAULT_HOSTS, *hosts]))
    now = datetime.now(UTC)
    reuse = not force and paths["ca.pem"].exists() and paths["ca.key"].exists()
    if reuse:
        ca_cert, ca_key = _load_ca(paths["ca.pem"], paths["ca.key"], now)
    else:
        ca_key = _new_key()
        ca_cert = _ca_certificate(ca_key, now)
        _write(paths["ca.key"], _key_pem(ca_key), private=True)
        _write(paths["ca.pem"], _cert_pem(ca_cert), private=False)
    server_key = _new_key()
    server_cert = _server_certificate(server_key, names, ca_cert, ca_key, now)
    _write(paths["server.key"], _key_pem(server_key), private=True)
    _write(paths["server.pem"], _cert_pem(server_cert), private=False)
    return DevCertificates(
        paths["ca.pem"], paths["ca.key"], paths["server.pem"], paths["server.key"], names, reuse
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: datetime) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Falaj development CA {now:%Y-%m-%d}")])
    return (
        _builder(name, name, key.public_key(), now, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    hosts: Sequence[str],
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime,
) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    return (
        _builder(subject, ca_cert.subject, key.public_key(), now, SERVER_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(host) for host in hosts]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime, days: int
) -> x509.CertificateBuilder:
    from cryptography import x509

    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate a little clock skew between machines
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not signs_certificates,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(host: str) -> x509.GeneralName:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _load_ca(
    cert_path: Path, key_path: Path, now: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertificateError(f"{key_path} is not the key of {cert_path}; run `falaj certs dev --force`")
    if cert.not_valid_after_utc <= now + timedelta(days=SERVER_DAYS):
        raise CertificateError(
            f"the CA in {cert_path} expires on {cert.not_valid_after_utc:%Y-%m-%d}, before a new server "
            "certificate would; run `falaj certs dev --force` for a new CA"
        )
    return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write through a fresh file created with its final mode, then rename it over ``path``.

    O_EXCL means the bytes never land in a file someone else made (or linked) first, and a key
    is never readable by others, not even for a moment.
    """
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    mode = 0o600 if private else 0o644
    with os.fdopen(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
        out.write(data)
    staging.replace(path)
