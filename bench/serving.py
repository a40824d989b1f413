"""Scoring over HTTP against its floors, in one run on the `prod` profile's real Redis and PostgreSQL.

Setup, in a temporary ``FALAJ_HOME`` with a fresh PostgreSQL database (platform DB and Feast registry)
and its own Redis db: the steps the ingest, features and training DAGs run (generate, ingest, validate,
feature tables, apply, materialize into Redis, training set, LightGBM, gate), a second person's approval
and the Bento of the champion. The scorer is then served with ``bentoml serve`` (``bento_server``) as
the demo serves it, next to the floor: a minimal Starlette app on uvicorn (one worker) holding an ONNX
Runtime session with the scorer's options (one intra-op and one inter-op thread) on the champion's own
``model.onnx``. Both are driven by wrk over loopback with the same JSON bodies, the scorer with a
consumer's ``X-API-Key``:

- (a) features in the request: the scorer's ``/v1/score/features`` vs the floor's endpoint that parses
  the same body, orders the vector and scores it. Targets: p50 at one connection within 2x the floor;
  requests/s at 16 connections at least 0.5x the floor's;
- (b) online features: the scorer's ``/v1/score`` (its ``OnlineReader`` on Redis, the on-demand view,
  the freshness policy, scoring) vs the floor plus one pipelined Redis read: HMGET of the transaction's
  customer, card and merchant hashes in Feast's layout, the values decoded and the four request
  features computed as the on-demand view does. Target: p50 at one connection within 3x the floor.

- audit logging's cost: the same Bento served a second time with its prediction log keeping nothing
  (``bench/unlogged/sitecustomize.py`` on that server's PYTHONPATH), timed on (a) beside the first.
  Target: p50 at one connection at most 5% above, requests/s at 16 connections at least 0.95x;
- capacity: (a)'s requests/s at 16 connections per CPU core of this machine, as predictions per
  core-hour and the cost of a million predictions at ``--core-hour-usd`` (wrk shares the cores, so the
  figure is a floor on capacity).

Before anything is timed, every body must answer 200 from both and the scores must agree within 1e-5.
Floor and scorer are timed in alternating rounds (median and range reported), each run after a
warm-up. To show where (b)'s time goes, the same Feast call and the raw pipelined read are also timed
in process. Targets are reported, never asserted: the run exits 0 whether they are met or not.

Needs wrk (`apt-get install -y wrk`), PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (db 15).
Run: `make bench` (or `.venv/bin/python -m bench.serving --seconds 5`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import Figure, compare, latencies_ms, percentile, write_report

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 15
USE_CASE = "fraud"
FAMILY = "lightgbm"
FEAST_PROJECT = "falaj"
ENTITY_KEY_VERSION = 3
TOLERANCE = 1e-5
FEATURE_BODIES = 50
WARMUP_S = 2
HIGH_CONNECTIONS = 16
FLOOR_CONFIG_ENV = "FALAJ_BENCH_FLOOR_CONFIG"
#: fraud_v2's stored features in Feast's Redis layout: one hash per entity, fields per view. The
#: on-demand view reads all of customer_behaviour (last_txn_unix included). Checked against the store.
ONLINE_LAYOUT: dict[str, dict[str, list[str]]] = {
    "customer_id": {
        "customer_behaviour": [
            "txn_count_1h",
            "txn_count_24h",
            "spend_24h_aed",
            "avg_amount_30d_aed",
            "last_txn_unix",
        ],
        "customer_profile": ["credit_limit_aed", "birth_year"],
    },
    "card_id": {"card_velocity": ["card_txn_count_1h", "card_txn_count_24h", "card_spend_1h_aed"]},
    "merchant_id": {
        "merchant_profile": ["mcc", "merchant_is_online"],
        "merchant_activity": [
            "merchant_txn_count_24h",
            "merchant_avg_amount_30d_aed",
            "merchant_ecommerce_share_30d",
        ],
    },
}
#: What the on-demand view ``transaction_context`` computes from the request (see feature_repo/fraud.py).
REQUEST_FEATURES = ["txn_amount_aed", "amount_vs_avg_30d", "minutes_since_last_txn", "is_ecommerce"]
UNLOGGED_PATH = Path(__file__).resolve().parent / "unlogged"
#: An on-demand general-purpose cloud vCPU-hour (2 vCPU instances at about 0.09 USD an hour), in USD.
CORE_HOUR_USD = 0.045
PARTS = {
    "a": ("(a) features in request", "minimal ASGI + same ONNX session"),
    "b": ("(b) online features (Redis)", "minimal ASGI + pipelined HMGET + same ONNX session"),
}
MEASURES = {"p50_ms": ("p50", "ms"), "p99_ms": ("p99", "ms"), "rps": ("throughput", "req/s")}
#: (part, measure, connections) of every figure; issue 6's targets on three of them.
REPORTED = [
    (part, what, c)
    for part in PARTS
    for what, c in (("p50_ms", 1), ("p99_ms", 1), ("rps", 1), ("rps", HIGH_CONNECTIONS))
]
TARGETS: dict[tuple[str, str, int], tuple[str, Callable[[float], bool]]] = {
    ("a", "p50_ms", 1): ("ratio <= 2", lambda ratio: ratio <= 2),
    ("a", "rps", HIGH_CONNECTIONS): ("ratio >= 0.5", lambda ratio: ratio >= 0.5),
    ("b", "p50_ms", 1): ("ratio <= 3", lambda ratio: ratio <= 3),
}
WRK_INSTALL = "wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu), then run the bench again"


class ParityError(RuntimeError):
    """The scorer and the floor disagree: the bench would time two different computations."""


@dataclass(frozen=True)
class Champion:
    bento_tag: str
    model_dir: Path
    features: list[str]
    training_set_uri: str
    version: str


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


# --- the floor: a minimal ASGI endpoint, served by uvicorn from this module --------------------------


def floor_app() -> Any:
    """The floor's Starlette app (``uvicorn --factory bench.serving:floor_app``), configured by env.

    ``/score/features`` takes the scorer's ``/v1/score/features`` body; ``/score`` takes ``/v1/score``'s
    and reads the customer, card and merchant hashes in one pipelined round trip before scoring.
    """
    import numpy as np
    import onnxruntime as ort
    import redis
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from pipelines import signing

    config = json.loads(os.environ[FLOOR_CONFIG_ENV])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    model = signing.read_model_file(Path(config["model_dir"]), "model.onnx")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    features: list[str] = config["features"]
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    reads = []  # (join key, HMGET fields, feature name of each field or None for a view's timestamp)
    for join_key, views in ONLINE_LAYOUT.items():
        fields: list[bytes | str] = []
        names: list[str | None] = []
        for view, view_features in views.items():
            fields += [_mmh3(f"{view}:{name}") for name in view_features] + [f"_ts:{view}"]
            names += [*view_features, None]
        reads.append((join_key, fields, names))

    def probability(values: dict[str, Any]) -> float:
        row = [math.nan if values.get(name) is None else float(values[name]) for name in features]
        vector = np.array([row], dtype=np.float32)
        return float(session.run(["probabilities"], {"input": vector})[0][0, 1])

    def answer(transaction_id: str, score: float) -> Response:
        return Response(
            json.dumps({"transaction_id": transaction_id, "score": score}), media_type="application/json"
        )

    async def score_features(request: Request) -> Response:
        body = json.loads(await request.body())["request"]
        return answer(body["transaction_id"], probability(body["features"]))

    async def score_transaction(request: Request) -> Response:
        txn = json.loads(await request.body())["transaction"]
        pipe = client.pipeline(transaction=False)
        for join_key, fields, _ in reads:
            entity = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=txn[join_key])])
            pipe.hmget(_redis_key(FEAST_PROJECT, entity, ENTITY_KEY_VERSION), fields)  # type: ignore[arg-type]
        values: dict[str, Any] = {}
        for (_, _, names), replies in zip(reads, pipe.execute(), strict=True):
            for name, raw in zip(names, replies, strict=True):
                if name is not None:
                    values[name] = _decode(Value, raw)
        values.update(_request_features(txn, values))
        return answer(txn["transaction_id"], probability(values))

    routes = [
        Route("/score/features", score_features, methods=["POST"]),
        Route("/score", score_transaction, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def _decode(value_type: Any, raw: bytes | None) -> Any:
    if raw is None:
        return None
    value = value_type.FromString(raw)
    kind = value.WhichOneof("val")
    return None if kind in (None, "null_val") else getattr(value, kind)


def _request_features(txn: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """feature_repo/fraud.py's ``transaction_context``, one row, without pandas."""
    amount = float(txn["amount_aed"])
    average, last = values.get("avg_amount_30d_aed"), values.get("last_txn_unix")
    at = datetime.fromisoformat(txn["event_timestamp"]).timestamp()
    return {
        "txn_amount_aed": amount,
        "amount_vs_avg_30d": amount / average if average else None,
        "minutes_since_last_txn": (at - last) / 60.0 if last is not None else None,
        "is_ecommerce": 1 if txn["channel"] == "ecommerce" else 0,
    }


