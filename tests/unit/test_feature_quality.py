"""Feature tables pass their own suites before anything is published."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.features import build_feature_tables
from pipelines.spec import UseCaseSpec
from pipelines.validate import DataValidationError
from tests.unit.test_point_in_time import write_validated

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SIGNUP = pd.Timestamp("2026-01-01", tz="UTC")


def lake_with_birth_year(spec: UseCaseSpec, year: str) -> None:
    write_validated(
        spec,
        "transactions",
        "2026-10-20",
        pd.DataFrame(
            {
                "transaction_id": ["T1"],
                "event_timestamp": [pd.Timestamp("2026-10-20T10:00", tz="UTC")],
                "customer_id": ["C0000001"],
                "card_id": ["K100000001"],
                "merchant_id": ["M00001"],
                "amount_aed": [50.0],
                "channel": ["pos"],
            }
        ),
    )
    write_validated(
        spec,
        "customers",
        "2026-10-20",
        pd.DataFrame(
            {
                "customer_id": ["C0000001"],
                "credit_limit_aed": [5000.0],
                "date_of_birth": [year],
                "signup_timestamp": [SIGNUP],
            }
        ),
    )
    write_validated(
        spec,
        "merchants",
        "2026-10-20",
        pd.DataFrame(
            {
                "merchant_id": ["M00001"],
                "mcc": [5411],
                "is_online": [0],
                "created_timestamp": [SIGNUP],
            }
        ),
    )


def test_good_tables_are_published(falaj_home: Path, fraud_spec: UseCaseSpec) -> None:
    lake_with_birth_year(fraud_spec, "1990")
    assert build_feature_tables(fraud_spec).rows == {
        "customer_behaviour": 2,
        "card_velocity": 1,
        "merchant_activity": 1,
        "customer_profile": 1,
        "merchant_profile": 1,
    }
    assert (falaj_home / "lake" / "features" / "fraud" / "customer_profile" / "data.parquet").exists()


def test_a_failed_feature_expectation_publishes_no_table(falaj_home: Path, fraud_spec: UseCaseSpec) -> None:
    # Given a birth year no customer can have
    lake_with_birth_year(fraud_spec, "1850")
    # When the feature tables are built
    with pytest.raises(DataValidationError) as failed:
        build_feature_tables(fraud_spec)
    # Then the failure names the view, expectation and column, and nothing was written for any view
    assert "customer_profile partition=all: expect_column_values_to_be_between on column 'birth_year'" in str(
        failed.value
    )
    assert not (falaj_home / "lake" / "features").exists()
