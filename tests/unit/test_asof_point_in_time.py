"""The DuckDB ASOF join returns what Feast's own point-in-time join returns, value for value."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from pipelines.features import feature_store, read_validated
from pipelines.point_in_time import asof_retrieval_job, historical_features
from pipelines.training_set import entity_frame
from tests.reference_lake import prepare_features

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def edge_events(transactions: pd.DataFrame) -> pd.DataFrame:
    """Events placed where a point-in-time join can go wrong, beside the generated ones."""
    last = transactions.sort_values("event_timestamp").groupby("customer_id").tail(1).iloc[0]
    one_us = pd.Timedelta(microseconds=1)

    def event(suffix: str, at: pd.Timestamp, **changes: str) -> pd.Series:
        row = last.copy()
        row["transaction_id"], row["event_timestamp"] = f"EDGE-{suffix}", at
        for column, value in changes.items():
            row[column] = value
        return row

    at_last = last["event_timestamp"]
    return pd.DataFrame(
        [
            # entity time = feature time + 1 µs (the entity frame steps back 1 µs): the row itself is seen
            event("same-instant", at_last),
            # two events of the same keys at the same instant: both rows kept, both joined alike
            event("tie-a", at_last + pd.Timedelta(hours=2)),
            event("tie-b", at_last + pd.Timedelta(hours=2)),
            # the card's 1-day TTL: at exactly the TTL still fresh, a microsecond later missing
            event("ttl-edge", at_last + pd.Timedelta(days=1) + one_us),
            event("ttl-past", at_last + pd.Timedelta(days=1) + 2 * one_us),
            # 40 days later: customer and merchant behaviour (30 days) missing too, profiles still there
            event("stale", at_last + pd.Timedelta(days=40)),
            # keys no feature row has: every feature missing
            event("unknown", at_last, customer_id="C9999999", card_id="K999999999", merchant_id="M99999"),
            # before any feature row of the entity existed
            event("before", at_last - pd.Timedelta(days=3650)),
        ]
    ).astype(transactions.dtypes.to_dict())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, pd.DataFrame]]:
    from tests.homes import falaj_home

    with falaj_home(tmp_path_factory.mktemp("asof") / "home"):
        spec, _ = prepare_features(days=15)
        transactions = read_validated(spec, spec.training_set.entity_source)
        transactions = pd.concat([transactions, edge_events(transactions)], ignore_index=True)
        yield spec, entity_frame(spec, transactions)


def test_the_asof_join_equals_feasts_historical_features(prepared: tuple[Any, pd.DataFrame]) -> None:
    spec, entities = prepared
    store = feature_store()
    service = store.get_feature_service(spec.feature_service)
    feast_job = store.get_historical_features(entity_df=entities, features=service)

    ours = historical_features(store, entities, spec.feature_service)
    theirs = feast_job.to_df()

    # Then the joined tables have Feast's schema (names, order, types) before the on-demand views
    assert (
        asof_retrieval_job(store, entities, service)
        ._to_arrow_internal()
        .schema.equals(feast_job._to_arrow_internal().schema)
    )
    # And the frames are equal, value for value, once in the same order (Feast's is unspecified)
    in_order = [frame.sort_values("transaction_id").reset_index(drop=True) for frame in (ours, theirs)]
    pd.testing.assert_frame_equal(*in_order, check_exact=True)
    by_id = in_order[0].set_index("transaction_id")
    # And the edge events came out as the point-in-time rules say, so the equality covers them
    assert by_id.loc["EDGE-same-instant", "txn_count_1h"] >= 1
    assert by_id.loc["EDGE-tie-a"].equals(by_id.loc["EDGE-tie-b"])
    assert not pd.isna(by_id.loc["EDGE-ttl-edge", "card_txn_count_1h"])
    assert pd.isna(by_id.loc["EDGE-ttl-past", "card_txn_count_1h"])
    stale = by_id.loc["EDGE-stale"]
    assert pd.isna(stale[["avg_amount_30d_aed", "merchant_txn_count_24h", "minutes_since_last_txn"]]).all()
    assert not pd.isna(stale[["credit_limit_aed", "mcc"]]).any()
    features = [column for column in by_id.columns if column not in entities.columns]
    unknown = by_id.loc["EDGE-unknown", features]
    assert unknown.drop(["txn_amount_aed", "is_ecommerce"]).isna().all()
    assert by_id.loc["EDGE-before", ["txn_count_1h", "credit_limit_aed", "mcc"]].isna().all()
    # And the generated events include rows Feast leaves missing for the card's TTL
    assert by_id["card_txn_count_1h"].isna().sum() > 100


def test_the_rows_come_back_in_the_entity_frames_order(prepared: tuple[Any, pd.DataFrame]) -> None:
    spec, entities = prepared
    shuffled = entities.sample(frac=1.0, random_state=7)

    joined = historical_features(feature_store(), shuffled, spec.feature_service)

    assert joined["transaction_id"].tolist() == shuffled["transaction_id"].tolist()
