"""The audit trail: a hash chain in the platform DB that refuses edits, signed checkpoints, no lost event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from pipelines import audit, registry
from tests.audit_chains import run
from tests.http_sink import http_sink


def test_tampering_is_caught_at_the_first_bad_record() -> None:
    run(chain_length=1_000, mutations=120, clean_chains=20, seed=7)  # `make fuzz` runs the full size


def test_events_chain_in_the_db_and_edits_are_refused(falaj_home: Path) -> None:
    with registry.session() as db, db.begin():
        audit.record(db, "model.register", "fraud:v1", details={"family": "lightgbm"})
        audit.record(db, "model.promote", "fraud:v1", actor="risk@bank.ae", reason="gate passed")
    with registry.session() as db:
        events = audit.load(db)
        assert [e["seq"] for e in events] == [1, 2] and events[1]["prev_hash"] == events[0]["hash"]
        assert audit.verify(events).ok
    for statement in ("UPDATE audit_events SET actor = 'intruder'", "DELETE FROM audit_events"):
        with pytest.raises(DatabaseError, match="append-only"), registry.session() as db, db.begin():
            db.execute(text(statement))


@pytest.fixture
def sink() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with http_sink() as received:
        yield received


def test_an_unreachable_log_spools_alerts_and_loses_nothing(
    falaj_home: Path, monkeypatch: pytest.MonkeyPatch, sink: tuple[str, list[dict[str, Any]]]
) -> None:
    from pipelines.settings import get_settings

    url, alerts = sink
    monkeypatch.setenv("FALAJ_ALERT_WEBHOOK_URL", url)
    monkeypatch.setenv("FALAJ_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/unreachable")
    get_settings.cache_clear()
    registry.engine.cache_clear()
    audit.emit("model.promote", "fraud:v2", outcome="denied", reason="trainer cannot approve")
    audit.emit("model.rollback", "fraud", outcome="denied", reason="no earlier champion")
    assert len(alerts) == 2 and alerts[0]["severity"] == "critical"

    monkeypatch.delenv("FALAJ_DATABASE_URL")
    get_settings.cache_clear()
    registry.engine.cache_clear()
    audit.emit("model.register", "fraud:v3")

    with registry.session() as db:
        events = audit.load(db)
    assert [(e["seq"], e["action"]) for e in events] == [
        (1, "model.promote"),
        (2, "model.rollback"),
        (3, "model.register"),
    ]
    assert audit.verify(events).ok and not (falaj_home / "audit" / "spool.jsonl").exists()


def test_signed_checkpoints_catch_truncation_and_forgery(falaj_home: Path) -> None:
    with registry.session() as db, db.begin():
        for number in range(5):
            audit.record(db, "model.register", f"fraud:v{number + 1}")
    exports = falaj_home / "audit" / "exports"
    with registry.session() as db:
        day = audit.load(db)[0]["at"][:10]
        target = audit.export_day(db, day, exports)
        assert audit.export_day(db, day, exports) == target  # a rerun finds the same export
        events = audit.load(db)
    assert all(not (path.stat().st_mode & 0o222) for path in target.iterdir())  # write-once: read-only
    checkpoints = audit.load_checkpoints(exports)
    assert checkpoints == [audit.Checkpoint(seq=5, hash=events[-1]["hash"])]
    assert audit.verify(events, checkpoints).ok

    cut = audit.verify(events[:3], checkpoints)  # rolled back to an older copy of the log
    assert not cut.ok and cut.first_bad_seq == 4 and "signed checkpoint at seq 5" in cut.reason

    forged = json.loads((target / "checkpoint.json").read_text()) | {"seq": 3}
    (target / "checkpoint.json").chmod(0o644)
    (target / "checkpoint.json").write_text(json.dumps(forged))
    with pytest.raises(ValueError, match="signature does not match"):
        audit.load_checkpoints(exports)
