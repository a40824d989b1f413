"""Fraud's feature-view inputs: rolling behaviour per customer (right-closed windows) and the two profiles.

The builders are taken from ``feature_repo/fraud.py`` as the pipeline loads it (`use_case_module`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from pipelines.features import use_case_module

A, B, C = "C0000001", "C0000002", "C0000003"


def _ts(*args: int) -> pd.Timestamp:
    return pd.Timestamp(datetime(*args, tzinfo=UTC))  # type: ignore[misc]


@pytest.fixture
def fraud() -> ModuleType:
    """The fraud use case's feature module, whose ``@feature_table`` builders are tested here."""
    return use_case_module("fraud")


@pytest.fixture
def customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.array([A, B, C], dtype="string"),
            "signup_timestamp": pd.Series([_ts(2026, 1, 1, 9), _ts(2025, 12, 31, 8), _ts(2025, 6, 1)]),
            "credit_limit_aed": [5000.0, 12000.0, 2000.0],
            "date_of_birth": pd.array(["1985", "1990", "2001"], dtype="string"),
            "emirates_id": ["ps_" + "a" * 32, "ps_" + "b" * 32, "ps_" + "c" * 32],
            "home_emirate": ["Dubai", "Ajman", "Fujairah"],
        }
    )


@pytest.fixture
def transactions() -> pd.DataFrame:
    # A's and B's rows interleaved and out of time order, as a concat of day files could leave them
    rows = [
        (A, _ts(2026, 1, 1, 11, 0), 30.0),
        (B, _ts(2026, 1, 2, 11, 0), 50.0),
        (A, _ts(2026, 1, 1, 10, 0), 10.0),
        (B, _ts(2026, 1, 1, 10, 15), 100.0),
        (A, _ts(2026, 1, 1, 12, 0), 40.0),
        (A, _ts(2026, 1, 1, 10, 30), 20.0),
    ]
    return pd.DataFrame(
        {
            "transaction_id": [f"T{i}" for i in range(len(rows))],
            "customer_id": pd.array([row[0] for row in rows], dtype="string"),
            "event_timestamp": pd.Series([row[1] for row in rows]),
            "amount_aed": [row[2] for row in rows],
            "channel": "pos",
        }
    )


def test_customer_behaviour_rolls_right_closed_windows_per_customer(
    fraud: ModuleType, transactions: pd.DataFrame, customers: pd.DataFrame
) -> None:
    # Given A paying 10, 20, 30, 40 AED at 10:00, 10:30, 11:00, 12:00 on 1 Jan,
    # and B paying 100 at 10:15 on 1 Jan and 50 at 11:00 on 2 Jan (24 h 45 min later)

    # When the behaviour table is built
    table = fraud.customer_behaviour_table(transactions, customers)

    # Then each transaction row holds the state just after it, windows (t - w, t]:
    # A at 11:00 counts 10:30 and 11:00 but not 10:00 (left edge open); at 12:00 only itself.
    rows = table[table["last_txn_unix"].notna()]
    got = list(
        zip(
            rows["customer_id"],
            rows["event_timestamp"],
            rows["txn_count_1h"],
            rows["txn_count_24h"],
            rows["spend_24h_aed"],
            rows["avg_amount_30d_aed"],
            strict=True,
        )
    )
    assert got == [
        (A, _ts(2026, 1, 1, 10, 0), 1, 1, 10.0, 10.0),
        (A, _ts(2026, 1, 1, 10, 30), 2, 2, 30.0, 15.0),
        (A, _ts(2026, 1, 1, 11, 0), 2, 3, 60.0, 20.0),
        (A, _ts(2026, 1, 1, 12, 0), 1, 4, 100.0, 25.0),
        (B, _ts(2026, 1, 1, 10, 15), 1, 1, 100.0, 100.0),
        # B's first payment left the 24 h window, but not the 30-day one
        (B, _ts(2026, 1, 2, 11, 0), 1, 1, 50.0, 75.0),
    ]
    assert list(rows["last_txn_unix"]) == [ts.timestamp() for ts in rows["event_timestamp"]]
    assert table["txn_count_1h"].dtype == table["txn_count_24h"].dtype == "int64"


