"""Use-case spec: the shipped spec loads; a bad spec is refused naming the field and the reason."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.settings import PROJECT_DIR, get_settings
from pipelines.spec import (
    MonitoringSpec,
    SpecError,
    UseCaseSpec,
    list_specs,
    load_spec,
    load_spec_file,
    parse_spec,
)

FRAUD_SPEC_PATH = PROJECT_DIR / "usecases" / "fraud.yaml"


def _fraud_raw() -> dict[str, Any]:
    return dict(yaml.safe_load(FRAUD_SPEC_PATH.read_text()))


def _parse_mutated(mutate: Callable[[dict[str, Any]], None]) -> str:
    """Apply ``mutate`` to a copy of the shipped spec, parse it, and return the SpecError message."""
    raw = copy.deepcopy(_fraud_raw())
    mutate(raw)
    with pytest.raises(SpecError) as caught:
        parse_spec(yaml.safe_dump(raw), origin="mutated.yaml")
    return str(caught.value)


def test_shipped_fraud_spec_loads_through_the_settings(falaj_home: Path) -> None:
    # Given the project's usecases/ directory behind the settings
    assert get_settings().usecases_dir == FRAUD_SPEC_PATH.parent

    # When the fraud spec is loaded by name and all specs are listed
    fraud = load_spec("fraud")
    names = [item.name for item in list_specs()]

    # Then it is the reference use case the YAML describes
    assert isinstance(fraud, UseCaseSpec)
    assert fraud.name == "fraud"
    assert "fraud" in names
    assert fraud.region == "ae-dubai-1"
    assert fraud.event_source is fraud.sources["transactions"]
    assert fraud.event_source.event_time == "event_timestamp"
    assert fraud.sources["transactions"].partitioned
    assert not fraud.sources["customers"].partitioned
    assert fraud.sources["customers"].pii["full_name"] == "drop"
    assert {model.family for model in fraud.models} == {"lightgbm", "pytorch_mlp"}
    assert 0.0 <= fraud.gate.min_value <= 1.0


def test_unknown_use_case_name_lists_the_known_ones(falaj_home: Path) -> None:
    # Given the shipped use cases
    # When an unknown one is asked for
    with pytest.raises(SpecError) as caught:
        load_spec("no_such_case")

    # Then the message names the bad name and what is available
    assert "no_such_case" in str(caught.value)
    assert "fraud" in str(caught.value)


def test_parsed_spec_is_frozen(fraud_spec: UseCaseSpec) -> None:
    # Given a loaded spec
    # When code tries to change it
    # Then pydantic refuses: a spec is configuration, not state
    with pytest.raises(ValueError, match="frozen"):
        fraud_spec.region = "eu-west-1"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mutate", "where", "reason"),
    [
        pytest.param(
            lambda raw: raw.update(colour="blue"),
            "colour",
            "Extra inputs are not permitted",
            id="unknown-top-level-key",
        ),
        pytest.param(
            lambda raw: raw["sources"]["transactions"].update(partition_by="day"),
            "sources.transactions.partition_by",
            "Extra inputs are not permitted",
            id="unknown-nested-key",
        ),
        pytest.param(
            lambda raw: raw["gate"].update(min_value="high"),
            "gate.min_value",
            "valid number",
            id="string-for-float",
        ),
        # Strict mode: even a numeric-looking string is not coerced.
        pytest.param(
            lambda raw: raw["gate"].update(min_value="0.5"),
            "gate.min_value",
            "valid number",
            id="numeric-string-not-coerced",
        ),
        pytest.param(
            lambda raw: raw["gate"].update(min_value=1.5),
            "gate.min_value",
            "less than or equal to 1",
            id="floor-above-one",
        ),
        pytest.param(
            lambda raw: raw["serving"].update(threshold=-0.1),
            "serving.threshold",
            "greater than or equal to 0",
            id="negative-threshold",
        ),
        pytest.param(
            lambda raw: raw["sources"]["customers"]["pii"].update(passport_no="drop"),
            "sources.customers",
            "column 'passport_no' is not declared in columns",
            id="pii-column-undeclared",
        ),
        pytest.param(
            lambda raw: raw["sources"]["customers"]["pii"].update(email="encrypt"),
            "sources.customers.pii.email",
            "'pseudonymize', 'drop' or 'year_only'",
            id="unknown-pii-treatment",
        ),
        pytest.param(
            lambda raw: raw["sources"]["transactions"]["columns"].update(event_timestamp="string"),
            "sources.transactions",
            "must have type timestamp",
            id="event-time-not-timestamp",
        ),
        pytest.param(
            lambda raw: raw["training_set"].update(entity_source="payments"),
            "(top level)",
            "training_set.entity_source 'payments' is not a source",
            id="entity-source-unknown",
        ),
        pytest.param(
            lambda raw: raw.update(label="chargeback"),
            "(top level)",
            "column 'chargeback' is not in source 'transactions'",
            id="label-not-in-entity-source",
        ),
        pytest.param(lambda raw: raw.pop("gate"), "gate", "Field required", id="missing-section"),
        pytest.param(
            lambda raw: raw.update(region="Dubai"), "region", "should match pattern", id="region-pattern"
        ),
        pytest.param(
            lambda raw: raw.update(feature_service="fraud"),
            "feature_service",
            "should match pattern",
            id="feature-service-without-version",
        ),
        pytest.param(
            lambda raw: raw["monitoring"].update(window="1h"),
            "monitoring.window",
            "Extra inputs are not permitted",
            id="monitoring-unknown-key",
        ),
        pytest.param(
            lambda raw: raw["monitoring"].update(psi_threshold=0),
            "monitoring.psi_threshold",
            "greater than 0",
            id="monitoring-psi-not-positive",
        ),
        pytest.param(
            lambda raw: raw["monitoring"].update(false_discovery_rate=1.0),
            "monitoring.false_discovery_rate",
            "less than 1",
            id="monitoring-fdr-one",
        ),
        pytest.param(
            lambda raw: raw["monitoring"].update(min_rows=0),
            "monitoring.min_rows",
            "greater than or equal to 1",
            id="monitoring-min-rows-zero",
        ),
        pytest.param(
            lambda raw: raw["monitoring"].update(max_missing_rate_increase=1.5),
            "monitoring.max_missing_rate_increase",
            "less than or equal to 1",
            id="monitoring-missing-rate-above-one",
        ),
        pytest.param(
            lambda raw: raw["monitoring"].update(max_out_of_range_rate=-0.01),
            "monitoring.max_out_of_range_rate",
            "greater than or equal to 0",
            id="monitoring-negative-out-of-range-rate",
        ),
        pytest.param(
            lambda raw: raw["monitoring"].update(categorical=["mcc", "mcc"]),
            "monitoring",
            "categorical must not repeat a feature",
            id="monitoring-categorical-repeated",
        ),
        pytest.param(
            lambda raw: raw["gate"].update(metric="rmse"),
            "gate",
            "rmse is an error: give its limit as max_value, not min_value",
            id="error-metric-with-a-floor",
        ),
        pytest.param(
            lambda raw: raw.update(task="regression"),
            "",
            "gate.metric pr_auc does not judge a regression model",
            id="regression-judged-by-an-auc",
        ),
        pytest.param(
            lambda raw: raw["serving"].pop("threshold"),
            "",
            "serving.threshold is required for binary classification, and only there",
            id="classifier-without-threshold",
        ),
        pytest.param(
            lambda raw: raw.pop("processing"),
            "",
            "the sources hold personal data (pii): declare the record of processing",
            id="personal-data-without-a-record",
        ),
        pytest.param(
            lambda raw: raw["monitoring"].update(categorical=["Merchant Category"]),
            "monitoring.categorical.0",
            "should match pattern",
            id="monitoring-categorical-not-an-identifier",
        ),
    ],
)
def test_bad_spec_names_field_path_and_reason(
    mutate: Callable[[dict[str, Any]], None], where: str, reason: str
) -> None:
    # Given the shipped spec with one thing wrong
    # When it is parsed
    message = _parse_mutated(mutate)

    # Then the error names where (origin and field path) and why, on the same line
    assert message.startswith("mutated.yaml: invalid use-case spec")
    lines = [line.strip() for line in message.splitlines()[1:]]
    assert any(line.startswith(f"{where}:") and reason in line for line in lines) or (
        not where and reason in message
    ), message


def test_every_bad_field_is_reported_not_just_the_first() -> None:
    # Given a spec with two independent mistakes
    def mutate(raw: dict[str, Any]) -> None:
        raw["gate"]["min_value"] = 2.0
        raw["serving"]["freshness"]["fraud_v1"]["max_age_hours"] = 0

    # When it is parsed
    message = _parse_mutated(mutate)

    # Then both are named, so the author fixes them in one pass
    assert "gate.min_value" in message
    assert "serving.freshness.fraud_v1.max_age_hours" in message


def test_invalid_yaml_is_a_spec_error() -> None:
    # Given text that is not YAML
    # When it is parsed
    with pytest.raises(SpecError, match=r"^broken\.yaml: not valid YAML"):
        parse_spec("name: [unclosed\n  region: x", origin="broken.yaml")


@pytest.mark.parametrize("text", ["- fraud\n- aml\n", "just a string\n", ""], ids=["list", "scalar", "empty"])
def test_non_mapping_top_level_is_a_spec_error(text: str) -> None:
    # Given YAML whose top level is not a mapping
    # When it is parsed
    # Then the reason says what shape a spec must have
    with pytest.raises(SpecError, match="must be a mapping at the top level"):
        parse_spec(text, origin="shape.yaml")


def test_file_name_must_equal_spec_name(tmp_path: Path) -> None:
    # Given the valid fraud spec saved under another file name
    path = tmp_path / "aml.yaml"
    path.write_text(FRAUD_SPEC_PATH.read_text())

    # When the file is loaded
    with pytest.raises(SpecError) as caught:
        load_spec_file(path)

    # Then both names appear, so the fix is obvious
    assert "name 'fraud' must equal the file name 'aml'" in str(caught.value)
    assert str(path) in str(caught.value)


def test_spec_file_under_its_own_name_loads(tmp_path: Path) -> None:
    # Given the fraud spec copied under its own name elsewhere
    path = tmp_path / "fraud.yaml"
    path.write_text(FRAUD_SPEC_PATH.read_text())

    # When it is loaded
    loaded = load_spec_file(path)

    # Then it equals the shipped one field for field
    assert loaded == load_spec_file(FRAUD_SPEC_PATH)


def test_model_params_of_an_undeclared_family_names_the_declared_ones(fraud_spec: UseCaseSpec) -> None:
    assert fraud_spec.model_params("lightgbm")["num_leaves"] == 31
    with pytest.raises(SpecError, match=r"no model family 'xgboost' \(declared: lightgbm, pytorch_mlp\)"):
        fraud_spec.model_params("xgboost")


def test_monitoring_section_is_read_and_optional(fraud_spec: UseCaseSpec) -> None:
    # Given the shipped spec, and the same spec without its monitoring section
    raw = _fraud_raw()
    raw.pop("monitoring")

    # When the latter is parsed
    without = parse_spec(yaml.safe_dump(raw), origin="no-monitoring.yaml")

    # Then the shipped one monitors fraud's codes and flags as categories, and the other gets the defaults
    assert fraud_spec.monitoring.categorical == ["mcc", "is_ecommerce", "merchant_is_online"]
    assert fraud_spec.monitoring.min_rows == 500
    assert without.monitoring == MonitoringSpec()
    assert without.monitoring.categorical == []
    assert (without.monitoring.psi_threshold, without.monitoring.false_discovery_rate) == (0.2, 0.05)


def test_a_regression_spec_takes_an_error_ceiling_and_no_threshold() -> None:
    # Given the shipped spec turned into a regression judged by RMSE
    raw = copy.deepcopy(_fraud_raw())
    raw["task"] = "regression"
    for binary_only in ("min_value", "min_roc_auc", "max_brier", "max_ece"):
        raw["gate"].pop(binary_only)
    raw["gate"].update(metric="rmse", max_value=12.5, min_improvement=-0.5, slice_max_regression=2.0)
    raw["serving"].pop("threshold")
    # When it is parsed
    spec = parse_spec(yaml.safe_dump(raw))
    # Then the gate knows it judges an error, lower is better, and has a ceiling and no floor
    assert spec.task == "regression" and spec.gate.task == "regression"
    assert not spec.gate.higher_is_better
    assert spec.gate.ceilings() == {"rmse": 12.5} and spec.gate.floors() == {}
    assert spec.serving.threshold is None
    # And a probability rule on it is refused, naming the rule
    raw["gate"]["max_ece"] = 0.02
    with pytest.raises(SpecError, match="max_ece judges probabilities; rmse is a regression metric"):
        parse_spec(yaml.safe_dump(raw))
