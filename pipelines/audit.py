"""The audit trail: an append-only, SHA-256 hash-chained log of who did what, to what, when and from where.

Each event's hash covers its fields and the previous event's hash, so changing, dropping, inserting or
reordering any event breaks the chain at that event. Chain heads are signed (Ed25519) and exported,
so a truncated or rolled-back log is caught against the latest checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipelines import crypto, keys
from pipelines.settings import get_settings

GENESIS = "0" * 64
HASHED_FIELDS = ("seq", "at", "actor", "action", "resource", "source", "outcome", "reason", "details")


def origin() -> str:
    """Where an action comes from when no request says so: this host and process."""
    return f"{socket.gethostname()}:pid{os.getpid()}"


def event_hash(event: Mapping[str, Any], previous: str) -> str:
    """SHA-256 over the canonical JSON of the event's fields and the previous hash."""
    body = json.dumps(
        [previous, *(event[name] for name in HASHED_FIELDS)],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def record(
    db: Session,
    action: str,
    resource: str,
    *,
    outcome: str = "succeeded",
    reason: str = "",
    actor: str | None = None,
    source: str | None = None,
    details: Mapping[str, Any] | None = None,
    at: str | None = None,
) -> Any:
    """Append one event in the caller's transaction, so the action and its record commit together.

    The head is locked for the transaction (``FOR UPDATE`` on PostgreSQL; SQLite serializes writers),
    and ``seq`` is unique, so two writers can never fork the chain.
    """
    from pipelines.registry import AuditEvent

    head = db.scalar(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1).with_for_update())
    fields = {
        "seq": (head.seq + 1) if head else 1,
        "at": at or datetime.now(UTC).isoformat(timespec="microseconds"),
        "actor": actor or get_settings().actor,
        "action": action,
        "resource": resource,
        "source": source or origin(),
        "outcome": outcome,
        "reason": reason,
        "details": dict(details or {}),
    }
    previous = head.hash if head else GENESIS
    event = AuditEvent(**fields, prev_hash=previous, hash=event_hash(fields, previous))
    db.add(event)
    db.flush()
    return event


def emit(action: str, resource: str, **fields: Any) -> None:
    """Record an event in its own transaction; if the platform DB is unreachable, keep it on local disk.

    Spooled events are written (first, in order) by the next emit that reaches the DB, so none is lost;
    an unreachable log raises an alert through the configured webhook.
    """
    import logging

    from sqlalchemy.exc import SQLAlchemyError

    from pipelines import registry

    event = {"action": action, "resource": resource, **fields}
    event.setdefault("actor", get_settings().actor)
    event.setdefault("source", origin())
    event.setdefault("at", datetime.now(UTC).isoformat(timespec="microseconds"))
    try:
        with registry.session() as db, db.begin():
            for spooled in _drain_spool():
                record(db, **spooled)
            record(db, **event)
        _spool_path().unlink(missing_ok=True)
    except SQLAlchemyError as failed:
        _spool(event)
        logging.getLogger(__name__).error("audit log unreachable, event spooled: %s", failed)
        alert(f"audit log unreachable: {failed}"[:500])


def _spool_path() -> Any:
    return get_settings().home / "audit" / "spool.jsonl"


def _spool(event: Mapping[str, Any]) -> None:
    path = _spool_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(event, default=str) + "\n")
        out.flush()
        os.fsync(out.fileno())


def _drain_spool() -> list[dict[str, Any]]:
    path = _spool_path()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def alert(message: str, kind: str = "audit") -> None:
    """Post a critical alert to the configured webhook; a store the platform must not lose is down."""
    url = get_settings().alert_webhook_url
    if not url:
        return
    import httpx

    try:
        httpx.post(url, json={"kind": kind, "severity": "critical", "reason": message}, timeout=5)
    except httpx.HTTPError:
        pass  # the spool still holds the event; the log line above is the last resort


