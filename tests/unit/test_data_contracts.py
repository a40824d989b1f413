"""Data contracts without servers: every suite against its fixtures, and the feature-contract rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.data_contracts import DeployedModel, check_deployed_features, check_suites
from pipelines.settings import PROJECT_DIR, get_settings

FIXTURES = PROJECT_DIR / "tests" / "fixtures" / "contracts"

# GX warns that the suites' regexes have groups (it only tests for a match): noise, not a finding.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This pattern is interpreted as a regular expression:UserWarning"
)


@pytest.fixture
def fixtures(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES, tmp_path / "fixtures"))


def _breaches(fixtures: Path) -> dict[str, list[str]]:
    return {check.suite: check.breaches for check in check_suites(fixtures)}


def test_every_suite_passes_its_good_fixture_and_rejects_its_bad_one(falaj_home: Path) -> None:
    checks = check_suites(FIXTURES)

    suites = sorted(path.stem for path in (PROJECT_DIR / "expectations").glob("*.json"))
    assert [check.suite for check in checks] == suites
    assert all(not check.breaches and check.rejected_bad_by for check in checks), checks
    transactions = next(check for check in checks if check.suite == "transactions.landing")
    assert any("'currency'" in failure and "USD" in failure for failure in transactions.rejected_bad_by)


def test_a_suite_that_rejects_good_rows_names_the_expectation_and_column(
    falaj_home: Path, fixtures: Path
) -> None:
    # Given a "good" merchant-profile fixture that holds a flag of 2
    shutil.copy2(
        fixtures / "merchant_profile.features.bad.parquet",
        fixtures / "merchant_profile.features.good.parquet",
    )

    breaches = _breaches(fixtures)

    assert breaches["merchant_profile.features"] == [
        "suite merchant_profile.features rejects its known-good fixture "
        "merchant_profile.features.good.parquet: expect_column_values_to_be_in_set on "
        "'merchant_is_online' (1 unexpected values, e.g. [2])"
    ]
    assert not any(breach for suite, breach in breaches.items() if suite != "merchant_profile.features")


def test_a_loosened_suite_that_accepts_the_known_bad_fixture_fails(
    falaj_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a project whose customers suite no longer checks that Emirates IDs are pseudonyms
    project = tmp_path / "project"
    shutil.copytree(PROJECT_DIR / "expectations", project / "expectations")
    path = project / "expectations" / "customers.landing.json"
    suite = json.loads(path.read_text())
    pseudonym_check = {"type": "expect_column_values_to_match_regex", "column": "emirates_id"}
    suite["expectations"] = [
        item
        for item in suite["expectations"]
        if {"type": item["type"], "column": item["kwargs"].get("column")} != pseudonym_check
    ]
    path.write_text(json.dumps(suite))
    monkeypatch.setenv("FALAJ_PROJECT_DIR", str(project))
    get_settings.cache_clear()

    breaches = _breaches(FIXTURES)

    assert breaches["customers.landing"] == [
        "suite customers.landing accepts its known-bad fixture customers.landing.bad.parquet: "
        "an expectation that caught it was dropped or loosened"
    ]


def test_a_suite_that_cannot_load_is_a_breach(
    falaj_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a suite file whose name inside is not its file name
    project = tmp_path / "project"
    shutil.copytree(PROJECT_DIR / "expectations", project / "expectations")
    path = project / "expectations" / "merchants.landing.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "name": "merchants.raw"}))
    monkeypatch.setenv("FALAJ_PROJECT_DIR", str(project))
    get_settings.cache_clear()

    breaches = _breaches(FIXTURES)

    assert breaches["merchants.landing"] == [
        f"suite merchants.landing could not run: ValueError: {path}: suite name must be 'merchants.landing'"
    ]


def test_a_suite_without_fixtures_is_a_breach(falaj_home: Path, fixtures: Path) -> None:
    (fixtures / "card_velocity.features.bad.parquet").unlink()

    breaches = _breaches(fixtures)

    assert breaches["card_velocity.features"] == [
        f"suite card_velocity.features has no fixture {fixtures / 'card_velocity.features.bad.parquet'}"
    ]


SERVED = {
    "fraud_v1": {
        "txn_count_1h": ("customer_behaviour", "Int64"),
        "credit_limit_aed": ("customer_profile", "Float64"),
    }
}
CHAMPION = DeployedModel("fraud:v3", "champion", "fraud_v1", ("txn_count_1h", "credit_limit_aed"))


def test_deployed_features_hold_when_the_definitions_match_the_registry() -> None:
    assert check_deployed_features([CHAMPION], SERVED, SERVED) == []


def test_a_retyped_renamed_or_removed_feature_names_model_service_and_feature() -> None:
    retyped_and_renamed = {
        "fraud_v1": {
            "txn_count_1h": ("customer_behaviour", "Float64"),
            "credit_limit": ("customer_profile", "Float64"),
        }
    }
    who = "fraud:v3 (champion) reads feature service 'fraud_v1'"

    assert check_deployed_features([CHAMPION], SERVED, retyped_and_renamed) == [
        f"{who}: feature 'txn_count_1h' (view customer_behaviour) is Int64 in the registry but Float64 in "
        "feature_repo/ (retyped)",
        f"{who}: feature 'credit_limit_aed' (view customer_profile) is no longer in the service in "
        "feature_repo/ (removed or renamed)",
    ]
    assert check_deployed_features([CHAMPION], SERVED, {}) == [
        f"{who}, which feature_repo/ no longer defines (removed or renamed)"
    ]
    assert check_deployed_features([CHAMPION], {}, SERVED) == [
        f"{who}, which the Feast registry does not hold"
    ]
