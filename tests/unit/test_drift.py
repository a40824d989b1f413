"""Drift statistics: a window against a model's reference profile, per feature and across features."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pipelines.drift import DriftInputError, FeatureDrift, compare
from pipelines.reference_profile import categorical_profile, column_profile
from pipelines.spec import MonitoringSpec

POLICY = MonitoringSpec(categorical=["mcc"])
MCC_CODES = np.array([5411.0, 5812.0, 5999.0, 4829.0])
MCC_SHARES = np.array([0.4, 0.3, 0.2, 0.1])
Draw = Callable[[np.random.Generator, int], np.ndarray]


def _mcc(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.choice(MCC_CODES, size=rows, p=MCC_SHARES)


def _amount(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.lognormal(3.0, 1.0, rows)


def _profile(columns: dict[str, np.ndarray], categorical: tuple[str, ...] = ("mcc",)) -> dict[str, Any]:
    """A reference profile as the gate writes it and the monitor reads it back (through JSON)."""
    features = {
        name: categorical_profile(values) if name in categorical else column_profile(values)
        for name, values in columns.items()
    }
    rows = len(next(iter(columns.values())))
    return dict(json.loads(json.dumps({"rows": rows, "split": "train", "bins": 10, "features": features})))


def _by_name(results: list[FeatureDrift]) -> dict[str, FeatureDrift]:
    return {result.name: result for result in results}


def _twenty_features() -> dict[str, Draw]:
    """Numbers of several shapes (some missing at random), counts, a flag and a category code."""

    def normal(rng: np.random.Generator, rows: int) -> np.ndarray:
        return rng.normal(0.0, 1.0, rows)

    def counts(rng: np.random.Generator, rows: int) -> np.ndarray:
        return rng.poisson(2.0, rows).astype(np.float64)

    def sometimes_missing(rng: np.random.Generator, rows: int) -> np.ndarray:
        values = rng.gamma(2.0, 50.0, rows)
        values[rng.random(rows) < 0.2] = np.nan
        return values

    def flag(rng: np.random.Generator, rows: int) -> np.ndarray:
        return (rng.random(rows) < 0.3).astype(np.float64)

    draws: dict[str, Draw] = {"mcc": _mcc, "is_ecommerce": flag}
    shapes: list[Draw] = [_amount, normal, counts, sometimes_missing]
    for index in range(18):
        draws[f"feature_{index}"] = shapes[index % len(shapes)]
    return draws


def test_windows_from_the_reference_distribution_never_flag() -> None:
    # Given a reference of 20 features and 30 windows drawn from the very same distributions
    rng = np.random.default_rng(7)
    draws = _twenty_features()
    profile = _profile(
        {name: draw(rng, 20_000) for name, draw in draws.items()}, categorical=("mcc", "is_ecommerce")
    )
    policy = MonitoringSpec(categorical=["mcc", "is_ecommerce"])

    # When each window is compared with it
    results = [
        result
        for _ in range(30)
        for result in compare(profile, {name: draw(rng, 2_000) for name, draw in draws.items()}, policy)
    ]

    # Then every feature was tested, and none of the 600 results is an alert of either kind
    assert len(results) == 600
    assert all(result.p_value is not None and result.adjusted_p is not None for result in results)
    assert [result.name for result in results if result.drifted or result.quality_issue] == []
    assert max(result.psi or 0.0 for result in results) < POLICY.psi_threshold / 2


def test_shifted_numeric_feature_is_flagged_with_its_psi_and_ks() -> None:
    # Given a lognormal amount, and a window where its log-mean moved by +0.5, beside an unchanged category
    rng = np.random.default_rng(11)
    profile = _profile({"amount": _amount(rng, 20_000), "mcc": _mcc(rng, 20_000)})
    window = {"amount": rng.lognormal(3.5, 1.0, 5_000), "mcc": _mcc(rng, 5_000)}

    # When it is compared
    results = _by_name(compare(profile, window, POLICY))

    # Then the amount has drifted and says why; the category has not
    amount = results["amount"]
    assert amount.drifted and amount.test == "ks" and amount.kind == "numeric"
    assert amount.psi is not None and amount.psi >= 0.2
    assert amount.statistic is not None and amount.statistic > 0.15
    assert amount.adjusted_p is not None and amount.adjusted_p < 1e-10
    assert amount.findings[0].startswith(f"PSI {amount.psi:.2f} >= 0.2 and KS p(adj)=")
    assert not results["mcc"].drifted and results["mcc"].test == "chi2"


def test_a_trivial_shift_in_a_huge_window_is_significant_but_not_drift() -> None:
    # Given 200,000 reference rows and a window of 200,000 whose log-mean moved by only 0.05
    rng = np.random.default_rng(12)
    profile = _profile({"amount": _amount(rng, 200_000)})
    window = {"amount": rng.lognormal(3.05, 1.0, 200_000)}

    # When it is compared
    [amount] = compare(profile, window, POLICY)

    # Then the test is sure the distribution moved, but the PSI floor keeps it from being an alert
    assert amount.adjusted_p is not None and amount.adjusted_p < 1e-6
    assert amount.psi is not None and amount.psi < POLICY.psi_threshold
    assert not amount.drifted


def test_an_unseen_category_above_one_percent_is_a_finding() -> None:
    # Given merchant category codes, and windows where a code never seen in training is 3% or 0.5% of rows
    rng = np.random.default_rng(13)
    profile = _profile({"mcc": _mcc(rng, 20_000)})
    many = _mcc(rng, 10_000)
    many[:300] = 7995.0
    few = _mcc(rng, 10_000)
    few[:50] = 7995.0

    # When each is compared
    [flagged] = compare(profile, {"mcc": many}, POLICY)
    [quiet] = compare(profile, {"mcc": few}, POLICY)

    # Then 3% is a data-quality finding naming the code and its share; 0.5% is listed but not a finding
    assert flagged.kind == "categorical" and flagged.out_of_range_rate is None
    assert flagged.new_categories == {"7995": pytest.approx(0.03)}
    assert flagged.quality_issue
    assert any("unseen at reference: 7995 (3.0%)" in finding for finding in flagged.findings)
    assert flagged.adjusted_p is not None and flagged.adjusted_p < 1e-10
    assert quiet.new_categories == {"7995": pytest.approx(0.005)}
    assert not quiet.quality_issue and quiet.findings == ()


def test_a_feature_gone_forty_percent_null_is_a_quality_issue_not_drift() -> None:
    # Given a complete feature, and a window where 40% of its values are missing at random
    rng = np.random.default_rng(14)
    profile = _profile({"amount": _amount(rng, 20_000)})
    values = _amount(rng, 5_000)
    values[rng.random(values.size) < 0.4] = np.nan

    # When it is compared
    [amount] = compare(profile, {"amount": values}, POLICY)

    # Then the missing rate is the finding; the values that are there did not drift
    assert amount.quality_issue and not amount.drifted
    assert amount.null_rate == pytest.approx(0.4, abs=0.02) and amount.reference_null_rate == 0.0
    assert amount.findings == (f"missing rate {amount.null_rate:.2f} vs 0.00 at reference",)


def test_values_beyond_the_reference_range_are_a_quality_issue() -> None:
    # Given amounts whose reference range is known, and a window where 2% are ten times the largest seen
    rng = np.random.default_rng(15)
    profile = _profile({"amount": _amount(rng, 20_000)})
    reference_max = profile["features"]["amount"]["max"]
    values = _amount(rng, 5_000)
    values[:100] = 10 * reference_max

    # When it is compared
    [amount] = compare(profile, {"amount": values}, POLICY)

    # Then the out-of-range share counts exactly the values above the widened maximum
    widened = reference_max + 0.1 * (reference_max - profile["features"]["amount"]["min"])
    assert amount.out_of_range_rate == pytest.approx(np.count_nonzero(values > widened) / values.size)
    assert amount.out_of_range_rate is not None and amount.out_of_range_rate >= 0.02
    assert amount.quality_issue and "reference range widened by 10%" in amount.findings[0]


@pytest.mark.parametrize(("rows", "insufficient"), [(499, True), (500, False)])
def test_a_window_below_min_rows_is_insufficient_never_an_alert(rows: int, insufficient: bool) -> None:
    # Given a feature that has drifted far and gone half null
    rng = np.random.default_rng(16)
    profile = _profile({"amount": _amount(rng, 20_000)})
    values = rng.lognormal(6.0, 1.0, rows)
    values[: rows // 2] = np.nan

    # When a window of `rows` rows is compared (min_rows is 500)
    [amount] = compare(profile, {"amount": values}, POLICY)

    # Then one row short of min_rows nothing is judged; at min_rows both alerts are raised
    assert amount.insufficient is insufficient
    assert amount.drifted is not insufficient
    assert amount.quality_issue is not insufficient
    if insufficient:
        assert amount.findings == ("insufficient: 499 rows < min_rows 500; nothing judged",)


def _uniform_reference() -> dict[str, Any]:
    """Ten equal bins with edges 1..9, from a reference so large its own noise does not count."""
    return {
        "kind": "numeric",
        "rows": 1_000_000,
        "null_rate": 0.0,
        "edges": [float(edge) for edge in range(1, 10)],
        "shares": [0.1] * 10,
        "mean": 5.0,
        "std": 2.9,
        "min": 0.0,
        "max": 10.0,
    }


def _window(first_bin: int) -> np.ndarray:
    """1,000 values: ``first_bin`` of them in the first bin, the rest spread evenly over the other nine."""
    rest = (1000 - first_bin) // 9
    return np.concatenate([np.full(first_bin, 0.5), np.repeat(np.arange(1, 10) + 0.5, rest)])


def test_benjamini_hochberg_adjusts_across_the_window() -> None:
    # Given a feature with KS D = 0.045 on 1,000 rows (raw p ~ 0.034), and nine features exactly as expected
    policy = MonitoringSpec(psi_threshold=0.01)
    shifted = _window(145)
    alone = {"rows": 1_000_000, "features": {"shifted": _uniform_reference()}}
    among = {
        "rows": 1_000_000,
        "features": {"shifted": _uniform_reference()}
        | {f"steady_{i}": _uniform_reference() for i in range(9)},
    }

    # When it is judged alone, and among the nine
    [by_itself] = compare(alone, {"shifted": shifted}, policy)
    results = _by_name(
        compare(among, {"shifted": shifted} | {f"steady_{i}": _window(100) for i in range(9)}, policy)
    )

    # Then its raw p-value passes 0.05 either way, but among ten tests the adjusted one (10 p) does not
    judged = results["shifted"]
    assert judged.statistic == pytest.approx(0.045)
    assert judged.p_value is not None and 0.02 < judged.p_value < 0.05
    assert judged.psi is not None and judged.psi >= policy.psi_threshold
    assert by_itself.drifted and by_itself.adjusted_p == pytest.approx(by_itself.p_value)
    assert judged.adjusted_p == pytest.approx(10 * judged.p_value)
    assert not judged.drifted
    assert results["steady_0"].p_value == 1.0 and results["steady_0"].psi == pytest.approx(0.0)


def test_a_profile_written_before_kinds_is_read_as_numeric() -> None:
    # Given the same reference profile with and without the "kind" field older profiles lack
    rng = np.random.default_rng(17)
    profile = _profile({"amount": _amount(rng, 20_000)})
    old = json.loads(json.dumps(profile))
    del old["features"]["amount"]["kind"]
    window = {"amount": rng.lognormal(3.5, 1.0, 5_000)}

    # When a window is compared with each
    # Then the old profile gives exactly what the new one gives
    [from_old] = compare(old, window, POLICY)
    assert from_old == compare(profile, window, POLICY)[0]
    assert from_old.kind == "numeric" and from_old.drifted


def test_the_score_is_compared_as_prediction_when_the_window_has_it() -> None:
    # Given a profile of one feature and of the model's scores, and a window whose scores doubled
    rng = np.random.default_rng(18)
    profile = _profile({"amount": _amount(rng, 20_000)})
    profile["prediction"] = json.loads(json.dumps(column_profile(rng.beta(1.0, 20.0, 20_000))))
    amount = _amount(rng, 5_000)

    # When the window is compared with and without its scores
    with_scores = _by_name(
        compare(profile, {"amount": amount, "prediction": rng.beta(2.0, 20.0, 5_000)}, POLICY)
    )
    without = compare(profile, {"amount": amount}, POLICY)

    # Then the score is one more result, and it drifted
    assert set(with_scores) == {"amount", "prediction"} and with_scores["prediction"].drifted
    assert [result.name for result in without] == ["amount"]


def test_a_window_that_does_not_fit_the_profile_is_refused_naming_the_column() -> None:
    # Given a profile of two features
    rng = np.random.default_rng(19)
    profile = _profile({"amount": _amount(rng, 2_000), "mcc": _mcc(rng, 2_000)})

    # When a window lacks one, or its columns differ in length
    # Then the error says which column and what to pass
    with pytest.raises(DriftInputError, match="no column 'mcc'"):
        compare(profile, {"amount": _amount(rng, 600)}, POLICY)
    with pytest.raises(DriftInputError, match=r"differ in length \(amount=600, mcc=700\)"):
        compare(profile, {"amount": _amount(rng, 600), "mcc": _mcc(rng, 700)}, POLICY)


def test_categories_with_fractions_or_wide_codes_are_counted_like_small_codes() -> None:
    # Given the same window written as small codes, as codes spread beyond one bincount, and shifted by 0.5
    rng = np.random.default_rng(20)
    reference = _mcc(rng, 20_000)
    window = _mcc(rng, 2_000)
    window[:40] = np.nan
    window[40:100] = 7995.0
    results = []
    for transform in (lambda codes: codes, lambda codes: codes * 1e7, lambda codes: codes + 0.5):
        profile = _profile({"mcc": transform(reference)})
        [result] = compare(profile, {"mcc": transform(window)}, POLICY)
        results.append(result)

    # Then the statistics agree whichever way the codes were counted
    first = results[0]
    for other in results[1:]:
        assert other.statistic == pytest.approx(first.statistic)
        assert other.psi == pytest.approx(first.psi)
        assert list(other.new_categories.values()) == pytest.approx(list(first.new_categories.values()))
    assert first.null_rate == pytest.approx(0.02) and first.quality_issue
