"""The scoring core the BentoML service wraps: the models the registry names, routed per request.

A background thread polls the registry's plan stamp (one small query) and loads what changed: the
champion, and the challenger of an active A/B, shadow or canary experiment. Every model is verified
(signature, then the registered SHA-256) before it may serve; one that does not verify is refused and
the last good model keeps serving. The same thread judges a canary from the outcomes it saw and moves
it a step up or rolls it back through the registry. Requests only read an immutable snapshot.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import audit, registry, rollout, signing
from pipelines.pseudonymize import load_or_create_key, pseudonym
from pipelines.rollout import Arm, ModelRef, ServingPlan

log = logging.getLogger(__name__)

SERVICE_ACTOR = "falaj-scorer"  # its role, scoring-service, may move a canary and nothing else


class ModelRefusedError(RuntimeError):
    """A model failed verification at load; the message says which check."""


PREDICTION = "prediction"  # a regression model's output, in the label's units
PROBABILITIES = "probabilities"  # a binary classifier's output: [P(y=0), P(y=1)] per row


def onnx_output(session: Any) -> str:
    """The output a model answers with: ``prediction`` (regression) or ``probabilities``."""
    return PREDICTION if PREDICTION in {output.name for output in session.get_outputs()} else PROBABILITIES


def onnx_scores(session: Any, vectors: np.ndarray, output: str | None = None) -> np.ndarray:
    """One score per row: the prediction of a regression model, P(y=1) of a classifier."""
    name = output or onnx_output(session)
    answered = session.run([name], {"input": vectors})[0]
    return np.asarray(answered).reshape(-1) if name == PREDICTION else answered[:, 1]


@dataclass(frozen=True)
class LoadedModel:
    ref: ModelRef
    session: Any  # onnxruntime.InferenceSession
    output: str = PROBABILITIES

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        return onnx_scores(self.session, vectors, self.output)


def load_model(ref: ModelRef) -> LoadedModel:
    """Verify a registered model's signature and SHA-256, then open it on one CPU thread."""
    import onnxruntime as ort

    directory = Path(ref.artifact_uri)
    try:
        signing.verify_model(directory)
    except signing.ModelSignatureError as bad:
        raise ModelRefusedError(f"{ref.tag}: {bad}") from None
    model = signing.read_model_file(directory, "model.onnx")
    if hashlib.sha256(model).hexdigest() != ref.onnx_sha256:
        raise ModelRefusedError(f"{ref.tag}: model.onnx is not the registered one (sha256 differs)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one row per request: more threads cost more than they give
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return LoadedModel(ref, session, onnx_output(session))


@dataclass(frozen=True)
class Snapshot:
    """What one request sees: the plan and the models loaded for it."""

    plan: ServingPlan
    champion: LoadedModel
    challenger: LoadedModel | None  # None also when the plan's challenger was refused

    def route(self, unit_id: str) -> tuple[Arm, LoadedModel, LoadedModel | None]:
        """(arm, model that answers, model that scores a shadow copy)."""
        plan = self.plan
        if self.challenger is None or plan.experiment_id is None or plan.mode == "none":
            return "champion", self.champion, None
        if plan.mode == "shadow":
            return "champion", self.champion, self.challenger
        arm = rollout.assign_arm(unit_id, plan.experiment_id, plan.challenger_share)
        return arm, self.challenger if arm == "challenger" else self.champion, None


@dataclass
class Serving:
    """The live state of one use case's scoring: refreshed in the background, read per request."""

    use_case: str
    refresh_s: float = 2.0
    snapshot: Snapshot | None = None
    problems: list[str] = field(default_factory=list)
    guard: rollout.CanaryGuard = field(default_factory=rollout.CanaryGuard)

    def __post_init__(self) -> None:
        self._loaded: dict[str, LoadedModel] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.shadows = ThreadPoolExecutor(max_workers=1, thread_name_prefix="falaj-shadow")
        self._pseudonym_key = load_or_create_key()

    def start(self, packaged: ModelRef | None = None) -> None:
        """Load the registry's plan; if the registry cannot be read, serve the packaged champion alone."""
        try:
            self.refresh()
        except Exception:
            if packaged is None:
                raise
            log.exception("registry unreachable at start; serving the packaged %s", packaged.tag)
            champion = load_model(packaged)
            self.snapshot = Snapshot(ServingPlan.champion_only(self.use_case, packaged), champion, None)
        self._thread = threading.Thread(target=self._loop, name="falaj-plan-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.shadows.shutdown(wait=False)

    def unit(self, unit_id: str) -> str:
        return pseudonym(unit_id, self._pseudonym_key)

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
                self.judge_canary()
            except Exception:
                log.exception("plan refresh failed; serving the last plan")

    def refresh(self) -> bool:
        """Reload the plan if its stamp changed; True if the snapshot was replaced."""
        with registry.session() as db:
            stamp = rollout.plan_stamp(db, self.use_case)
            if stamp == self._stamp:
                return False
            plan = rollout.serving_plan(db, self.use_case)
        current = self.snapshot
        champion = self._load(plan.champion) or (current.champion if current else None)
        if champion is None:
            raise ModelRefusedError(f"{self.use_case}: no champion that verifies; refusing to serve")
        challenger = self._load(plan.challenger) if plan.challenger else None
        if current is None or current.plan.revision != plan.revision:
            self.guard.reset()
        self.snapshot = Snapshot(plan, champion, challenger)
        self._stamp = stamp
        # A model the plan no longer names is dropped: naming it again loads and verifies it afresh.
        live = {model.ref.tag for model in (champion, challenger) if model is not None}
        self._loaded = {tag: model for tag, model in self._loaded.items() if tag in live}
        log.info("serving %s: %s mode %s", self.use_case, champion.ref.tag, plan.mode)
        return True

    def _load(self, ref: ModelRef) -> LoadedModel | None:
        if ref.tag in self._loaded:
            return self._loaded[ref.tag]
        try:
            loaded = load_model(ref)
        except (ModelRefusedError, OSError) as refused:
            message = str(refused)
            if message not in self.problems:
                self.problems.append(message)
                audit.emit("model.load", ref.tag, actor=SERVICE_ACTOR, outcome="refused", reason=message)
            log.error("%s; the last good model keeps serving", message)
            return None
        self._loaded[ref.tag] = loaded
        return loaded

    def judge_canary(self) -> None:
        """Advance a healthy canary a step, or roll back one that breached its budget."""
        snapshot = self.snapshot
        if snapshot is None or snapshot.plan.mode != "canary" or snapshot.plan.budget is None:
            return
        judgement = self.guard.judge(snapshot.plan.budget)
        if judgement.verdict == "wait":
            return
        with registry.session() as db, db.begin():
            if judgement.verdict == "breach":
                rollout.roll_back_experiment(
                    db, self.use_case, SERVICE_ACTOR, judgement.reason, judgement.evidence()
                )
            else:
                rollout.advance_canary(
                    db,
                    self.use_case,
                    SERVICE_ACTOR,
                    judgement.reason,
                    expected_revision=snapshot.plan.revision,
                )
        self.refresh()

    def record(self, arm: Arm, ok: bool, started: float) -> float:
        latency_ms = (time.perf_counter() - started) * 1000
        if self.snapshot is not None and self.snapshot.plan.mode == "canary":
            self.guard.record(arm, ok, latency_ms)
        return latency_ms


def prediction_row(
    use_case: str,
    request_id: str,
    unit: str,
    arm: str,
    model: LoadedModel,
    plan: ServingPlan,
    *,
    threshold: float | None,
    latency_ms: float,
    features: dict[str, Any],
    score: float | None = None,
    decision: str | None = None,
    shadow: bool = False,
    error: str | None = None,
    degraded: bool = False,
    freshness: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One row of the prediction log (``pipelines.predictions``); ``score`` is None when the model failed."""
    return {
        "at": datetime.now(UTC),
        "use_case": use_case,
        "request_id": request_id,
        "unit": unit,
        "arm": arm,
        "model_version": model.ref.version,
        "experiment_id": plan.experiment_id,
        "shadow": shadow,
        "score": score,
        "decision": decision,
        "threshold": threshold,
        "latency_ms": latency_ms,
        "degraded": degraded,
        "error": error,
        "features": features,
        "freshness": freshness or {},
    }
