"""Validation: a clean window is published typed; a bad one stops, names what failed and publishes nothing."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest

from pipelines.datagen import SIZES, GeneratedData, corrupt_partition, generate
from pipelines.ingest import LandedPartition, ingest, read_landed
from pipelines.spec import UseCaseSpec
from pipelines.validate import DataValidationError, validate

# GX warns that the suites' regexes have groups (it only tests for a match): noise, not a finding.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This pattern is interpreted as a regular expression:UserWarning"
)


@pytest.fixture
def source(falaj_home: Path, monkeypatch: pytest.MonkeyPatch) -> GeneratedData:
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "False")  # no telemetry from unit tests
    return generate(falaj_home / "source", SIZES["tiny"], days=10)


def _partitions(landed: list[LandedPartition]) -> list[tuple[str, str]]:
    return [(item.dataset, item.partition) for item in landed]


def _validated(home: Path) -> dict[Path, tuple[bytes, int]]:
    root = home / "lake" / "validated"
    files = [path for path in sorted(root.rglob("*")) if path.is_file()]
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in files}


def _report(home: Path) -> dict[str, object]:
    return dict(json.loads((home / "reports" / "validation" / "fraud.json").read_text()))


def test_clean_window_is_published_with_declared_types(
    falaj_home: Path, source: GeneratedData, fraud_spec: UseCaseSpec
) -> None:
    # Given a clean window landed
    landed = ingest(fraud_spec, source.start, source.end)

    # When it is validated
    summary = validate(fraud_spec, _partitions(landed))

    # Then every partition is published and the summary counts what was checked
    assert summary.partitions == len(landed)
    assert summary.rows == sum(item.rows for item in landed)
    assert summary.expectations_evaluated > 0
    validated = falaj_home / "lake" / "validated" / "fraud"
    for item in landed:
        part = validated / item.dataset / f"partition={item.partition}"
        assert json.loads((part / "_manifest.json").read_text()) == {
            "landing_version": item.version,
            "rows": item.rows,
        }
        assert len(pd.read_parquet(part / "data.parquet")) == item.rows

    # And the published data has the spec's types: tz-aware UTC timestamps, float64 amounts, int labels
    day = landed[0].partition
    tx = pd.read_parquet(validated / "transactions" / f"partition={day}" / "data.parquet")
    assert isinstance(tx["event_timestamp"].dtype, pd.DatetimeTZDtype)
    assert str(tx["event_timestamp"].dt.tz) == "UTC"
    assert tx["amount_aed"].dtype == "float64"
    assert tx["is_fraud"].dtype == "int64"
    assert pd.api.types.is_string_dtype(tx["customer_id"])
    # with the values the source sent
    raw = pd.read_csv(source.source_dir / "transactions" / f"{day}.csv", dtype=str)
    assert list(tx["event_timestamp"]) == [pd.Timestamp(value) for value in raw["event_timestamp"]]
    assert list(tx["amount_aed"]) == [float(value) for value in raw["amount_aed"]]
    snapshot = f"partition={landed[-1].partition}"
    customers = pd.read_parquet(validated / "customers" / snapshot / "data.parquet")
    assert str(customers["signup_timestamp"].dt.tz) == "UTC"
    assert customers["credit_limit_aed"].dtype == "float64"
    merchants = pd.read_parquet(validated / "merchants" / snapshot / "data.parquet")
    assert merchants["mcc"].dtype == "int64"
    assert str(merchants["created_timestamp"].dt.tz) == "UTC"

    # And the report says success and the Data Docs site exists
    report = _report(falaj_home)
    assert report["success"] is True
    assert report["failures"] == []
    assert report["data_docs"] == summary.data_docs
    docs = Path(urlparse(summary.data_docs).path)
    assert docs.name == "index.html" and docs.is_file()


def test_validating_the_same_window_again_rewrites_nothing(
    falaj_home: Path, source: GeneratedData, fraud_spec: UseCaseSpec
) -> None:
    # Given a window validated and published once
    partitions = _partitions(ingest(fraud_spec, source.start, source.end))
    validate(fraud_spec, partitions)
    before = _validated(falaj_home)

    # When the same landed versions are validated again (a retried task)
    validate(fraud_spec, partitions)

    # Then the validated zone is byte- and mtime-identical
    assert before and _validated(falaj_home) == before


def test_corrupted_partition_stops_the_window_and_publishes_nothing(
    falaj_home: Path, source: GeneratedData, fraud_spec: UseCaseSpec
) -> None:
    # Given an earlier window validated and published
    middle = source.start + timedelta(days=5)
    validate(fraud_spec, _partitions(ingest(fraud_spec, source.start, middle)))
    earlier = _validated(falaj_home)
    assert earlier

    # And a later window where one day arrived corrupted (non-numeric, negative amounts; blank customers)
    bad_day = (middle + timedelta(days=2)).isoformat()
    corrupt_partition(source.source_dir / "transactions" / f"{bad_day}.csv")
    later = ingest(fraud_spec, middle, source.end)

    # When the later window is validated
    with pytest.raises(DataValidationError) as caught:
        validate(fraud_spec, _partitions(later))

    # Then the message names the failing expectations, their columns and the partition at fault only
    message = str(caught.value)
    assert "nothing was published" in message
    assert re.search(r"expect_column_values_to_not_be_null on column 'customer_id'", message)
    # A text value in amount_aed makes the column non-numeric, which the type check must catch
    assert re.search(r"expect_column_values_to_be_in_type_list on column 'amount_aed'", message)
    assert set(re.findall(r"partition=(\S+):", message)) == {bad_day}
    assert set(re.findall(r"^\s+- (\w+) partition=", message, flags=re.MULTILINE)) == {"transactions"}

    # And the report is written with success false and the same findings
    report = _report(falaj_home)
    assert report["success"] is False
    failures = report["failures"]
    assert isinstance(failures, list) and failures
    assert all(f"transactions partition={bad_day}" in line for line in failures)
    assert any("customer_id" in line for line in failures)
    assert any("amount_aed" in line for line in failures)

    # And nothing of the later window is published, clean partitions included, and the earlier is untouched
    validated = falaj_home / "lake" / "validated" / "fraud"
    for item in later:
        assert not (validated / item.dataset / f"partition={item.partition}").exists(), item
    assert _validated(falaj_home) == earlier

    # And the Data Docs page is there for the operator to read
    docs = Path(urlparse(str(report["data_docs"])).path)
    assert docs.name == "index.html" and docs.is_file()
    assert str(report["data_docs"]) in message


def test_negative_amount_alone_fails_the_range_expectation(
    falaj_home: Path, source: GeneratedData, fraud_spec: UseCaseSpec
) -> None:
    # Given a window where one otherwise valid transaction has a negative amount
    day = source.start.isoformat()
    path = source.source_dir / "transactions" / f"{day}.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[0, "amount_aed"] = "-" + frame.loc[0, "amount_aed"]
    frame.to_csv(path, index=False, lineterminator="\n")
    landed = ingest(fraud_spec, source.start, source.start + timedelta(days=2))
    assert read_landed(fraud_spec, "transactions", day)[0]["amount_aed"].dtype == "float64"

    # When the window is validated
    with pytest.raises(DataValidationError) as caught:
        validate(fraud_spec, _partitions(landed))

    # Then the amount range expectation is the one named, on the right partition, and nothing is published
    message = str(caught.value)
    expected = f"transactions partition={day}: expect_column_values_to_be_between on column 'amount_aed'"
    assert expected in message
    assert "1 unexpected values" in message
    assert not _validated(falaj_home)


def test_duplicate_key_across_two_days_fails_against_the_window(
    falaj_home: Path, source: GeneratedData, fraud_spec: UseCaseSpec
) -> None:
    # Given day 2 repeats day 1's first transaction: each day alone is clean, the window is not
    days = sorted((falaj_home / "source" / "transactions").glob("*.csv"))
    first_row = days[0].read_text().splitlines()[1]
    with days[1].open("a") as handle:
        handle.write(first_row + "\n")
    landed = ingest(fraud_spec, source.start, source.end)

    # When the window is validated
    with pytest.raises(DataValidationError) as failed:
        validate(fraud_spec, _partitions(landed))

    # Then the uniqueness failure is reported against the window's range, and nothing is published
    window = f"partition={source.start.isoformat()}..{(source.end - timedelta(days=1)).isoformat()}"
    assert "expect_column_values_to_be_unique on column 'transaction_id'" in str(failed.value)
    assert window in str(failed.value)
    assert _validated(falaj_home) == {}


def test_a_value_that_cannot_take_its_declared_type_publishes_nothing(fraud_spec: UseCaseSpec) -> None:
    from pipelines.validate import _cast_all

    # Given one partition whose integer column holds a null the suite did not catch
    good = pd.DataFrame({"merchant_id": ["M00001"], "mcc": [5411], "is_online": [1]})
    bad = pd.DataFrame({"merchant_id": ["M00002"], "mcc": [5411], "is_online": [None]})

    # When the window is cast to the spec's types
    typed, failures = _cast_all(
        fraud_spec, {"merchants": [("2026-10-30", good, "v1"), ("2026-10-31", bad, "v1")]}
    )

    # Then the failure names the partition and the caller gets it before anything is written
    assert [failure.partition for failure in failures] == ["2026-10-31"]
    assert "declared types" in str(failures[0])
    assert len(typed) == 1
