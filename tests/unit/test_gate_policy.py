"""The gate as policy: each rule is a recorded check; a worse challenger is refused with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pipelines.gate_policy import (
    Check,
    _weighted_metric,
    brier,
    check_policy,
    ece,
    onnx_latency_p99_ms,
    paired_bootstrap_delta,
    passed,
    summary,
)
from pipelines.spec import GatePolicy

FAST = {"bootstrap_resamples": 200, "min_value": 0.3}


def _scores(y: np.ndarray, signal: float, seed: int) -> np.ndarray:
    """Probabilities that separate the classes by ``signal`` logits, plus unit noise."""
    noise = np.random.default_rng(seed).normal(size=len(y))
    return 1.0 / (1.0 + np.exp(-(signal * (2 * y - 1) - 2.0 + noise)))


@pytest.fixture
def labels() -> np.ndarray:
    return (np.random.default_rng(7).random(3000) < 0.1).astype(np.int64)


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_worse_challenger_fails_non_regression_with_the_interval_in_the_reason(labels: np.ndarray) -> None:
    # Given a good champion and a challenger that learned nothing (its scores, shuffled over the rows)
    champion = _scores(labels, 2.0, seed=1)
    challenger = np.random.default_rng(2).permutation(champion)

    # When the policy is checked
    checks = check_policy(GatePolicy(**FAST, min_improvement=-0.02), labels, challenger, champion)

    # Then non-regression fails, naming the delta and the confidence interval, and the gate refuses
    check = _by_name(checks)["non_regression:pr_auc"]
    assert check.judged and not check.passed
    delta, low, high = paired_bootstrap_delta(labels, challenger, champion, "pr_auc", 200, 0.95, 0)
    assert high < -0.2
    assert f"improvement {delta:+.4f}" in check.detail
    assert f"95% CI [{low:+.4f}, {high:+.4f}]" in check.detail
    assert "lower bound < -0.0200 required" in check.detail
    assert passed(checks) is False
    assert summary(checks).splitlines()[0].startswith("FAIL ")


def test_clearly_better_challenger_passes_every_rule(labels: np.ndarray) -> None:
    # Given a weak champion and a challenger that separates the classes much better
    champion, challenger = _scores(labels, 0.8, seed=1), _scores(labels, 2.5, seed=2)
    policy = GatePolicy(**FAST, min_roc_auc=0.8, max_brier=0.2, max_ece=0.2)

    # When the policy is checked
    checks = check_policy(policy, labels, challenger, champion, parity_diff=1e-7)

    # Then every judged rule passes and the interval lies above zero
    assert passed(checks), summary(checks)
    assert {c.name for c in checks if c.judged} == {
        "floor:pr_auc",
        "floor:roc_auc",
        "non_regression:pr_auc",
        "brier",
        "ece",
        "onnx_parity",
    }
    _, low, _ = paired_bootstrap_delta(labels, challenger, champion, "pr_auc", 200, 0.95, 0)
    assert low > 0.1


def test_first_model_skips_comparisons_but_not_floors(labels: np.ndarray) -> None:
    # Given no champion and a candidate under the ROC-AUC floor
    candidate = _scores(labels, 2.0, seed=1)
    policy = GatePolicy(
        **FAST, min_roc_auc=0.999, slices=["channel"], min_slice_rows=1, min_slice_positives=1
    )
    channel = np.where(np.arange(len(labels)) % 2 == 0, "pos", "ecommerce")

    # When the policy is checked
    checks = _by_name(check_policy(policy, labels, candidate, None, {"channel": channel}))

    # Then comparisons are reported unjudged with the reason, and the floor still refuses
    assert not checks["non_regression:pr_auc"].judged
    assert "no champion yet" in checks["non_regression:pr_auc"].detail
    assert not checks["slice:channel=pos"].judged
    assert "no champion" in checks["slice:channel=pos"].detail
    assert checks["floor:pr_auc"].passed
    assert not checks["floor:roc_auc"].passed and "< floor 0.9990" in checks["floor:roc_auc"].detail
    assert passed(list(checks.values())) is False


def test_tiny_slice_is_reported_but_not_judged(labels: np.ndarray) -> None:
    # Given a slice of 40 rows, where the challenger's scores are shuffled, under the 500-row minimum
    champion = _scores(labels, 2.0, seed=1)
    challenger = champion.copy()
    rare = np.arange(len(labels)) < 40
    challenger[rare] = np.random.default_rng(3).permutation(champion[rare])
    channel = np.where(rare, "atm", "pos")
    policy = GatePolicy(**FAST, min_improvement=-0.05, slices=["channel"], min_slice_rows=500)

    # When the policy is checked
    checks = check_policy(policy, labels, challenger, champion, {"channel": channel})

    # Then the small slice is listed with its size, not judged, and does not block
    tiny = _by_name(checks)["slice:channel=atm"]
    assert not tiny.judged and tiny.passed
    assert f"40 rows, {labels[rare].sum()} positives" in tiny.detail
    assert "reported, not judged" in tiny.detail
    assert _by_name(checks)["slice:channel=pos"].judged
    assert passed(checks), summary(checks)
    assert summary(checks).splitlines()[-1].startswith("SKIP ")

    # And the same slice, once large enough by the policy, is judged and refused
    judged = policy.model_copy(update={"min_slice_rows": 10, "min_slice_positives": 1})
    assert not _by_name(check_policy(judged, labels, challenger, champion, {"channel": channel}))[
        "slice:channel=atm"
    ].passed


def test_regressing_slice_fails_while_the_overall_metric_passes(labels: np.ndarray) -> None:
    # Given a challenger much better than the champion in store, much worse on e-commerce
    import pandas as pd

    champion = _scores(labels, 1.5, seed=1)
    challenger = _scores(labels, 3.0, seed=2)
    ecommerce = np.arange(len(labels)) % 5 == 0
    challenger[ecommerce] = _scores(labels[ecommerce], 0.5, seed=3)
    frame = pd.DataFrame({"channel": np.where(ecommerce, "ecommerce", "pos")})
    policy = GatePolicy(**FAST, slices=["channel"], min_slice_rows=300, min_slice_positives=20)

    # When the policy is checked
    checks = _by_name(check_policy(policy, labels, challenger, champion, frame))

    # Then the overall comparison passes, the e-commerce slice fails with its numbers, the gate refuses
    assert checks["non_regression:pr_auc"].passed
    assert checks["slice:channel=pos"].judged and checks["slice:channel=pos"].passed
    bad = checks["slice:channel=ecommerce"]
    assert bad.judged and not bad.passed
    assert "< -0.0500 allowed" in bad.detail and f"{int(ecommerce.sum())} rows" in bad.detail
    assert passed(list(checks.values())) is False


def test_slice_the_data_does_not_carry_fails(labels: np.ndarray) -> None:
    # Given a policy slicing by a column the test rows were not given with
    scores = _scores(labels, 2.0, seed=1)
    policy = GatePolicy(**FAST, slices=["merchant_emirate"])

    # When the policy is checked, then the rule is not silently dropped
    check = _by_name(check_policy(policy, labels, scores, scores, {"channel": np.zeros(len(labels))}))[
        "slice:merchant_emirate"
    ]
    assert check.judged and not check.passed and "'merchant_emirate'" in check.detail


def test_brier_and_ece_match_hand_computed_values() -> None:
    # Every row in its own bin: ECE is the mean |p - y|
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.3, 0.6, 0.95])
    assert brier(y, p) == pytest.approx((0.01 + 0.09 + 0.16 + 0.0025) / 4)
    assert ece(y, p) == pytest.approx((0.1 + 0.3 + 0.4 + 0.05) / 4)

    # Two rows per bin: the bin's mean probability against its fraud rate, weighted by rows
    y = np.array([0, 1, 0, 1])
    p = np.array([0.12, 0.18, 0.81, 0.89])
    assert ece(y, p) == pytest.approx(0.35)
    assert brier(y, p) == pytest.approx((0.0144 + 0.6724 + 0.6561 + 0.0121) / 4)

    # A probability of exactly 1 falls in the last bin; a perfect forecast scores zero on both
    assert ece(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0
    assert brier(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_calibration_limits_are_judged(labels: np.ndarray) -> None:
    scores = _scores(labels, 2.0, seed=1)
    value = brier(labels, scores)
    strict = _by_name(check_policy(GatePolicy(**FAST, max_brier=value * 0.99), labels, scores, None))
    loose = _by_name(check_policy(GatePolicy(**FAST, max_ece=0.9), labels, scores, None))

    assert not strict["brier"].passed and f"brier {value:.4f} >" in strict["brier"].detail
    assert loose["ece"].judged and loose["ece"].passed
    assert not loose["brier"].judged and "no limit set" in loose["brier"].detail


def _tiny_onnx(path: Path, width: int = 3) -> Path:
    import onnx
    from onnx import TensorProto, helper

    weights = helper.make_tensor("w", TensorProto.FLOAT, [width, 1], [0.5] * width)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["p"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 1])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_latency_and_size_budgets_pass_and_fail(tmp_path: Path, labels: np.ndarray) -> None:
    # Given a tiny ONNX model whose input width is read from its declared shape
    model = _tiny_onnx(tmp_path / "model.onnx").read_bytes()
    size = len(model)
    scores = _scores(labels, 2.0, seed=1)

    def checks(latency_ms: float, max_bytes: int) -> dict[str, Check]:
        policy = GatePolicy(**FAST, max_latency_ms_p99=latency_ms, max_model_bytes=max_bytes)
        return _by_name(check_policy(policy, labels, scores, None, onnx_model=model, latency_runs=50))

    # When its budgets are generous, then both pass; when they are too tight, then both fail
    roomy = checks(1000.0, size)
    assert roomy["latency_p99"].judged and roomy["latency_p99"].passed
    assert roomy["model_bytes"].passed and f"{size:,} bytes ≤" in roomy["model_bytes"].detail
    tight = checks(1e-6, size - 1)
    assert not tight["latency_p99"].passed and "> max 0.000 ms" in tight["latency_p99"].detail
    assert not tight["model_bytes"].passed
    assert 0.0 < onnx_latency_p99_ms(model, runs=20) < 1000.0


def test_parity_beyond_the_limit_fails(labels: np.ndarray) -> None:
    scores = _scores(labels, 2.0, seed=1)
    policy = GatePolicy(**FAST)
    for diff, ok in ((1e-6, True), (2e-5, False), (float("nan"), False)):
        check = _by_name(check_policy(policy, labels, scores, None, parity_diff=diff))["onnx_parity"]
        assert check.judged and check.passed is ok


def test_bootstrap_is_deterministic_for_a_seed(labels: np.ndarray) -> None:
    a, b = _scores(labels, 1.5, seed=1), _scores(labels, 1.4, seed=2)
    first = paired_bootstrap_delta(labels, a, b, "roc_auc", 300, 0.9, seed=11)
    assert paired_bootstrap_delta(labels, a, b, "roc_auc", 300, 0.9, seed=11) == first
    assert paired_bootstrap_delta(labels, a, b, "roc_auc", 300, 0.9, seed=12) != first
    delta, low, high = first
    assert delta == pytest.approx(roc_auc_score(labels, a) - roc_auc_score(labels, b))
    assert low < delta < high


@pytest.mark.parametrize("decimals", [2, 12], ids=["ties", "distinct"])
def test_resample_weights_score_like_sklearn_on_the_resampled_rows(decimals: int) -> None:
    # Given resamples of rows, expressed as repeat counts
    rng = np.random.default_rng(5)
    y = (rng.random(400) < 0.2).astype(np.int64)
    p = np.round(rng.random(400) * 0.6 + 0.3 * y, decimals)
    picks = rng.integers(0, 400, size=(6, 400))
    counts = np.stack([np.bincount(row, minlength=400) for row in picks], axis=1).astype(np.float64)

    # Then the weighted pass equals scikit-learn on the rows themselves
    for metric, score in (("roc_auc", roc_auc_score), ("pr_auc", average_precision_score)):
        expected = [score(y[row], p[row]) for row in picks]
        got = _weighted_metric(metric, y.astype(np.float64), p, counts)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_single_class_resamples_are_skipped() -> None:
    # Given one positive in 30 rows, many resamples miss it
    y = np.zeros(30, dtype=np.int64)
    y[0] = 1
    p = np.linspace(0.9, 0.1, 30)
    counts = np.ones((30, 2))
    counts[0, 1] = 0

    # Then such a resample scores NaN (skipped), and the interval still comes from the others
    assert np.isnan(_weighted_metric("pr_auc", y.astype(np.float64), p, counts)[1])
    delta, low, high = paired_bootstrap_delta(y, p, p[::-1].copy(), "roc_auc", 200, 0.95, 0)
    assert delta == pytest.approx(1.0) and low == pytest.approx(1.0) and high == pytest.approx(1.0)


def test_policy_refuses_two_floors_for_the_primary_metric() -> None:
    with pytest.raises(ValueError, match="primary metric"):
        GatePolicy(metric="pr_auc", min_value=0.5, min_pr_auc=0.6)
    assert GatePolicy(metric="roc_auc", min_value=0.9, min_pr_auc=0.6).floors() == {
        "roc_auc": 0.9,
        "pr_auc": 0.6,
    }


REGRESSION = {"metric": "rmse", "max_value": 3.0, "bootstrap_resamples": 200, "min_slice_rows": 100}


@pytest.fixture
def demand() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Daily units sold, a forecaster off by about 1 unit and a worse one off by about 2."""
    rng = np.random.default_rng(11)
    units = rng.poisson(20, 2000).astype(np.float64)
    return units, units + rng.normal(0, 1.0, units.size), units + rng.normal(0.5, 2.0, units.size)


