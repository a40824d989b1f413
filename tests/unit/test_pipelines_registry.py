"""Model registry on SQLite: version numbers per use case, alias moves as append-only history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipelines import registry
from tests.registry_rows import add_version, decide


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Session]:
    """A session on a brand-new SQLite platform DB (tables created by ``engine``)."""
    engine = registry.engine(f"sqlite:///{tmp_path / 'platform.db'}")
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


def test_versions_count_up_per_use_case(db: Session) -> None:
    # Given an empty registry
    assert registry.next_version(db, "fraud") == 1

    # When two fraud models and one of another use case are recorded
    first, second = add_version(db), add_version(db, family="pytorch_mlp")
    other = add_version(db, use_case="aml")

    # Then fraud is at v1, v2 with v3 next; the other use case numbers independently
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert (first.tag, second.tag, other.tag) == ("fraud:v1", "fraud:v2", "aml:v1")
    assert registry.next_version(db, "fraud") == 3
    assert registry.next_version(db, "aml") == 2
    assert registry.next_version(db, "churn") == 1


def test_a_version_number_cannot_be_taken_twice(db: Session) -> None:
    # Given fraud v1 recorded
    taken = add_version(db)

    # When another row claims the same (use case, version)
    duplicate = registry.ModelVersion(
        **{
            column.key: getattr(taken, column.key)
            for column in registry.ModelVersion.__table__.columns
            if column.key != "id"
        }
    )
    db.add(duplicate)

    # Then the database refuses it
    with pytest.raises(IntegrityError):
        db.flush()


def test_version_round_trips_its_lineage(db: Session) -> None:
    # Given a recorded version committed and read back in a fresh session
    version = add_version(db)
    db.commit()
    with Session(db.get_bind()) as fresh:
        loaded = fresh.scalar(select(registry.ModelVersion).where(registry.ModelVersion.id == version.id))

        # Then its JSON lineage and timestamps survived the round trip
        assert loaded is not None
        assert loaded.metrics == {"pr_auc": 0.5}
        assert loaded.features == ["txn_count_1h"]
        assert loaded.created_at is not None
        assert loaded.bento_tag is None


def test_unset_alias_resolves_to_nothing(db: Session) -> None:
    # Given a version but no alias events
    add_version(db)

    # Then no alias points anywhere yet
    assert registry.resolve_alias(db, "fraud", "champion") is None


def test_latest_alias_event_wins_and_history_is_kept(db: Session) -> None:
    # Given two versions
    v1, v2 = add_version(db), add_version(db)

    # When champion moves v1 -> v2 -> back to v1 (a rollback)
    registry.set_alias(db, "fraud", "champion", v1, "approver@bank.ae", "first model")
    db.flush()
    assert registry.resolve_alias(db, "fraud", "champion").id == v1.id
    registry.set_alias(db, "fraud", "champion", v2, "approver@bank.ae", "gate passed")
    db.flush()
    assert registry.resolve_alias(db, "fraud", "champion").id == v2.id
    registry.set_alias(db, "fraud", "champion", v1, "oncall", "rollback: drift alert")
    db.flush()

    # Then the latest event wins, even though it points at the older version
    assert registry.resolve_alias(db, "fraud", "champion").id == v1.id
    # And every move is kept, in order, with who and why
    events = db.scalars(
        select(registry.AliasEvent)
        .where(registry.AliasEvent.alias == "champion")
        .order_by(registry.AliasEvent.id)
    ).all()
    assert [(e.version_id, e.actor, e.reason) for e in events] == [
        (v1.id, "approver@bank.ae", "first model"),
        (v2.id, "approver@bank.ae", "gate passed"),
        (v1.id, "oncall", "rollback: drift alert"),
    ]


def test_aliases_are_independent_per_name_and_use_case(db: Session) -> None:
    # Given fraud v1, v2 and aml v1
    v1, v2, aml = add_version(db), add_version(db), add_version(db, use_case="aml")

    # When fraud's champion and challenger and aml's champion are set
    registry.set_alias(db, "fraud", "champion", v1, "a", "r")
    registry.set_alias(db, "fraud", "challenger", v2, "a", "r")
    registry.set_alias(db, "aml", "champion", aml, "a", "r")
    db.flush()

    # Then each resolves on its own
    assert registry.resolve_alias(db, "fraud", "champion").id == v1.id
    assert registry.resolve_alias(db, "fraud", "challenger").id == v2.id
    assert registry.resolve_alias(db, "aml", "champion").id == aml.id
    assert registry.resolve_alias(db, "fraud", "shadow") is None


def test_unknown_alias_is_refused_and_nothing_recorded(db: Session) -> None:
    # Given a version
    version = add_version(db)

    # When an alias outside the fixed vocabulary is set
    with pytest.raises(ValueError, match="unknown alias 'production'"):
        registry.set_alias(db, "fraud", "production", version, "a", "r")

    # Then no event was added
    db.flush()
    assert db.scalars(select(registry.AliasEvent)).all() == []


def test_trainer_cannot_approve_their_own_model(db: Session) -> None:
    version = add_version(db)
    decide(db, version, passed=True)
    with pytest.raises(registry.PromotionRefusedError, match="risk-officer trained fraud:v1"):
        registry.promote(db, "fraud", 1, approver="risk-officer", reason="looks good")
    assert registry.resolve_alias(db, "fraud", "champion") is None
    assert db.scalars(select(registry.Approval)).all() == []


def test_a_refused_or_ungated_version_cannot_be_promoted(db: Session) -> None:
    refused, ungated = add_version(db), add_version(db)
    decide(db, refused, passed=False)
    with pytest.raises(registry.PromotionRefusedError, match="below the floor"):
        registry.promote(db, "fraud", refused.version, approver="demo-approver", reason="override")
    with pytest.raises(registry.PromotionRefusedError, match="never evaluated"):
        registry.promote(db, "fraud", ungated.version, approver="demo-approver", reason="override")


def test_approval_promotes_archives_the_old_champion_and_is_recorded(db: Session) -> None:
    first, second = add_version(db), add_version(db)
    decide(db, first, passed=True)
    registry.promote(db, "fraud", 1, approver="demo-approver", reason="first model")
    decision = decide(db, second, passed=True)
    registry.set_alias(db, "fraud", "challenger", second, "falaj-system", "gate passed")
    registry.promote(db, "fraud", 2, approver="oncall", reason="better recall")
    assert registry.resolve_alias(db, "fraud", "challenger") is None

    assert registry.resolve_alias(db, "fraud", "champion").id == second.id
    assert registry.resolve_alias(db, "fraud", "archived").id == first.id
    approval = db.scalars(select(registry.Approval).order_by(registry.Approval.id.desc())).first()
    assert (approval.approver, approval.decision_id, approval.reason) == (
        "oncall",
        decision.id,
        "better recall",
    )
    with pytest.raises(registry.PromotionRefusedError, match="already the champion"):
        registry.promote(db, "fraud", 2, approver="demo-approver", reason="again")


def test_rollback_returns_to_the_previous_champion_or_a_named_earlier_one(db: Session) -> None:
    versions = [add_version(db) for _ in range(3)]
    for version in versions:
        decide(db, version, passed=True)
        registry.promote(db, "fraud", version.version, approver="demo-approver", reason="gate passed")

    assert registry.rollback(db, "fraud", "oncall", "v3 misbehaves").version == 2
    assert registry.rollback(db, "fraud", "oncall", "back to the first", to=1).version == 1
    assert registry.resolve_alias(db, "fraud", "champion").version == 1
    moves = [(e.alias, e.actor) for e in registry.alias_history(db, "fraud")][-2:]
    assert moves == [("archived", "oncall"), ("champion", "oncall")]


def test_rollback_only_to_a_former_champion(db: Session) -> None:
    first, never = add_version(db), add_version(db)
    decide(db, first, passed=True)
    with pytest.raises(registry.PromotionRefusedError, match="no champion"):
        registry.rollback(db, "fraud", "oncall", "nothing yet")
    registry.promote(db, "fraud", 1, approver="demo-approver", reason="first")
    with pytest.raises(registry.PromotionRefusedError, match="only champion"):
        registry.rollback(db, "fraud", "oncall", "no earlier one")
    with pytest.raises(registry.PromotionRefusedError, match="was never a champion"):
        registry.rollback(db, "fraud", "oncall", "skip the gate", to=never.version)


def test_migrations_match_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    engine = registry.engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), registry.Base.metadata) == []
        head = ScriptDirectory(str(registry.MIGRATIONS)).get_current_head()
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head
    engine.dispose()


def test_the_registry_itself_refuses_a_user_without_the_approver_role(db: Session) -> None:
    version = add_version(db)
    decide(db, version, passed=True)
    denied = r"ml-engineer \(ml-engineer\) may not model\.promote"
    with pytest.raises(registry.PromotionRefusedError, match=denied):
        registry.promote(db, "fraud", 1, approver="ml-engineer", reason="I trust it")
