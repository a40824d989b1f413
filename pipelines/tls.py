"""TLS in transit: every connection the ``prod`` profile opens goes through :func:`secured` first.

It refuses a URL that would talk in plaintext, or with TLS but without verifying the server, before any
socket is opened, naming the setting to fix; and it adds the CA file (``FALAJ_TLS_CA_FILE``) the client
verifies the server's certificate against. Three kinds of address reach it:

- PostgreSQL as a SQLAlchemy URL: ``sslmode=verify-full`` (or ``verify-ca``) in its query;
- Redis as a URL: the ``rediss://`` scheme;
- Redis as Feast's connection string (``host:port,db=0,ssl=true``): ``ssl=true``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pipelines.settings import get_settings

VERIFYING_SSLMODES = ("verify-full", "verify-ca")
UNVERIFIED_CERT_REQS = ("none", "optional")


class InsecureConnectionError(RuntimeError):
    """A connection would not use verified TLS where the settings require it."""


def secured(address: str, setting: str) -> str:
    """``address`` with the CA file applied, once it is known to use verified TLS where that is required.

    Args:
        address: A SQLAlchemy URL, a Redis URL or Feast's Redis connection string.
        setting: The environment variable ``address`` came from, named in the error.

    Raises:
        InsecureConnectionError: TLS is required (``FALAJ_REQUIRE_TLS``, on in ``prod``) and ``address``
            would connect in plaintext or without verifying the server's certificate; or the CA file
            (``FALAJ_TLS_CA_FILE``) is missing.
    """
    settings = get_settings()
    kind, problem = _inspect(address)
    if kind == "file":
        return address  # SQLite: no socket, nothing in transit
    if problem:
        if settings.tls_required:
            raise InsecureConnectionError(
                f"{setting} {problem}, but TLS is required (FALAJ_REQUIRE_TLS, on in the prod profile): "
                f"{_FIX.get(kind, 'use a URL with verified TLS')}; "
                f"refusing to connect to {_where(address, kind)}"
            )
        return address
    ca_file = settings.tls_ca_file
    if ca_file is None:
        return address  # the client's default trust store verifies the server
    if not ca_file.is_file():
        raise InsecureConnectionError(
            f"FALAJ_TLS_CA_FILE {ca_file} is not a file; `falaj certs dev` makes one"
        )
    return _with_option(address, kind, str(ca_file))


_FIX = {
    "postgres": "add sslmode=verify-full to the URL's query",
    "redis-url": "use a rediss:// URL, without ssl_cert_reqs=none",
    "redis-feast": "add ,ssl=true to the connection string, without ssl_cert_reqs=none",
}


def _inspect(address: str) -> tuple[str, str | None]:
    """The address's kind and, unless it uses TLS that verifies the server, what is wrong with it."""
    scheme = address.split("://", 1)[0].lower() if "://" in address else ""
    if scheme.startswith("sqlite") or scheme == "unix":
        return "file", None
    if scheme.startswith("postgres"):
        sslmode = dict(parse_qsl(urlsplit(address).query)).get("sslmode")
        if sslmode in VERIFYING_SSLMODES:
            return "postgres", None
        return "postgres", f"has sslmode={sslmode}" if sslmode else "has no sslmode"
    if scheme == "redis":
        return "redis-url", "is a redis:// URL (plaintext)"
    if scheme == "rediss":
        return "redis-url", _unverified(dict(parse_qsl(urlsplit(address).query)))
    if scheme:
        return "other", f"uses {scheme}://, not known to this platform as verified TLS"
    options = {
        key.strip().lower(): value for key, value in (p.split("=", 1) for p in address.split(",") if "=" in p)
    }
    if options.get("ssl", "").strip().lower() != "true":
        return "redis-feast", "has no ssl=true (plaintext Redis)"
    return "redis-feast", _unverified(options)


def _unverified(options: dict[str, str]) -> str | None:
    reqs = options.get("ssl_cert_reqs", "required").strip().lower()
    return (
        f"has ssl_cert_reqs={reqs}, which does not verify the server"
        if reqs in UNVERIFIED_CERT_REQS
        else None
    )


def _where(address: str, kind: str) -> str:
    """The server's host and port, never the credentials the address may carry."""
    if kind == "redis-feast":
        return address.split(",", 1)[0]
    url = urlsplit(address)
    return f"{url.hostname}:{url.port}" if url.port else str(url.hostname)


def _with_option(address: str, kind: str, ca_file: str) -> str:
    """``address`` with the client option that names the CA file, replacing one already there."""
    name = "sslrootcert" if kind == "postgres" else "ssl_ca_certs"
    if kind == "redis-feast":
        parts = [part for part in address.split(",") if not part.startswith(f"{name}=")]
        return ",".join([*parts, f"{name}={ca_file}"])
    url = urlsplit(address)
    query = [(key, value) for key, value in parse_qsl(url.query) if key != name] + [(name, ca_file)]
    return urlunsplit(url._replace(query=urlencode(query, safe="/")))