def test_regression_metrics_under_weights_are_the_plain_ones_on_repeated_rows() -> None:
    # Given predictions and a resample that repeats some rows and drops others
    rng = np.random.default_rng(3)
    y, p = rng.poisson(10, 50).astype(float), rng.normal(10, 3, 50)
    counts = rng.integers(0, 3, 50).astype(float)
    repeated_y, repeated_p = np.repeat(y, counts.astype(int)), np.repeat(p, counts.astype(int))
    error = repeated_p - repeated_y
    expected = {
        "rmse": np.sqrt(np.mean(error**2)), "mae": np.mean(np.abs(error)),
        "wape": np.abs(error).sum() / np.abs(repeated_y).sum(),
        "r2": 1 - (error**2).sum() / ((repeated_y - repeated_y.mean()) ** 2).sum(),
    }  # fmt: skip
    # Then each weighted metric equals the metric of the repeated rows
    for metric, value in expected.items():
        assert _weighted_metric(metric, y, p, counts[:, None])[0] == pytest.approx(value, rel=1e-12), metric


def test_a_regression_gate_judges_the_error_ceiling_and_improvement(
    demand: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    units, good, worse = demand
    stores = np.where(np.arange(units.size) % 4 == 0, "S1", "S2")
    policy = GatePolicy(**REGRESSION, min_improvement=-0.1, slices=["store"], slice_max_regression=0.2)
    # When the worse forecaster challenges the good champion
    checks = _by_name(check_policy(policy, units, worse, good, {"store": stores}))
    # Then its RMSE is under the ceiling, but the improvement (champion − candidate) is negative with
    # confidence, and every store regresses; nothing about probabilities is judged
    assert checks["ceiling:rmse"].passed and "≤ ceiling 3.0000" in checks["ceiling:rmse"].detail
    regression = checks["non_regression:rmse"]
    assert regression.judged and not regression.passed and "improvement -" in regression.detail
    assert not checks["slice:store=S1"].passed and not checks["slice:store=S2"].passed
    assert "brier" not in checks and "ece" not in checks
    # And the good forecaster challenging the worse one passes every rule
    reverse = check_policy(policy, units, good, worse, {"store": stores})
    assert passed(reverse), summary(reverse)
    # And over the ceiling fails even without a champion
    strict = GatePolicy(**{**REGRESSION, "max_value": 0.5})
    first = _by_name(check_policy(strict, units, good, None))
    assert not first["ceiling:rmse"].passed and not first["non_regression:rmse"].judged


def test_a_better_forecaster_has_a_positive_improvement(
    demand: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    units, good, worse = demand
    delta, low, high = paired_bootstrap_delta(units, good, worse, "rmse", 300, 0.95, 0)
    direct = np.sqrt(np.mean((worse - units) ** 2)) - np.sqrt(np.mean((good - units) ** 2))
    assert delta == pytest.approx(direct) and 0 < low <= delta <= high
