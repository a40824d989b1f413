"""A hand-computed point-in-time example: the training set must match it exactly.

Feast (DuckDB offline store) joins the features of the real `fraud` definitions; the expected values
below are worked out by hand from the transactions, not taken from a run.
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import crypto, lake
from pipelines.features import apply_definitions, build_feature_tables
from pipelines.spec import UseCaseSpec
from pipelines.training_set import build_training_set

DAY = datetime(2026, 10, 20, tzinfo=UTC)


def at(hours: float, days: int = 0) -> datetime:
    return DAY + timedelta(days=days, hours=hours)


def seconds(moment: datetime) -> float:
    return moment.timestamp()


TRANSACTIONS = [
    # id, time, customer, amount, label
    ("T1", at(10), "C0000001", 100.0, 0),
    ("T2", at(10.5), "C0000001", 300.0, 1),  # label time: sees T1 only
    ("T3", at(10.5) + timedelta(seconds=1), "C0000001", 900.0, 1),  # one second later: never seen by T2
    ("T4", at(12), "C0000001", 50.0, 0),
    ("T5", at(9, days=-40), "C0000002", 80.0, 0),  # 40 days before T6: older than the 30-day TTL
    ("T6", at(9), "C0000002", 60.0, 0),
]


def write_validated(spec: UseCaseSpec, dataset: str, partition: str, frame: pd.DataFrame) -> None:
    target = lake.partition_dir("validated", spec.name, dataset, partition) / "data.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(target, index=False)


@pytest.fixture
def training_set(falaj_home: Path, fraud_spec: UseCaseSpec) -> pd.DataFrame:
    frame = pd.DataFrame(
        TRANSACTIONS, columns=["transaction_id", "event_timestamp", "customer_id", "amount_aed", "is_fraud"]
    )
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame = frame.assign(
        card_id=frame["customer_id"].str.replace("C", "K1", regex=False),
        merchant_id="M00001",
        currency="AED",
        channel="ecommerce",
        emirate="Dubai",
        merchant_category="electronics",
    )
    for day, part in frame.groupby(frame["event_timestamp"].dt.date):
        write_validated(fraud_spec, "transactions", day.isoformat(), part)
    signup = pd.Timestamp("2026-01-01", tz="UTC")
    write_validated(
        fraud_spec,
        "customers",
        "2026-10-20",
        pd.DataFrame(
            {
                "customer_id": ["C0000001", "C0000002"],
                "credit_limit_aed": [5000.0, 7000.0],
                "date_of_birth": ["1990", "1985"],
                "signup_timestamp": [signup, signup],
            }
        ),
    )
    write_validated(
        fraud_spec,
        "merchants",
        "2026-10-20",
        pd.DataFrame(
            {
                "merchant_id": ["M00001"],
                "mcc": [5732],
                "is_online": [1],
                "created_timestamp": [signup],
            }
        ),
    )
    build_feature_tables(fraud_spec)
    apply_definitions()
    ref = build_training_set(fraud_spec, at(0), at(24))
    data = pd.read_parquet(io.BytesIO(crypto.unseal(Path(ref.uri) / "data.parquet")))
    return data.set_index("transaction_id")


def test_the_label_time_sees_only_what_happened_before_it(training_set: pd.DataFrame) -> None:
    t2 = training_set.loc["T2"]
    # State after T1 (10:00): one transaction in the hour and day, 100 AED spent, mean 100.
    assert (t2.txn_count_1h, t2.txn_count_24h, t2.spend_24h_aed, t2.avg_amount_30d_aed) == (
        1,
        1,
        100.0,
        100.0,
    )
    assert t2.txn_amount_aed == 300.0
    assert t2.amount_vs_avg_30d == pytest.approx(3.0)
    assert t2.minutes_since_last_txn == pytest.approx(30.0)


def test_a_feature_one_second_after_the_label_is_not_used(training_set: pd.DataFrame) -> None:
    # T3 lands one second after T2; T2's row must not include T3's 900 AED, T3's row includes T2's.
    assert training_set.loc["T2"].spend_24h_aed == 100.0
    t3 = training_set.loc["T3"]
    assert (t3.txn_count_1h, t3.spend_24h_aed, t3.avg_amount_30d_aed) == (2, 400.0, 200.0)
    assert t3.minutes_since_last_txn == pytest.approx(1 / 60)


def test_aggregates_are_the_state_after_the_previous_transaction(training_set: pd.DataFrame) -> None:
    t4 = training_set.loc["T4"]
    # At 12:00 the latest state is the one after T3 (10:30:01): T1, T2, T3 within its hour and day.
    # How stale that state is, is what minutes_since_last_txn tells the model.
    assert (t4.txn_count_1h, t4.txn_count_24h, t4.spend_24h_aed) == (3, 3, 1300.0)
    assert t4.minutes_since_last_txn == pytest.approx(90 - 1 / 60)


def test_a_value_older_than_the_ttl_is_null(training_set: pd.DataFrame) -> None:
    t6 = training_set.loc["T6"]
    # C0000002's last behaviour row is 40 days old, past the 30-day TTL: every behaviour feature is null,
    # while the profile (TTL 0, never expires) is still joined.
    assert np.isnan(t6.avg_amount_30d_aed) and np.isnan(t6.minutes_since_last_txn)
    assert t6.credit_limit_aed == 7000.0 and t6.mcc == 5732


def test_every_event_of_the_window_is_a_row_and_the_hash_is_recorded(
    training_set: pd.DataFrame, falaj_home: Path
) -> None:
    assert sorted(training_set.index) == ["T1", "T2", "T3", "T4", "T6"]
    manifests = list((falaj_home / "lake" / "training_sets" / "fraud").glob("*/manifest.json"))
    manifest = lake.read_json(manifests[0])
    assert (
        manifest["sha256"] == hashlib.sha256(crypto.unseal(manifests[0].parent / "data.parquet")).hexdigest()
    )


def test_merchant_activity_is_joined_as_of_the_event(training_set: pd.DataFrame) -> None:
    # Every transaction is at M00001 over the e-commerce channel. As of just before T2 (10:30) the
    # merchant has seen T6 (09:00, 60 AED) and T1 (10:00, 100 AED); T5 is 40 days old, outside 30 days.
    # As of just before T4 (12:00) it has seen T6, T1, T2, T3: 60 + 100 + 300 + 900 over four.
    t2, t4 = training_set.loc["T2"], training_set.loc["T4"]
    assert (t2.merchant_txn_count_24h, t2.merchant_avg_amount_30d_aed) == (2, 80.0)
    assert (t4.merchant_txn_count_24h, t4.merchant_avg_amount_30d_aed) == (4, 340.0)
    assert t4.merchant_ecommerce_share_30d == 1.0


def test_card_velocity_is_joined_and_expires_after_a_day(training_set: pd.DataFrame) -> None:
    t2, t4, t6 = training_set.loc["T2"], training_set.loc["T4"], training_set.loc["T6"]
    # C0000001's card: after T1 one transaction of 100 AED in the hour; after T3, T1 to T3 (1,300 AED).
    assert (t2.card_txn_count_1h, t2.card_spend_1h_aed) == (1, 100.0)
    assert (t4.card_txn_count_1h, t4.card_spend_1h_aed) == (3, 1300.0)
    # C0000002's card was last used 40 days before T6: past the one-day TTL, so missing.
    assert np.isnan(t6.card_txn_count_1h)


def test_building_a_training_set_is_audited_as_a_feature_export(
    training_set: pd.DataFrame, falaj_home: Path
) -> None:
    from pipelines import audit, registry

    with registry.session() as db:
        [event] = [e for e in audit.load(db) if e["action"] == "features.export"]
    sets = falaj_home / "lake" / "training_sets" / "fraud"
    [directory] = [path for path in sets.iterdir() if not path.is_symlink()]
    assert event["resource"] == f"fraud:training_set:{directory.name}"
    assert event["details"]["rows"] == len(training_set) and event["details"]["feature_service"] == "fraud_v2"
