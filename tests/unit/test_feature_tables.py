"""Declared feature tables: a use case adds its tables in its feature-repo module, nothing in pipelines/."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from pipelines import lake
from pipelines import spec as specs
from pipelines.cli import main
from pipelines.feature_tables import FeatureTableError, declared_tables, feature_table
from pipelines.features import apply_definitions, build_feature_tables, feature_store, materialize
from pipelines.settings import PROJECT_DIR, get_settings
from pipelines.spec import UseCaseSpec, load_spec_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# A second use case's module, as its data engineer writes it: Feast definitions and, beside them,
# the builders of the views' inputs. {activity_body} lets a test break the activity builder.
TOY_MODULE = """
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

from pipelines.feature_tables import feature_table
from pipelines.lake import zone_dir

USE_CASE = "{name}"


def _source(view: str) -> FileSource:
    path = zone_dir("features", USE_CASE, view) / "data.parquet"
    return FileSource(name=f"{{USE_CASE}}_{{view}}", path=str(path), timestamp_field="event_timestamp")


account = Entity(name="{name}_account", join_keys=["account_id"], value_type=ValueType.STRING)

activity = FeatureView(
    name="{name}_activity",
    entities=[account],
    ttl=timedelta(days=7),
    schema=[Field(name="payments", dtype=Int64), Field(name="paid_aed", dtype=Float64)],
    source=_source("{name}_activity"),
    tags={{"use_case": USE_CASE}},
)

profile = FeatureView(
    name="{name}_profile",
    entities=[account],
    ttl=timedelta(0),
    schema=[Field(name="limit_aed", dtype=Float64)],
    source=_source("{name}_profile"),
    tags={{"use_case": USE_CASE, "kind": "profile"}},
)


@feature_table(view="{name}_activity", inputs=["payments"])
def activity_table(payments: pd.DataFrame) -> pd.DataFrame:
    ordered = payments.sort_values(["account_id", "event_timestamp"], kind="stable")
    grouped = ordered.groupby("account_id", sort=False)
    table = ordered.assign(payments=grouped.cumcount() + 1, paid_aed=grouped["amount_aed"].cumsum())
    return {activity_body}


@feature_table(view="{name}_profile", inputs=["accounts"])
def profile_table(accounts: pd.DataFrame) -> pd.DataFrame:
    return accounts.rename(columns={{"opened_timestamp": "event_timestamp"}})
"""
GOOD_BODY = 'table[["account_id", "event_timestamp", "payments", "paid_aed"]]'


def suite(name: str, column: str) -> dict[str, object]:
    return {
        "name": name,
        "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": column}, "meta": {}}
        ],
    }


@pytest.fixture
def project(falaj_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose feature repository and expectations hold only what the tests write there."""
    root = tmp_path / "project"
    (root / "feature_repo").mkdir(parents=True)
    (root / "expectations").mkdir()
    shutil.copy(PROJECT_DIR / "feature_repo" / "feature_store.yaml", root / "feature_repo")
    (root / "policies").symlink_to(PROJECT_DIR / "policies")
    monkeypatch.setenv("FALAJ_PROJECT_DIR", str(root))
    get_settings.cache_clear()
    specs._load_all.cache_clear()
    return root


def add_use_case(
    project: Path, fraud_spec: UseCaseSpec, name: str, activity_body: str = GOOD_BODY
) -> UseCaseSpec:
    """Write ``name``'s module and suites, and return its spec (payments by day, an accounts snapshot)."""
    module = TOY_MODULE.format(name=name, activity_body=activity_body)
    (project / "feature_repo" / f"{name}.py").write_text(module)
    for view, column in [(f"{name}_activity", "payments"), (f"{name}_profile", "limit_aed")]:
        path = project / "expectations" / f"{view}.features.json"
        path.write_text(json.dumps(suite(f"{view}.features", column)))
    payments = {
        "payment_id": "string",
        "account_id": "string",
        "event_timestamp": "timestamp",
        "amount_aed": "float",
        "channel": "string",
        "is_fraud": "int",
    }
    raw = fraud_spec.model_dump(mode="json")
    raw.update(
        name=name,
        entities={"account": "account_id"},
        sources={
            "payments": {
                "path": "payments/{date}.csv",
                "event_time": "event_timestamp",
                "suite": "payments.landing",
                "columns": payments,
            },
            "accounts": {
                "path": "accounts.csv",
                "event_time": "opened_timestamp",
                "suite": "accounts.landing",
                "columns": {"account_id": "string", "opened_timestamp": "timestamp", "limit_aed": "float"},
            },
        },
        training_set={**raw["training_set"], "entity_source": "payments", "id_column": "payment_id"},
    )
    (project / "usecases").mkdir(exist_ok=True)
    path = project / "usecases" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec_file(path)


