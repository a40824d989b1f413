"""The scorer's model set: verified loads, the last good champion kept, the packaged model as fallback."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models import train
from pipelines import crypto, registry, signing
from pipelines.rollout import ModelRef
from pipelines.serving import ModelRefusedError, Serving, load_model
from tests.unit.test_models_train_cli import FEATURES, PARAMS, write_training_set
from tests.unit.test_rollout import _decide


@pytest.fixture
def model_dir(falaj_home: Path, tmp_path: Path) -> Path:
    """A trained, signed LightGBM model as the registry's artifact store holds it."""
    training_set = write_training_set(tmp_path / "ts", n=600)
    output = tmp_path / "model"
    argv = ["--training-set", str(training_set), "--family", "lightgbm", "--output", str(output)]
    assert train.main([*argv, "--params", json.dumps(PARAMS["lightgbm"])]) == 0
    signing.sign_model(output)
    return output


def _ref(directory: Path, version: int = 1) -> ModelRef:
    sha = hashlib.sha256(crypto.unseal(directory / "model.onnx")).hexdigest()
    return ModelRef(version, f"fraud:v{version}", str(directory), sha, tuple(FEATURES))


def _champion(directory: Path, version: int) -> None:
    ref = _ref(directory, version)
    with registry.session() as db, db.begin():
        model = registry.ModelVersion(
            use_case="fraud", version=version, family="lightgbm", artifact_uri=str(directory),
            onnx_sha256=ref.onnx_sha256, parity_max_abs_diff=0.0, metrics={}, params={},
            features=list(FEATURES), feature_service="fraud_v2", training_set_uri="/ts",
            training_set_sha256="1" * 64, code_version="test", created_by="ml-engineer",
        )  # fmt: skip
        db.add(model)
        db.flush()
        _decide(db, model, passed=True)
        registry.promote(db, "fraud", version, approver="risk-officer", reason="test")


def _flip_last_byte(directory: Path) -> None:
    sealed = crypto.sealed_path(directory / "model.onnx")
    blob = sealed.read_bytes()
    sealed.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))


def test_a_verified_model_scores_and_a_tampered_one_is_refused(model_dir: Path) -> None:
    loaded = load_model(_ref(model_dir))
    scores = loaded.scores(np.zeros((3, len(FEATURES)), dtype=np.float32))
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    _flip_last_byte(model_dir)
    with pytest.raises(ModelRefusedError, match="does not decrypt"):
        load_model(loaded.ref)


def test_a_tampered_new_champion_is_refused_and_the_last_good_one_keeps_serving(
    model_dir: Path, tmp_path: Path
) -> None:
    _champion(model_dir, 1)
    serving = Serving("fraud")
    serving.refresh()
    assert serving.snapshot is not None and serving.snapshot.champion.ref.tag == "fraud:v1"
    # Given v2 is promoted, but its artifact was altered after it was signed
    altered = tmp_path / "altered"
    shutil.copytree(model_dir, altered)
    _champion(altered, 2)
    _flip_last_byte(altered)
    # When the server reads the new plan
    assert serving.refresh()
    # Then v1 still answers, and the refusal is on record
    assert serving.snapshot.champion.ref.tag == "fraud:v1"
    assert any("fraud:v2" in problem for problem in serving.problems)


def test_without_a_readable_plan_the_packaged_champion_serves_alone(model_dir: Path) -> None:
    serving = Serving("fraud", refresh_s=3600)
    serving.start(packaged=_ref(model_dir))  # the registry names no champion at all
    try:
        assert serving.snapshot is not None
        assert serving.snapshot.plan.mode == "none" and serving.snapshot.champion.ref.tag == "fraud:v1"
        arm, model, shadow = serving.snapshot.route("C0000001")
        assert (arm, model.ref.tag, shadow) == ("champion", "fraud:v1", None)
    finally:
        serving.stop()
