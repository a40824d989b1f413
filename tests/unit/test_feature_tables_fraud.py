"""Fraud's feature tables, built through the declared-table API, are exactly what they were before it.

The digests were taken from the builders as they were in ``pipelines/features.py`` (before they moved
into ``feature_repo/fraud.py``), on the generated lake below: same columns, dtypes and rows, every value.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.features import build_feature_tables
from pipelines.spec import UseCaseSpec
from tests.unit.test_point_in_time import write_validated

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DIGESTS = {
    "card_velocity": "9e2b3e5ba4a22afbf1c21205e363f8bdc5c776937a56bf6cd383d680df693f85",
    "customer_behaviour": "582f97f29f5cf0b1411121be30c040200bdd7043d7cbf1e4d3552f34b07b5a84",
    "customer_profile": "4962118d9f39f5e7b6cd3a206026056dc484e5056b8d24953a0746d42bcf2bbf",
    "merchant_activity": "18bc645cf0fc2f6effc61c25a4047f3f45d80d2a660f6b649fd00f0e68bc9e42",
    "merchant_profile": "13e0b2942a669154917a187a3f776b6edfbd634ca2cd1b10b4f775de9fb0784a",
}


def table_digest(frame: pd.DataFrame) -> str:
    """Columns, dtypes and every value (floats as their shortest exact repr, NaN as empty)."""
    header = json.dumps([[column, str(dtype)] for column, dtype in frame.dtypes.items()])
    return hashlib.sha256((header + "\n" + frame.to_csv(index=False)).encode()).hexdigest()


def generated_lake(spec: UseCaseSpec, seed: int = 11) -> None:
    """Ten days of transactions (bursts, same-second pairs on a card, all channels) and two snapshots
    of each dimension, the older one different: only the latest may reach the profiles."""
    rng = np.random.default_rng(seed)
    customers = [f"C{n:07d}" for n in range(1, 26)]
    merchants = [f"M{n:05d}" for n in range(1, 9)]
    cards = {
        customer: [f"K1{customer[1:]}{k}" for k in range(1 + (i % 2))] for i, customer in enumerate(customers)
    }
    signup = pd.Timestamp("2025-06-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 200 * 86_400, len(customers)), unit="s"
    )
    customer_frame = pd.DataFrame(
        {
            "customer_id": pd.array(customers, dtype="string"),
            "home_emirate": pd.array(
                rng.choice(["Dubai", "Ajman", "Sharjah"], len(customers)), dtype="string"
            ),
            "date_of_birth": pd.array(
                [str(year) for year in rng.integers(1950, 2006, len(customers))], dtype="string"
            ),
            "credit_limit_aed": np.round(rng.uniform(2_000, 60_000, len(customers)), 2),
            "signup_timestamp": pd.Series(signup),
        }
    )
    merchant_frame = pd.DataFrame(
        {
            "merchant_id": pd.array(merchants, dtype="string"),
            "mcc": rng.choice([5411, 5812, 5999, 4829, 7995], len(merchants)).astype("int64"),
            "is_online": rng.integers(0, 2, len(merchants)).astype("int64"),
            "created_timestamp": pd.Series(
                pd.Timestamp("2024-01-01", tz="UTC")
                + pd.to_timedelta(rng.integers(0, 500 * 86_400, len(merchants)), unit="s")
            ),
        }
    )
    older_customers = customer_frame.iloc[:20].assign(credit_limit_aed=lambda f: f["credit_limit_aed"] * 2)
    write_validated(spec, "customers", "2026-01-10", older_customers)
    write_validated(spec, "customers", "2026-01-19", customer_frame)
    write_validated(spec, "merchants", "2026-01-10", merchant_frame.assign(mcc=5411))
    write_validated(spec, "merchants", "2026-01-19", merchant_frame)

    rows = []
    for day in pd.date_range("2026-01-10", periods=10, tz="UTC"):
        count = int(rng.integers(25, 45))
        for _ in range(count):
            customer = customers[int(rng.integers(len(customers)))]
            rows.append(
                (customer, rng.choice(cards[customer]), day + pd.Timedelta(seconds=int(rng.integers(86_400))))
            )
        burster = customers[int(rng.integers(len(customers)))]  # a burst: five payments within minutes
        start = day + pd.Timedelta(seconds=int(rng.integers(80_000)))
        rows += [(burster, cards[burster][0], start + pd.Timedelta(minutes=3 * k)) for k in range(5)]
        rows.append(rows[-1])  # the same card twice in one second
    frame = pd.DataFrame(rows, columns=["customer_id", "card_id", "event_timestamp"])
    frame = frame.assign(
        transaction_id=pd.array([f"T{n:06d}" for n in range(len(frame))], dtype="string"),
        customer_id=frame["customer_id"].astype("string"),
        card_id=frame["card_id"].astype("string"),
        merchant_id=pd.array(rng.choice(merchants, len(frame)), dtype="string"),
        amount_aed=np.round(rng.lognormal(4.5, 1.0, len(frame)), 2),
        channel=pd.array(rng.choice(["pos", "ecommerce", "contactless"], len(frame)), dtype="string"),
        is_fraud=rng.integers(0, 2, len(frame)).astype("int64"),
    )
    for day, part in frame.groupby(frame["event_timestamp"].dt.date):
        write_validated(spec, "transactions", day.isoformat(), part.reset_index(drop=True))


def test_fraud_tables_are_unchanged_by_the_declared_table_api(
    falaj_home: Path, fraud_spec: UseCaseSpec
) -> None:
    # Given a generated validated lake with several partitions and two snapshots of each dimension
    generated_lake(fraud_spec)
    # When fraud's feature tables are built and written
    rows = build_feature_tables(fraud_spec).rows
    # Then every written table has exactly the columns, dtypes and values the old builders wrote
    written = {
        view: pd.read_parquet(falaj_home / "lake" / "features" / "fraud" / view / "data.parquet")
        for view in rows
    }
    assert {view: len(frame) for view, frame in written.items()} == rows
    assert {view: table_digest(frame) for view, frame in written.items()} == DIGESTS
