"""The CPU scoring service: the models the registry names, online features from Feast, one answer.

Routes (each needs the policy's action, see ``bento/guard.py``): ``/v1/score`` (a transaction; online
features), ``/v1/score/batch`` (up to 1,000), ``/v1/score/features`` (the caller sends the feature
vector), ``/v1/admin/plan`` and ``/v1/admin/reload``. Every answer says which model and experiment arm
produced it; every prediction is logged off the request path.
"""

from __future__ import annotations

import functools
import gc
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.warnings import PydanticDeprecatedSince211
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bento.guard import ADMITTED_AT, RETRY_AFTER_S, Guard
from bento.listening import spread_connections
from pipelines.freshness import StaleFeaturesError, apply_policy
from pipelines.rollout import ModelRef
from pipelines.serving import LoadedModel, Serving, Snapshot, prediction_row

HOT_ROUTES = ["/v1/score", "/v1/score/batch", "/v1/score/features"]
WORKERS = 2  # one per core of the small box this is sized for (bench/serving.py)
# Requests in flight at once over all workers; more are answered 429 with Retry-After (bento/guard.py).
MAX_CONCURRENCY = 256
# A request that waited longer than this for its worker's scoring thread is answered 503 with Retry-After:
# under overload, scored that late it would likely pass the traffic timeout (3 s) and be answered 504.
MAX_WAIT_S = 2.0
# BentoML 1.4 reads `model_fields` off the request model on every call, and Feast resets the warnings
# registry on every fetch: without this, each request would log the same deprecation warning.
warnings.filterwarnings("ignore", category=PydanticDeprecatedSince211)
# A worker imports this module before uvicorn takes the listening socket it inherited: swap it now.
spread_connections()


class BuildArgs(BaseModel):
    use_case: str = "fraud"
    model_tag: str = "fraud-model:latest"


ARGS = bentoml.use_arguments(BuildArgs)


# Printable text: a control character has no place in an id, and the prediction log's PostgreSQL text
# columns refuse NUL (a row carrying one would fail its whole batch).
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]


