"""The registry on the `prod` profile's database: real PostgreSQL on localhost, a fresh database per run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from pipelines import registry

pytestmark = pytest.mark.integration
SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"falaj_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{SERVER}/{name}"
    finally:
        registry.engine.cache_clear()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def version(use_case: str, number: int, family: str) -> registry.ModelVersion:
    return registry.ModelVersion(
        use_case=use_case,
        version=number,
        family=family,
        artifact_uri=f"/artifacts/{number}",
        onnx_sha256="a" * 64,
        parity_max_abs_diff=1e-7,
        metrics={"pr_auc": 0.8},
        params={"num_leaves": 31},
        features=["txn_count_1h"],
        feature_service="fraud_v1",
        training_set_uri="/ts",
        training_set_sha256="b" * 64,
        code_version="c0ffee",
        created_by="ml-engineer",
    )


def test_versions_and_alias_history_on_postgres(postgres_url: str) -> None:
    engine = registry.engine(postgres_url)
    assert engine.dialect.name == "postgresql"
    with Session(engine) as db, db.begin():
        first, second = version("fraud", 1, "lightgbm"), version("fraud", 2, "pytorch_mlp")
        db.add_all([first, second])
        db.flush()
        registry.set_alias(db, "fraud", "champion", first, "approver-1", "first model")
        registry.set_alias(db, "fraud", "champion", second, "approver-2", "beats v1")
        registry.set_alias(db, "fraud", "archived", first, "approver-2", "replaced by v2")
    with Session(engine) as db:
        assert registry.resolve_alias(db, "fraud", "champion").version == 2
        assert registry.resolve_alias(db, "fraud", "archived").version == 1
        assert registry.next_version(db, "fraud") == 3
        history = db.scalars(text("SELECT actor FROM alias_events ORDER BY id")).all()
        assert history == ["approver-1", "approver-2", "approver-2"]


def test_duplicate_version_numbers_are_refused(postgres_url: str) -> None:
    from sqlalchemy.exc import IntegrityError

    engine = registry.engine(postgres_url)
    with pytest.raises(IntegrityError), Session(engine) as db, db.begin():
        db.add_all([version("fraud", 1, "lightgbm"), version("fraud", 1, "pytorch_mlp")])


def test_migrations_match_the_models_on_postgres(postgres_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with registry.engine(postgres_url).connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), registry.Base.metadata) == []


def test_the_prediction_log_copies_rows_into_postgres_unchanged(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from pipelines.predictions import COLUMNS, Prediction, write_rows
    from pipelines.settings import get_settings

    monkeypatch.setenv("FALAJ_DATABASE_URL", postgres_url.replace("+psycopg2", "+psycopg"))
    # Settings are cached for the process: later tests must not inherit this database, dropped after.
    request.addfinalizer(get_settings.cache_clear)
    get_settings.cache_clear()
    registry.engine.cache_clear()
    served = {"at": datetime(2026, 11, 28, 9, 30, 1, 123456, tzinfo=UTC), "use_case": "fraud",
              "request_id": "t-1", "unit": "p" * 64, "arm": "champion", "model_version": 3,
              "experiment_id": None, "shadow": False, "score": 0.125, "decision": "approve",
              "threshold": 0.5, "latency_ms": 0.42, "degraded": True, "error": None,
              "features": {"amount": 12.5, "mcc": None, "note": "tab\tand \\ quote\""},
              "freshness": {"customer_behaviour": 61.5}}  # fmt: skip
    failed = {**served, "request_id": "t-2", "arm": "challenger", "experiment_id": 7, "shadow": True,
              "score": None, "decision": None, "error": "model failed"}  # fmt: skip
    spooled = {**failed, "at": served["at"].isoformat()}  # as a row comes back from the spool
    write_rows([dict(served), spooled])
    with Session(registry.engine()) as db:
        stored = db.scalars(select(Prediction).order_by(Prediction.id)).all()
    assert registry.engine().dialect.driver == "psycopg"
    assert [{name: getattr(row, name) for name in COLUMNS} for row in stored] == [served, failed]
