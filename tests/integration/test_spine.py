"""The whole loop, end to end, as `make demo` runs it, and what it must never do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.integration.conftest import PROJECT

pytestmark = pytest.mark.integration


def test_demo_scores_five_transactions_over_http(demo_run: dict[str, Any]) -> None:
    summary = demo_run["summary"]
    scores = summary["scores"]
    assert len(scores) == 5
    assert all(0.0 <= row["score"] <= 1.0 and row["model_version"].startswith("fraud:v") for row in scores)
    assert all(row["feature_freshness_seconds"]["customer_behaviour"] >= 0 for row in scores)
    ordinary, suspicious = scores[:3], scores[3:]
    # The demo's last two transactions are takeover-like bursts; the model must rank them above the rest.
    assert max(r["score"] for r in ordinary) < min(r["score"] for r in suspicious)
    for line in (
        "Rows ingested:",
        "Validation:        passed",
        "Gate decision:     PASSED",
        "Endpoint:",
        "Airflow UI:",
    ):
        assert line in demo_run["stdout"]


def test_both_families_trained_with_onnx_parity_and_gate_recorded(demo_run: dict[str, Any]) -> None:
    from pipelines import registry

    models = demo_run["summary"]["models"]
    assert {name.split()[-1] for name in models} == {"lightgbm", "pytorch_mlp"}
    assert all(metrics["parity_max_abs_diff"] < 1e-5 for metrics in models.values())
    with registry.session() as db:
        champion = registry.resolve_alias(db, "fraud", "champion")
        assert champion is not None and champion.bento_tag == demo_run["summary"]["bento_tag"]
        assert champion.training_set_sha256 and champion.feature_service == "fraud_v2"
        assert Path(champion.training_set_uri, "manifest.json").exists()


def test_the_packaged_model_is_signed(demo_run: dict[str, Any], platform_home: Path) -> None:
    from pipelines import signing

    [stored] = [p.parent for p in (platform_home / "bentoml" / "models").glob("fraud-model/*/signature.json")]
    signing.verify_model(stored)
    (stored / "metrics.json").chmod(0o644)
    original = (stored / "metrics.json").read_bytes()
    (stored / "metrics.json").write_bytes(original.replace(b"pr_auc", b"pr_auq"))
    try:
        with pytest.raises(signing.ModelSignatureError, match=r"metrics\.json changed"):
            signing.verify_model(stored)
    finally:
        (stored / "metrics.json").write_bytes(original)


def raw_pii(source: Path) -> list[str]:
    customers = pd.read_csv(source / "customers.csv", dtype=str)
    values = pd.concat(
        [customers[c] for c in ("full_name", "emirates_id", "phone", "email", "date_of_birth")]
    )
    return sorted(set(values.dropna()))


def test_no_raw_pii_or_secret_past_ingest(demo_run: dict[str, Any], platform_home: Path) -> None:
    """grep finds no raw name, Emirates ID, phone, email or birth date, and no secret key, in any file of
    the platform: lake, feature stores, platform and Airflow databases, artifacts, Bentos, logs, reports."""
    needles = [value.encode() for value in raw_pii(platform_home / "source")]
    assert len(needles) > 1000
    for secret in (platform_home / "secrets").rglob("*"):
        # Key material only: public keys, the current-key pointer, used-code markers and locks are not secret.
        if secret.is_file() and secret.suffix not in {".pub", ".last", ".lock"} and secret.name != "current":
            key = secret.read_bytes()
            needles += [key, key.hex().encode()] if len(key) == 32 else [key.strip()]
    files = [
        path
        for path in platform_home.rglob("*")
        if path.is_file() and path.relative_to(platform_home).parts[0] not in {"source", "secrets"}
    ]
    names = {path.name for path in files}
    assert {"online.db", "platform.db", "airflow.db"} <= names and any(p.suffix == ".parquet" for p in files)
    for path in files:
        data = path.read_bytes()
        leaked = [needle for needle in needles if needle in data]
        assert not leaked, f"{path} contains raw PII or a secret, such as {leaked[:1]!r}"


@pytest.fixture(scope="module")
def server(demo_run: dict[str, Any]) -> Any:
    """A client of the served Bento, authenticated as the demo's consumer."""
    from pipelines.demo import bento_server, consumer_api_key, free_port

    with bento_server(demo_run["summary"]["bento_tag"], free_port()) as url:
        with httpx.Client(base_url=url, headers={"X-API-Key": consumer_api_key()}, timeout=30) as client:
            yield client