# --- the run -------------------------------------------------------------------------------------------


def main(size: str, seconds: int, rounds: int, profile_repeats: int, core_hour_usd: float) -> Path:
    import redis
    from sqlalchemy import create_engine, text

    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit(WRK_INSTALL)
    database = f"falaj_bench_serving_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    client.flushdb()
    home = Path(tempfile.mkdtemp(prefix="falaj-bench-serving-"))
    os.environ.pop("BENTOML_HOME", None)  # packaging points it into the home
    os.environ.update(
        {
            "FALAJ_HOME": str(home),
            "FALAJ_PROFILE": "prod",
            "FALAJ_REQUIRE_TLS": "false",  # the shared servers on :5432 and :6379 are plaintext
            "FALAJ_USER": "falaj-system",  # prod has no default identity
            "FALAJ_TRAINING_BACKEND": "local",  # prod's default is a Kubernetes pod
            "FALAJ_DATABASE_URL": f"{POSTGRES}/{database}",
            "FALAJ_FEAST_REGISTRY_URL": f"{POSTGRES}/{database}",
            "FALAJ_REDIS_CONNECTION": f"{REDIS_HOST}:{REDIS_PORT},db={REDIS_DB}",
            "FALAJ_STREAM_REDIS_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
            "BENTOML_DO_NOT_TRACK": "true",
        }
    )
    failed = True
    try:
        report = measure(wrk, home, size, seconds, rounds, profile_repeats, core_hour_usd)
        failed = False
        return report
    finally:
        client.flushdb()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        if failed:  # its logs say why: the scorer's, the floor's, the DAG steps'
            print(f"kept {home} for its logs (logs/bento-serve.log, logs/floor.log)", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)