def write_validated(spec: UseCaseSpec, dataset: str, partition: str, frame: pd.DataFrame) -> None:
    target = lake.partition_dir("validated", spec.name, dataset, partition) / "data.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(target, index=False)


def toy_lake(spec: UseCaseSpec) -> None:
    """Two days of payments, and two snapshots of the accounts of which only the newer is current."""
    at = pd.Timestamp("2026-03-01T09:00", tz="UTC")
    write_validated(
        spec,
        "payments",
        "2026-03-01",
        pd.DataFrame({"account_id": ["A1", "A2"], "event_timestamp": [at, at], "amount_aed": [10.0, 5.0]}),
    )
    write_validated(
        spec,
        "payments",
        "2026-03-02",
        pd.DataFrame(
            {"account_id": ["A1"], "event_timestamp": [at + pd.Timedelta(days=1)], "amount_aed": [2.5]}
        ),
    )
    accounts = pd.DataFrame(
        {
            "account_id": ["A1", "A2"],
            "opened_timestamp": [at - pd.Timedelta(days=30)] * 2,
            "limit_aed": [1e3, 2e3],
        }
    )
    write_validated(spec, "accounts", "2026-03-01", accounts.assign(limit_aed=[1.0, 2.0]))
    write_validated(spec, "accounts", "2026-03-02", accounts)


def read_table(spec: UseCaseSpec, view: str) -> pd.DataFrame:
    return pd.read_parquet(lake.zone_dir("features", spec.name, view) / "data.parquet")


def test_a_new_use_case_builds_the_tables_its_module_declares(project: Path, fraud_spec: UseCaseSpec) -> None:
    # Given a use case added with only a module, its suites and a spec, and its validated data
    toy = add_use_case(project, fraud_spec, "toy")
    toy_lake(toy)
    # When its feature tables are built
    built = build_feature_tables(toy)
    # Then each declared table was computed from every payment partition and the latest account snapshot
    assert built.rows == {"toy_activity": 3, "toy_profile": 2}
    activity = read_table(toy, "toy_activity").sort_values(["account_id", "event_timestamp"])
    assert activity["payments"].tolist() == [1, 2, 1]
    assert activity["paid_aed"].tolist() == [10.0, 12.5, 5.0]
    assert read_table(toy, "toy_profile")["limit_aed"].tolist() == [1e3, 2e3]


def test_a_use_case_without_a_module_is_refused(project: Path, fraud_spec: UseCaseSpec) -> None:
    ghost = fraud_spec.model_copy(update={"name": "ghost"})
    with pytest.raises(
        FeatureTableError, match=r"'ghost' has no feature definitions: .*ghost\.py does not exist"
    ):
        build_feature_tables(ghost)


def test_a_module_that_declares_no_tables_is_refused(project: Path, fraud_spec: UseCaseSpec) -> None:
    toy = add_use_case(project, fraud_spec, "bare")
    module = project / "feature_repo" / "bare.py"
    module.write_text(module.read_text().split("@feature_table")[0])
    with pytest.raises(FeatureTableError, match=r"bare\.py declares no feature tables"):
        build_feature_tables(toy)


@pytest.mark.parametrize("column", ["account_id", "event_timestamp"])
def test_a_table_without_its_views_key_or_timestamp_is_refused(
    project: Path, fraud_spec: UseCaseSpec, column: str
) -> None:
    # Given a builder that leaves out one column its view reads
    toy = add_use_case(project, fraud_spec, "toy", f"{GOOD_BODY}.drop(columns=[{column!r}])")
    toy_lake(toy)
    # When the tables are built, then it is refused by name and no table of the use case is written
    with pytest.raises(FeatureTableError) as refused:
        build_feature_tables(toy)
    assert f"toy.activity_table returned a table without ['{column}']" in str(refused.value)
    assert "feature view 'toy_activity'" in str(refused.value)
    assert not lake.zone_dir("features", "toy", "").exists()


