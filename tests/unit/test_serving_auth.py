"""The scoring service's authentication: API keys and OIDC bearer tokens against a real local JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from pipelines import authz, serving_auth
from pipelines.serving_auth import (
    ApiKeyError,
    AuthenticationError,
    Authenticator,
    AuthUnavailableError,
    ForbiddenError,
    OidcConfig,
    Principal,
    ServingAuthConfigError,
)
from pipelines.settings import get_settings
from pipelines.tls import InsecureConnectionError

AUDIENCE = "falaj-scoring"
OIDC_SETTINGS = (
    "FALAJ_OIDC_ISSUER",
    "FALAJ_OIDC_AUDIENCE",
    "FALAJ_OIDC_JWKS_URL",
    "FALAJ_OIDC_USER_CLAIM",
    "FALAJ_OIDC_ROLES_CLAIM",
)
# Made once: RSA key generation is the slow part of these tests.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: Any, kid: str) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    jwk: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    return jwk | {"kid": kid, "use": "sig", "alg": "RS256" if algorithm is RSAAlgorithm else "ES256"}


@dataclass
class Idp:
    """An identity provider on localhost: its discovery document and JWKS, and a count of every GET."""

    issuer: str = ""
    keys: dict[str, Any] = field(default_factory=lambda: {"rsa-1": RSA_KEY, "ec-1": EC_KEY})
    hits: Counter[str] = field(default_factory=Counter)
    failing: bool = False

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(key, kid) for kid, key in self.keys.items()]}

    def token(self, key: Any = RSA_KEY, kid: str = "rsa-1", **overrides: Any) -> str:
        """A token the issuer would sign; an override of None leaves that claim out."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "alice@example.com",
            "groups": ["falaj-scoring-clients", "marketing"],
            "iat": now,
            "exp": now + 300,
        } | overrides
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        payload = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
def idp() -> Iterator[Idp]:
    provider = Idp()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            provider.hits[self.path] += 1
            documents = {
                "/.well-known/openid-configuration": {
                    "issuer": provider.issuer,
                    "jwks_uri": f"{provider.issuer}/jwks.json",
                },
                "/jwks.json": provider.jwks(),
            }
            if self.path not in documents or (provider.failing and self.path == "/jwks.json"):
                self.send_response(503 if provider.failing else 404)
                self.end_headers()
                return
            body = json.dumps(documents[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    provider.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _no_oidc_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's shell must not configure an issuer for these tests."""
    for name in OIDC_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()


@pytest.fixture
def oidc_env(falaj_home: Path, idp: Idp, monkeypatch: pytest.MonkeyPatch) -> Idp:
    monkeypatch.setenv("FALAJ_OIDC_ISSUER", idp.issuer)
    monkeypatch.setenv("FALAJ_OIDC_AUDIENCE", AUDIENCE)
    get_settings.cache_clear()
    return idp


@pytest.fixture
def auth(oidc_env: Idp) -> Authenticator:
    return Authenticator.from_settings()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}".encode()
    return f"{signing_input.decode()}.{b64(sign(signing_input))}"


def valid_claims(idp: Idp) -> dict[str, Any]:
    return jwt.decode(idp.token(), options={"verify_signature": False})


# ---- Bearer tokens ----


def test_a_valid_token_gives_its_user_and_the_roles_its_groups_map_to(auth: Authenticator, idp: Idp) -> None:
    rs256 = auth.authenticate(bearer(idp.token()))
    es256 = auth.authenticate(
        bearer(idp.token(EC_KEY, "ec-1", sub="root@example.com", groups=["falaj-platform-admins"]))
    )

    # "marketing" is no group of the policy's oidc_roles: it gives nothing.
    assert rs256 == Principal("alice@example.com", ("consumer",), "jwt")
    assert es256 == Principal("root@example.com", ("platform-admin",), "jwt")


def test_a_token_just_past_its_expiry_is_within_the_leeway(auth: Authenticator, idp: Idp) -> None:
    assert auth.authenticate(bearer(idp.token(exp=int(time.time()) - 5))).user == "alice@example.com"


def _expired(idp: Idp) -> str:
    return idp.token(exp=int(time.time()) - 120)


def _not_yet_valid(idp: Idp) -> str:
    return idp.token(nbf=int(time.time()) + 300)


def _alg_none(idp: Idp) -> str:
    return forged({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, valid_claims(idp), lambda _: b"")


def _hmac_keyed_by_the_public_key(idp: Idp) -> str:
    """The classic confusion: HS256 with the issuer's public key (which anyone has) as the HMAC secret."""
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return forged(
        {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"},
        valid_claims(idp),
        lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
    )


BAD_TOKENS: dict[str, tuple[Callable[[Idp], str], str]] = {
    "expired": (_expired, "token has expired"),
    "not yet valid": (_not_yet_valid, "token is not valid yet"),
    "wrong issuer": (lambda idp: idp.token(iss="https://login.example.com"), "token is from another issuer"),
    "wrong audience": (lambda idp: idp.token(aud="another-service"), "token is meant for another audience"),
    "no expiry": (lambda idp: idp.token(exp=None), "token has no exp claim"),
    "no subject": (lambda idp: idp.token(sub=None), "token has no sub claim"),
    "another key under the issuer's kid": (
        lambda idp: idp.token(OTHER_RSA_KEY, "rsa-1"),
        "token signature does not verify",
    ),
    "a key the issuer does not publish": (
        lambda idp: idp.token(OTHER_RSA_KEY, "rogue"),
        "token is not signed by a key the issuer publishes",
    ),
    "RS256 naming the EC key": (lambda idp: idp.token(RSA_KEY, "ec-1"), "token signature does not verify"),
    "alg none": (_alg_none, "token algorithm 'none' is not accepted"),
    "HS256 keyed by the public key": (
        _hmac_keyed_by_the_public_key,
        "token algorithm 'HS256' is not accepted",
    ),
    "not a JWT": (lambda idp: "not-a-jwt", "malformed bearer token"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_a_token_that_does_not_verify_is_refused(auth: Authenticator, idp: Idp, case: str) -> None:
    make, reason = BAD_TOKENS[case]

    with pytest.raises(AuthenticationError) as refused:
        auth.authenticate(bearer(make(idp)))

    assert refused.value.status == 401
    assert refused.value.reason.startswith(reason)
    assert refused.value.www_authenticate.startswith('Bearer realm="falaj", error="invalid_token"')
    assert f'error_description="{reason}' in refused.value.www_authenticate


def test_the_jwks_is_fetched_once_for_many_requests(auth: Authenticator, idp: Idp) -> None:
    tokens = [idp.token(sub=f"client-{n}") for n in range(20)] + [idp.token(EC_KEY, "ec-1")]

    for _ in range(10):
        for token in tokens:
            auth.authenticate(bearer(token))
    for _ in range(10):  # forgeries naming unknown keys do not make it call out either
        with pytest.raises(AuthenticationError):
            auth.authenticate(bearer(idp.token(OTHER_RSA_KEY, "rogue")))

    assert idp.hits == {"/.well-known/openid-configuration": 1, "/jwks.json": 1}


def test_warm_up_fetches_the_keys_before_the_first_request(auth: Authenticator, idp: Idp) -> None:
    auth.warm_up()
    assert idp.hits["/jwks.json"] == 1

    auth.authenticate(bearer(idp.token()))
    assert idp.hits["/jwks.json"] == 1


def test_a_configured_jwks_url_skips_discovery(oidc_env: Idp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALAJ_OIDC_JWKS_URL", f"{oidc_env.issuer}/jwks.json")
    get_settings.cache_clear()

    Authenticator.from_settings().authenticate(bearer(oidc_env.token()))

    assert oidc_env.hits == {"/jwks.json": 1}


def test_a_rotated_key_is_fetched_once_the_cooldown_has_passed(oidc_env: Idp) -> None:
    clock = Clock()
    auth = Authenticator(OidcConfig(oidc_env.issuer, AUDIENCE), clock=clock, jwks_cooldown_s=30)
    auth.warm_up()
    oidc_env.keys["rsa-2"] = OTHER_RSA_KEY
    rotated = oidc_env.token(OTHER_RSA_KEY, "rsa-2")

    clock.now += 10
    with pytest.raises(AuthenticationError, match="not signed by a key the issuer publishes"):
        auth.authenticate(bearer(rotated))
    assert oidc_env.hits["/jwks.json"] == 1

    clock.now += 30
    assert auth.authenticate(bearer(rotated)).user == "alice@example.com"
    assert oidc_env.hits["/jwks.json"] == 2


def test_an_unreachable_issuer_answers_503_without_calling_it_per_request(oidc_env: Idp) -> None:
    clock = Clock()
    auth = Authenticator(OidcConfig(oidc_env.issuer, AUDIENCE), clock=clock, outage_retry_s=10)
    oidc_env.failing = True

    for _ in range(5):
        with pytest.raises(AuthUnavailableError) as unavailable:
            auth.authenticate(bearer(oidc_env.token()))
    assert unavailable.value.status == 503 and unavailable.value.retry_after_s == 10
    assert oidc_env.hits["/jwks.json"] == 1

    oidc_env.failing = False
    clock.now += 10
    assert auth.authenticate(bearer(oidc_env.token())).roles == ("consumer",)
    assert oidc_env.hits["/jwks.json"] == 2


def test_keys_held_are_kept_when_a_refresh_fails(oidc_env: Idp) -> None:
    clock = Clock()
    auth = Authenticator(OidcConfig(oidc_env.issuer, AUDIENCE), clock=clock, jwks_lifespan_s=300)
    auth.warm_up()
    oidc_env.failing = True

    clock.now += 301
    assert auth.authenticate(bearer(oidc_env.token())).user == "alice@example.com"
    assert oidc_env.hits["/jwks.json"] == 2


def test_a_nested_roles_claim_and_a_space_separated_one(oidc_env: Idp) -> None:
    nested = Authenticator(OidcConfig(oidc_env.issuer, AUDIENCE, roles_claim="realm_access.roles"))
    token = oidc_env.token(groups=None, realm_access={"roles": ["falaj-auditors", "falaj-approvers"]})
    assert nested.authenticate(bearer(token)).roles == ("auditor", "approver")

    spaced = Authenticator(OidcConfig(oidc_env.issuer, AUDIENCE, user_claim="email"))
    token = oidc_env.token(email="carol@example.com", groups="falaj-ml-engineers falaj-ml-engineers")
    assert spaced.authenticate(bearer(token)) == Principal("carol@example.com", ("ml-engineer",), "jwt")


# ---- Authorization ----


def test_a_consumer_may_score_but_not_use_admin_routes(auth: Authenticator, idp: Idp) -> None:
    consumer = auth.authenticate(bearer(idp.token()))

    allowed = auth.authorize(consumer, "endpoint.score", "fraud")
    assert allowed.rule == "consumer: endpoint.score *"
    with pytest.raises(ForbiddenError) as forbidden:
        auth.authorize(consumer, "endpoint.admin", "fraud")

    assert forbidden.value.status == 403
    assert forbidden.value.action == "endpoint.admin"
    assert "may not endpoint.admin fraud" in str(forbidden.value)
    assert forbidden.value.audit_event() == {
        "action": "endpoint.admin",
        "resource": "fraud",
        "actor": "alice@example.com",
        "outcome": "denied",
        "reason": str(forbidden.value),
        "details": {"method": "jwt", "roles": ["consumer"]},
    }


def test_a_platform_admin_may_use_admin_routes(auth: Authenticator, idp: Idp) -> None:
    admin = auth.authenticate(bearer(idp.token(EC_KEY, "ec-1", groups=["falaj-platform-admins"])))

    assert auth.authorize(admin, "endpoint.admin", "fraud").rule == "platform-admin: * *"


def test_a_token_whose_groups_map_to_no_role_may_do_nothing(auth: Authenticator, idp: Idp) -> None:
    nobody = auth.authenticate(bearer(idp.token(groups=["marketing"])))

    assert nobody.roles == ()
    with pytest.raises(ForbiddenError, match=r"no role\) may not endpoint.score"):
        auth.authorize(nobody, "endpoint.score", "fraud")


def test_roles_come_from_the_token_not_from_a_local_user_of_that_name(auth: Authenticator, idp: Idp) -> None:
    # falaj-system is platform-admin among the policy's local users; the token does not say so.
    namesake = auth.authenticate(bearer(idp.token(sub="falaj-system")))

    with pytest.raises(ForbiddenError):
        auth.authorize(namesake, "endpoint.admin", "fraud")


def test_privileged_actions_are_refused_over_http_even_to_an_admin(auth: Authenticator, idp: Idp) -> None:
    admin = auth.authenticate(bearer(idp.token(groups=["falaj-platform-admins"])))

    with pytest.raises(ForbiddenError, match="needs a TOTP step-up"):
        auth.authorize(admin, "model.promote", "fraud:v2")


def test_every_oidc_group_maps_to_roles_the_policy_defines() -> None:
    rules = authz.policy()
    mapped = {role for roles in rules["oidc_roles"].values() for role in roles}

    # scoring-service is the scorer's own workload identity, never a person's group.
    assert mapped == set(rules["roles"]) - {"scoring-service"}
    with pytest.raises(ServingAuthConfigError, match="undefined roles: root"):
        serving_auth._group_roles({"roles": {"consumer": []}, "oidc_roles": {"ops": ["consumer", "root"]}})


# ---- API keys ----


def test_an_api_key_is_shown_once_and_stored_only_as_its_hash(falaj_home: Path) -> None:
    key = serving_auth.create_api_key("scoring-client")

    key_id = serving_auth.api_key_id(key)
    secret = key.split("_", 2)[2]
    path = serving_auth.api_keys_path()
    text = path.read_text()
    assert key.startswith(f"fk_{key_id}_") and len(secret) == 43
    assert path.parent == get_settings().secrets_dir and path.stat().st_mode & 0o777 == 0o600
    assert key not in text and secret not in text
    assert hashlib.sha256(key.encode()).hexdigest() in text
    [record] = serving_auth.list_api_keys()
    assert (record.key_id, record.user, record.revoked) == (key_id, "scoring-client", None)
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize(
    "headers",
    [
        lambda key: {"X-API-Key": key},
        lambda key: {"Authorization": f"ApiKey {key}"},
        lambda key: {"authorization": f"Bearer {key}"},
    ],
    ids=["x-api-key", "apikey-scheme", "as-a-bearer-token"],
)
def test_an_api_key_authenticates_as_its_user(
    falaj_home: Path, headers: Callable[[str], dict[str, str]]
) -> None:
    key = serving_auth.create_api_key("scoring-client")
    auth = Authenticator()

    principal = auth.authenticate(headers(key))

    assert principal == Principal("scoring-client", ("consumer",), "api-key", serving_auth.api_key_id(key))
    auth.authorize(principal, "endpoint.score", "fraud")
    with pytest.raises(ForbiddenError) as forbidden:
        auth.authorize(principal, "endpoint.admin", "fraud")
    assert forbidden.value.audit_event()["details"]["key_id"] == principal.key_id


def test_a_tampered_unknown_or_malformed_key_is_refused(falaj_home: Path) -> None:
    key = serving_auth.create_api_key("scoring-client")
    auth = Authenticator()
    last = key[-1]
    tampered = key[:-1] + ("A" if last != "A" else "B")
    unknown_id = "fk_" + "0" * 16 + key[19:]

    for bad, reason in [
        (tampered, "unknown or revoked API key"),
        (unknown_id, "unknown or revoked API key"),
        (key[:-1], "malformed API key"),
    ]:
        with pytest.raises(AuthenticationError) as refused:
            auth.authenticate({"X-API-Key": bad})
        assert reason in refused.value.reason
        assert refused.value.www_authenticate == 'ApiKey realm="falaj"'


def test_a_revoked_key_is_refused_once_the_key_file_is_looked_at_again(
    falaj_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = serving_auth.create_api_key("scoring-client")
    clock = Clock()
    auth = Authenticator(clock=clock, api_key_refresh_s=30)
    looked: Counter[str] = Counter()
    for name in ("_file_stamp", "_active_keys"):
        original = getattr(serving_auth, name)
        monkeypatch.setattr(
            serving_auth, name, lambda path, o=original, n=name: looked.update([n]) or o(path)
        )

    revoked = serving_auth.revoke_api_key(serving_auth.api_key_id(key))
    later = serving_auth.create_api_key("falaj-system")
    for _ in range(50):  # within the refresh interval the table in memory answers: no file is touched
        auth.authenticate({"X-API-Key": key})
    assert looked == Counter() and revoked.revoked is not None

    clock.now += 30
    with pytest.raises(AuthenticationError, match="unknown or revoked API key"):
        auth.authenticate({"X-API-Key": key})
    assert auth.authenticate({"X-API-Key": later}).roles == ("platform-admin",)
    assert looked == {"_file_stamp": 1, "_active_keys": 1}


def test_keys_are_only_for_users_of_the_policy(falaj_home: Path) -> None:
    with pytest.raises(ApiKeyError, match=r"mallory is not a user in policies/rbac\.yaml"):
        serving_auth.create_api_key("mallory")
    with pytest.raises(ApiKeyError, match="no API key has the id 0123456789abcdef"):
        serving_auth.revoke_api_key("0123456789abcdef")
    assert not serving_auth.api_keys_path().exists()


def test_a_key_file_others_may_write_is_refused(falaj_home: Path) -> None:
    serving_auth.create_api_key("scoring-client")
    serving_auth.api_keys_path().chmod(0o666)

    with pytest.raises(ServingAuthConfigError, match="writable by others"):
        Authenticator()


# ---- Requests without a usable credential, and the settings ----


def test_a_request_without_credentials_is_told_how_to_authenticate(falaj_home: Path) -> None:
    with pytest.raises(AuthenticationError) as refused:
        Authenticator().authenticate({"Accept": "application/json"})

    assert refused.value.status == 401
    assert refused.value.www_authenticate == 'Bearer realm="falaj", ApiKey realm="falaj"'
    assert "no credential" in refused.value.reason


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0", "X-API-Key": "fk_x"}, "send one credential"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "unsupported Authorization scheme 'basic'"),
        ({"Authorization": "Bearer"}, "malformed Authorization header"),
        ({"Authorization": "Bearer " + "a" * 9000}, "malformed Authorization header"),
    ],
)
def test_a_malformed_request_is_refused(falaj_home: Path, headers: dict[str, str], reason: str) -> None:
    with pytest.raises(AuthenticationError, match=reason) as refused:
        Authenticator().authenticate(headers)

    assert 'error="invalid_request"' in refused.value.www_authenticate


def test_bearer_tokens_need_a_configured_issuer(falaj_home: Path, idp: Idp) -> None:
    with pytest.raises(AuthenticationError, match="no OIDC issuer is configured"):
        Authenticator.from_settings().authenticate(bearer(idp.token()))
    assert idp.hits == Counter()


def test_an_issuer_without_an_audience_is_refused(falaj_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALAJ_OIDC_ISSUER", "https://login.example.com")
    monkeypatch.delenv("FALAJ_OIDC_AUDIENCE", raising=False)
    get_settings.cache_clear()

    with pytest.raises(ServingAuthConfigError, match="FALAJ_OIDC_AUDIENCE is not"):
        Authenticator.from_settings()


def test_prod_refuses_a_plaintext_issuer(oidc_env: Idp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALAJ_PROFILE", "prod")
    get_settings.cache_clear()

    with pytest.raises(
        InsecureConnectionError, match=re.escape(f"FALAJ_OIDC_ISSUER {oidc_env.issuer} is plaintext")
    ):
        Authenticator.from_settings()
    assert oidc_env.hits == Counter()


def test_a_discovery_document_naming_another_issuer_is_not_trusted(oidc_env: Idp) -> None:
    auth = Authenticator(OidcConfig(oidc_env.issuer + "/", AUDIENCE))

    with pytest.raises(AuthUnavailableError, match="names another issuer"):
        auth.authenticate(bearer(oidc_env.token()))
    assert oidc_env.hits["/jwks.json"] == 0
