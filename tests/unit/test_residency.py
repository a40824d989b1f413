"""Data residency: an off-region write or training pod is refused before anything moves, and audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import audit, lake, registry, residency
from pipelines.settings import get_settings
from pipelines.spec import UseCaseSpec


def test_an_off_region_write_is_refused_before_a_byte_and_audited(
    falaj_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALAJ_STORAGE_REGION", "eu-west-1")
    get_settings.cache_clear()
    target = lake.zone_dir("landing", "fraud", "transactions") / "partition=2026-10-01" / "data.parquet"

    with pytest.raises(
        residency.ResidencyError, match="region eu-west-1; the residency policy allows only ae-dubai-1"
    ):
        with lake.atomic_path(target) as tmp:
            tmp.write_bytes(b"customer rows")

    assert not target.parent.exists()
    with registry.session() as db:
        [event] = audit.load(db)
    assert (event["action"], event["outcome"], event["details"]) == (
        "residency.check",
        "denied",
        {"region": "eu-west-1"},
    )


def test_an_in_region_write_goes_through(falaj_home: Path) -> None:
    target = lake.zone_dir("landing", "fraud", "x") / "data.bin"
    with lake.atomic_path(target) as tmp:
        tmp.write_bytes(b"ok")
    assert target.read_bytes() == b"ok"


def test_a_training_pod_outside_the_allowed_regions_is_refused(
    falaj_home: Path, fraud_spec: UseCaseSpec
) -> None:
    from pipelines.k8s import training_pod

    off_region = fraud_spec.model_copy(update={"region": "us-east-1"})
    with pytest.raises(
        residency.ResidencyError, match="training pod fraud/pytorch_mlp is in region us-east-1"
    ):
        training_pod(off_region, "pytorch_mlp", "s3://lake/ts", "s3://lake/out")
    with registry.session() as db:
        assert audit.load(db)[-1]["resource"] == "training pod fraud/pytorch_mlp"
    assert training_pod(fraud_spec, "pytorch_mlp", "s3://lake/ts", "s3://lake/out").spec.affinity is not None
