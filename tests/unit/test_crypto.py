"""Envelope encryption at rest: round trip, tamper and swap refused, rotation loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import audit, crypto, registry


def test_round_trip_and_no_plaintext_at_rest(falaj_home: Path) -> None:
    secret = b"customer C1028897 emirates id 784-1990-1234567-1"
    blob = crypto.encrypt(secret, "training_sets/fraud/abc/data.parquet")
    assert secret not in blob and b"784-1990" not in blob
    assert crypto.decrypt(blob, "training_sets/fraud/abc/data.parquet") == secret


def test_a_changed_byte_or_a_swapped_file_is_refused(falaj_home: Path) -> None:
    blob = crypto.encrypt(b"model weights", "models/fraud/v1/model.onnx")
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(crypto.ArtifactTamperedError, match="does not authenticate"):
        crypto.decrypt(flipped, "models/fraud/v1/model.onnx")
    with pytest.raises(crypto.ArtifactTamperedError, match="does not authenticate"):
        crypto.decrypt(blob, "models/fraud/v2/model.onnx")  # the right bytes under another name
    with pytest.raises(crypto.ArtifactTamperedError, match="no header"):
        crypto.decrypt(b"plain parquet", "x")


def test_rotation_rewraps_without_touching_the_ciphertext_and_old_keys_can_go(falaj_home: Path) -> None:
    provider = crypto.LocalKeyProvider()
    old_key = provider.current()
    blob = crypto.encrypt(b"exported events", "audit/2026-11-28/events.jsonl", provider)
    new_key = provider.rotate()
    rewrapped = crypto.rewrap(blob, provider)
    assert rewrapped.endswith(blob[-32:]) and old_key != new_key
    (provider.root / f"{old_key}.key").unlink()  # retire the old master key
    assert crypto.decrypt(rewrapped, "audit/2026-11-28/events.jsonl", provider) == b"exported events"
    with pytest.raises(crypto.ArtifactTamperedError, match=f"master key {old_key} is not in this key store"):
        crypto.decrypt(blob, "audit/2026-11-28/events.jsonl", provider)


def test_audit_exports_are_encrypted_and_survive_a_key_rotation(falaj_home: Path) -> None:
    from click.testing import CliRunner

    from pipelines import authz
    from pipelines.cli import main

    with registry.session() as db, db.begin():
        audit.record(db, "model.promote", "fraud:v1", actor="risk-officer", reason="gate passed")
    exports = falaj_home / "audit" / "exports"
    with registry.session() as db:
        day = audit.load(db)[0]["at"][:10]
        target = audit.export_day(db, day, exports)
    assert b"risk-officer" not in (target / "events.jsonl.enc").read_bytes()

    import pyotp

    code = pyotp.TOTP(pyotp.parse_uri(authz.enroll("falaj-system")).secret).now()
    rotated = CliRunner().invoke(main, ["keys", "rotate", "--otp", code], env={"FALAJ_USER": "falaj-system"})
    assert rotated.exit_code == 0 and "1 artifacts re-wrapped" in rotated.output, rotated.output
    with registry.session() as db:
        assert audit.export_day(db, day, exports) == target  # decrypts under the new key and still matches
