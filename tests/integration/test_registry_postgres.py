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
