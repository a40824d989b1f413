"""The DVC stage is the third caller of the one training entrypoint, with the spec's parameters."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipelines.spec import load_spec_file

PROJECT = Path(__file__).resolve().parents[2]


def test_dvc_params_equal_the_spec() -> None:
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    spec = load_spec_file(PROJECT / "usecases" / f"{params['use_case']}.yaml")
    assert {family: json.loads(text) for family, text in params["families"].items()} == {
        model.family: model.params for model in spec.models
    }


def test_dvc_stage_runs_the_training_entrypoint() -> None:
    stage = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]["train"]
    command = " ".join(stage["do"]["cmd"].split())
    assert command.startswith(
        "FALAJ_HOME=.falaj/dvc-home python -m models.train"
        " --training-set .falaj/dvc/training_sets/${use_case} --family ${key}"
    )
    assert "--output .falaj/dvc/models/${use_case}/${key}" in command
    assert stage["foreach"] == "${families}"
