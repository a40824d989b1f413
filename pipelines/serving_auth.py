"""Who calls the scoring service, and whether they may: API keys and OIDC bearer tokens, mapped to roles.

The web layer builds one :class:`Authenticator` at startup (:meth:`Authenticator.from_settings`, then
:meth:`Authenticator.warm_up`) and calls it once per request::

    principal = authenticator.authenticate(request.headers)       # AuthenticationError -> 401
    authenticator.authorize(principal, "endpoint.score", "fraud")  # ForbiddenError -> 403

:class:`AuthenticationError` carries the ``WWW-Authenticate`` value to send, :class:`AuthUnavailableError`
(the identity provider cannot be reached and no keys are cached) means 503, and both denials give
``audit_event(...)``, the keyword arguments of ``audit.emit``: the caller records them, not this module.

The hot path does no file read, DB query or network call: the policy is cached (``authz.policy``), the API
key table is held in memory and re-read only when the file changed, checked at most every
``api_key_refresh_s``; the issuer's signing keys are fetched once and refreshed every ``jwks_lifespan_s``, or
when a token names a key not seen, at most once per ``jwks_cooldown_s``. A failed refresh keeps the keys
already held; with none held, requests fail fast for ``outage_retry_s`` instead of each calling out.

API keys are ``fk_<16 hex id>_<43 base64url secret>`` (256 random bits), shown once. The file keeps the
SHA-256 of the whole key: a slow hash (scrypt, bcrypt) defends guessable passwords, but 256 random bits
cannot be guessed at any hash speed, and a slow hash would cost tens of milliseconds per request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPException
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import jwt

from pipelines import authz
from pipelines.settings import get_settings
from pipelines.tls import InsecureConnectionError

REALM = "falaj"
ALGORITHMS = ("RS256", "ES256")  # asymmetric only: never `none`, never an HMAC keyed by a public key
LEEWAY_S = 30.0
FETCH_TIMEOUT_S = 5.0
MAX_DOCUMENT_BYTES = 1 << 20
MAX_CREDENTIAL_CHARS = 8192
API_KEYS_FILE = "api-keys.json"
_API_KEY = re.compile(r"fk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NO_SUCH_KEY = hashlib.sha256(b"no such key").digest()  # compared against, so a miss costs what a hit does

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the user, the roles they act with, and how they proved it."""

    user: str
    roles: tuple[str, ...]
    method: Literal["api-key", "jwt"]
    key_id: str | None = None  # the API key used (for the audit trail); None for bearer tokens


