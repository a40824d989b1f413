"""Incremental ingestion from an on-prem database: the real MariaDB and PostgreSQL on localhost."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from pipelines import lake
from pipelines.ingest import land_sql_increment, read_landed
from pipelines.settings import PROJECT_DIR
from pipelines.spec import UseCaseSpec, parse_spec
from pipelines.validate import validate

pytestmark = pytest.mark.integration
SERVERS = {
    "mariadb": ("mysql+pymysql://root@127.0.0.1:3306", "mysql+pymysql://root@127.0.0.1:3306/{db}"),
    "postgresql": (
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        "postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
    ),
}
MERCHANTS = [
    ("M00001", "Al Waha Fresh Market", "grocery", 5411, "Dubai", 0, "2026-10-01 08:00:00"),
    ("M00002", "Falcon Electronics", "electronics", 5732, "Sharjah", 1, "2026-10-10 12:30:00"),
    ("M00003", "Corniche Jewellers", "jewellery", 5944, "Abu Dhabi", 0, "2026-10-25 17:45:00"),
]


@pytest.fixture(params=list(SERVERS))
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    admin_url, url_template = SERVERS[request.param]
    name = f"falaj_src_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    url = url_template.format(db=name)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE merchants (merchant_id VARCHAR(16) PRIMARY KEY, merchant_name VARCHAR(128), "
                "merchant_category VARCHAR(32), mcc INTEGER, emirate VARCHAR(32), is_online INTEGER, "
                "created_timestamp TIMESTAMP NOT NULL)"
            )
        )
        for row in MERCHANTS:
            connection.execute(
                text("INSERT INTO merchants VALUES (:a, :b, :c, :d, :e, :f, :g)"),
                dict(zip("abcdefg", row, strict=True)),
            )
    engine.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE {name}"))
    admin.dispose()


@pytest.fixture
def sql_spec(falaj_home_integration: Path) -> UseCaseSpec:
    raw = yaml.safe_load((PROJECT_DIR / "usecases" / "fraud.yaml").read_text())
    merchants = raw["sources"]["merchants"]
    merchants.pop("path")
    merchants["format"] = "sql"
    merchants["sql"] = {
        "table": "merchants",
        "watermark_column": "created_timestamp",
        "connection_env": "CORE_BANKING_DB_URL",
    }
    return parse_spec(yaml.safe_dump(raw), origin="fraud-with-sql.yaml")


@pytest.fixture
def falaj_home_integration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from pipelines.settings import get_settings

    monkeypatch.setenv("FALAJ_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def merchant_ids(spec: UseCaseSpec, partition: str) -> list[str]:
    frame, _ = read_landed(spec, "merchants", partition)
    return list(frame["merchant_id"])


def test_each_window_lands_only_its_new_rows(
    sql_spec: UseCaseSpec, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORE_BANKING_DB_URL", database_url)
    first = land_sql_increment(sql_spec, "merchants", date(2026, 10, 20))
    assert first.created and merchant_ids(sql_spec, "2026-10-19") == ["M00001", "M00002"]
    second = land_sql_increment(sql_spec, "merchants", date(2026, 11, 1))
    assert second.created and merchant_ids(sql_spec, "2026-10-31") == ["M00003"]
    # The landed rows pass the same suite as the file source and publish with the declared types.
    validate(sql_spec, [("merchants", "2026-10-19"), ("merchants", "2026-10-31")])
    published = lake.partition_dir("validated", "fraud", "merchants", "2026-10-31")
    assert (published / "data.parquet").exists()


def test_rerun_is_a_no_op_and_a_late_correction_lands_a_new_version(
    sql_spec: UseCaseSpec, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORE_BANKING_DB_URL", database_url)
    first = land_sql_increment(sql_spec, "merchants", date(2026, 10, 20))
    land_sql_increment(sql_spec, "merchants", date(2026, 11, 1))
    assert not land_sql_increment(sql_spec, "merchants", date(2026, 10, 20)).created
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE merchants SET merchant_name = 'Falcon Electronics LLC' WHERE merchant_id = 'M00002'")
        )
    engine.dispose()
    corrected = land_sql_increment(sql_spec, "merchants", date(2026, 10, 20))
    assert corrected.created and corrected.version != first.version
    frame, manifest = read_landed(sql_spec, "merchants", "2026-10-19")
    assert "Falcon Electronics LLC" in set(frame["merchant_name"])
    assert manifest["watermark_low"] is None and manifest["watermark_high"].startswith("2026-10-20")


def test_missing_connection_is_a_clear_error(sql_spec: UseCaseSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.ingest import SourceMissingError

    monkeypatch.delenv("CORE_BANKING_DB_URL", raising=False)
    with pytest.raises(SourceMissingError, match="set CORE_BANKING_DB_URL"):
        land_sql_increment(sql_spec, "merchants", date(2026, 10, 20))