def known_transaction(demo_run: dict[str, Any], **changes: Any) -> dict[str, Any]:
    first = demo_run["summary"]["scores"][0]
    keys = ("transaction_id", "customer_id", "card_id", "merchant_id", "amount_aed", "channel")
    keys = (*keys, "event_timestamp")
    return {**{key: first[key] for key in keys}, **changes}


@pytest.mark.parametrize(
    ("changes", "status", "reason"),
    [
        ({"amount_aed": -5}, 400, "greater than 0"),
        ({"channel": "teleport"}, 400, "channel"),
        ({"customer_id": "C0000000"}, 404, "no features for customer_id 'C0000000'"),
        ({"merchant_id": "M00000"}, 404, "no features for merchant_id 'M00000'"),
        ({"extra_field": 1}, 400, "extra_field"),
    ],
)
def test_bad_input_gets_a_4xx_with_the_reason(
    server: httpx.Client, demo_run: dict[str, Any], changes: dict[str, Any], status: int, reason: str
) -> None:
    response = server.post("/v1/score", json={"transaction": known_transaction(demo_run, **changes)})
    assert response.status_code == status
    assert reason in response.text


def test_non_json_bodies_are_refused(server: httpx.Client) -> None:
    assert (
        server.post(
            "/v1/score", content=b"not json", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    pickled = server.post(
        "/v1/score",
        content=b"\x80\x04N.",
        headers={"content-type": "application/vnd.bentoml+pickle"},
    )
    assert pickled.status_code == 415


def test_scoring_is_deterministic(server: httpx.Client, demo_run: dict[str, Any]) -> None:
    payload = {"transaction": known_transaction(demo_run)}
    first, second = (server.post("/v1/score", json=payload).json() for _ in range(2))
    assert first["score"] == second["score"] == demo_run["summary"]["scores"][0]["score"]


def test_corrupted_partition_stops_at_validation(
    demo_run: dict[str, Any], platform_home: Path, webhook_sink: tuple[str, list[dict[str, Any]]]
) -> None:
    """Given a corrupted source day, the ingest DAG fails at validation naming the expectation and column,
    alerts the webhook once, and nothing downstream of validation changes."""
    from pipelines.datagen import corrupt_partition

    day = "2026-10-31"
    validated = platform_home / "lake" / "validated" / "fraud" / "transactions" / f"partition={day}"
    features = platform_home / "lake" / "features" / "fraud" / "customer_behaviour" / "data.parquet"
    before = {
        path: path.read_bytes()
        for path in (validated / "data.parquet", validated / "_manifest.json", features)
    }
    corrupt_partition(platform_home / "source" / "transactions" / f"{day}.csv")

    url, alerts = webhook_sink
    env = {**os.environ, "FALAJ_HOME": str(platform_home), "FALAJ_ALERT_WEBHOOK_URL": url}
    probe = (
        "from pipelines.airflow_cli import dags_test\n"
        "dags_test('fraud_ingest', '2026-11-01', {'lookback_days': 1})"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode != 0
    message = completed.stderr
    assert "expect_column_values_to_be_in_type_list on column 'amount_aed'" in message
    assert "expect_column_values_to_not_be_null on column 'customer_id'" in message
    assert f"partition={day}" in message
    assert {path: path.read_bytes() for path in before} == before
    assert len(alerts) == 1
    assert alerts[0]["kind"] == "data_quality" and alerts[0]["severity"] == "high"
    assert (alerts[0]["dag_id"], alerts[0]["task_id"]) == ("fraud_ingest", "validate")
    assert "column 'amount_aed'" in alerts[0]["reason"] and f"partition={day}" in alerts[0]["reason"]


def test_stale_behaviour_is_degraded_per_the_spec(server: httpx.Client, demo_run: dict[str, Any]) -> None:
    """The service's policy: behaviour older than 48 h is scored as missing, and the answer says so."""
    fresh = server.post("/v1/score", json={"transaction": known_transaction(demo_run)}).json()
    assert fresh["degraded"] is False and fresh["stale_views"] == []
    late = known_transaction(demo_run, event_timestamp="2026-11-20T12:00:00+00:00")
    stale = server.post("/v1/score", json={"transaction": late}).json()
    assert stale["degraded"] is True and stale["stale_views"] == ["customer_behaviour"]
    assert stale["feature_freshness_seconds"]["customer_behaviour"] > 48 * 3600