def as_dict(event: Any) -> dict[str, Any]:
    return {name: getattr(event, name) for name in (*HASHED_FIELDS, "prev_hash", "hash")}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"chain intact: {self.events} events"
        return f"chain broken at seq {self.first_bad_seq}: {self.reason}"


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement of the chain head at one moment."""

    seq: int
    hash: str


def verify(events: Iterable[Mapping[str, Any]], checkpoints: Sequence[Checkpoint] = ()) -> Verdict:
    """Walk the chain from the start; name the first event that does not follow from the one before.

    Every checkpoint must still be in the chain with the same hash: a log cut back below its latest
    checkpoint (truncation, or a rollback to an old copy) fails even though what is left links up.
    """
    expected_seq, previous, count = 1, GENESIS, 0
    heads = {checkpoint.seq: checkpoint.hash for checkpoint in checkpoints}
    for event in events:
        seq = event["seq"]
        if seq != expected_seq:
            return Verdict(False, count, expected_seq, f"expected seq {expected_seq}, found {seq}")
        if event["prev_hash"] != previous:
            return Verdict(False, count, seq, "prev_hash does not match the previous event's hash")
        if event_hash(event, previous) != event["hash"]:
            return Verdict(False, count, seq, "hash does not match the event's contents")
        if seq in heads and heads[seq] != event["hash"]:
            return Verdict(False, count, seq, "differs from the signed checkpoint of this seq")
        previous, expected_seq, count = event["hash"], seq + 1, count + 1
    latest = max(heads, default=0)
    if latest >= expected_seq:
        return Verdict(False, count, expected_seq, f"log ends before the signed checkpoint at seq {latest}")
    return Verdict(True, count)


def load(db: Session) -> list[dict[str, Any]]:
    from pipelines.registry import AuditEvent

    return [as_dict(event) for event in db.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def signing_key() -> Any:
    return keys.private_key("audit")


def public_key_pem() -> bytes:
    return keys.public_pem(signing_key())


def _statement(seq: int, head: str, at: str) -> bytes:
    return json.dumps({"seq": seq, "hash": head, "at": at}, sort_keys=True, separators=(",", ":")).encode()


def export_day(db: Session, day: str, root: Any) -> Any:
    """Write one UTC day's events as encrypted JSON Lines, a manifest and a signed checkpoint of the head.

    Files are created write-once (exclusive create, then read-only): an export is never rewritten; a
    rerun of the same day finds it and checks it still matches the log.
    """
    import base64
    from pathlib import Path

    target = Path(root) / day
    events = [event for event in load(db) if event["at"].startswith(day)]
    lines = "".join(json.dumps(event, sort_keys=True, default=str) + "\n" for event in events)
    head = load_head(db)
    if target.exists():
        # Events the day gained after its export are the next export's; those exported must not change.
        last = json.loads((target / "manifest.json").read_text())["last_seq"] or 0
        exported = "".join(
            json.dumps(e, sort_keys=True, default=str) + "\n" for e in events if e["seq"] <= last
        )
        existing = crypto.decrypt(
            (target / "events.jsonl.enc").read_bytes(), f"audit/{day}/events.jsonl"
        ).decode()
        if existing != exported:
            raise RuntimeError(f"{target} already exported and differs from the log now: the log changed")
        return target
    at = datetime.now(UTC).isoformat(timespec="seconds")
    statement = _statement(head["seq"], head["hash"], at)
    manifest = {
        "day": day,
        "events": len(events),
        "first_seq": events[0]["seq"] if events else None,
        "last_seq": events[-1]["seq"] if events else None,
        "sha256": hashlib.sha256(lines.encode()).hexdigest(),
    }
    checkpoint = {
        "seq": head["seq"],
        "hash": head["hash"],
        "at": at,
        "signature": base64.b64encode(signing_key().sign(statement)).decode(),
    }
    staging = Path(root) / f".{day}.staging"
    staging.mkdir(parents=True, exist_ok=True)
    for name, content in (
        (
            "events.jsonl.enc",
            crypto.encrypt(lines.encode(), f"audit/{day}/events.jsonl"),
        ),  # names are personal data
        ("manifest.json", json.dumps(manifest, indent=2).encode()),
        ("checkpoint.json", json.dumps(checkpoint, indent=2).encode()),
        ("public_key.pem", public_key_pem()),
    ):
        path = staging / name
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444), "wb") as out:
            out.write(content)
    staging.rename(target)
    return target


def load_head(db: Session) -> dict[str, Any]:
    from pipelines.registry import AuditEvent

    head = db.scalar(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1))
    return {"seq": head.seq, "hash": head.hash} if head else {"seq": 0, "hash": GENESIS}


def load_checkpoints(root: Any, public_key: bytes | None = None) -> list[Checkpoint]:
    """Every exported checkpoint whose signature holds; a bad signature is an error, not a skip."""
    import base64
    from pathlib import Path

    from cryptography.exceptions import InvalidSignature

    key = keys.load_public(public_key or public_key_pem())
    checkpoints = []
    for path in sorted(Path(root).glob("*/checkpoint.json")):
        data = json.loads(path.read_text())
        try:
            key.verify(base64.b64decode(data["signature"]), _statement(data["seq"], data["hash"], data["at"]))
        except InvalidSignature:
            raise ValueError(f"{path}: the signature does not match its statement") from None
        checkpoints.append(Checkpoint(seq=data["seq"], hash=data["hash"]))
    return checkpoints
