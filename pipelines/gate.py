"""Evaluation gate: policy as code, challenger vs the current champion on the same test rows.

A candidate that passes becomes the ``challenger``; only a second person's approval
(``falaj models promote``) makes it the champion.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines import audit, crypto, lake, registry, signing
from pipelines.gate_policy import Check, check_policy, metric_value, summary
from pipelines.gate_policy import passed as policy_passed
from pipelines.reference_profile import write_reference_profile
from pipelines.settings import PROJECT_DIR, get_settings
from pipelines.spec import UseCaseSpec

log = logging.getLogger(__name__)
REFERENCE_SPLIT = "valid"  # the drift monitor's reference rows (see lineage)


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    metric: str
    candidate_tag: str
    candidate_version: int
    candidate_value: float
    champion_tag: str | None
    champion_value: float | None
    candidates: dict[str, float]

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)


def split_rows(training_set_uri: str, split: str) -> Any:
    import io

    import pandas as pd

    data = crypto.unseal(Path(training_set_uri) / "data.parquet")
    return pd.read_parquet(io.BytesIO(data), filters=[("split", "==", split)])


def onnx_model(model_dir: Path) -> bytes:
    return crypto.unseal(model_dir / "model.onnx")


def onnx_scores(model: bytes, rows: Any, features: list[str]) -> Any:
    """A serialized ONNX model's score on rows (P(y=1), or the regression's prediction), as the server
    computes it."""
    import numpy as np
    import onnxruntime as ort

    from pipelines.serving import onnx_scores as session_scores

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session_scores(session, rows[features].to_numpy(dtype=np.float32))


@dataclass(frozen=True)
class Judgement:
    checks: list[Check]
    candidate_value: float  # the policy's metric, on the gate's test rows
    champion_value: float | None


def judge(spec: UseCaseSpec, training_set_uri: str, candidate: Any, champion: Any | None) -> Judgement:
    """Every rule of the spec's policy, candidate and champion scored on the same test rows."""
    rows = split_rows(training_set_uri, "test")
    labels = rows[spec.label].to_numpy()
    candidate_model = onnx_model(Path(candidate.artifact_uri))
    p_candidate = onnx_scores(candidate_model, rows, candidate.features)
    p_champion = (
        None
        if champion is None
        else onnx_scores(onnx_model(Path(champion.artifact_uri)), rows, champion.features)
    )
    checks = policy_checks(spec, rows, p_candidate, p_champion, candidate_model, candidate)
    metric = spec.gate.metric
    return Judgement(
        checks,
        metric_value(metric, labels, p_candidate),
        None if p_champion is None else metric_value(metric, labels, p_champion),
    )


def policy_checks(
    spec: UseCaseSpec, rows: Any, p_candidate: Any, p_champion: Any | None, model: bytes, candidate: Any
) -> list[Check]:
    """The spec's gate policy on the test ``rows``: the candidate's and the champion's scores (None: no
    champion), the candidate's ONNX ``model`` for latency, and its recorded ONNX parity."""
    import numpy as np

    return check_policy(
        spec.gate,
        rows[spec.label].to_numpy(),
        p_candidate,
        p_champion,
        slices=rows[[column for column in spec.gate.slices if column in rows.columns]],
        onnx_model=model,
        parity_diff=candidate.parity_max_abs_diff,
        latency_rows=rows[candidate.features].to_numpy(dtype=np.float32)[:200],
    )


def short_reason(checks: list[Check]) -> str:
    """One line for the decision record: what failed, or that every judged rule held."""
    failed = [f"{check.name}: {check.detail}" for check in checks if check.judged and not check.passed]
    if failed:
        return ("; ".join(failed))[:1024]
    judged = sum(check.judged for check in checks)
    first = next((check.detail for check in checks if check.name.startswith(("floor:", "ceiling:"))), "")
    return f"all {judged} judged rules hold ({first})"[:1024]


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, read-only query
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_version(spec: UseCaseSpec) -> str:
    """The validated lake's state, as the SHA-256 of every validated partition's landing version."""

    root = lake.zone_dir("validated", spec.name, "")
    versions = sorted(
        f"{path.parent.relative_to(root)}={lake.read_json(path)['landing_version']}"
        for path in root.glob("*/partition=*/_manifest.json")
    )
    return hashlib.sha256("\n".join(versions).encode()).hexdigest()