class AuthenticationError(Exception):
    """No credential, or one that does not verify: answer 401 with ``www_authenticate``."""

    status = 401

    def __init__(self, reason: str, www_authenticate: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.www_authenticate = www_authenticate

    def audit_event(self, action: str, resource: str) -> dict[str, Any]:
        """``audit.emit(**error.audit_event(action, resource))`` records the refusal."""
        return {
            "action": action,
            "resource": resource,
            "actor": "unidentified",
            "outcome": "denied",
            "reason": f"unauthenticated: {self.reason}",
        }


class ForbiddenError(authz.AccessDeniedError):
    """The caller is known but may not take the action: answer 403 with the message."""

    status = 403

    def __init__(self, principal: Principal, decision: authz.Decision, reason: str) -> None:
        super().__init__(reason)
        self.principal = principal
        self.decision = decision

    @property
    def action(self) -> str:
        return self.decision.action

    @property
    def resource(self) -> str:
        return self.decision.resource

    def audit_event(self) -> dict[str, Any]:
        """``audit.emit(**error.audit_event())`` records the denial."""
        details: dict[str, Any] = {"method": self.principal.method, "roles": list(self.principal.roles)}
        if self.principal.key_id:
            details["key_id"] = self.principal.key_id
        return {
            "action": self.action,
            "resource": self.resource,
            "actor": self.principal.user,
            "outcome": "denied",
            "reason": str(self),
            "details": details,
        }


class AuthUnavailableError(Exception):
    """The identity provider's keys cannot be had right now: answer 503 with ``Retry-After``."""

    status = 503

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class ServingAuthConfigError(ValueError):
    """The settings or the policy cannot make a working authenticator; the message names the fix."""


class ApiKeyError(ValueError):
    """An API key cannot be made or revoked as asked (unknown user, unknown key id)."""


@dataclass(frozen=True)
class ApiKeyRecord:
    """What the key file says about one key; never the key, nor its hash."""

    key_id: str
    user: str
    created: str
    revoked: str | None


@dataclass(frozen=True)
class OidcConfig:
    """Whose bearer tokens to accept and how to read them."""

    issuer: str
    audience: str
    jwks_url: str | None = None  # unset: the issuer's /.well-known/openid-configuration names it
    user_claim: str = "sub"
    roles_claim: str = "groups"  # a dotted path reaches nested claims (realm_access.roles)
    leeway_s: float = LEEWAY_S


# ---- API keys: the file, and the functions `falaj serving keys ...` wraps ----


def api_keys_path() -> Path:
    return get_settings().secrets_dir / API_KEYS_FILE


def create_api_key(user: str) -> str:
    """Make a new API key for ``user`` and return it: it is shown this once and stored only as a hash.

    Raises:
        ApiKeyError: ``user`` is not one of the policy's users (policies/rbac.yaml).
    """
    if user not in authz.policy()["users"]:
        raise ApiKeyError(f"{user} is not a user in policies/rbac.yaml; add them under `users:` first")
    with _locked_store() as store:
        key_id = secrets.token_hex(8)
        while key_id in store["keys"]:
            key_id = secrets.token_hex(8)
        key = f"fk_{key_id}_{secrets.token_urlsafe(32)}"
        store["keys"][key_id] = {
            "user": user,
            "sha256": _digest(key).hex(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "revoked": None,
        }
    return key


def revoke_api_key(key_id: str) -> ApiKeyRecord:
    """Revoke a key by its id (the part after ``fk_``); revoking it again changes nothing.

    A running service stops accepting it within its ``api_key_refresh_s``.

    Raises:
        ApiKeyError: No key has that id.
    """
    with _locked_store() as store:
        entry = store["keys"].get(key_id)
        if entry is None:
            raise ApiKeyError(f"no API key has the id {key_id}: `falaj serving keys list` shows them")
        entry["revoked"] = entry["revoked"] or datetime.now(UTC).isoformat(timespec="seconds")
        return _record(key_id, entry)


def list_api_keys() -> list[ApiKeyRecord]:
    """Every key ever made, revoked ones included, oldest first."""
    keys = _read_store(api_keys_path())["keys"]
    return sorted((_record(key_id, entry) for key_id, entry in keys.items()), key=lambda r: r.created)


def api_key_id(key: str) -> str:
    """The id of a well-formed key (what :func:`revoke_api_key` takes)."""
    match = _API_KEY.fullmatch(key)
    if match is None:
        raise ApiKeyError("not a Falaj API key (fk_<id>_<secret>)")
    return match.group(1)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _record(key_id: str, entry: Mapping[str, Any]) -> ApiKeyRecord:
    return ApiKeyRecord(key_id, entry["user"], entry["created"], entry.get("revoked"))


def _read_store(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"version": 1, "keys": {}}
    store: dict[str, Any] = json.loads(path.read_text())
    return store


@contextmanager
def _locked_store() -> Iterator[dict[str, Any]]:
    """The key file for a read-modify-write, one writer at a time; replaced atomically, owner-only."""
    import fcntl

    path = api_keys_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        store = _read_store(path)
        yield store
        _write_atomically(path, json.dumps(store, indent=2, sort_keys=True).encode())
    finally:
        os.close(lock_fd)  # closing releases the lock


def _write_atomically(path: Path, data: bytes) -> None:
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)  # whatever the umask
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        staging.replace(path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _active_keys(path: Path) -> dict[str, tuple[str, bytes]]:
    """Key id -> (user, SHA-256) of every key not revoked; refuses a file others could have written."""
    if path.exists() and path.stat().st_mode & 0o022:
        raise ServingAuthConfigError(
            f"{path} is writable by others: `chmod 600 {path}` and check who edited it"
        )
    keys = _read_store(path)["keys"]
    return {
        key_id: (entry["user"], bytes.fromhex(entry["sha256"]))
        for key_id, entry in keys.items()
        if not entry.get("revoked")
    }


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


# ---- The issuer's signing keys ----


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could leave https or the issuer: it is an error, not followed


def _fetch_json(url: str, context: ssl.SSLContext | None) -> Any:
    opener = urllib.request.build_opener(_NoRedirects(), urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - http(s) only: _check_url
    with opener.open(request, timeout=FETCH_TIMEOUT_S) as response:
        body = response.read(MAX_DOCUMENT_BYTES + 1)
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
    return json.loads(body)


def _signing_keys(document: Any) -> dict[str, jwt.PyJWK]:
    """The JWKS's RS256 and ES256 signing keys by kid; keys of any other kind are left out."""
    found: dict[str, jwt.PyJWK] = {}
    for entry in document.get("keys", []) if isinstance(document, dict) else []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or not entry.get("kid"):
            continue
        try:
            key = jwt.PyJWK.from_dict(entry)
        except jwt.PyJWTError:
            continue
        if key.algorithm_name in ALGORITHMS:
            found[str(entry["kid"])] = key
    if not found:
        raise ValueError(f"the JWKS holds no {' or '.join(ALGORITHMS)} signing key with a kid")
    return found


class _KeySet:
    """The issuer's keys by kid, refreshed as the module docstring says; thread-safe."""

    def __init__(
        self,
        locate: Callable[[], str],
        fetch: Callable[[str], Any],
        clock: Callable[[], float],
        lifespan_s: float,
        cooldown_s: float,
        retry_s: float,
    ) -> None:
        self._locate, self._fetch, self._clock = locate, fetch, clock
        self._lifespan_s, self._cooldown_s, self._retry_s = lifespan_s, cooldown_s, retry_s
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = self._attempted_at = self._retry_at = float("-inf")
        self._problem = ""
        self._lock = threading.Lock()

    def get(self, kid: str) -> jwt.PyJWK | None:
        """The key, None if the issuer does not publish it; AuthUnavailableError when no keys are held."""
        if self._due(kid, self._clock()):
            # One thread fetches; the others go on with the keys held, or wait if there are none yet.
            if self._lock.acquire(blocking=self._keys is None):
                try:
                    if self._due(kid, self._clock()):
                        self.refresh()
                finally:
                    self._lock.release()
        return self.held().get(kid)

    def warm(self) -> None:
        with self._lock:
            self.refresh()
        self.held()

    def held(self) -> dict[str, jwt.PyJWK]:
        keys = self._keys
        if keys is None:
            raise AuthUnavailableError(
                f"the identity provider's signing keys are unavailable: {self._problem}",
                int(self._retry_s) or 1,
            )
        return keys

    def _due(self, kid: str, now: float) -> bool:
        if now < self._retry_at:
            return False
        if self._keys is None or now - self._fetched_at >= self._lifespan_s:
            return True
        return kid not in self._keys and now - self._attempted_at >= self._cooldown_s

    def refresh(self) -> None:
        now = self._attempted_at = self._clock()
        try:
            keys = _signing_keys(self._fetch(self._locate()))
        # URLError, timeouts, a broken response, bad JSON, no usable key, a jwks_uri without TLS:
        except (OSError, HTTPException, ValueError, InsecureConnectionError) as failed:
            self._retry_at = now + self._retry_s
            self._problem = str(failed)
            log.warning("fetching the OIDC signing keys failed (keeping %s): %s", self._described(), failed)
            return
        self._keys, self._fetched_at, self._retry_at = keys, now, float("-inf")

    def _described(self) -> str:
        return f"{len(self._keys)} held" if self._keys else "none held"


# ---- The authenticator ----


class Authenticator:
    """Turns request headers into a :class:`Principal` and checks it against the RBAC policy.

    Build it once per process; it is thread-safe.
    """

    def __init__(
        self,
        oidc: OidcConfig | None = None,
        *,
        api_keys_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        api_key_refresh_s: float = 30.0,
        jwks_lifespan_s: float = 300.0,
        jwks_cooldown_s: float = 30.0,
        outage_retry_s: float = 10.0,
    ) -> None:
        """Read the policy and the key file now; the issuer's keys are fetched on first need or warm_up.

        Args:
            oidc: Whose bearer tokens to accept; None accepts API keys only.
            api_keys_file: The key file; the settings' ``secrets_dir/api-keys.json`` by default.
            clock: Monotonic seconds, for the refresh intervals.
            api_key_refresh_s: How often, at most, to look whether the key file changed.
            jwks_lifespan_s: How long fetched signing keys are used before they are fetched again.
            jwks_cooldown_s: The least time between fetches caused by tokens naming an unknown key.
            outage_retry_s: After a failed fetch, how long to wait before the next.

        Raises:
            ServingAuthConfigError: The policy's ``oidc_roles`` names a role it does not define, or the
                key file is writable by others.
            tls.InsecureConnectionError: TLS is required and an OIDC URL is not https.
        """
        settings = get_settings()
        self._oidc = oidc
        self._clock = clock
        self._group_roles = _group_roles(authz.policy())
        self._users: Mapping[str, list[str]] = authz.policy()["users"]
        self._keys_path = api_keys_file or api_keys_path()
        self._api_key_refresh_s = api_key_refresh_s
        self._keys_lock = threading.Lock()
        self._keys_stamp = _file_stamp(self._keys_path)
        self._api_keys = _active_keys(self._keys_path)
        self._keys_checked_at = clock()
        self._key_set: _KeySet | None = None
        self._jwks_url = oidc.jwks_url if oidc else None
        self._tls_context = (
            ssl.create_default_context(cafile=str(settings.tls_ca_file)) if settings.tls_ca_file else None
        )
        if oidc is not None:
            for setting, url in (("FALAJ_OIDC_ISSUER", oidc.issuer), ("FALAJ_OIDC_JWKS_URL", oidc.jwks_url)):
                if url is not None:
                    _check_url(url, setting, settings.tls_required)
            self._key_set = _KeySet(
                self._locate_jwks, self._fetch, clock, jwks_lifespan_s, jwks_cooldown_s, outage_retry_s
            )

    @classmethod
    def from_settings(cls) -> Authenticator:
        """The authenticator the ``FALAJ_OIDC_*`` settings describe.

        Raises:
            ServingAuthConfigError: The OIDC settings are incomplete.
        """
        settings = get_settings()
        if not settings.oidc_issuer:
            if settings.oidc_audience or settings.oidc_jwks_url:
                raise ServingAuthConfigError(
                    "FALAJ_OIDC_AUDIENCE or _JWKS_URL is set: set FALAJ_OIDC_ISSUER too"
                )
            return cls()
        if not settings.oidc_audience:
            raise ServingAuthConfigError(
                "FALAJ_OIDC_ISSUER is set but FALAJ_OIDC_AUDIENCE is not: set it to the scoring service's "
                "client id at the issuer (tokens meant for other services must not pass)"
            )
        return cls(
            OidcConfig(
                issuer=settings.oidc_issuer,
                audience=settings.oidc_audience,
                jwks_url=settings.oidc_jwks_url,
                user_claim=settings.oidc_user_claim,
                roles_claim=settings.oidc_roles_claim,
            )
        )

    def warm_up(self) -> None:
        """Fetch the issuer's keys now, so the first request does not wait for them.

        Raises:
            AuthUnavailableError: They cannot be fetched (requests will retry).
        """
        if self._key_set is not None:
            self._key_set.warm()

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller the request's credential proves: ``Authorization: Bearer <JWT>``,
        ``Authorization: ApiKey <key>``, ``X-API-Key: <key>`` (a key also works as a bearer token).

        Raises:
            AuthenticationError: No credential, several, or one that does not verify.
            AuthUnavailableError: A bearer token came and the issuer's keys cannot be fetched.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        authorization = lowered.get("authorization", "").strip()
        api_key = lowered.get("x-api-key", "").strip()
        if authorization and api_key:
            raise self._refuse("send one credential: Authorization or X-API-Key, not both", "invalid_request")
        if api_key:
            return self._api_key_principal(api_key)
        if not authorization:
            raise AuthenticationError(
                "no credential: send Authorization: Bearer <token> or X-API-Key: <key>", self._challenges()
            )
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if not credential or len(credential) > MAX_CREDENTIAL_CHARS:
            raise self._refuse("malformed Authorization header", "invalid_request")
        scheme = scheme.lower()
        if scheme == "apikey" or (scheme == "bearer" and credential.startswith("fk_")):
            return self._api_key_principal(credential)
        if scheme == "bearer":
            return self._token_principal(credential)
        raise self._refuse(
            f"unsupported Authorization scheme {scheme!r}: use Bearer or ApiKey", "invalid_request"
        )

    def authorize(self, principal: Principal, action: str, resource: str) -> authz.Decision:
        """The allowing decision, or ForbiddenError naming the action (policies/rbac.yaml, as the CLI).

        A privileged action is refused here whoever asks: its TOTP step-up is the CLI's alone.
        """
        decision = authz.decide_for_roles(principal.user, principal.roles, action, resource)
        if not decision.allowed:
            raise ForbiddenError(principal, decision, decision.explain())
        if decision.privileged:
            raise ForbiddenError(
                principal,
                decision,
                f"{action} is privileged and needs a TOTP step-up, which the scoring service does not take: "
                "use the falaj CLI",
            )
        return decision

    # -- API keys --

    def _api_key_principal(self, key: str) -> Principal:
        match = _API_KEY.fullmatch(key)
        if match is None:
            raise self._refuse("malformed API key (expected fk_<id>_<secret>)", scheme="ApiKey")
        key_id = match.group(1)
        entry = self._current_api_keys().get(key_id)
        known = hmac.compare_digest(_digest(key), entry[1] if entry else _NO_SUCH_KEY)
        if entry is None or not known:
            raise self._refuse("unknown or revoked API key", scheme="ApiKey")
        user = entry[0]
        return Principal(user, tuple(self._users.get(user, ())), "api-key", key_id)

    def _current_api_keys(self) -> dict[str, tuple[str, bytes]]:
        """The in-memory table, re-read when the file changed (looked at once per refresh interval)."""
        now = self._clock()
        if now - self._keys_checked_at >= self._api_key_refresh_s and self._keys_lock.acquire(blocking=False):
            try:
                self._keys_checked_at = now
                stamp = _file_stamp(self._keys_path)
                if stamp != self._keys_stamp:
                    self._api_keys, self._keys_stamp = _active_keys(self._keys_path), stamp
            except (OSError, ValueError) as failed:
                log.error("re-reading %s failed; keeping the keys read before: %s", self._keys_path, failed)
            finally:
                self._keys_lock.release()
        return self._api_keys

    # -- Bearer tokens --

    def _fetch(self, url: str) -> Any:
        return _fetch_json(url, self._tls_context)

    def _locate_jwks(self) -> str:
        """The JWKS URL: configured, or read once from the issuer's discovery document."""
        if self._jwks_url is None:
            assert self._oidc is not None
            issuer = self._oidc.issuer
            document = self._fetch(f"{issuer.rstrip('/')}/.well-known/openid-configuration")
            if not isinstance(document, dict) or document.get("issuer") != issuer:
                raise ValueError(
                    f"{issuer}'s openid-configuration names another issuer: check FALAJ_OIDC_ISSUER"
                )
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ValueError(f"{issuer}'s openid-configuration has no jwks_uri")
            _check_url(jwks_uri, "the issuer's jwks_uri", get_settings().tls_required)
            self._jwks_url = jwks_uri
        return self._jwks_url

    def _token_principal(self, token: str) -> Principal:
        oidc, key_set = self._oidc, self._key_set
        if oidc is None or key_set is None:
            raise self._refuse(
                "bearer tokens are not accepted here (no OIDC issuer is configured); use an API key"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._refuse("malformed bearer token", "invalid_token") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise self._refuse(
                f"token algorithm {algorithm!r} is not accepted (only {', '.join(ALGORITHMS)})"
            )
        kid = header.get("kid")
        key = key_set.get(kid) if isinstance(kid, str) and kid else None
        if key is None:
            raise self._refuse("token is not signed by a key the issuer publishes")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=oidc.audience,
                issuer=oidc.issuer,
                leeway=oidc.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise self._refuse("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise self._refuse("token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise self._refuse("token is from another issuer") from None
        except jwt.InvalidAudienceError:
            raise self._refuse("token is meant for another audience") from None
        except jwt.MissingRequiredClaimError as missing:
            raise self._refuse(f"token has no {missing.claim} claim") from None
        except jwt.PyJWTError:
            raise self._refuse("token signature does not verify") from None
        user = claims.get(oidc.user_claim)
        if not isinstance(user, str) or not user:
            raise self._refuse(f"token has no {oidc.user_claim} claim naming the user")
        return Principal(user, self._roles_of(_claim(claims, oidc.roles_claim)), "jwt")

    def _roles_of(self, groups: Any) -> tuple[str, ...]:
        if isinstance(groups, str):
            groups = groups.split()
        if not isinstance(groups, list):
            return ()
        roles = (
            role for group in groups if isinstance(group, str) for role in self._group_roles.get(group, ())
        )
        return tuple(dict.fromkeys(roles))

    # -- Challenges --

    def _challenges(self) -> str:
        return f'Bearer realm="{REALM}", ApiKey realm="{REALM}"'

    def _refuse(
        self, reason: str, error: str = "invalid_token", scheme: str = "Bearer"
    ) -> AuthenticationError:
        if scheme == "ApiKey":
            return AuthenticationError(reason, f'ApiKey realm="{REALM}"')
        description = reason.replace('"', "'").replace("\\", "/")
        return AuthenticationError(
            reason, f'Bearer realm="{REALM}", error="{error}", error_description="{description}"'
        )


def _group_roles(rules: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The policy's ``oidc_roles``: identity-provider group -> roles, each checked to exist."""
    mapping: dict[str, tuple[str, ...]] = {}
    for group, roles in (rules.get("oidc_roles") or {}).items():
        roles = (roles,) if isinstance(roles, str) else tuple(roles)
        undefined = [role for role in roles if role not in rules["roles"]]
        if undefined:
            raise ServingAuthConfigError(
                f"policies/rbac.yaml: oidc_roles gives group {group} undefined roles: {', '.join(undefined)}"
            )
        mapping[str(group)] = roles
    return mapping


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _check_url(url: str, setting: str, tls_required: bool) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ServingAuthConfigError(f"{setting} {url} is not an http(s) URL")
    if scheme != "https" and tls_required:
        raise InsecureConnectionError(
            f"{setting} {url} is plaintext, but TLS is required (FALAJ_REQUIRE_TLS, on in the prod profile): "
            "use its https:// URL"
        )
