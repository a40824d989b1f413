"""The scorer's front door, as ASGI middleware: what may reach an API, and who may call it.

Every route is listed here with the action the policy must allow, or as public (health, metrics, the
OpenAPI document); a route the table does not know is refused, so a new route cannot ship without a
rule. Bodies must be JSON (415 otherwise) and small (413); callers authenticate with an API key or an
OIDC bearer token (401) and need the route's action (403). Past ``max_in_flight`` requests at once in
a worker, the next is answered 429 before anything else is done for it. Refusals and admin calls are
audited through a buffered writer, never on the request's time; a 429 or 503 tells the caller when to
retry.
"""

from __future__ import annotations

import atexit
import functools
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pipelines import audit, registry, serving_auth
from pipelines.buffered import BufferedWriter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PUBLIC = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/schema.json"})
ROUTE_ACTIONS = {
    "/v1/score": "endpoint.score",
    "/v1/score/batch": "endpoint.score",
    "/v1/score/features": "endpoint.score",
    "/v1/admin/plan": "endpoint.admin",
    "/v1/admin/reload": "endpoint.admin",
}
MAX_BODY_BYTES = 256 * 1024
RETRY_AFTER_S = "1"
#: When the guard let the current request in (``time.monotonic()``): the scorer refuses one that waited
#: too long for its turn (``bento/service.py``).
ADMITTED_AT: ContextVar[float] = ContextVar("admitted_at")


class Guard:
    """ASGI middleware for one use case's routes; it reads its keys and policy once, at the first request.

    It holds the concurrency limit, not BentoML: BentoML's limit sits outside every middleware a service
    adds, and answers its 429 without ``Retry-After``.
    """

    def __init__(
        self, app: Any, resource: str, max_body_bytes: int = MAX_BODY_BYTES, max_in_flight: int | None = None
    ) -> None:
        self.app, self.resource, self.max_body_bytes = app, resource, max_body_bytes
        self.max_in_flight, self.in_flight = max_in_flight, 0

    @functools.cached_property
    def authenticator(self) -> serving_auth.Authenticator:
        return serving_auth.Authenticator.from_settings()

    @functools.cached_property
    def events(self) -> BufferedWriter:
        from pipelines.settings import get_settings

        spool = get_settings().home / "spool" / "serving-audit.jsonl"
        writer = BufferedWriter("audit trail", write_audit_events, spool, audit.alert)
        atexit.register(writer.close)  # its thread is a daemon: buffered events must not die with the worker
        return writer

    def record(self, **event: Any) -> None:
        """Hand an audit event to the buffered writer, stamped now; the request never waits for it."""
        self.events.put({"at": datetime.now(UTC).isoformat(timespec="microseconds"), **event})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC or scope["path"].startswith("/docs"):
            return await self.app(scope, receive, send)
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            busy = f"{self.max_in_flight} requests in flight already; retry in {RETRY_AFTER_S} s"
            return await _reply(send, 429, {"error": busy}, {"retry-after": RETRY_AFTER_S})
        self.in_flight += 1  # one event loop per worker: no lock needed
        ADMITTED_AT.set(time.monotonic())  # each request runs in a task of its own, with its own context
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        action = ROUTE_ACTIONS.get(path)
        if action is None:
            return await _reply(send, 404, {"error": f"no route {path}"})
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        try:
            principal = self.authenticator.authenticate(headers)
            self.authenticator.authorize(principal, action, self.resource)
        except serving_auth.AuthenticationError as refused:
            self.record(**refused.audit_event(action, self.resource))
            challenge = {"www-authenticate": refused.www_authenticate}
            return await _reply(send, 401, {"error": str(refused)}, challenge)
        except serving_auth.ForbiddenError as refused:
            self.record(**refused.audit_event())
            return await _reply(send, 403, {"error": str(refused)})
        except serving_auth.AuthUnavailableError as unavailable:
            retry = {"retry-after": str(int(unavailable.retry_after_s))}
            return await _reply(send, 503, {"error": str(unavailable)}, retry)
        if scope["method"] == "POST":
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                refusal = {"error": f"send application/json, not '{kind or 'nothing'}'"}
                return await _reply(send, 415, refusal)
            body = await _read_body(receive, self.max_body_bytes)
            if body is None:
                return await _reply(send, 413, _too_large(self.max_body_bytes))
            receive = _replay(body, receive)
        scope.setdefault("state", {})["principal"] = principal
        if action == "endpoint.admin":
            self.record(action=action, resource=path, actor=principal.user, reason=scope["method"])
        await self.app(scope, receive, _with_retry_after(send))


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it passes ``limit`` (declared or streamed, chunked included)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, then: Receive) -> Receive:
    """The body read already, once; afterwards the connection's own events (a disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await then()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def write_audit_events(events: list[dict[str, Any]]) -> None:
    """Append a batch to the hash chain in one transaction, each event at the time it happened."""
    with registry.session() as db, db.begin():
        for event in events:
            audit.record(db, **event)


def _too_large(limit: int) -> dict[str, str]:
    return {"error": f"request body larger than {limit} bytes; send batches of at most 1,000 rows"}


def _with_retry_after(send: Send) -> Send:
    """A 429 or 503 from inside the guard that does not say when to come back gets ``Retry-After``."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] in (429, 503):
            headers = list(message.get("headers", []))
            if not any(key.lower() == b"retry-after" for key, _ in headers):
                headers.append((b"retry-after", RETRY_AFTER_S.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return sending


async def _reply(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(key.encode(), value.encode()) for key, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