def measure(
    wrk: str, home: Path, size: str, seconds: int, rounds: int, profile_repeats: int, core_hour_usd: float
) -> Path:
    from pipelines.demo import bento_server, consumer_api_key, demo_transactions, free_port

    load_before = os.getloadavg()
    started = time.monotonic()
    champion = prepare(size)
    setup_s = time.monotonic() - started
    transactions = demo_transactions(USE_CASE)
    feature_rows = _feature_rows(champion, FEATURE_BODIES)
    bodies = {
        "a": [json.dumps({"request": row}) for row in feature_rows],
        "b": [json.dumps({"transaction": txn}) for txn in transactions],
    }
    key = consumer_api_key()
    scripts = home / "wrk"
    scripts.mkdir(mode=0o700)
    floor_port, service_port, unlogged_port = free_port(), free_port(), free_port()
    routes = {
        ("a", "floor"): f"http://127.0.0.1:{floor_port}/score/features",
        ("a", "service"): f"http://127.0.0.1:{service_port}/v1/score/features",
        ("a", "unlogged"): f"http://127.0.0.1:{unlogged_port}/v1/score/features",
        ("b", "floor"): f"http://127.0.0.1:{floor_port}/score",
        ("b", "service"): f"http://127.0.0.1:{service_port}/v1/score",
    }
    lua = {
        (part, side): _lua_script(
            scripts / f"{part}-{side}.lua", bodies[part], None if side == "floor" else key
        )
        for part, side in routes
    }
    floor_config = {"model_dir": str(champion.model_dir), "features": champion.features}
    unlogged = {"PYTHONPATH": str(UNLOGGED_PATH)}
    with (
        floor_server(floor_port, floor_config),
        bento_server(champion.bento_tag, service_port),
        bento_server(champion.bento_tag, unlogged_port, env=unlogged, log_name="bento-serve-unlogged.log"),
    ):
        workers = _wait_for_workers(home / "logs" / "bento-serve.log", expected=2, timeout_s=60)
        _wait_for_workers(home / "logs" / "bento-serve-unlogged.log", expected=2, timeout_s=60)
        parity = {
            part: _check_parity(routes[(part, "floor")], routes[(part, "service")], bodies[part], key)
            for part in PARTS
        }
        parity["a unlogged"] = _check_parity(
            routes[("a", "floor")], routes[("a", "unlogged")], bodies["a"], key
        )
        runs: dict[tuple[str, str, int], list[WrkRun]] = {}
        for round_ in range(rounds):
            for part in PARTS:
                for connections in (1, HIGH_CONNECTIONS):
                    sides = [side for p, side in routes if p == part]
                    shift = round_ % len(sides)  # each side goes first in turn
                    for side in sides[shift:] + sides[:shift]:
                        url, script = routes[(part, side)], lua[(part, side)]
                        _wrk(wrk, url, script, connections, WARMUP_S)
                        run = _wrk(wrk, url, script, connections, seconds)
                        runs.setdefault((part, side, connections), []).append(run)
                        print(
                            f"round {round_ + 1}/{rounds} ({part}) {side:<7} {connections:>2} conn: "
                            f"p50 {run.p50_ms:.3f} ms, p99 {run.p99_ms:.3f} ms, {run.rps:,.0f} req/s",
                            flush=True,
                        )
        service_log = (home / "logs" / "bento-serve.log").read_text(errors="replace")
    load_after = os.getloadavg()
    first = feature_rows[0]["features"]
    breakdown = profile_online(
        champion, transactions, [first[name] for name in champion.features], profile_repeats
    )
    figures = _figures(runs, breakdown) + _audit_figures(runs)
    capacity = _capacity(runs, core_hour_usd)
    figures.append(capacity)
    context = {
        "environment": {
            "cpu_cores": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "platform": platform.platform(),
            "wrk": _wrk_version(wrk),
            "library_versions": {
                name: metadata.version(name)
                for name in ("bentoml", "uvicorn", "starlette", "onnxruntime", "feast", "redis")
            },
        },
        "profile": "prod (PostgreSQL platform DB and Feast registry, Redis online store), TLS off",
        "setup": {"size": size, "seconds": round(setup_s, 1), "family": FAMILY},
        "champion": {
            "version": champion.version,
            "bento": champion.bento_tag,
            "features": len(champion.features),
        },
        "service": {
            "route_a": "/v1/score/features",
            "route_b": "/v1/score",
            "workers_seen": workers,
            "auth": "X-API-Key (consumer scoring-client)",
        },
        "floor": {
            "app": "Starlette on uvicorn, 1 worker, no access log; bench.serving:floor_app",
            "onnxruntime": "CPUExecutionProvider, intra_op_num_threads=1, inter_op_num_threads=1",
            "online_read": "redis-py pipeline (no transaction): HMGET of the customer, card, merchant hashes",
        },
        "load": {
            "generator": "wrk -t1, Lua script rotating the bodies",
            "seconds_per_run": seconds,
            "warmup_s_per_run": WARMUP_S,
            "rounds": rounds,
            "order": "floor and service alternate first from round to round",
            "bodies": {"a": len(bodies["a"]), "b": len(bodies["b"])},
            "socket_errors": {f"{p} {s} {c}": _errors(r) for (p, s, c), r in runs.items() if _errors(r)},
        },
        "parity_max_abs_diff": parity,
        "audit_overhead": {
            "logged": "the Bento as served: every answer handed to the prediction log's buffered writer",
            "unlogged": "the same Bento, its prediction writer replaced by bench/unlogged/sitecustomize.py",
        },
        "capacity": {
            "cpu_cores": os.cpu_count(),
            "core_hour_usd": core_hour_usd,
            "predictions_per_core_hour": round(capacity.value),
            "usd_per_million_predictions": round(core_hour_usd / capacity.value * 1e6, 4),
            "note": "wrk runs on the same cores, so this is a floor on the service's capacity",
        },
        "online_breakdown_ms_p50": breakdown,
        "service_log": {
            "lines": len(service_log.splitlines()),
            # BentoML reads `model_fields` on an instance; the warning repeats whenever the warnings
            # registry is reset (on /v1/score: about once per request), two log lines each time.
            "pydantic_deprecation_warnings": service_log.count("PydanticDeprecatedSince211"),
        },
    }
    return write_report("serving", figures, context)


