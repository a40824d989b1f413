"""Erasure: a subject's rows leave every zone, training set and the online store, and do not come back."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyotp
import pytest
from click.testing import CliRunner

from pipelines import audit, authz, crypto, lake, registry
from pipelines.cli import main
from pipelines.erasure import ErasureError, erase, subject_token
from pipelines.features import feature_store, materialize
from pipelines.ingest import MANIFEST, ingest
from pipelines.training_set import build_training_set
from tests.reference_lake import prepare_features


def _frames(home: Path) -> dict[Path, pd.DataFrame]:
    zones = [home / "lake" / zone for zone in ("landing", "validated", "features")]
    frames = {path: pd.read_parquet(path) for zone in zones for path in sorted(zone.rglob("*.parquet"))}
    for manifest in sorted((home / "lake" / "training_sets").glob("*/*/manifest.json")):
        if manifest.parent.is_symlink():
            continue
        data = crypto.unseal(manifest.parent / "data.parquet")
        frames[manifest.parent] = pd.read_parquet(io.BytesIO(data))
    return frames


def _rows_of(frames: dict[Path, pd.DataFrame], column: str, values: set[str]) -> int:
    return sum(int(f[column].astype(str).isin(values).sum()) for f in frames.values() if column in f)


def _model(db, version: int, training_set_sha256: str) -> registry.ModelVersion:
    model = registry.ModelVersion(
        use_case="fraud", version=version, family="lightgbm", artifact_uri="/nowhere", onnx_sha256="0" * 64,
        parity_max_abs_diff=0.0, metrics={}, params={}, features=[], feature_service="fraud_v2",
        training_set_uri="/nowhere", training_set_sha256=training_set_sha256, code_version="test",
        created_by="ml-engineer",
    )  # fmt: skip
    db.add(model)
    return model


@pytest.fixture
def lake_with_a_model(falaj_home: Path):
    spec, data = prepare_features(days=3)
    start, end = (datetime.combine(day, datetime.min.time(), UTC) for day in (data.start, data.end))
    materialize(spec, start, end)
    training_set = build_training_set(spec, start, end)
    with registry.session() as db, db.begin():
        _model(db, 1, training_set.sha256)
        _model(db, 2, "f" * 64)  # trained on other data
    landed = pd.read_parquet(next((falaj_home / "lake" / "landing").rglob("transactions/*/*.parquet")))
    subject = str(landed["customer_id"].iloc[0])
    cards = set(landed.loc[landed["customer_id"] == subject, "card_id"].astype(str))
    return spec, data, subject, cards


def _online_profile(customer_id: str) -> object:
    response = feature_store().get_online_features(
        features=["customer_profile:credit_limit_aed"], entity_rows=[{"customer_id": customer_id}]
    )
    return response.to_dict()["credit_limit_aed"][0]


def test_erasure_removes_the_subject_everywhere_and_flags_the_models(falaj_home: Path, lake_with_a_model):
    spec, _, subject, cards = lake_with_a_model
    before = _frames(falaj_home)
    assert _rows_of(before, "customer_id", {subject}) > 0 and cards
    assert _online_profile(subject) is not None

    report = erase(spec, subject, "data-engineer", "DSR-2026-0042: customer asked to be forgotten")

    after = _frames(falaj_home)
    # No row of the subject, or of their cards, is left in any zone or training set ...
    assert _rows_of(after, "customer_id", {subject}) == 0
    assert _rows_of(after, "card_id", cards) == 0
    # ... and every other row is still there.
    removed = _rows_of(before, "customer_id", {subject}) + _rows_of(before, "card_id", cards)
    kept = sum(len(frame) for frame in after.values())
    assert kept == sum(len(frame) for frame in before.values()) - sum(report.rows_removed.values())
    assert 0 < sum(report.rows_removed.values()) <= removed
    for manifest in (falaj_home / "lake" / "landing").rglob(MANIFEST):
        landed = lake.read_json(manifest)
        assert landed["rows"] == len(pd.read_parquet(manifest.parent / landed["file"]))
    [training_set] = [
        path
        for path in (falaj_home / "lake" / "training_sets" / "fraud").glob("*/manifest.json")
        if not path.parent.is_symlink()
    ]
    record = lake.read_json(training_set)
    assert record["rows"] == len(after[training_set.parent])
    assert record["erasures"][0]["rows"] == report.rows_removed["training_sets"]
    # The online store no longer serves them.
    assert report.online_keys_deleted >= 1 + len(cards) - 1
    assert _online_profile(subject) is None
    # The model trained on their rows is flagged and may not be promoted; the other is untouched.
    assert report.models_flagged == ["fraud:v1"]
    with registry.session() as db:
        assert "erasure" in (registry.find_version(db, "fraud", 1).retrain_required or "")
        assert registry.find_version(db, "fraud", 2).retrain_required is None
        with pytest.raises(registry.PromotionRefusedError, match="must be retrained"):
            registry.promote(db, "fraud", 1, "risk-officer", "looks good")
        [event] = [e for e in audit.load(db) if e["action"] == "data.erase"]
    # The audit trail and the register know the subject only by pseudonym.
    assert event["resource"] == f"fraud:subject:{subject_token(subject)}"
    assert subject not in json.dumps(event)


def test_an_erased_subject_does_not_land_again(falaj_home: Path, lake_with_a_model):
    spec, data, subject, _ = lake_with_a_model
    erase(spec, subject, "data-engineer", "DSR-2026-0043")
    # Given the source delivers the same files again and the landing zone is rebuilt from them
    for manifest in (falaj_home / "lake" / "landing").rglob(MANIFEST):
        manifest.unlink()
    # When ingest lands them
    ingest(spec, data.start, data.end)
    # Then the subject's rows are dropped at the door, and the manifests count them
    frames = _frames(falaj_home)
    assert _rows_of({p: f for p, f in frames.items() if "landing" in p.parts}, "customer_id", {subject}) == 0
    erased = sum(lake.read_json(m)["erased_rows"] for m in (falaj_home / "lake" / "landing").rglob(MANIFEST))
    assert erased > 0


def test_an_unknown_subject_is_refused_and_nothing_changes(falaj_home: Path, lake_with_a_model):
    spec, *_ = lake_with_a_model
    before = {path: len(frame) for path, frame in _frames(falaj_home).items()}
    with pytest.raises(ErasureError, match="no rows of customer_id 'C-NOBODY'"):
        erase(spec, "C-NOBODY", "data-engineer", "DSR-2026-0044")
    assert {path: len(frame) for path, frame in _frames(falaj_home).items()} == before


def test_the_cli_needs_a_second_factor_and_prints_what_it_did(falaj_home: Path, lake_with_a_model):
    _, _, subject, _ = lake_with_a_model
    args = ["erase", "--subject", subject, "--reason", "DSR-2026-0045"]
    denied = CliRunner().invoke(main, args, env={"FALAJ_USER": "ml-engineer"})
    assert denied.exit_code == 1 and "may not data.erase" in denied.output
    secret = pyotp.parse_uri(authz.enroll("data-engineer")).secret
    done = CliRunner().invoke(
        main, [*args, "--otp", pyotp.TOTP(secret).now()], env={"FALAJ_USER": "data-engineer"}
    )
    assert done.exit_code == 0, done.output
    assert "models flagged for retraining: fraud:v1" in done.output
    assert subject not in done.output