def lineage(
    spec: UseCaseSpec, model_dir: Path, training_set: dict[str, Any], manifest: dict[str, Any]
) -> dict[str, Any]:
    """Everything a model came from, each item verifiable on its own."""
    report = get_settings().reports_dir / "validation" / f"{spec.name}.json"
    plan = lake.read_json(Path(training_set["uri"]) / "manifest.json")
    features = list(manifest["features"])
    # The validation split: newer than the training rows, so past the warm-up of the 30-day features
    # (on early training days they average over a short history), and scored by a model that did not fit
    # it, as served traffic is. The test split stays the gate's.
    reference = split_rows(training_set["uri"], REFERENCE_SPLIT)
    scores = onnx_scores(onnx_model(model_dir), reference, features)
    profile = write_reference_profile(
        model_dir, reference, features, scores, spec.monitoring.categorical, REFERENCE_SPLIT
    )
    return {
        "data_version": data_version(spec),
        "validation": {
            "report": str(report),
            "sha256": lake.sha256_file(report) if report.exists() else None,
            "success": lake.read_json(report)["success"] if report.exists() else None,
        },
        "feature_service": spec.feature_service,
        "features": list(manifest["features"]),
        "training_set": {
            "uri": training_set["uri"],
            "sha256": training_set["sha256"],
            "window": plan["window"],
            "cutoff": plan["window"]["end"],
        },
        "code_version": code_version(),
        "artifact": {
            "onnx_sha256": manifest["onnx_sha256"],
            "native_sha256": hashlib.sha256(crypto.unseal(model_dir / manifest["native_model"])).hexdigest()
            if "native_model" in manifest
            else None,
        },
        "reference_profile": {"uri": str(profile), "sha256": lake.sha256_file(profile)},
        "residency": {
            "storage_region": get_settings().storage_region,
            "training_region": spec.region
            if spec.training_backend() == "kubernetes"
            else get_settings().storage_region,
        },
    }


def register(
    db: Any, spec: UseCaseSpec, model_dir: Path, training_set: dict[str, Any]
) -> registry.ModelVersion:
    """Record a trained model once: the same artifact registered again is the same version."""
    from sqlalchemy import select

    manifest = lake.read_json(model_dir / "manifest.json")
    existing = db.scalar(
        select(registry.ModelVersion).where(
            registry.ModelVersion.artifact_uri == str(model_dir),
            registry.ModelVersion.onnx_sha256 == manifest["onnx_sha256"],
        )
    )
    if existing is not None:
        return existing
    metrics = lake.read_json(model_dir / "metrics.json")
    version = registry.ModelVersion(
        use_case=spec.name,
        version=registry.next_version(db, spec.name),
        family=manifest["family"],
        artifact_uri=str(model_dir),
        onnx_sha256=manifest["onnx_sha256"],
        parity_max_abs_diff=float(manifest["parity"]["max_abs_diff"]),
        metrics=metrics,
        params=manifest["params"],
        features=list(manifest["features"]),
        feature_service=spec.feature_service,
        training_set_uri=training_set["uri"],
        training_set_sha256=training_set["sha256"],
        code_version=code_version(),
        lineage=lineage(spec, model_dir, training_set, manifest),
        created_by=get_settings().actor,
    )
    db.add(version)
    db.flush()
    signing.sign_model(model_dir)  # what the registry names, servers verify before loading
    audit.record(
        db,
        "model.register",
        version.tag,
        details={"family": version.family, "onnx_sha256": version.onnx_sha256},
    )
    return version


