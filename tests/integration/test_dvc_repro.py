"""`dvc repro` on a clean clone rebuilds the models outside Airflow, and leaves `dvc status` clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import lake
from tests.integration.conftest import PROJECT

pytestmark = pytest.mark.integration


def test_dvc_repro_on_a_clean_clone_rebuilds_the_models(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(PROJECT), str(clone)], check=True)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("FALAJ_HOME", None)
    dvc = str(Path(bin_dir) / "dvc")

    repro = subprocess.run([dvc, "repro"], cwd=clone, env=env, capture_output=True, text=True, check=False)

    assert repro.returncode == 0, repro.stdout[-2000:] + repro.stderr[-2000:]
    status = subprocess.run([dvc, "status"], cwd=clone, env=env, capture_output=True, text=True, check=True)
    assert "Data and pipelines are up to date" in status.stdout
    training_set = lake.read_json(clone / ".falaj/dvc/training_sets/fraud/manifest.json")
    for family in ("lightgbm", "pytorch_mlp"):
        manifest = lake.read_json(clone / ".falaj/dvc/models/fraud" / family / "manifest.json")
        assert manifest["parity"]["passed"] and manifest["training_set_sha256"] == training_set["sha256"]