def prepare(size: str) -> Champion:
    """The ingest, features and training DAGs' steps, an approval and the champion's Bento."""
    from pipelines import registry
    from pipelines.datagen import SIZES, generate
    from pipelines.demo import DATA_DAYS, DATA_END, approve_challenger
    from pipelines.features import apply_definitions, build_feature_tables, materialize
    from pipelines.gate import evaluate_gate
    from pipelines.ingest import ingest
    from pipelines.packaging import package
    from pipelines.settings import get_settings
    from pipelines.spec import load_spec
    from pipelines.training import train_local
    from pipelines.training_set import build_training_set
    from pipelines.validate import validate

    spec = load_spec(USE_CASE)
    print(
        f"setup: {SIZES[size]:,} transactions through ingest, features, training and packaging ...",
        flush=True,
    )
    data = generate(get_settings().source_dir, SIZES[size], days=DATA_DAYS, end=DATA_END)
    landed = ingest(spec, data.start, data.end)
    validate(spec, [(item.dataset, item.partition) for item in landed])
    build_feature_tables(spec)
    apply_definitions()
    _check_layout()
    start = datetime.combine(data.start, datetime.min.time(), UTC)
    end = datetime.combine(data.end, datetime.min.time(), UTC)
    materialize(spec, start, end)
    training_set = build_training_set(spec, start, end)
    model_dir = train_local(spec, training_set.uri, training_set.sha256, FAMILY)
    decision = evaluate_gate(spec, training_set.to_xcom(), [model_dir])
    if not decision.passed:
        raise RuntimeError(f"the gate refused {decision.candidate_tag}: {decision.reason}")
    approve_challenger(USE_CASE)
    bento_tag = package(spec)
    with registry.session() as db:
        version = registry.resolve_alias(db, USE_CASE, "champion")
        if version is None:
            raise RuntimeError(f"{USE_CASE} has no champion after the approval")
        features = list(version.features)
        champion = Champion(
            bento_tag, Path(version.artifact_uri), features, version.training_set_uri, version.tag
        )
    covered = {name for views in ONLINE_LAYOUT.values() for names in views.values() for name in names}
    if missing := set(features) - covered - set(REQUEST_FEATURES):
        raise RuntimeError(f"the floor does not know features {sorted(missing)}; update ONLINE_LAYOUT")
    return champion