def _decided_already(
    db: Any, spec: UseCaseSpec, candidate: registry.ModelVersion, champion: registry.ModelVersion | None
) -> registry.GateDecision | None:
    """The decision recorded on ``candidate`` against ``champion`` under the spec's thresholds, if any."""
    gate, decision = spec.gate, registry.latest_decision(db, candidate)
    limit = gate.min_value if gate.higher_is_better else gate.max_value
    if decision is None:
        return None
    recorded = (decision.champion_id, decision.metric, decision.min_value, decision.min_improvement)
    asked = (champion.id if champion else None, gate.metric, limit, gate.min_improvement)
    return decision if recorded == asked else None


def evaluate_gate(spec: UseCaseSpec, training_set: dict[str, Any], model_dirs: list[str]) -> GateResult:
    """Register every candidate, pick the best, and promote it only if the policy says so.

    The best candidate is judged once against a champion under one set of thresholds: a retried or
    concurrent attempt gets the recorded decision back and records nothing twice.
    """
    metric = spec.gate.metric
    actor = get_settings().actor
    with registry.session() as db, db.begin():
        registry.lock(db, f"gate:{spec.name}")  # a retry beside the attempt it replaced waits its turn
        candidates = [register(db, spec, Path(path), training_set) for path in model_dirs]
        direction = 1.0 if spec.gate.higher_is_better else -1.0
        best = max(candidates, key=lambda version: direction * version.metrics[metric])
        champion = registry.resolve_alias(db, spec.name, "champion")
        decided = _decided_already(db, spec, best, champion)
        if decided is not None:  # a retry after the commit: the recorded decision stands, recorded once
            log.info("gate already decided for %s against %s", best.tag, champion.tag if champion else "none")
            return GateResult(
                passed=decided.passed,
                reason=decided.reason,
                metric=metric,
                candidate_tag=best.tag,
                candidate_version=best.version,
                candidate_value=decided.candidate_value,
                champion_tag=champion.tag if champion else None,
                champion_value=decided.champion_value,
                candidates={f"{v.tag} ({v.family})": v.metrics[metric] for v in candidates},
            )
        already_champion = champion is not None and champion.id == best.id
        if already_champion:
            judgement = Judgement(
                [Check("already_champion", True, True, f"{best.tag} is already the champion")],
                best.metrics[metric],
                best.metrics[metric],
            )
        else:
            judgement = judge(spec, training_set["uri"], best, champion)
        checks, candidate_value, champion_value = (
            judgement.checks,
            judgement.candidate_value,
            judgement.champion_value,
        )
        passed, reason = policy_passed(checks), short_reason(checks)
        db.add(
            registry.GateDecision(
                use_case=spec.name,
                candidate_id=best.id,
                champion_id=champion.id if champion else None,
                metric=metric,
                candidate_value=candidate_value,
                champion_value=champion_value,
                min_value=spec.gate.min_value if spec.gate.higher_is_better else spec.gate.max_value,
                min_improvement=spec.gate.min_improvement,
                passed=passed,
                reason=reason,
                checks=[
                    {"name": c.name, "passed": bool(c.passed), "judged": bool(c.judged), "detail": c.detail}
                    for c in checks
                ],
                decided_by=actor,
            )
        )
        audit.record(db, "gate.decide", best.tag, outcome="passed" if passed else "refused", reason=reason)
        if passed and not already_champion:
            registry.set_alias(
                db, spec.name, "challenger", best, actor, f"gate passed, awaits approval: {reason}"
            )
        result = GateResult(
            passed=passed,
            reason=reason,
            metric=metric,
            candidate_tag=best.tag,
            candidate_version=best.version,
            candidate_value=candidate_value,
            champion_tag=champion.tag if champion else None,
            champion_value=champion_value,
            candidates={f"{v.tag} ({v.family})": v.metrics[metric] for v in candidates},
        )
    log.info("gate %s for %s:\n%s", "passed" if passed else "refused", best.tag, summary(checks))
    return result
