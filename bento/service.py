"""The CPU scoring service: online features from Feast, the champion's ONNX session, one answer."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import bentoml
import numpy as np
from bentoml.exceptions import NotFound, UnprocessableEntity
from pydantic import BaseModel, ConfigDict, Field

from pipelines import signing
from pipelines.freshness import StaleFeaturesError, apply_policy


class BuildArgs(BaseModel):
    use_case: str = "fraud"
    model_tag: str = "fraud-model:latest"


ARGS = bentoml.use_arguments(BuildArgs)


class Transaction(BaseModel):
    """A card transaction to score."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64)
    card_id: str = Field(min_length=1, max_length=64)
    merchant_id: str = Field(min_length=1, max_length=64)
    amount_aed: float = Field(gt=0, le=1_000_000)
    channel: Literal["pos", "contactless", "ecommerce"]
    event_timestamp: datetime | None = Field(
        default=None, description="UTC; defaults to the time of the call."
    )


class Score(BaseModel):
    transaction_id: str
    score: float = Field(description="Probability of fraud.")
    threshold: float
    decision: Literal["review", "approve"]
    model_version: str
    feature_freshness_seconds: dict[str, float | None] = Field(
        description="Per feature view: how old the online features were at the transaction's time."
    )
    degraded: bool = Field(description="True when the freshness policy replaced stale or missing features.")
    stale_views: list[str] = Field(description="Feature views the freshness policy acted on.")
    latency_ms: float


@bentoml.service(name="falaj-scorer", traffic={"timeout": 10})
class Scorer:
    model = bentoml.models.BentoModel(ARGS.model_tag)

    def __init__(self) -> None:
        import onnxruntime as ort

        from pipelines.features import feature_store
        from pipelines.spec import load_spec

        self.spec = load_spec(ARGS.use_case)
        root = Path(self.model.path)
        manifest = json.loads((root / "manifest.json").read_text())
        signing.verify_model(root)  # raises ModelSignatureError: an unsigned or altered model never serves
        model = signing.read_model_file(root, "model.onnx")  # decrypted in memory only
        expected = self.model.info.metadata["onnx_sha256"]
        if hashlib.sha256(model).hexdigest() != expected or manifest["onnx_sha256"] != expected:
            raise RuntimeError(
                f"{self.model.tag}: model.onnx does not match its recorded sha256; refusing to serve"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # single rows: threads cost more than they give
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.features: list[str] = list(manifest["features"])
        self.version = f"{ARGS.use_case}:v{self.model.info.labels['registry_version']}"
        self.freshness = self.spec.serving.freshness[self.spec.feature_service]
        self.store = feature_store()
        self.service = self.store.get_feature_service(self.spec.feature_service)
        self.view_of = {
            feature.name: projection.name
            for projection in self.service.feature_view_projections
            for feature in projection.features
        }

    def _online(self, txn: Transaction, at: datetime) -> dict[str, Any]:
        row = {
            "customer_id": txn.customer_id,
            "card_id": txn.card_id,
            "merchant_id": txn.merchant_id,
            "amount_aed": txn.amount_aed,
            "channel": txn.channel,
            "request_unix": at.timestamp(),
        }
        response = self.store.get_online_features(features=self.service, entity_rows=[row])
        return {name: values[0] for name, values in response.to_dict(include_event_timestamps=True).items()}

    @bentoml.api(route="/v1/score")
    def score(self, transaction: Transaction) -> Score:
        """Score one transaction with the champion model."""
        started = time.perf_counter()
        at = (transaction.event_timestamp or datetime.now(UTC)).astimezone(UTC)
        online = self._online(transaction, at)
        if all(online.get(f"{name}__ts") in (None, 0) for name in ("credit_limit_aed", "birth_year")):
            raise NotFound(f"no features for customer_id '{transaction.customer_id}'")
        if all(online.get(f"{name}__ts") in (None, 0) for name in ("mcc", "merchant_is_online")):
            raise NotFound(f"no features for merchant_id '{transaction.merchant_id}'")
        ages: dict[str, float | None] = {}
        for feature, view in self.view_of.items():
            stamp = online.get(f"{feature}__ts")
            if stamp:  # on-demand features carry no timestamp: they are computed now
                age = at.timestamp() - float(stamp)
                ages[view] = min(age, ages.get(view) or age)
        values = {feature: online.get(feature) for feature in self.features}
        try:
            fresh = apply_policy(values, ages, self.view_of, self.freshness)
        except StaleFeaturesError as stale:
            raise UnprocessableEntity(str(stale)) from None
        vector = np.array([[fresh.values[f] for f in self.features]], dtype=np.float32)
        probability = float(self.session.run(["probabilities"], {"input": vector})[0][0, 1])
        threshold = self.spec.serving.threshold
        return Score(
            transaction_id=transaction.transaction_id,
            score=round(probability, 6),
            threshold=threshold,
            decision="review" if probability >= threshold else "approve",
            model_version=self.version,
            feature_freshness_seconds=ages,
            degraded=fresh.degraded,
            stale_views=list(fresh.stale_views),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
