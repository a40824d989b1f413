"""Registry rows for tests: a registered model version, and the gate's decision on it."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from pipelines import registry


def add_version(
    db: Session,
    use_case: str = "fraud",
    family: str = "lightgbm",
    features: Sequence[str] = ("txn_count_1h",),
    created_by: str = "risk-officer",
) -> registry.ModelVersion:
    version = registry.ModelVersion(
        use_case=use_case,
        version=registry.next_version(db, use_case),
        family=family,
        artifact_uri=f"/artifacts/{use_case}/{family}",
        onnx_sha256="0" * 64,
        parity_max_abs_diff=1e-6,
        metrics={"pr_auc": 0.5},
        params={"num_leaves": 31},
        features=list(features),
        feature_service=f"{use_case}_v1",
        training_set_uri="/lake/ts",
        training_set_sha256="1" * 64,
        code_version="abc123",
        created_by=created_by,
    )
    db.add(version)
    db.flush()
    return version


def decide(db: Session, version: registry.ModelVersion, passed: bool) -> registry.GateDecision:
    decision = registry.GateDecision(
        use_case=version.use_case,
        candidate_id=version.id,
        metric="pr_auc",
        candidate_value=0.8,
        min_value=0.5,
        min_improvement=0.0,
        passed=passed,
        reason="pr_auc 0.8000 clears the floor" if passed else "pr_auc 0.4000 is below the floor",
        decided_by="falaj-system",
    )
    db.add(decision)
    db.flush()
    return decision
