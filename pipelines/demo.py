"""`falaj demo`: the whole loop on the embedded default, driven through Airflow, scored over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import airflow_cli, lake, registry
from pipelines.datagen import SIZES, generate
from pipelines.features import read_validated
from pipelines.settings import get_settings
from pipelines.spec import load_spec

if TYPE_CHECKING:
    from pipelines.certs import DevCertificates

DATA_END = date(2026, 11, 1)
DATA_DAYS = 60


@dataclass
class DemoSummary:
    rows_ingested: dict[str, int] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    models: dict[str, dict[str, float]] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    approval: str = ""
    bento_tag: str = ""
    endpoint: str = ""
    scores: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def step(number: int, total: int, text: str) -> float:
    print(f"[{number}/{total}] {text} ...", flush=True)
    return time.monotonic()


def done(started: float, detail: str = "") -> float:
    seconds = time.monotonic() - started
    print(f"      done in {seconds:.1f}s{' - ' + detail if detail else ''}", flush=True)
    return seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def bento_server(
    bento_tag: str,
    port: int,
    timeout_s: float = 180,
    tls: DevCertificates | None = None,
    env: dict[str, str] | None = None,
    log_name: str = "bento-serve.log",
) -> Iterator[str]:
    """Serve a built Bento on loopback until the block ends; yields its base URL once ready.

    With ``tls`` (``falaj certs dev``'s files) it serves HTTPS only, and readiness is checked against
    that CA. ``env`` adds to this process's environment; the server logs to ``logs/<log_name>``.
    """
    import httpx

    from pipelines.packaging import bentoml_home

    env = {
        **os.environ,
        "BENTOML_HOME": str(bentoml_home()),
        "FALAJ_HOME": str(get_settings().home.resolve()),
        **(env or {}),
    }
    log = get_settings().home / "logs" / log_name
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        str(Path(sys.executable).with_name("bentoml")),
        "serve",
        bento_tag,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if tls is not None:
        argv += ["--ssl-certfile", str(tls.server_cert), "--ssl-keyfile", str(tls.server_key)]
    with log.open("w") as out:
        server = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    verify: Any = str(tls.ca_cert) if tls else True
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"bentoml serve exited {server.returncode}; see {log}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2, verify=verify).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"bento server not ready after {timeout_s}s; see {log}")
            time.sleep(0.5)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def demo_transactions(use_case: str) -> list[dict[str, Any]]:
    """Five new transactions just after the data window: three ordinary, two that look like a takeover."""
    import pandas as pd

    behaviour = pd.read_parquet(lake.zone_dir("features", use_case, "customer_behaviour") / "data.parquet")
    merchants = pd.read_parquet(
        sorted(lake.zone_dir("validated", use_case, "merchants").glob("partition=*/data.parquet"))[-1]
    )
    latest = (
        behaviour.dropna(subset=["last_txn_unix"])
        .sort_values("event_timestamp")
        .groupby("customer_id")
        .tail(1)
    )
    latest = latest[latest["avg_amount_30d_aed"] > 0].sort_values("event_timestamp").tail(5)
    transactions = read_validated(load_spec(use_case), "transactions")
    card_of = transactions.sort_values("event_timestamp").groupby("customer_id")["card_id"].last()
    store = merchants[merchants["is_online"] == 0].iloc[0]
    online = merchants[merchants["is_online"] == 1].iloc[0]
    rows = []
    for index, customer in enumerate(latest.itertuples()):
        suspicious = index >= 3
        last = datetime.fromtimestamp(float(customer.last_txn_unix), tz=UTC)
        rows.append(
            {
                "transaction_id": f"DEMO-{index + 1:03d}",
                "customer_id": customer.customer_id,
                "card_id": str(card_of[customer.customer_id]),
                "merchant_id": online.merchant_id if suspicious else store.merchant_id,
                "amount_aed": round(float(customer.avg_amount_30d_aed) * (6.5 if suspicious else 0.9), 2),
                "channel": "ecommerce" if suspicious else "pos",
                "event_timestamp": (last + timedelta(minutes=2 if suspicious else 90)).isoformat(),
            }
        )
    return rows


def consumer_api_key() -> str:
    """The demo consumer's API key (user ``scoring-client``), made once, kept owner-only in the home."""
    import os

    from pipelines.serving_auth import create_api_key

    path = get_settings().secrets_dir / "scoring-client.api-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(create_api_key("scoring-client"))
    return path.read_text().strip()


def score_over_http(url: str, transactions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import httpx

    results = []
    headers = {"X-API-Key": consumer_api_key()}
    with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        for transaction in transactions:
            response = client.post("/v1/score", json={"transaction": transaction})
            response.raise_for_status()
            results.append({**transaction, **response.json()})
    return results


def collect(summary: DemoSummary, use_case: str) -> None:
    """Read what the run left behind: landing manifests, the validation report, the registry."""
    for manifest in lake.zone_dir("landing", use_case, "").glob("*/partition=*/_manifest.json"):
        dataset = manifest.parent.parent.name
        summary.rows_ingested[dataset] = summary.rows_ingested.get(dataset, 0) + int(
            lake.read_json(manifest)["rows"]
        )
    report = get_settings().reports_dir / "validation" / f"{use_case}.json"
    summary.validation = lake.read_json(report) if report.exists() else {}
    with registry.session() as db:
        from sqlalchemy import select

        decision = db.scalar(
            select(registry.GateDecision)
            .where(registry.GateDecision.use_case == use_case)
            .order_by(registry.GateDecision.id.desc())
            .limit(1)
        )
        if decision is not None:
            summary.gate = {"passed": decision.passed, "reason": decision.reason}
            candidate = db.get(registry.ModelVersion, decision.candidate_id)
            summary.gate["candidate"] = f"{candidate.tag} ({candidate.family})" if candidate else "?"
            set_sha = candidate.training_set_sha256 if candidate else ""
            for version in db.scalars(
                select(registry.ModelVersion).where(registry.ModelVersion.training_set_sha256 == set_sha)
            ):
                summary.models[f"{version.tag} {version.family}"] = {
                    "roc_auc": version.metrics["roc_auc"],
                    "pr_auc": version.metrics["pr_auc"],
                    "parity_max_abs_diff": version.parity_max_abs_diff,
                }
        champion = registry.resolve_alias(db, use_case, "champion")
        summary.bento_tag = champion.bento_tag or "" if champion else ""


def print_summary(summary: DemoSummary) -> None:
    home = get_settings().home.resolve()
    print("\n=== Falaj demo summary ===")
    print("Rows ingested:     " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary.rows_ingested.items())))
    v = summary.validation
    print(
        f"Validation:        {'passed' if v.get('success') else 'FAILED'}: {v.get('partitions')} partitions, "
        f"{v.get('rows', 0):,} rows, {v.get('expectations_evaluated')} expectations"
    )
    print(f"Data Docs:         {v.get('data_docs')}")
    for name, metrics in summary.models.items():
        print(
            f"Model {name:<22} ROC-AUC {metrics['roc_auc']:.4f}  PR-AUC {metrics['pr_auc']:.4f}  "
            f"ONNX parity {metrics['parity_max_abs_diff']:.1e}"
        )
    print(
        f"Gate decision:     {'PASSED' if summary.gate.get('passed') else 'REFUSED'} for "
        f"{summary.gate.get('candidate')}: {summary.gate.get('reason')}"
    )
    print(f"Approval:          {summary.approval}")
    print(f"Bento:             {summary.bento_tag}")
    print(
        f"Endpoint:          POST {summary.endpoint}/v1/score (stopped now; serve it again with\n"
        f"                   BENTOML_HOME={home}/bentoml FALAJ_HOME={home} "
        f".venv/bin/bentoml serve {summary.bento_tag})"
    )
    print("Scored transactions:")
    for row in summary.scores:
        freshest = min(age for age in row["feature_freshness_seconds"].values() if age is not None)
        print(
            f"  {row['transaction_id']} {row['customer_id']} {row['amount_aed']:>10,.2f} AED "
            f"{row['channel']:<11} score {row['score']:.4f} -> {row['decision']:<7} ({row['model_version']}, "
            f"behaviour features {freshest / 60:.0f} min old)"
        )
    print(f"Airflow UI:        FALAJ_HOME={home} .venv/bin/falaj up   (stop it with `falaj down`)")
    print("                   then open http://localhost:8080 with the login it prints")
    print("Timings (s):       " + ", ".join(f"{k} {v:.1f}" for k, v in summary.timings.items()))