def test_a_table_reading_a_dataset_the_spec_lacks_is_refused(project: Path, fraud_spec: UseCaseSpec) -> None:
    toy = add_use_case(project, fraud_spec, "toy")
    toy = toy.model_copy(update={"sources": {"payments": toy.sources["payments"]}})
    with pytest.raises(
        FeatureTableError, match=r"tables read \['accounts'\], which are not sources of use case"
    ):
        build_feature_tables(toy)


def test_an_untagged_view_is_refused_before_anything_is_built(project: Path, fraud_spec: UseCaseSpec) -> None:
    toy = add_use_case(project, fraud_spec, "toy")
    module = project / "feature_repo" / "toy.py"
    module.write_text(module.read_text().replace('tags={"use_case": USE_CASE}', "tags={}"))
    with pytest.raises(FeatureTableError, match=r"'toy_activity' needs the tag use_case='toy'"):
        build_feature_tables(toy)


def test_a_builder_that_cannot_take_its_inputs_is_refused_when_declared() -> None:
    def builder(transactions: pd.DataFrame) -> pd.DataFrame:
        return transactions

    with pytest.raises(FeatureTableError, match=r"builder cannot take its inputs \['a', 'b'\]"):
        feature_table(view="v", inputs=["a", "b"])(builder)
    with pytest.raises(FeatureTableError, match="inputs must be distinct dataset names"):
        feature_table(view="v", inputs="transactions")
    # and a declared builder is still the plain function it was
    table = feature_table(view="v", inputs=["transactions"])(builder)
    frame = pd.DataFrame({"x": [1]})
    assert table(frame) is frame and table.inputs == ("transactions",)


def test_fraud_declares_its_five_tables(fraud_spec: UseCaseSpec) -> None:
    from pipelines.features import use_case_module

    tables = declared_tables(use_case_module("fraud"))
    assert {table.view: table.inputs for table in tables} == {
        "customer_behaviour": ("transactions", "customers"),
        "card_velocity": ("transactions",),
        "merchant_activity": ("transactions",),
        "customer_profile": ("customers",),
        "merchant_profile": ("merchants",),
    }


def test_materialize_loads_only_the_use_cases_own_views(project: Path, fraud_spec: UseCaseSpec) -> None:
    # Given two use cases applied to one feature store, only one of which has built its tables yet
    toy = add_use_case(project, fraud_spec, "toy")
    add_use_case(project, fraud_spec, "other")
    toy_lake(toy)
    build_feature_tables(toy)
    apply_definitions()
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    # When one use case's window is materialized
    results = materialize(toy, start, end)
    # Then only its views were loaded, and the other's (whose tables do not exist yet) were not read
    assert sorted(result.view for result in results) == ["toy_activity", "toy_profile"]
    store = feature_store()
    online = store.get_online_features(
        features=["toy_activity:payments", "other_activity:payments"],
        entity_rows=[{"account_id": "A1"}],
        full_feature_names=True,
    ).to_dict()
    assert online["toy_activity__payments"] == [2]
    assert online["other_activity__payments"] == [None]
    # and a use case with no tagged view is refused by name
    ghost = fraud_spec.model_copy(update={"name": "ghost"})
    with pytest.raises(FeatureTableError, match="no feature view in the registry is tagged use_case='ghost'"):
        materialize(ghost, start, end)


def test_the_cli_materializes_the_named_use_case_only(project: Path, fraud_spec: UseCaseSpec) -> None:
    # Given two applied use cases, one with its tables built
    toy = add_use_case(project, fraud_spec, "toy")
    add_use_case(project, fraud_spec, "other")
    toy_lake(toy)
    build_feature_tables(toy)
    apply_definitions()
    window = ["--start", "2026-03-01", "--end", "2026-03-03"]
    # When `falaj features materialize` runs for it, then it loads its own two views and nothing else
    ran = CliRunner().invoke(main, ["features", "materialize", *window, "--use-case", "toy"])
    assert ran.exit_code == 0, ran.output
    assert sorted(line.split(":")[0] for line in ran.output.splitlines()) == ["toy_activity", "toy_profile"]
    # and an unknown use case is refused with the reason, not a traceback
    unknown = CliRunner().invoke(main, ["features", "materialize", *window, "--use-case", "ghost"])
    assert unknown.exit_code == 1 and "unknown use case 'ghost'" in unknown.output
