"""Training-set pieces: leakage-free entity times and a time-ordered split."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from pipelines.spec import UseCaseSpec
from pipelines.training_set import SPLIT_COLUMN, assign_splits, entity_frame

START = datetime(2026, 10, 1, tzinfo=UTC)


def _transactions(times: list[datetime]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [f"T{1000 + i}" for i in range(len(times))],
            "event_timestamp": pd.Series(pd.to_datetime(times, utc=True)),
            "customer_id": [f"C{i % 3:07d}" for i in range(len(times))],
            "card_id": [f"K{100000001 + i % 3}" for i in range(len(times))],
            "merchant_id": [f"M{10001 + i % 2}" for i in range(len(times))],
            "amount_aed": [12.5 * (i + 1) for i in range(len(times))],
            "currency": "AED",
            "channel": "pos",
            "emirate": "Dubai",
            "merchant_category": "grocery",
            "is_fraud": [i % 2 for i in range(len(times))],
        }
    )


def test_entity_times_are_one_microsecond_before_each_event(fraud_spec: UseCaseSpec) -> None:
    # Given three labelled transactions, one of them at a fractional second
    times = [
        START + timedelta(hours=10),
        START + timedelta(days=1, seconds=7, microseconds=250_000),
        START + timedelta(days=2, hours=23, minutes=59, seconds=59),
    ]
    transactions = _transactions(times)
    original = transactions.copy()

    # When the entity frame is built
    entity = entity_frame(fraud_spec, transactions)

    # Then each row is timed exactly 1 µs before its event, so the event's own aggregate is not joined
    assert list(entity["event_timestamp"]) == [pd.Timestamp(t) - pd.Timedelta(microseconds=1) for t in times]
    assert (entity["event_timestamp"] < transactions["event_timestamp"]).all()
    # And the request time the server would see is the event's own epoch seconds
    assert entity["request_unix"].tolist() == pytest.approx([t.timestamp() for t in times], abs=1e-6)
    assert entity["request_unix"].iloc[0] == (START + timedelta(hours=10)).timestamp()

    # And it carries the keys, the scoring inputs and the label, nothing else of the source
    assert set(entity.columns) == {
        "customer_id",
        "card_id",
        "merchant_id",
        "transaction_id",
        "amount_aed",
        "channel",
        "is_fraud",
        "request_unix",
        "event_timestamp",
    }
    assert list(entity["is_fraud"]) == [0, 1, 0]
    assert list(entity["transaction_id"]) == list(transactions["transaction_id"])
    # And the caller's frame is left as it was
    pd.testing.assert_frame_equal(transactions, original)


def test_splits_are_time_ordered_with_exact_fractions() -> None:
    # Given 80 events in shuffled order and fractions that are exact in binary (valid 1/4, test 1/8)
    rng = np.random.default_rng(3)
    times = [START + timedelta(minutes=int(m)) for m in rng.permutation(80) * 17]
    frame = _transactions(times).sample(frac=1.0, random_state=5)

    # When the splits are assigned
    split = assign_splits(frame, valid_fraction=0.25, test_fraction=0.125)

    # Then 50 train, 20 valid, 10 test ...
    assert split[SPLIT_COLUMN].value_counts().to_dict() == {"train": 50, "valid": 20, "test": 10}
    # ... and every valid row is later than every train row, every test row later than every valid row
    by = split.groupby(SPLIT_COLUMN)["event_timestamp"]
    assert by.max()["train"] < by.min()["valid"]
    assert by.max()["valid"] < by.min()["test"]
    assert split["event_timestamp"].is_monotonic_increasing
    assert sorted(split["transaction_id"]) == sorted(frame["transaction_id"])


def test_spec_fractions_on_a_larger_frame_are_within_one_row(fraud_spec: UseCaseSpec) -> None:
    # Given 1,000 events and the shipped spec's fractions
    n = 1000
    valid, test = fraud_spec.training_set.valid_fraction, fraud_spec.training_set.test_fraction
    frame = _transactions([START + timedelta(seconds=37 * i) for i in range(n)]).iloc[::-1]

    # When the splits are assigned
    counts = assign_splits(frame, valid, test)[SPLIT_COLUMN].value_counts()

    # Then the sizes match the fractions up to rounding
    assert abs(counts["test"] - test * n) <= 1
    assert abs(counts["valid"] - valid * n) <= 1
    assert counts.sum() == n


def test_ties_in_time_are_broken_by_transaction_id_whatever_the_input_order() -> None:
    # Given 40 events sharing only four distinct timestamps, presented in two different orders
    frame = _transactions([START + timedelta(hours=i % 4) for i in range(40)])
    shuffled = frame.sample(frac=1.0, random_state=11)

    # When both are split
    first = assign_splits(frame, 0.25, 0.25)
    second = assign_splits(shuffled, 0.25, 0.25)

    # Then the result is the same row for row: a training set's hash must not depend on read order
    pd.testing.assert_frame_equal(first, second)
    ids_per_instant = first.groupby("event_timestamp")["transaction_id"]
    assert ids_per_instant.apply(lambda ids: ids.is_monotonic_increasing).all()
