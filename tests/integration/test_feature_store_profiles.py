"""One feature-store suite, two profiles: `local` (SQLite, files) and `prod` (real Redis and PostgreSQL)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines import crypto
from pipelines.features import EPOCH, build_feature_tables, feature_store, materialize
from pipelines.ingest import ingest
from pipelines.settings import get_settings
from pipelines.training_set import build_training_set
from pipelines.validate import validate
from tests.integration.conftest import PROJECT, clear_online, online_dump
from tests.reference_lake import prepare_features

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture
def loaded(profile: str) -> dict[str, Any]:
    """Tiny reference data through ingest, validation, feature tables, apply and one materialization."""
    use_case, data = prepare_features(days=20)
    start = datetime.combine(data.start, datetime.min.time(), UTC)
    end = datetime.combine(data.end, datetime.min.time(), UTC)
    materialize(use_case, start, end)
    return {"spec": use_case, "start": start, "end": end}


def test_online_vector_is_the_latest_offline_row(loaded: dict[str, Any]) -> None:
    behaviour = pd.read_parquet(
        get_settings().lake_dir / "features" / "fraud" / "customer_behaviour" / "data.parquet"
    )
    latest = behaviour.sort_values("event_timestamp").groupby("customer_id").tail(1).set_index("customer_id")
    customers = list(latest.index[:5])
    store = feature_store()
    online = store.get_online_features(
        features=["customer_behaviour:txn_count_24h", "customer_behaviour:avg_amount_30d_aed"],
        entity_rows=[{"customer_id": c} for c in customers],
    ).to_dict()
    assert online["txn_count_24h"] == [int(latest.loc[c, "txn_count_24h"]) for c in customers]
    assert online["avg_amount_30d_aed"] == pytest.approx(
        [float(latest.loc[c, "avg_amount_30d_aed"]) for c in customers]
    )


def test_rerunning_a_window_leaves_the_online_store_byte_for_byte(
    loaded: dict[str, Any], profile: str
) -> None:
    before = online_dump(profile)
    assert before
    materialize(loaded["spec"], loaded["start"], loaded["end"])
    assert online_dump(profile) == before


def test_materialization_writes_what_feasts_own_writer_writes(loaded: dict[str, Any], profile: str) -> None:
    ours = online_dump(profile)
    clear_online(profile)
    store = feature_store()
    for view in store.list_feature_views():
        start = min(loaded["start"], EPOCH) if view.tags.get("kind") == "profile" else loaded["start"]
        store.materialize(start_date=start, end_date=loaded["end"], feature_views=[view.name])
    assert online_dump(profile) == ours


def test_rerunning_an_old_window_keeps_newer_values_the_stream_pushed(loaded: dict[str, Any]) -> None:
    behaviour = pd.read_parquet(
        get_settings().lake_dir / "features" / "fraud" / "customer_behaviour" / "data.parquet"
    )
    pushed = (
        behaviour.sort_values("event_timestamp")
        .tail(1)
        .assign(event_timestamp=loaded["end"] + timedelta(hours=1), txn_count_24h=999)
    )
    store = feature_store()
    store.write_to_online_store("customer_behaviour", pushed.reset_index(drop=True))

    materialize(loaded["spec"], loaded["start"], loaded["end"])

    online = store.get_online_features(
        features=["customer_behaviour:txn_count_24h"],
        entity_rows=[{"customer_id": pushed.iloc[0].customer_id}],
    ).to_dict()
    assert online["txn_count_24h"] == [999]


def test_killed_materialization_rerun_equals_a_clean_run(loaded: dict[str, Any], profile: str) -> None:
    clean = online_dump(profile)
    clear_online(profile)
    command = [
        str(Path(sys.executable).with_name("falaj")),
        "features",
        "materialize",
        "--start",
        f"{loaded['start']:%Y-%m-%d}",
        "--end",
        f"{loaded['end']:%Y-%m-%d}",
    ]
    # Given a materialization killed without warning once its first view is written
    process = subprocess.Popen(command, cwd=PROJECT, env=dict(os.environ), stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if " written" in line:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    partial = online_dump(profile)
    assert partial != clean

    # When it is run again
    rerun = subprocess.run(
        command, cwd=PROJECT, env=dict(os.environ), capture_output=True, text=True, check=False
    )

    # Then the online store is exactly the clean run's: nothing lost, nothing doubled
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert online_dump(profile) == clean


def test_feature_service_serves_and_trains_the_same_features(loaded: dict[str, Any]) -> None:
    store = feature_store()
    service = store.get_feature_service(loaded["spec"].feature_service)
    reference = build_training_set(loaded["spec"], loaded["start"] + timedelta(days=10), loaded["end"])
    row = pd.read_parquet(io.BytesIO(crypto.unseal(Path(reference.uri) / "data.parquet"))).iloc[-1]
    online = store.get_online_features(
        features=service,
        entity_rows=[
            {
                "customer_id": row.customer_id,
                "card_id": row.card_id,
                "merchant_id": row.merchant_id,
                "amount_aed": 100.0,
                "channel": "pos",
                "request_unix": loaded["end"].timestamp(),
            }
        ],
    ).to_dict()
    assert set(reference.features) <= set(online)


def test_the_scorers_reader_answers_what_feast_answers(loaded: dict[str, Any], profile: str) -> None:
    from pipelines.redis_online import OnlineReader, online_reader

    store = feature_store()
    service = store.get_feature_service(loaded["spec"].feature_service)
    behaviour = pd.read_parquet(
        get_settings().lake_dir / "features" / "fraud" / "customer_behaviour" / "data.parquet"
    )
    card = pd.read_parquet(get_settings().lake_dir / "features" / "fraud" / "card_velocity" / "data.parquet")
    merchant = pd.read_parquet(
        get_settings().lake_dir / "features" / "fraud" / "merchant_profile" / "data.parquet"
    )
    at = loaded["end"].timestamp()
    rows = [
        {"customer_id": customer, "card_id": card_id, "merchant_id": merchant_id, "amount_aed": amount,
         "channel": channel, "request_unix": at}
        for customer, card_id, merchant_id, amount, channel in [
            (behaviour.customer_id.iloc[0], card.card_id.iloc[0], merchant.merchant_id.iloc[0], 120.5, "pos"),
            (behaviour.customer_id.iloc[-1], card.card_id.iloc[-1], merchant.merchant_id.iloc[-1], 9.0,
             "ecommerce"),
            ("no-such-customer", "no-such-card", merchant.merchant_id.iloc[1], 50.0, "contactless"),
        ]
    ]  # fmt: skip
    read = online_reader(store, service)
    assert isinstance(getattr(read, "__self__", None), OnlineReader) == (profile == "prod")
    ours = read(rows)
    feasts = store.get_online_features(features=service, entity_rows=rows)
    feasts = feasts.to_dict(include_event_timestamps=True)
    served = {feature.name for view in service.feature_view_projections for feature in view.features}
    assert served <= set(ours)
    for name, values in ours.items():
        assert [None if value != value else value for value in values] == [  # NaN and None alike
            None if value != value else value for value in feasts[name]
        ], name
    assert ours["credit_limit_aed"][2] is None and ours["credit_limit_aed__ts"][2] == 0


def test_cli_lists_describes_and_gets(loaded: dict[str, Any]) -> None:
    import json

    from click.testing import CliRunner

    from pipelines.cli import main

    runner = CliRunner()
    listed = runner.invoke(main, ["features", "list"])
    assert listed.exit_code == 0 and "service   fraud_v1" in listed.output
    described = runner.invoke(main, ["features", "describe", "customer_behaviour"])
    assert described.exit_code == 0 and "ttl 30 days" in described.output
    unknown = runner.invoke(main, ["features", "describe", "no_such_view"])
    assert (
        unknown.exit_code == 1 and "no feature view or feature service named 'no_such_view'" in unknown.output
    )
    behaviour = pd.read_parquet(
        get_settings().lake_dir / "features" / "fraud" / "customer_behaviour" / "data.parquet"
    )
    customer = behaviour.dropna().iloc[-1].customer_id
    got = runner.invoke(
        main,
        [
            "features",
            "get",
            "fraud_v1",
            "--entity",
            f"customer_id={customer}",
            "--entity",
            "merchant_id=M10001",
            "--request",
            "amount_aed=120",
            "--request",
            "channel=pos",
            "--request",
            f"request_unix={loaded['end'].timestamp()}",
        ],
    )
    assert got.exit_code == 0, got.output
    vector = json.loads(got.output)
    assert vector["customer_id"]["value"] == customer
    assert vector["txn_amount_aed"]["value"] == 120.0
    assert vector["txn_count_24h"]["age_seconds"] > 0
    malformed = runner.invoke(main, ["features", "get", "fraud_v1", "--entity", "customer_id"])
    assert malformed.exit_code == 1 and "expected KEY=VALUE" in malformed.output


def test_a_late_correction_reaches_the_online_store_when_its_window_reruns(loaded: dict[str, Any]) -> None:
    # Given the source system corrects the amount of one customer's latest transaction
    use_case = loaded["spec"]
    last_day = (
        get_settings().source_dir / "transactions" / f"{(loaded['end'] - timedelta(days=1)).date()}.csv"
    )
    day = pd.read_csv(last_day, dtype=str)
    corrected_row = day.index[-1]
    customer = day.at[corrected_row, "customer_id"]
    day.at[corrected_row, "amount_aed"] = "4321.00"
    day.to_csv(last_day, index=False)

    # When that window is rerun: land, validate, rebuild the tables, materialize
    landed = ingest(use_case, (loaded["end"] - timedelta(days=1)).date(), loaded["end"].date())
    assert any(item.created for item in landed if item.dataset == "transactions")
    validate(use_case, [(item.dataset, item.partition) for item in landed])
    build_feature_tables(use_case)
    materialize(use_case, loaded["end"] - timedelta(days=1), loaded["end"])

    # Then serving sees the corrected state, though its event time did not change
    behaviour = pd.read_parquet(
        get_settings().lake_dir / "features" / "fraud" / "customer_behaviour" / "data.parquet"
    )
    expected = behaviour[behaviour["customer_id"] == customer].sort_values("event_timestamp").iloc[-1]
    online = (
        feature_store()
        .get_online_features(
            features=["customer_behaviour:spend_24h_aed"], entity_rows=[{"customer_id": customer}]
        )
        .to_dict()
    )
    assert online["spend_24h_aed"] == [pytest.approx(float(expected["spend_24h_aed"]))]
    assert float(expected["spend_24h_aed"]) >= 4321.0
