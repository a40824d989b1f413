"""Evaluation gate: policy as code, challenger vs the current champion on the same test rows."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines import lake, registry
from pipelines.settings import PROJECT_DIR, get_settings
from pipelines.spec import GatePolicy, UseCaseSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    metric: str
    candidate_tag: str
    candidate_value: float
    champion_tag: str | None
    champion_value: float | None
    candidates: dict[str, float]

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)


def decide(policy: GatePolicy, candidate: float, champion: float | None) -> tuple[bool, str]:
    """Apply the policy; the first model only needs to clear the absolute floor."""
    name = policy.metric
    if candidate < policy.min_value:
        return False, f"{name} {candidate:.4f} is below the floor {policy.min_value:.4f}"
    if champion is None:
        return True, f"{name} {candidate:.4f} clears the floor {policy.min_value:.4f}; no champion yet"
    needed = champion + policy.min_improvement
    if candidate < needed:
        return (
            False,
            f"{name} {candidate:.4f} does not reach champion {champion:.4f} + {policy.min_improvement}",
        )
    return True, f"{name} {candidate:.4f} beats champion {champion:.4f} + {policy.min_improvement}"


def score_onnx(model_dir: Path, training_set_uri: str, features: list[str], label: str) -> dict[str, float]:
    """Test-split metrics of an ONNX model on a training set, as the server would compute them."""
    import numpy as np
    import onnxruntime as ort
    import pandas as pd

    from models.metrics import classification_metrics

    data = pd.read_parquet(Path(training_set_uri) / "data.parquet")
    test = data[data["split"] == "test"]
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = test[features].to_numpy(dtype=np.float32)
    proba = session.run(["probabilities"], {"input": inputs})[0][:, 1]
    return classification_metrics(test[label].to_numpy(), proba, threshold=0.5)


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
        created_by=get_settings().actor,
    )
    db.add(version)
    db.flush()
    return version


def evaluate_gate(spec: UseCaseSpec, training_set: dict[str, Any], model_dirs: list[str]) -> GateResult:
    """Register every candidate, pick the best, and promote it only if the policy says so."""
    metric = spec.gate.metric
    actor = get_settings().actor
    with registry.session() as db, db.begin():
        candidates = [register(db, spec, Path(path), training_set) for path in model_dirs]
        best = max(candidates, key=lambda version: version.metrics[metric])
        champion = registry.resolve_alias(db, spec.name, "champion")
        already_champion = champion is not None and champion.id == best.id
        champion_value = None
        if champion is not None and already_champion:
            champion_value = best.metrics[metric]
            passed, reason = True, f"{best.tag} is already the champion ({metric} {champion_value:.4f})"
        else:
            if champion is not None:
                champion_value = score_onnx(
                    Path(champion.artifact_uri), training_set["uri"], champion.features, spec.label
                )[metric]
            passed, reason = decide(spec.gate, best.metrics[metric], champion_value)
        db.add(
            registry.GateDecision(
                use_case=spec.name,
                candidate_id=best.id,
                champion_id=champion.id if champion else None,
                metric=metric,
                candidate_value=best.metrics[metric],
                champion_value=champion_value,
                min_value=spec.gate.min_value,
                min_improvement=spec.gate.min_improvement,
                passed=passed,
                reason=reason,
                decided_by=actor,
            )
        )
        if passed and not already_champion:
            if champion is not None:
                registry.set_alias(db, spec.name, "archived", champion, actor, f"replaced by {best.tag}")
            registry.set_alias(db, spec.name, "champion", best, actor, f"gate passed: {reason}")
        result = GateResult(
            passed=passed,
            reason=reason,
            metric=metric,
            candidate_tag=best.tag,
            candidate_value=best.metrics[metric],
            champion_tag=champion.tag if champion else None,
            champion_value=champion_value,
            candidates={f"{v.tag} ({v.family})": v.metrics[metric] for v in candidates},
        )
    log.info("gate %s: %s", "passed" if passed else "refused", reason)
    return result
