"""`python -m pipelines.model_ci` in a scratch git repository: an unchanged tree passes the gate against
itself; a model change that makes the model worse fails with the gate's reasons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.checkouts import copy_checkout
from tests.integration.conftest import PROJECT

pytestmark = pytest.mark.integration

GIT = ["git", "-c", "user.name=Model CI", "-c", "user.email=ci@falaj.invalid", "-c", "commit.gpgsign=false"]
FAMILIES = {"lightgbm", "pytorch_mlp"}


def committed_checkout(target: Path) -> Path:
    """The tracked files, as the first commit of a fresh repository."""
    repo = copy_checkout(target)
    for command in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "--message", "base"]):
        subprocess.run([*GIT, *command], cwd=repo, check=True)
    return repo


def model_ci(repo: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("FALAJ_")}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.model_ci", "--out", str(out), *args],
        cwd=PROJECT, env={**env, "FALAJ_PROJECT_DIR": str(repo)}, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip


def fraud_result(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    report = json.loads((out / "report.json").read_text())
    (fraud,) = report["use_cases"]
    return report, fraud


def check(fraud: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item for item in fraud["gate"]["checks"] if item["name"] == name)


def test_an_unchanged_tree_passes_the_gate_against_itself(tmp_path: Path) -> None:
    repo = committed_checkout(tmp_path / "repo")

    completed = model_ci(repo, tmp_path / "out", "--base", "HEAD")

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report, fraud = fraud_result(tmp_path / "out")
    assert report["passed"] and report["base"]["same_training_inputs"] and fraud["passed"]
    # Then the report holds both metric sets, and the gate compared equal models
    assert set(fraud["candidate_models"]) == set(fraud["champion_models"]) == FAMILIES
    assert fraud["candidate_models"] == fraud["champion_models"]
    assert fraud["gate"]["candidate_value"] == fraud["gate"]["champion_value"] > 0.6
    regression = check(fraud, "non_regression:pr_auc")
    assert regression["judged"] and regression["passed"] and "improvement +0.0000" in regression["detail"]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## fraud: passed" in markdown and "| champion lightgbm |" in markdown


def test_a_model_made_worse_fails_with_the_gates_reasons(tmp_path: Path) -> None:
    repo = committed_checkout(tmp_path / "repo")
    base = subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
    # Given a commit that leaves LightGBM one two-leaf tree and the MLP one epoch of two units
    spec = repo / "usecases" / "fraud.yaml"
    text = spec.read_text()
    worse = {
        "num_leaves: 31, learning_rate: 0.05, n_estimators: 300": "num_leaves: 2, n_estimators: 1",
        "hidden: [64, 32], epochs: 15": "hidden: [2], epochs: 1",
    }
    for old, new in worse.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    spec.write_text(text)
    subprocess.run([*GIT, "commit", "--quiet", "--all", "--message", "worse"], cwd=repo, check=True)

    completed = model_ci(repo, tmp_path / "out", "--base", base.stdout.strip())

    assert completed.returncode == 1, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "fraud: REFUSED" in completed.stderr
    assert "FAIL non_regression:pr_auc: pr_auc candidate" in completed.stderr
    assert "FAIL floor:pr_auc" in completed.stderr
    report, fraud = fraud_result(tmp_path / "out")
    assert not report["passed"] and not report["base"]["same_training_inputs"]
    assert fraud["champion_from"] == "the base revision, trained here"
    # Then the champion was trained from the base's spec, and each family got worse
    for family in FAMILIES:
        assert fraud["candidate_models"][family]["pr_auc"] < fraud["champion_models"][family]["pr_auc"] - 0.1
    assert not check(fraud, "non_regression:pr_auc")["passed"]
    assert "FAIL | non_regression:pr_auc" in (tmp_path / "out" / "report.md").read_text()


def test_an_unknown_base_is_refused_with_the_reason(tmp_path: Path) -> None:
    repo = committed_checkout(tmp_path / "repo")

    completed = model_ci(repo, tmp_path / "out")  # a single commit has no HEAD~1

    assert completed.returncode == 2
    assert "base revision 'HEAD~1' does not exist" in completed.stderr
    assert not (tmp_path / "out").exists()