def test_every_customer_gets_an_opening_row_at_signup(
    fraud: ModuleType, transactions: pd.DataFrame, customers: pd.DataFrame
) -> None:
    # Given three customers, one of whom (C) never paid
    # When the behaviour table is built
    table = fraud.customer_behaviour_table(transactions, customers)

    # Then there is one opening row per customer at sign-up: zero counts and spend, no average, no last txn
    opening = table[table["last_txn_unix"].isna()]
    assert list(opening["customer_id"]) == [A, B, C]
    assert list(opening["event_timestamp"]) == list(customers["signup_timestamp"])
    assert (opening[["txn_count_1h", "txn_count_24h"]] == 0).all().all()
    assert (opening["spend_24h_aed"] == 0.0).all()
    assert opening["avg_amount_30d_aed"].isna().all()

    # And the table is ordered by customer then time, each opening row before that customer's payments
    assert len(table) == len(transactions) + len(customers)
    assert list(table["customer_id"]) == [A] * 5 + [B] * 3 + [C]
    for _, group in table.groupby("customer_id"):
        assert group["event_timestamp"].is_monotonic_increasing
        assert np.isnan(group["last_txn_unix"].iloc[0])


def test_customer_profile_keeps_birth_year_and_no_identifiers(
    fraud: ModuleType, customers: pd.DataFrame
) -> None:
    # Given validated customers with pseudonymized identifiers and birth years as text
    # When the profile table is built
    profile = fraud.customer_profile_table(customers)

    # Then it carries only the profile features, keyed by sign-up time, birth year as an integer
    assert list(profile.columns) == ["customer_id", "event_timestamp", "credit_limit_aed", "birth_year"]
    assert list(profile["birth_year"]) == [1985, 1990, 2001]
    assert profile["birth_year"].dtype == "int64"
    assert list(profile["event_timestamp"]) == list(customers["signup_timestamp"])
    assert list(profile["credit_limit_aed"]) == [5000.0, 12000.0, 2000.0]


def test_merchant_profile_renames_and_types_its_columns(fraud: ModuleType) -> None:
    # Given validated merchants
    merchants = pd.DataFrame(
        {
            "merchant_id": ["M10001", "M10002"],
            "merchant_name": ["Gulf Grill Deira", "Souq Online Deals Online"],
            "merchant_category": ["restaurant", "online_marketplace"],
            "mcc": [5812, 5399],
            "emirate": ["Dubai", "Dubai"],
            "is_online": [0, 1],
            "created_timestamp": pd.Series([_ts(2020, 3, 1), _ts(2022, 7, 15)]),
        }
    )

    # When the profile table is built
    profile = fraud.merchant_profile_table(merchants)

    # Then it holds the id, the time the profile began, the MCC and an integer online flag
    assert list(profile.columns) == ["merchant_id", "event_timestamp", "mcc", "merchant_is_online"]
    assert list(profile["merchant_is_online"]) == [0, 1]
    assert profile["merchant_is_online"].dtype == "int64"
    assert list(profile["event_timestamp"]) == list(merchants["created_timestamp"])


def test_two_events_in_the_same_second_leave_one_row_that_counts_both(fraud: ModuleType) -> None:
    # Given a card used twice within the same second
    at = pd.Timestamp("2026-10-20T10:00:00", tz="UTC")
    transactions = pd.DataFrame(
        {
            "card_id": ["K100000001"] * 3,
            "event_timestamp": [at - pd.Timedelta(minutes=5), at, at],
            "amount_aed": [10.0, 20.0, 30.0],
        }
    )
    # When its velocity is computed
    rows = fraud.card_velocity_table(transactions)
    # Then the instant has one row, the state after both (so a point-in-time join has one answer)
    assert list(rows["card_txn_count_1h"]) == [1, 3]
    assert list(rows["card_spend_1h_aed"]) == [10.0, 60.0]