DEMO_APPROVER = "demo-approver"


def approve_challenger(use_case: str) -> str:
    """Promote the gate's challenger as a second person would; the trainer's own approval is refused."""
    with registry.session() as db, db.begin():
        challenger = registry.resolve_alias(db, use_case, "challenger")
        champion = registry.resolve_alias(db, use_case, "champion")
        if challenger is None or (champion is not None and champion.id == challenger.id):
            return f"nothing awaits approval; champion {champion.tag if champion else 'none'}"
        registry.promote(db, use_case, challenger.version, DEMO_APPROVER, "make demo: the gate passed")
        return f"{challenger.tag} approved by {DEMO_APPROVER} (trained by {challenger.created_by})"


def run_demo(size: str = "demo", use_case: str = "fraud") -> DemoSummary:
    """Generate data, run the ingest, features and training DAGs, serve the Bento, score five transactions."""
    spec = load_spec(use_case)
    summary = DemoSummary()
    logical_date = DATA_END.isoformat()
    conf = {"lookback_days": DATA_DAYS}
    total = 8

    started = step(1, total, f"generating {SIZES[size]:,} {use_case} transactions over {DATA_DAYS} days")
    data = generate(get_settings().source_dir, SIZES[size], days=DATA_DAYS, end=DATA_END)
    summary.timings["generate"] = done(
        started,
        f"{data.n_customers:,} customers, {data.n_merchants:,} merchants, fraud rate {data.fraud_rate:.2%}",
    )
    started = step(2, total, "preparing Airflow metadata (SQLite)")
    airflow_cli.migrate()
    summary.timings["airflow_db"] = done(started)
    for number, stage in enumerate(("ingest", "features", "training"), start=3):
        started = step(number, total, f"airflow dags test {spec.name}_{stage}")
        result = airflow_cli.dags_test(f"{spec.name}_{stage}", logical_date, conf)
        summary.timings[stage] = done(started, f"log {result.log}")
    started = step(6, total, "approving the challenger, as a second person must (falaj models promote)")
    summary.approval = approve_challenger(use_case)
    summary.timings["approve"] = done(started, summary.approval)
    collect(summary, use_case)
    if not summary.bento_tag:
        raise RuntimeError(f"no Bento was built: gate {summary.gate}")
    started = step(7, total, f"serving {summary.bento_tag} with bentoml serve")
    with bento_server(summary.bento_tag, free_port()) as url:
        summary.endpoint = url
        summary.timings["serve_start"] = done(started, url)
        started = step(8, total, "scoring five transactions over HTTP")
        summary.scores = score_over_http(url, demo_transactions(use_case))
        summary.timings["score"] = done(started)
    return summary


def main(size: str = "demo") -> int:
    try:
        summary = run_demo(size)
    except (airflow_cli.DagRunFailedError, RuntimeError, TimeoutError) as failed:
        print(f"\ndemo failed: {failed}", file=sys.stderr)
        return 1
    print_summary(summary)
    (get_settings().reports_dir / "demo-summary.json").write_text(
        json.dumps(summary.__dict__, indent=2, default=str)
    )
    return 0