class Transaction(BaseModel):
    """A card transaction to score."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: Id
    customer_id: Id
    card_id: Id
    merchant_id: Id
    amount_aed: float = Field(gt=0, le=1_000_000)
    channel: Literal["pos", "contactless", "ecommerce"]
    event_timestamp: datetime | None = Field(
        default=None, description="UTC; defaults to the time of the call."
    )

    @field_validator("event_timestamp")
    @classmethod
    def _in_utc(cls, at: datetime | None) -> datetime | None:
        """A time without an offset is UTC, as documented (not the server's zone); one that UTC cannot
        express (year 1 at +05:00) is refused, not left to fail while scoring."""
        if at is None:
            return None
        if at.tzinfo is None:
            return at.replace(tzinfo=UTC)
        try:
            return at.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError(f"{at.isoformat()} is outside the range of UTC times") from None


class FeatureVector(BaseModel):
    """A transaction whose features the caller computed: every feature of the serving model, by name."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: Id
    customer_id: Id = Field(description="The unit experiments assign by.")
    features: dict[str, float | None] = Field(description="Feature name -> value; null for missing.")


class Score(BaseModel):
    transaction_id: str
    score: float = Field(
        description="A classifier's probability of the positive class (fraud); a regression's prediction."
    )
    threshold: float | None = Field(description="The score from which to review; None for a regression.")
    decision: Literal["review", "approve"] | None
    model_version: str
    arm: Literal["champion", "challenger"]
    experiment_id: int | None
    feature_freshness_seconds: dict[str, float | None] = Field(
        description="Per feature view: how old the online features were at the transaction's time."
    )
    degraded: bool = Field(description="True when the freshness policy replaced stale or missing features.")
    stale_views: list[str] = Field(description="Feature views the freshness policy acted on.")
    latency_ms: float


class Plan(BaseModel):
    use_case: str
    champion: str
    challenger: str | None
    mode: str
    challenger_share: float
    experiment_id: int | None
    revision: int
    problems: list[str] = Field(description="Models refused at load; the last good model kept serving.")


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Refused(Exception):
    """A request the scorer refuses: the status to answer and a reason the caller can act on."""

    def __init__(self, status: int, reason: str, retry_after_s: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.retry_after_s = status, retry_after_s

    def response(self) -> JSONResponse:
        """The refusal as ``{"error": reason}``; a route returns it and BentoML sends it as it is (a raised
        BentoML exception would be answered as a one-element array, or without its reason from 500 up)."""
        headers = {"retry-after": self.retry_after_s} if self.retry_after_s else None
        return JSONResponse({"error": str(self)}, self.status, headers)


@bentoml.service(
    name="falaj-scorer",
    workers=WORKERS,
    # BentoML keeps each request's context until its timeout timer fires: a short timeout keeps the heap
    # small (and full-GC pauses short); a 1,000-row batch takes well under a second. The concurrency
    # limit is the guard's (MAX_CONCURRENCY): BentoML's own answers 429 without Retry-After.
    traffic={"timeout": 3},
    logging={"access": {"enabled": False}},  # every prediction is logged already, off the request path
    tracing={"excluded_urls": HOT_ROUTES},  # per-request spans cost more than the scoring itself
)
class Scorer:
    # The champion at build time: served alone if the registry cannot be read when the server starts.
    packaged = bentoml.models.BentoModel(ARGS.model_tag)

    def __init__(self) -> None:
        from pipelines.features import feature_store
        from pipelines.predictions import prediction_writer
        from pipelines.redis_online import online_reader
        from pipelines.spec import load_spec

        self.spec = load_spec(ARGS.use_case)
        self.threshold = self.spec.serving.threshold
        self.serving = Serving(ARGS.use_case)
        info = self.packaged.info
        self.serving.start(
            ModelRef(
                version=int(info.labels["registry_version"]),
                tag=f"{ARGS.use_case}:v{info.labels['registry_version']}",
                artifact_uri=self.packaged.path,
                onnx_sha256=info.metadata["onnx_sha256"],
                features=tuple(info.metadata["features"]),
            )
        )
        self.log = prediction_writer()
        self.freshness = self.spec.serving.freshness[self.spec.feature_service]
        store = feature_store()
        feature_service = store.get_feature_service(self.spec.feature_service)
        self.read_online = online_reader(store, feature_service)
        self.view_of = {
            feature.name: projection.name
            for projection in feature_service.feature_view_projections
            for feature in projection.features
        }
        # Made here, not at import: BentoML sets up multi-process metrics before it builds the service.
        from prometheus_client import Counter

        self.served = Counter(
            "falaj_predictions", "Answers served, by arm, experiment mode and decision.",
            ["arm", "mode", "decision"],
        )  # fmt: skip
        self.challenger_failures = Counter(
            "falaj_challenger_failures", "Challenger errors answered by the champion instead.", ["mode"]
        )
        gc.collect()
        gc.freeze()  # the start-up heap stays out of every later collection's scan
        # The log writer and the plan refresher are background threads: when one holds the GIL, a
        # request waits for the switch interval (5 ms by default) before it may run again.
        sys.setswitchinterval(0.001)

    def __is_ready__(self) -> bool:
        return self.serving.snapshot is not None

    @bentoml.on_shutdown
    def _flush_logs(self) -> None:
        """A stopping worker writes what its prediction log still buffers (or spools it) before it exits:
        the writer is a daemon thread, and a row in its queue would die with the process."""
        self.log.close()

    def _online(self, transactions: list[Transaction]) -> list[tuple[datetime, dict[str, Any]]]:
        """Each transaction's time and online features, fetched in one call for the whole list."""
        times = [(txn.event_timestamp or datetime.now(UTC)).astimezone(UTC) for txn in transactions]
        rows = [
            {
                "customer_id": txn.customer_id,
                "card_id": txn.card_id,
                "merchant_id": txn.merchant_id,
                "amount_aed": txn.amount_aed,
                "channel": txn.channel,
                "request_unix": at.timestamp(),
            }
            for txn, at in zip(transactions, times, strict=True)
        ]
        try:
            columns = self.read_online(rows)
        except (RedisConnectionError, RedisTimeoutError) as unavailable:
            raise Refused(
                503, f"the online feature store is unavailable ({unavailable}); retry later", RETRY_AFTER_S
            ) from None
        return [(at, {name: values[i] for name, values in columns.items()}) for i, at in enumerate(times)]

    def _features(self, txn: Transaction, at: datetime, online: dict[str, Any]) -> tuple[Any, ...]:
        if all(online.get(f"{name}__ts") in (None, 0) for name in ("credit_limit_aed", "birth_year")):
            raise Refused(404, f"no features for customer_id '{txn.customer_id}'")
        if all(online.get(f"{name}__ts") in (None, 0) for name in ("mcc", "merchant_is_online")):
            raise Refused(404, f"no features for merchant_id '{txn.merchant_id}'")
        ages: dict[str, float | None] = {}
        for feature, view in self.view_of.items():
            stamp = online.get(f"{feature}__ts")
            if stamp:  # on-demand features carry no timestamp: they are computed now
                age = at.timestamp() - float(stamp)
                ages[view] = min(age, ages.get(view) or age)
        values = {feature: online.get(feature) for feature in self.view_of}
        try:
            fresh = apply_policy(values, ages, self.view_of, self.freshness)
        except StaleFeaturesError as stale:
            raise Refused(422, str(stale)) from None
        return fresh.values, ages, fresh

    def _score(
        self,
        transaction_id: str,
        unit_id: str,
        values: dict[str, Any],
        ages: dict[str, float | None],
        degraded: bool,
        stale_views: tuple[str, ...],
        started: float,
    ) -> Score:
        snapshot = self.serving.snapshot
        assert snapshot is not None  # __is_ready__ holds requests until a champion has loaded
        arm, model, shadow = snapshot.route(unit_id)
        scoring = time.perf_counter()  # a canary is judged on its model's time, not a batch's
        try:
            probability = _probability(model, values)
        except Exception as failed:
            if arm == "champion":
                raise
            self.serving.record(arm, False, scoring)
            self.challenger_failures.labels(snapshot.plan.mode).inc()
            self._log(snapshot, transaction_id, unit_id, arm, model, values, started, error=str(failed)[:255])
            arm, model = "champion", snapshot.champion
            probability = _probability(model, values)
        else:
            self.serving.record(arm, True, scoring)
        decision = self._decision(probability)
        self.served.labels(arm, snapshot.plan.mode, decision or "none").inc()
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        self._log(snapshot, transaction_id, unit_id, arm, model, values, started, score=probability,
                  decision=decision, degraded=degraded, freshness=ages)  # fmt: skip
        if shadow is not None:
            self.serving.shadows.submit(self._shadow, snapshot, shadow, transaction_id, unit_id, values)
        return Score(
            transaction_id=transaction_id,
            score=round(probability, 6),
            threshold=self.threshold,
            decision=decision,
            model_version=model.ref.tag,
            arm=arm,
            experiment_id=snapshot.plan.experiment_id if snapshot.plan.mode != "none" else None,
            feature_freshness_seconds=ages,
            degraded=degraded,
            stale_views=list(stale_views),
            latency_ms=latency_ms,
        )

    def _shadow(
        self,
        snapshot: Snapshot,
        model: LoadedModel,
        transaction_id: str,
        unit_id: str,
        values: dict[str, Any],
    ) -> None:
        started = time.perf_counter()
        try:
            probability = _probability(model, values)
        except Exception as failed:
            self._log(snapshot, transaction_id, unit_id, "challenger", model, values, started, shadow=True,
                      error=str(failed)[:255])  # fmt: skip
            return
        decision = self._decision(probability)
        self._log(snapshot, transaction_id, unit_id, "challenger", model, values, started, shadow=True,
                  score=probability, decision=decision)  # fmt: skip

    def _decision(self, probability: float) -> Literal["review", "approve"] | None:
        if self.threshold is None:  # a regression's answer is the quantity itself
            return None
        return "review" if probability >= self.threshold else "approve"

    def _log(
        self,
        snapshot: Snapshot,
        transaction_id: str,
        unit_id: str,
        arm: str,
        model: LoadedModel,
        values: dict[str, Any],
        started: float,
        **fields: Any,
    ) -> None:
        row = prediction_row(
            self.spec.name,
            transaction_id,
            self.serving.unit(unit_id),
            arm,
            model,
            snapshot.plan,
            threshold=self.threshold,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            features={name: values.get(name) for name in model.ref.features},
            **fields,
        )
        self.log.put(row)

    def _score_transactions(self, transactions: list[Transaction]) -> list[Score]:
        waited = time.monotonic() - ADMITTED_AT.get(time.monotonic())
        if waited > MAX_WAIT_S:
            overloaded = f"overloaded: waited {waited:.1f} s for a scoring thread; retry later"
            raise Refused(503, overloaded, RETRY_AFTER_S)
        started = time.perf_counter()
        scores = []
        for transaction, (at, online) in zip(transactions, self._online(transactions), strict=True):
            values, ages, fresh = self._features(transaction, at, online)
            score = self._score(
                transaction.transaction_id, transaction.customer_id, values, ages, fresh.degraded,
                fresh.stale_views, started,
            )  # fmt: skip
            scores.append(score)
        return scores

    @bentoml.api(route="/v1/score")
    def score(self, transaction: Transaction) -> Score:
        """Score one transaction on the online features of its customer, card and merchant."""
        try:
            [score] = self._score_transactions([transaction])
        except Refused as refused:
            return refused.response()  # BentoML sends a Response as it is
        return score

    @bentoml.api(route="/v1/score/batch")
    def score_batch(
        self, transactions: Annotated[list[Transaction], Field(min_length=1, max_length=1000)]
    ) -> list[Score]:
        """Score up to 1,000 transactions; each answer as ``/v1/score`` gives it."""
        # Not self.score: BentoML turns a call of another API into a client request.
        try:
            return self._score_transactions(transactions)
        except Refused as refused:
            return refused.response()  # BentoML sends a Response as it is

    def score_vector(self, request: FeatureVector) -> Score:
        """Score a feature vector the caller computed (no online fetch); served by ``/v1/score/features``."""
        started = time.perf_counter()
        snapshot = self.serving.snapshot
        assert snapshot is not None
        missing = sorted(set(snapshot.champion.ref.features) - set(request.features))
        if missing:
            raise Refused(422, f"features missing: {', '.join(missing)}")
        return self._score(
            request.transaction_id, request.customer_id, request.features, {}, False, (), started
        )

    @bentoml.api(route="/v1/admin/plan")
    def plan(self, request: Empty) -> Plan:
        """What is served now: champion, experiment, and any model refused at load."""
        return self._plan()

    def _plan(self) -> Plan:
        snapshot = self.serving.snapshot
        assert snapshot is not None
        plan = snapshot.plan
        return Plan(
            use_case=plan.use_case,
            champion=snapshot.champion.ref.tag,
            challenger=snapshot.challenger.ref.tag if snapshot.challenger else None,
            mode=plan.mode,
            challenger_share=plan.challenger_share,
            experiment_id=plan.experiment_id,
            revision=plan.revision,
            problems=list(self.serving.problems),
        )

    @bentoml.api(route="/v1/admin/reload")
    def reload(self, request: Empty) -> Plan:
        """Read the registry's plan now instead of at the next poll."""
        self.serving.refresh()
        return self._plan()


def _probability(model: LoadedModel, values: dict[str, Any]) -> float:
    vector = np.array([[_number(values.get(name)) for name in model.ref.features]], dtype=np.float32)
    probability = float(model.scores(vector)[0])
    if not np.isfinite(probability):
        raise ValueError(f"{model.ref.tag} returned {probability}")
    return probability


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


class Refusal(BaseModel):
    error: str
    detail: list[dict[str, Any]] | None = None


class FeatureVectorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: FeatureVector


def score_features(body: bytes) -> tuple[int, bytes]:
    """``POST /v1/score/features``, body ``{"request": FeatureVector}``: status and JSON answer."""
    try:
        request = FeatureVectorBody.model_validate_json(body).request
    except ValidationError as bad:
        detail = bad.errors(include_context=False, include_input=False)
        return 400, json.dumps(
            {"error": f"{bad.error_count()} validation error(s)", "detail": detail}
        ).encode()
    try:
        score = bentoml.get_current_service().score_vector(request)
    except Refused as refused:
        return refused.status, json.dumps({"error": str(refused)}).encode()
    return 200, score.model_dump_json().encode()


#: Routes served as plain ASGI by :class:`FastLane`: path -> handler of the request body.
FAST_ROUTES: dict[str, Callable[[bytes], tuple[int, bytes]]] = {"/v1/score/features": score_features}


class FastLane:
    """Serves ``FAST_ROUTES`` as plain ASGI, just inside the guard; and ``/docs.json``.

    The request has passed BentoML's metrics and the guard (concurrency limit, authentication,
    authorization, JSON only, body size), and the guard has read the body. What it skips is the rest of
    the stack: BentoML's request context, Starlette's routing and request and response objects, a third
    of a scoring request's time (bench/serving.py).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        handler = FAST_ROUTES.get(scope["path"])
        headers = [(b"content-type", b"application/json")]
        if scope["path"] == "/docs.json" and scope["method"] == "GET":
            status, payload = 200, openapi_document()
        elif handler is None:
            return await self.app(scope, receive, send)
        elif scope["method"] != "POST":
            status, payload = 405, b'{"error": "use POST"}'
            headers.append((b"allow", b"POST"))
        else:
            status, payload = handler(await _body(receive))
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class ScoreRequest(BaseModel):
    transaction: Transaction


class BatchRequest(BaseModel):
    transactions: list[Transaction] = Field(min_length=1, max_length=1000)


class AdminRequest(BaseModel):
    request: Empty


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait first.", "schema": {"type": "integer"}}}
#: Every refusal the scorer answers, as ``{"error": ...}`` (400 with the fields in ``detail``); routes add
#: their own 404 and 422.
REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"model": Refusal, "description": "A malformed body, or a field it refuses, named in `detail`."},
    401: {
        "model": Refusal,
        "description": "No credential, or one that does not verify.",
        "headers": {"WWW-Authenticate": {"description": "The schemes to use.", "schema": {"type": "string"}}},
    },
    403: {"model": Refusal, "description": "The caller's roles do not grant the route's action."},
    413: {"model": Refusal, "description": "A body larger than 256 KiB."},
    415: {"model": Refusal, "description": "A body that is not application/json."},
    429: {"model": Refusal, "description": "Too many requests in flight.", "headers": RETRY_AFTER},
    503: {
        "model": Refusal,
        "description": "Overloaded, or the identity provider or the online feature store is unreachable.",
        "headers": RETRY_AFTER,
    },
}
NO_FEATURES = {"model": Refusal, "description": "No online features for the customer or the merchant."}
TOO_STALE = {"model": Refusal, "description": "Features too old to score on (freshness policy `reject`)."}


def route_documentation() -> Any:
    """Every route as a FastAPI app: BentoML puts a mounted FastAPI app's paths into ``/docs.json``,
    in place of its own, which lack the security schemes and the refusals and drop every ``None``
    of the answer's schema.

    BentoML's routes, and FastLane for ``FAST_ROUTES``, answer these paths before a request could get
    here: the routes below only describe them, except ``/v1/score/features``, which calls its handler.
    """
    from fastapi import Depends, FastAPI
    from fastapi.security import APIKeyHeader, HTTPBearer

    credentials = [
        Depends(APIKeyHeader(name="X-API-Key", auto_error=False)),
        Depends(HTTPBearer(auto_error=False, description="An OIDC access token, or an API key.")),
    ]
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    route = functools.partial(app.post, dependencies=credentials, tags=["Service APIs"])

    @route("/v1/score", response_model=Score, responses={**REFUSALS, 404: NO_FEATURES, 422: TOO_STALE})
    def score(body: ScoreRequest) -> None:
        """Score one transaction on the online features of its customer, card and merchant."""

    @route(
        "/v1/score/batch", response_model=list[Score],
        responses={**REFUSALS, 404: NO_FEATURES, 422: TOO_STALE},
    )  # fmt: skip
    def score_batch(body: BatchRequest) -> None:
        """Score up to 1,000 transactions; each answer as ``/v1/score`` gives it. One refused refuses all."""

    missing = {"model": Refusal, "description": "The vector lacks features of the serving model."}

    @route("/v1/score/features", response_model=Score, responses={**REFUSALS, 422: missing})
    def score_vector(body: FeatureVectorBody) -> Response:
        """Score a feature vector the caller computed: no online fetch."""
        status, payload = score_features(body.model_dump_json().encode())
        return Response(payload, status, media_type="application/json")

    @route("/v1/admin/plan", response_model=Plan, responses=REFUSALS)
    def plan(body: AdminRequest) -> None:
        """What is served now: champion, experiment, and any model refused at load."""

    @route("/v1/admin/reload", response_model=Plan, responses=REFUSALS)
    def reload(body: AdminRequest) -> None:
        """Read the registry's plan now instead of at the next poll."""

    return app


@functools.cache
def openapi_document() -> bytes:
    """BentoML's ``/docs.json``, labelled OpenAPI 3.1: its schemas are pydantic's and FastAPI's, JSON
    Schema 2020-12 (``exclusiveMinimum: 0``, ``type: null``), which 3.0, BentoML's label, reads otherwise."""
    document = Scorer.openapi_spec.asdict()
    for item in document["paths"].values():
        for operation in item.values():
            # FastAPI documents its own validation refusal on every route with a body; ours answer 400.
            if operation.get("responses", {}).get("422", {}).get("description") == "Validation Error":
                del operation["responses"]["422"]
    return json.dumps({**document, "openapi": "3.1.0"}).encode()


Scorer.mount_asgi_app(route_documentation())
Scorer.add_asgi_middleware(
    Guard, resource=ARGS.use_case, max_in_flight=math.ceil(MAX_CONCURRENCY / WORKERS)
)  # fmt: skip
Scorer.add_asgi_middleware(FastLane)  # added after the guard: runs inside it