def _check_layout() -> None:
    from pipelines.features import feature_store

    store = feature_store()
    for join_key, views in ONLINE_LAYOUT.items():
        for name, features in views.items():
            view = store.get_feature_view(name)
            if view.join_keys != [join_key] or [f.name for f in view.features] != features:
                raise RuntimeError(
                    f"feature view {name} is not {join_key} -> {features}; update ONLINE_LAYOUT"
                )


def _feature_rows(champion: Champion, n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of the champion's training set, as ``/v1/score/features`` bodies."""
    import io

    import pandas as pd

    from pipelines import crypto

    frame = pd.read_parquet(io.BytesIO(crypto.unseal(Path(champion.training_set_uri) / "data.parquet")))
    rows = frame[champion.features].head(n).astype(float).to_dict("records")
    return [
        {
            "transaction_id": f"BENCH-{index:04d}",
            "customer_id": f"C{index:05d}",
            "features": {name: None if math.isnan(value) else value for name, value in row.items()},
        }
        for index, row in enumerate(rows)
    ]


@contextmanager
def floor_server(port: int, config: dict[str, Any], timeout_s: float = 60) -> Iterator[str]:
    """The floor on uvicorn, one worker, until the block ends."""
    import httpx

    from pipelines.settings import get_settings

    argv = [
        str(Path(sys.executable).with_name("uvicorn")),
        "--factory",
        "bench.serving:floor_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    log = get_settings().home / "logs" / "floor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, FLOOR_CONFIG_ENV: json.dumps(config)}
    project = Path(__file__).resolve().parents[1]
    with log.open("w") as out:
        server = subprocess.Popen(argv, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the floor exited {server.returncode}: {_tail(log, 20)}")
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the floor did not start in {timeout_s}s; see {log}")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_for_workers(log: Path, expected: int, timeout_s: float) -> int:
    """``/readyz`` answers once the first worker is up; wait until each has logged its start-up."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = log.read_text(errors="replace").count("Service falaj-scorer initialized")
        if seen >= expected or time.monotonic() > deadline:
            time.sleep(1)  # the last one logs just before it accepts
            return seen
        time.sleep(0.5)


def _check_parity(floor_url: str, service_url: str, bodies: list[str], key: str) -> float:
    """Both answer every body with 200 and scores within ``TOLERANCE``; else nothing is timed."""
    import httpx

    worst = 0.0
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=30) as http:
        for _ in range(3):  # more than once, so both of the scorer's workers are likely to answer
            for body in bodies:
                floor = http.post(floor_url, content=body, headers=headers)
                service = http.post(service_url, content=body, headers={**headers, "X-API-Key": key})
                if floor.status_code != 200 or service.status_code != 200:
                    raise ParityError(
                        f"{service_url}: {service.status_code} {service.text[:300]}; "
                        f"floor {floor_url}: {floor.status_code} {floor.text[:300]}"
                    )
                answer = service.json()
                if answer.get("degraded"):
                    raise ParityError(f"{service_url} degraded its answer: {answer}")
                worst = max(worst, abs(answer["score"] - floor.json()["score"]))
    if worst > TOLERANCE:
        raise ParityError(
            f"{service_url} and the floor disagree by {worst:.3g} > {TOLERANCE}; refusing to time"
        )
    return worst


def _lua_script(path: Path, bodies: list[str], key: str | None) -> Path:
    """A wrk script: POST the bodies in turn; at the end, one JSON line of exact figures."""
    lines = [
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
        *([f'wrk.headers["X-API-Key"] = {_lua_string(key)}'] if key else []),
        "local bodies = {",
        *[f"  {_lua_string(body)}," for body in bodies],
        "}",
        "local i = 0",
        "request = function()",
        "  i = i % #bodies + 1",
        "  return wrk.format(nil, nil, nil, bodies[i])",
        "end",
        "done = function(summary, latency, requests)",
        "  local e = summary.errors",
        '  io.write(string.format(\'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, '
        '"p99_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n\', '
        "summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), "
        "e.connect, e.read, e.write, e.status, e.timeout))",
        "end",
    ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # the consumer's API key
    return path


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _wrk(wrk: str, url: str, script: Path, connections: int, seconds: int) -> WrkRun:
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    line = next((row for row in done.stdout.splitlines() if row.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk exited {done.returncode} on {url}:\n{done.stdout[-1500:]}{done.stderr[-1500:]}"
        )
    figures = json.loads(line.removeprefix("WRKJSON "))
    errors = {kind: int(figures[kind]) for kind in ("connect", "read", "write", "status", "timeout")}
    if errors["status"] or not figures["requests"]:
        raise RuntimeError(
            f"{url}: {errors['status']} non-2xx answers of {figures['requests']}; not a timing"
        )
    return WrkRun(
        requests=int(figures["requests"]),
        seconds=figures["duration_us"] / 1e6,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        errors=errors,
    )


def _errors(runs: list[WrkRun]) -> dict[str, int]:
    return {kind: total for kind in runs[0].errors if (total := sum(run.errors[kind] for run in runs))}


def profile_online(
    champion: Champion, transactions: list[dict[str, Any]], vector_row: list[float | None], repeats: int
) -> dict[str, float]:
    """In this process: the scorer's online read and Feast's, vs the raw pipelined read, p50 ms."""
    import numpy as np
    import onnxruntime as ort
    import redis
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from pipelines import signing
    from pipelines.features import feature_store
    from pipelines.redis_online import OnlineReader
    from pipelines.spec import load_spec

    spec = load_spec(USE_CASE)
    store = feature_store()
    service = store.get_feature_service(spec.feature_service)
    reader = OnlineReader(store, service)
    rows = [
        {
            "customer_id": txn["customer_id"],
            "card_id": txn["card_id"],
            "merchant_id": txn["merchant_id"],
            "amount_aed": txn["amount_aed"],
            "channel": txn["channel"],
            "request_unix": datetime.fromisoformat(txn["event_timestamp"]).timestamp(),
        }
        for txn in transactions
    ]
    turn = {"i": 0}

    def next_row() -> dict[str, Any]:
        turn["i"] = (turn["i"] + 1) % len(rows)
        return rows[turn["i"]]

    def feast_read() -> Any:
        return store.get_online_features(features=service, entity_rows=[next_row()])

    def feast_read_to_dict() -> Any:
        return feast_read().to_dict(include_event_timestamps=True)

    def scorer_read() -> Any:
        return reader.read([next_row()])

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    fields = {
        join_key: [_mmh3(f"{view}:{name}") for view, names in views.items() for name in names]
        + [f"_ts:{view}" for view in views]
        for join_key, views in ONLINE_LAYOUT.items()
    }

    def raw_read() -> Any:
        row = next_row()
        pipe = client.pipeline(transaction=False)
        for join_key, names in fields.items():
            entity = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=row[join_key])])
            pipe.hmget(_redis_key(FEAST_PROJECT, entity, ENTITY_KEY_VERSION), names)  # type: ignore[arg-type]
        return pipe.execute()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        signing.read_model_file(champion.model_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    vector = np.array([[math.nan if value is None else value for value in vector_row]], dtype=np.float32)

    def onnx_run() -> Any:
        return session.run(["probabilities"], {"input": vector})

    timings = {
        "feast get_online_features (fraud_v2, 1 row)": feast_read,
        "feast get_online_features + to_dict": feast_read_to_dict,
        "OnlineReader.read (as the scorer calls it)": scorer_read,
        "raw pipelined HMGET of the 3 hashes": raw_read,
        "onnxruntime session.run (1 row)": onnx_run,
    }
    return {name: round(percentile(latencies_ms(call, repeats), 50), 4) for name, call in timings.items()}


def _figures(runs: dict[tuple[str, str, int], list[WrkRun]], breakdown: dict[str, float]) -> list[Figure]:
    """Service vs floor per (part, figure, connections): median over the rounds, range in ``spread``."""
    figures = []
    for part, what, connections in REPORTED:
        label, unit = MEASURES[what]
        target, met = TARGETS.get((part, what, connections), ("-", lambda ratio: True))
        connection_s = "connection" if connections == 1 else "connections"
        figures.append(
            compare(
                f"{PARTS[part][0]}: {label}, {connections} {connection_s}",
                unit,
                [getattr(run, what) for run in runs[(part, "service", connections)]],
                [getattr(run, what) for run in runs[(part, "floor", connections)]],
                PARTS[part][1],
                target,
                met,
            )
        )
    raw = breakdown["raw pipelined HMGET of the 3 hashes"]
    for label, name in (
        ("the scorer's online read (OnlineReader)", "OnlineReader.read (as the scorer calls it)"),
        ("Feast's get_online_features + to_dict", "feast get_online_features + to_dict"),
    ):
        figures.append(
            Figure(
                f"(b) in process: {label}, p50",
                "ms",
                breakdown[name],
                raw,
                "raw pipelined HMGET of the 3 hashes, in process",
                "-",
                True,
            )
        )
    return figures


def _audit_figures(runs: dict[tuple[str, str, int], list[WrkRun]]) -> list[Figure]:
    """(a) with its prediction log vs the same Bento without: the log's cost on the request path."""
    figures = []
    for what, connections, target, met in (
        ("p50_ms", 1, "ratio <= 1.05", lambda ratio: ratio <= 1.05),
        ("rps", HIGH_CONNECTIONS, "ratio >= 0.95", lambda ratio: ratio >= 0.95),
    ):
        label, unit = MEASURES[what]
        figures.append(
            compare(
                f"audit logging overhead on (a): {label}, {connections} connection(s)",
                unit,
                [getattr(run, what) for run in runs[("a", "service", connections)]],
                [getattr(run, what) for run in runs[("a", "unlogged", connections)]],
                "the same Bento, prediction log off",
                target,
                met,
            )
        )
    return figures


def _capacity(runs: dict[tuple[str, str, int], list[WrkRun]], core_hour_usd: float) -> Figure:
    """Predictions per core-hour at 16 connections, for the scorer and the floor; cost in the target."""
    cores = os.cpu_count() or 1
    service = statistics.median(run.rps for run in runs[("a", "service", HIGH_CONNECTIONS)]) / cores * 3600
    floor = statistics.median(run.rps for run in runs[("a", "floor", HIGH_CONNECTIONS)]) / cores * 3600
    usd = core_hour_usd / service * 1e6
    return Figure(
        f"capacity: (a) predictions per core-hour, {HIGH_CONNECTIONS} connections on {cores} cores",
        "pred/core-h",
        service,
        floor,
        PARTS["a"][1],
        f"- (USD {usd:.4f} per million at USD {core_hour_usd}/core-hour)",
        True,
    )


def _wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "?"


def _tail(path: Path, lines: int) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "demo"])
    parser.add_argument("--seconds", type=int, default=5, help="Seconds of each timed wrk run.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating floor/service rounds.")
    parser.add_argument(
        "--profile-repeats", type=int, default=1000, help="In-process calls per breakdown item."
    )
    parser.add_argument(
        "--core-hour-usd", type=float, default=CORE_HOUR_USD, help="Price of a CPU core-hour, for the cost."
    )
    arguments = parser.parse_args()
    main(
        arguments.size,
        arguments.seconds,
        arguments.rounds,
        arguments.profile_repeats,
        arguments.core_hour_usd,
    )
