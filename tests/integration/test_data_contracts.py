"""`python -m pipelines.data_contracts` against a real Feast registry and platform DB: a champion reads
fraud_v1; a feature_repo/ that retypes or renames one of its features, or does not plan, fails naming it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import registry
from pipelines.features import apply_definitions
from tests.homes import falaj_home
from tests.integration.conftest import PROJECT
from tests.registry_rows import add_version

pytestmark = pytest.mark.integration

FIXTURES = PROJECT / "tests" / "fixtures" / "contracts"
FRAUD_V1 = (
    "txn_count_1h", "txn_count_24h", "spend_24h_aed", "avg_amount_30d_aed", "credit_limit_aed",
    "birth_year", "mcc", "merchant_is_online", "txn_amount_aed", "amount_vs_avg_30d",
    "minutes_since_last_txn", "is_ecommerce",
)  # fmt: skip
WHO = "fraud:v1 (champion) reads feature service 'fraud_v1'"


@pytest.fixture(scope="module")
def deployed_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose Feast registry holds the shipped definitions and whose champion reads fraud_v1."""
    home = tmp_path_factory.mktemp("contracts-home")
    (home / "feast").mkdir()
    with falaj_home(home):
        registry.engine.cache_clear()
        apply_definitions()
        with registry.session() as db, db.begin():
            champion = add_version(db, features=FRAUD_V1)
            registry.set_alias(db, "fraud", "champion", champion, "risk-officer", "approved")
    registry.engine.cache_clear()
    return home


def edited_project(tmp_path: Path, replacements: dict[str, str]) -> Path:
    """The declared files in a scratch project, with ``feature_repo/fraud.py`` edited."""
    project = tmp_path / "project"
    for folder in ("feature_repo", "expectations", "usecases"):
        shutil.copytree(PROJECT / folder, project / folder)
    definitions = project / "feature_repo" / "fraud.py"
    text = definitions.read_text()
    for old, new in replacements.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    definitions.write_text(text)
    return project


def data_contracts(home: Path, project: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FALAJ_HOME": str(home), "FALAJ_PROJECT_DIR": str(project)}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.data_contracts", "--fixtures", str(FIXTURES)],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_shipped_definitions_keep_every_contract(deployed_home: Path) -> None:
    completed = data_contracts(deployed_home)

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert f"registry: {deployed_home / 'feast' / 'registry.db'}" in completed.stdout
    assert "fraud:v1 (champion): fraud_v1, 12 features" in completed.stdout
    assert completed.stdout.rstrip().endswith("every data contract holds")


def test_a_retyped_and_a_renamed_feature_fail_naming_model_service_and_feature(
    deployed_home: Path, tmp_path: Path
) -> None:
    # Given definitions where the hourly count became a float and the credit limit lost its currency
    project = edited_project(
        tmp_path,
        {
            'Field(name="txn_count_1h", dtype=Int64,': 'Field(name="txn_count_1h", dtype=Float64,',
            'Field(name="credit_limit_aed", dtype=Float64)': 'Field(name="credit_limit", dtype=Float64)',
        },
    )

    completed = data_contracts(deployed_home, project)

    assert completed.returncode == 1, completed.stdout[-3000:]
    assert "2 data contract(s) broken" in completed.stderr
    assert (
        f"{WHO}: feature 'txn_count_1h' (view customer_behaviour) is Int64 in the registry but Float64 in "
        "feature_repo/ (retyped)"
    ) in completed.stderr
    assert (
        f"{WHO}: feature 'credit_limit_aed' (view customer_profile) is no longer in the service in "
        "feature_repo/ (removed or renamed)"
    ) in completed.stderr
    # and the plan showed the change against what the registry holds
    assert "Updated feature view customer_profile" in completed.stdout


def test_definitions_feast_cannot_plan_fail_with_the_reason(deployed_home: Path, tmp_path: Path) -> None:
    # Given a second service named fraud_v1, which apply would silently put over the first
    second_v1 = 'fraud_v2 = FeatureService(\n    name="fraud_v1",'
    project = edited_project(tmp_path, {'fraud_v2 = FeatureService(\n    name="fraud_v2",': second_v1})

    completed = data_contracts(deployed_home, project)

    assert completed.returncode == 1, completed.stdout[-3000:]
    assert "feast plan of" in completed.stderr
    assert "feature service(s) fraud_v1 defined more than once" in completed.stderr
