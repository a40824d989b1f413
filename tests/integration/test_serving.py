"""The scoring service over real HTTP: its front door, A/B, shadow and canary rollouts, refused models."""

from __future__ import annotations

import io
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
from sqlalchemy import select

from bento.guard import PUBLIC, ROUTE_ACTIONS
from pipelines import audit, crypto, registry, rollout
from pipelines.predictions import Prediction
from pipelines.serving_auth import create_api_key

pytestmark = pytest.mark.integration
APPROVER = "risk-officer"
REFRESH_S = 2.5


@pytest.fixture(scope="module")
def served(demo_run: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The demo's Bento served, a consumer and an admin client, and the two registered versions."""
    from pipelines.demo import bento_server, consumer_api_key, free_port

    with registry.session() as db, db.begin():
        champion = registry.resolve_alias(db, "fraud", "champion")
        other = next(v for v in db.scalars(select(registry.ModelVersion)) if v.id != champion.id)
        decision = registry.latest_decision(db, other)
        if decision is None or not decision.passed:
            # The MLP missed the demo gate's floor; the rollout tests need a second servable model.
            db.add(registry.GateDecision(
                use_case="fraud", candidate_id=other.id, champion_id=champion.id, metric="pr_auc",
                candidate_value=0.9, champion_value=0.9, min_value=0.6, min_improvement=-0.02, passed=True,
                reason="test setup", checks=[], decided_by="falaj-system",
            ))  # fmt: skip
        versions = {"champion": champion.version, "other": other.version, "features": list(champion.features)}
    admin_key = create_api_key("falaj-system")
    consumer = consumer_api_key()
    with bento_server(demo_run["summary"]["bento_tag"], free_port()) as url:
        with (
            httpx.Client(base_url=url, headers={"X-API-Key": consumer}, timeout=30) as consumer_client,
            httpx.Client(base_url=url, headers={"X-API-Key": admin_key}, timeout=30) as admin_client,
        ):
            yield {"url": url, "consumer": consumer_client, "admin": admin_client, **versions}


def _feature_rows(served: dict[str, Any], n: int) -> list[dict[str, float]]:
    with registry.session() as db:
        champion = registry.resolve_alias(db, "fraud", "champion")
        uri = champion.training_set_uri
    frame = pd.read_parquet(io.BytesIO(crypto.unseal(Path(uri) / "data.parquet")))
    rows = frame[served["features"]].head(n).astype(float)
    return [{k: (None if np.isnan(v) else v) for k, v in row.items()} for row in rows.to_dict("records")]


def _start(mode: str, served: dict[str, Any], **options: Any) -> int:
    with registry.session() as db, db.begin():
        if rollout.active_experiment(db, "fraud") is not None:
            rollout.stop_experiment(db, "fraud", APPROVER, "next test")
        experiment = rollout.start_experiment(
            db, "fraud", mode, served["other"], APPROVER, f"test {mode}", **options
        )
        experiment_id = experiment.id
    plan = served["admin"].post("/v1/admin/reload", json={"request": {}})
    assert plan.status_code == 200, plan.text
    assert plan.json()["mode"] == mode
    time.sleep(REFRESH_S)  # the other worker process picks the plan up at its next poll
    return experiment_id


def _score(served: dict[str, Any], unit: str, features: dict[str, Any], request_id: str) -> dict[str, Any]:
    body = {"request": {"transaction_id": request_id, "customer_id": unit, "features": features}}
    response = served["consumer"].post("/v1/score/features", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_route_has_a_rule(served: dict[str, Any]) -> None:
    from bento.service import FAST_ROUTES

    document = httpx.get(f"{served['url']}/docs.json").json()
    routes = set(document["paths"])
    assert routes - PUBLIC - set(ROUTE_ACTIONS) == set(), "a route without a rule in bento/guard.py"
    assert set(ROUTE_ACTIONS) | set(FAST_ROUTES) <= routes
    fast = document["paths"]["/v1/score/features"]["post"]
    assert {"X-API-Key", "Authorization"} <= {
        scheme["name"] if scheme["type"] == "apiKey" else "Authorization"
        for scheme in document["components"]["securitySchemes"].values()
    }
    assert fast["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("FeatureVectorBody")
    not_post = served["consumer"].get("/v1/score/features")
    assert not_post.status_code == 405 and not_post.headers["allow"] == "POST"


def test_a_burst_of_new_connections_spreads_over_both_workers(served: dict[str, Any]) -> None:
    # A pool of keep-alive connections opened at once, as a load balancer or a client pool does: on one
    # shared listening socket, the first worker to wake accepted them all (bento/listening.py).
    address = ("127.0.0.1", httpx.URL(served["url"]).port)
    clients = [socket.create_connection(address) for _ in range(32)]
    ours = {client.getsockname()[1] for client in clients}
    try:
        time.sleep(1)
        accepted = Counter(
            held.pid for held in psutil.net_connections("tcp")
            if held.laddr and held.laddr.port == address[1] and held.raddr and held.raddr.port in ours
            and held.pid is not None
        )  # fmt: skip
    finally:
        for client in clients:
            client.close()
    assert sum(accepted.values()) == 32 and len(accepted) == 2, accepted
    assert min(accepted.values()) >= 6, accepted  # 16 each is fair; 32 and 0 was the bug


def test_the_front_door_answers_4xx_never_5xx(served: dict[str, Any], demo_run: dict[str, Any]) -> None:
    url, txn = served["url"], demo_run["summary"]["scores"][0]
    keys = ("transaction_id", "customer_id", "card_id", "merchant_id", "amount_aed", "channel")
    transaction = {key: txn[key] for key in (*keys, "event_timestamp")}
    unauthenticated = httpx.post(f"{url}/v1/score", json={"transaction": transaction})
    assert unauthenticated.status_code == 401 and "www-authenticate" in unauthenticated.headers
    forbidden = served["consumer"].post("/v1/admin/plan", json={"request": {}})
    assert forbidden.status_code == 403 and "endpoint.admin" in forbidden.text
    pickled = served["consumer"].post(
        "/v1/score", content=b"\x80\x04N.", headers={"content-type": "application/vnd.bentoml+pickle"}
    )
    assert pickled.status_code == 415
    huge = served["consumer"].post("/v1/score/batch", json={"transactions": [transaction] * 5000})
    assert huge.status_code == 413
    bad = served["consumer"].post("/v1/score", json={"transaction": {**transaction, "amount_aed": "lots"}})
    assert bad.status_code == 400 and "amount_aed" in bad.text
    vector = {"transaction_id": "v1", "customer_id": "C1", "features": {}}
    unknown = served["consumer"].post("/v1/score/features", json={"request": {**vector, "colour": "red"}})
    assert unknown.status_code == 400 and "colour" in unknown.text
    missing = served["consumer"].post("/v1/score/features", json={"request": vector})
    assert missing.status_code == 422 and "features missing" in missing.text
    batch = served["consumer"].post("/v1/score/batch", json={"transactions": [transaction] * 3})
    assert batch.status_code == 200 and len(batch.json()) == 3
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with registry.session() as db:
            denied = [
                e for e in audit.load(db) if e["outcome"] == "denied" and e["action"] == "endpoint.admin"
            ]
        if denied:
            break
        time.sleep(0.2)
    assert denied and denied[-1]["actor"] == "scoring-client"


def test_ab_assignment_is_sticky_at_the_configured_weight(served: dict[str, Any]) -> None:
    experiment_id = _start("ab", served, weight=0.3)
    [features] = _feature_rows(served, 1)
    arms = {f"C{n:06d}": _score(served, f"C{n:06d}", features, f"ab-{n}")["arm"] for n in range(10_000)}
    share = sum(arm == "challenger" for arm in arms.values()) / len(arms)
    assert abs(share - 0.3) < 4 * (0.3 * 0.7 / len(arms)) ** 0.5
    metrics = httpx.get(f"{served['url']}/metrics").text
    served_lines = [line for line in metrics.splitlines() if line.startswith("falaj_predictions_total{")]
    assert any('arm="challenger"' in line and 'mode="ab"' in line for line in served_lines), served_lines
    for unit in list(arms)[:200]:  # the same customer gets the same arm again
        again = _score(served, unit, features, f"ab-again-{unit}")
        assert again["arm"] == arms[unit] and again["experiment_id"] == experiment_id
        assert (
            again["model_version"]
            == f"fraud:v{served['other' if arms[unit] == 'challenger' else 'champion']}"
        )


def test_a_shadow_scores_a_copy_and_never_answers(served: dict[str, Any]) -> None:
    _start("shadow", served)
    rows = _feature_rows(served, 50)
    answers = [_score(served, f"S{n}", row, f"shadow-{n}") for n, row in enumerate(rows)]
    assert {a["arm"] for a in answers} == {"champion"}
    assert {a["model_version"] for a in answers} == {f"fraud:v{served['champion']}"}
    deadline, shadows = time.monotonic() + 10, []
    while time.monotonic() < deadline and len(shadows) < len(rows):
        with registry.session() as db:
            shadows = list(db.scalars(select(Prediction).where(Prediction.request_id.like("shadow-%"),
                                                               Prediction.shadow.is_(True))))  # fmt: skip
        time.sleep(0.2)
    assert len(shadows) == len(rows)
    assert {row.model_version for row in shadows} == {served["other"]}
    assert all(row.score is not None and row.unit.startswith("ps_") for row in shadows)


def test_a_canary_that_breaches_its_budget_rolls_itself_back(served: dict[str, Any]) -> None:
    # A latency budget no model can meet: the challenger is too slow for it.
    experiment_id = _start(
        "canary", served, steps=[0.5, 1.0], budget={"max_p99_ms": 0.0001, "min_requests": 20}
    )
    [features] = _feature_rows(served, 1)
    deadline, n, plan = time.monotonic() + 30, 0, {}
    while time.monotonic() < deadline:
        _score(served, f"K{n}", features, f"canary-{n}")
        n += 1
        if n % 50 == 0:
            plan = served["admin"].post("/v1/admin/plan", json={"request": {}}).json()
            if plan["mode"] == "none":
                break
    assert plan.get("mode") == "none", plan
    with registry.session() as db:
        [experiment] = [e for e in rollout.experiments(db, "fraud") if e.id == experiment_id]
        assert experiment.status == "rolled_back" and experiment.ended_by == "falaj-scorer"
        rolled = [
            e for e in audit.load(db) if e["actor"] == "falaj-scorer" and e["action"] == "model.experiment"
        ]
    assert rolled and "p99" in rolled[-1]["reason"]
    after = _score(served, "K-after", features, "canary-after")
    assert after["arm"] == "champion"


def test_a_tampered_challenger_is_refused_and_the_champion_keeps_serving(served: dict[str, Any]) -> None:
    with registry.session() as db:
        other = registry.find_version(db, "fraud", served["other"])
    sealed = crypto.sealed_path(Path(other.artifact_uri) / "model.onnx")
    original = sealed.read_bytes()
    try:
        sealed.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with registry.session() as db, db.begin():
            if rollout.active_experiment(db, "fraud") is not None:
                rollout.stop_experiment(db, "fraud", APPROVER, "next test")
            rollout.start_experiment(db, "fraud", "ab", served["other"], APPROVER, "tampered", weight=0.9)
        plan = served["admin"].post("/v1/admin/reload", json={"request": {}}).json()
        time.sleep(REFRESH_S)
        assert plan["challenger"] is None
        assert any(f"fraud:v{served['other']}" in problem for problem in plan["problems"])
        [features] = _feature_rows(served, 1)
        answers = [_score(served, f"T{n}", features, f"tampered-{n}") for n in range(30)]
        assert {a["arm"] for a in answers} == {"champion"}
    finally:
        sealed.write_bytes(original)
        with registry.session() as db, db.begin():
            rollout.stop_experiment(db, "fraud", APPROVER, "tamper test over")


def test_https_with_the_dev_certificates(served: dict[str, Any], demo_run: dict[str, Any]) -> None:
    from pipelines.certs import make_dev_certificates
    from pipelines.demo import bento_server, consumer_api_key, free_port

    certificates = make_dev_certificates()
    [features] = _feature_rows(served, 1)
    body = {"request": {"transaction_id": "tls-1", "customer_id": "C1", "features": features}}
    with bento_server(demo_run["summary"]["bento_tag"], free_port(), tls=certificates) as url:
        assert url.startswith("https://")
        answer = httpx.post(f"{url}/v1/score/features", json=body, headers={"X-API-Key": consumer_api_key()},
                            verify=str(certificates.ca_cert))  # fmt: skip
        assert answer.status_code == 200 and answer.json()["arm"] == "champion"
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/readyz")  # the system's trust store does not know the dev CA
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https://", "http://") + "/readyz")  # no plaintext on the TLS port
