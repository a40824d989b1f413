"""The gate's rules as pure functions: each rule of a :class:`GatePolicy` becomes one recorded Check.

Nothing here reads the registry or the lake: the caller scores the candidate and the champion on the
same test rows and hands over the labels, both prediction vectors (P(y=1) for binary classification,
the forecast quantity for regression), the slice columns and the ONNX file. The policy's primary
metric says which.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from pipelines.spec import LOWER_IS_BETTER, GatePolicy, Metric, Task, metric_task

if TYPE_CHECKING:
    import pandas as pd

Scores = TypeVar("Scores", float, np.ndarray)
ECE_BINS = 10
MISSING = "<missing>"
# Bootstrap work is chunked so one chunk of resample weights stays near this many cells (~16 MB).
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class Check:
    """One rule's outcome. A check that is not judged (no limit, no champion, tiny slice) never blocks."""

    name: str
    passed: bool
    judged: bool
    detail: str


def _validated(
    y: np.ndarray, proba: np.ndarray, what: str, task: Task = "binary_classification"
) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y).reshape(-1)
    p = np.asarray(proba, dtype=np.float64).reshape(-1)
    if len(labels) != len(p):
        raise ValueError(f"{what} has {len(p)} rows but y has {len(labels)}")
    if task == "regression":
        labels = labels.astype(np.float64)
        if not (np.isfinite(labels).all() and np.isfinite(p).all()):
            raise ValueError(f"y and {what} must be finite")
        return labels, p
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("y must hold only 0 and 1")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError(f"{what} must be finite probabilities in [0, 1]")
    return labels.astype(np.float64), p


def metric_value(metric: Metric, y: np.ndarray, proba: np.ndarray) -> float:
    """ROC-AUC or PR-AUC (average precision) exactly as :func:`models.metrics.classification_metrics`;
    a regression metric as the bootstrap computes it, every row weighted once."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if metric_task(metric) == "regression":
        ones = np.ones((len(y), 1))
        return float(_weighted_error(metric, np.asarray(y, float), np.asarray(proba, float), ones)[0])
    if metric == "roc_auc":
        return float(roc_auc_score(y, proba))
    return float(average_precision_score(y, proba))


def improvement(metric: Metric, candidate: Scores, champion: Scores) -> Scores:
    """How much better the candidate is: candidate − champion for a score, champion − candidate for an
    error."""
    return champion - candidate if metric in LOWER_IS_BETTER else candidate - champion


def _weighted_error(metric: Metric, y: np.ndarray, prediction: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A regression metric under each column of ``weights`` (len(y) × resamples repeat counts)."""
    error = prediction - y
    total = weights.sum(axis=0)
    squared = (error**2) @ weights
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "rmse":
            value = np.sqrt(squared / total)
        elif metric == "mae":
            value = (np.abs(error) @ weights) / total
        elif metric == "wape":
            value = (np.abs(error) @ weights) / (np.abs(y) @ weights)
        else:  # r2: 1 − residual / total sum of squares around the resample's own mean
            mean = (y @ weights) / total
            spread = (y**2) @ weights - total * mean**2
            value = 1.0 - squared / spread
    return np.asarray(value, dtype=np.float64)


def brier(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean squared difference between probability and label."""
    labels, p = _validated(y, proba, "proba")
    return float(np.mean((p - labels) ** 2))


def ece(y: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: over equal-width bins [k/b, (k+1)/b) (1.0 in the last), the
    row-weighted mean of |mean probability − positive rate| of each non-empty bin."""
    labels, p = _validated(y, proba, "proba")
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    rows = np.bincount(index, minlength=bins)
    gap = np.abs(
        np.bincount(index, weights=p, minlength=bins) - np.bincount(index, weights=labels, minlength=bins)
    )
    return float(gap.sum() / rows.sum())


def _weighted_metric(metric: Metric, y: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The metric under each column of ``weights`` (len(y) × resamples repeat counts); NaN where a
    resample holds one class (classification) or has no spread (r2).

    A resample that repeats rows is the original rows weighted by the repeat counts, so the scores are
    sorted and grouped by distinct value once and every resample is a weighted pass over the groups;
    ties are handled as scikit-learn handles them.
    """
    if metric_task(metric) == "regression":
        return _weighted_error(metric, y, proba, weights)
    order = np.argsort(-proba, kind="stable")
    ranked, y_ranked = proba[order], y[order]
    w = weights[order]
    pos = w * y_ranked[:, None]
    neg = w - pos
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    if len(starts) < len(ranked):
        pos, neg = np.add.reduceat(pos, starts, axis=0), np.add.reduceat(neg, starts, axis=0)
        y_ranked = np.add.reduceat(y_ranked, starts)
    # Only groups holding a positive contribute to either metric.
    hits = np.flatnonzero(y_ranked > 0)
    total_pos, total_neg = pos.sum(axis=0), neg.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "roc_auc":
            neg_below = total_neg - np.cumsum(neg, axis=0)[hits]
            value = (pos[hits] * (neg_below + 0.5 * neg[hits])).sum(axis=0) / (total_pos * total_neg)
        else:
            # Weights are counts, so a group present in a resample holds at least one row.
            seen = np.maximum(np.cumsum(pos + neg, axis=0)[hits], 1.0)
            value = (pos[hits] * np.cumsum(pos[hits], axis=0) / seen).sum(axis=0) / total_pos
    value[(total_pos == 0) | (total_neg == 0)] = np.nan
    return np.asarray(value)


def paired_bootstrap_delta(
    y: np.ndarray,
    p_candidate: np.ndarray,
    p_champion: np.ndarray,
    metric: Metric,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The candidate's improvement over the champion on the metric (:func:`improvement`: positive is
    better), and the percentile CI of that improvement.

    Both models are scored on the same resampled rows each time (paired), so the spread reflects the
    test set, not the two models' shared luck. Resamples holding a single class have no AUC and are
    skipped; the CI comes from the rest. The same inputs and seed give the same interval.

    Returns:
        ``(delta, low, high)``: the improvement on the full test rows and the two-sided CI bounds.

    Raises:
        ValueError: Mismatched shapes, bad labels or predictions, a single class in ``y``, or no
            resample with both classes.
    """
    task = metric_task(metric)
    labels, candidate = _validated(y, p_candidate, "p_candidate", task)
    _, champion = _validated(y, p_champion, "p_champion", task)
    if task == "binary_classification" and len(np.unique(labels)) < 2:
        raise ValueError("y holds a single class; the metric needs both 0 and 1")
    if resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError("resamples must be positive and confidence in (0, 1)")
    scored = metric_value(metric, labels, candidate), metric_value(metric, labels, champion)
    delta = improvement(metric, *scored)
    n = len(labels)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CHUNK_CELLS // n))
    deltas = []
    for done in range(0, resamples, chunk):
        size = min(chunk, resamples - done)
        picks = rng.integers(0, n, size=(size, n)) * size + np.arange(size)[:, None]
        weights = np.bincount(picks.ravel(), minlength=n * size).reshape(n, size).astype(np.float64)
        deltas.append(
            improvement(
                metric,
                _weighted_metric(metric, labels, candidate, weights),
                _weighted_metric(metric, labels, champion, weights),
            )
        )
    spread = np.concatenate(deltas)
    spread = spread[np.isfinite(spread)]
    if spread.size == 0:
        raise ValueError("no bootstrap resample holds both classes")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(spread, [tail, 1.0 - tail])
    return float(delta), float(low), float(high)


def onnx_latency_p99_ms(
    model: bytes, rows: np.ndarray | None = None, runs: int = 200, warmup: int = 20
) -> float:
    """Single-row p99 latency of an ONNX model on one CPU thread, as one scoring request sees it.

    Rows come from ``rows`` in turn (real rows walk real tree paths); without them, zeros of the
    width the model's input declares.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    if rows is None or len(rows) == 0:
        width = model_input.shape[-1] if model_input.shape else None
        if not isinstance(width, int):
            raise ValueError(f"the model's input '{model_input.name}' has no fixed width; pass rows")
        rows = np.zeros((1, width), dtype=np.float32)
    batch = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    timings = np.empty(runs, dtype=np.float64)
    for i in range(warmup + runs):
        row = batch[i % len(batch)][None, :]
        start = time.perf_counter()
        session.run(None, {model_input.name: row})
        if i >= warmup:
            timings[i - warmup] = time.perf_counter() - start
    return float(np.percentile(timings, 99) * 1000.0)


def _slice_labels(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.Series(values, copy=False).astype("string").fillna(MISSING).to_numpy(dtype=object)


def _slice_columns(
    slices: Mapping[str, np.ndarray] | pd.DataFrame | None, wanted: list[str], rows: int
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The wanted slice columns that were given, and the names of all that were given."""
    given = [] if slices is None else [str(name) for name in slices]
    columns = {name: np.asarray(slices[name]) for name in wanted if slices is not None and name in given}
    for name, values in columns.items():
        if len(values) != rows:
            raise ValueError(f"slice column '{name}' has {len(values)} rows but y has {rows}")
    return columns, given


def _slice_checks(
    policy: GatePolicy,
    column: str,
    values: np.ndarray,
    y: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray | None,
) -> list[Check]:
    metric, tolerance = policy.metric, policy.slice_max_regression
    binary = policy.task == "binary_classification"
    checks = []
    labels = _slice_labels(values)
    for value in sorted(set(labels)):
        mask = labels == value
        rows, positives = int(mask.sum()), int(y[mask].sum())
        name = f"slice:{column}={value}"
        size = f"{rows} rows, {positives} positives" if binary else f"{rows} rows"
        both = 0 < positives < rows or not binary  # a regression metric needs no second class
        cand = metric_value(metric, y[mask], candidate[mask]) if both else None
        champ = metric_value(metric, y[mask], champion[mask]) if both and champion is not None else None
        small = rows < policy.min_slice_rows or (binary and positives < policy.min_slice_positives)
        if cand is None or small:
            minimum = f"{policy.min_slice_rows} rows" + (
                f" and {policy.min_slice_positives} positives" if binary else ""
            )
            why = f"under the minimum {minimum}" if both else "a single class"
            scored = f"; {metric} {cand:.4f}" if cand is not None else ""
            scored += f" vs champion {champ:.4f}" if champ is not None else ""
            detail = f"{size}, {why}{scored}; reported, not judged"
            checks.append(Check(name, passed=True, judged=False, detail=detail))
        elif champ is None:
            detail = f"{metric} {cand:.4f} ({size}); no champion to compare with"
            checks.append(Check(name, passed=True, judged=False, detail=detail))
        else:
            delta = improvement(metric, cand, champ)
            ok = delta >= -tolerance
            detail = (
                f"{metric} {cand:.4f} vs champion {champ:.4f}: improvement {delta:+.4f} "
                f"{'≥' if ok else '<'} -{tolerance:.4f} allowed ({size})"
            )
            checks.append(Check(name, passed=ok, judged=True, detail=detail))
    return checks


def _limit_check(name: str, label: str, value: float, limit: float | None, unit: str, digits: str) -> Check:
    shown = f"{label} {value:{digits}}{unit}"
    if limit is None:
        return Check(name, passed=True, judged=False, detail=f"{shown}; no limit set")
    ok = value <= limit
    return Check(
        name, passed=ok, judged=True, detail=f"{shown} {'≤' if ok else '>'} max {limit:{digits}}{unit}"
    )


def check_policy(
    policy: GatePolicy,
    y: np.ndarray,
    p_candidate: np.ndarray,
    p_champion: np.ndarray | None,
    slices: Mapping[str, np.ndarray] | pd.DataFrame | None = None,
    onnx_model: bytes | None = None,
    parity_diff: float | None = None,
    *,
    latency_rows: np.ndarray | None = None,
    latency_runs: int = 200,
) -> list[Check]:
    """One Check per rule of the policy, for a candidate scored on the test rows.

    Args:
        policy: The use case's gate policy.
        y: Test labels, 0/1, both classes present.
        p_candidate: The candidate's P(y=1) on those rows.
        p_champion: The champion's P(y=1) on the same rows; ``None`` for the first model, whose
            comparisons are then reported as not judged.
        slices: The test rows' slice columns (by name), e.g. the ``policy.slices`` of a DataFrame. A
            slice the policy names but the data lacks fails: the rule cannot be silently dropped.
        onnx_model: The candidate's serialized ONNX model, for the latency and size budgets.
        parity_diff: The candidate's max |ONNX − native| probability difference.
        latency_rows: Feature rows to time single-row scoring with; zeros of the input width if absent.
        latency_runs: Timed single-row runs, after a warm-up.
    """
    task = policy.task
    labels, candidate = _validated(y, p_candidate, "p_candidate", task)
    champion = None if p_champion is None else _validated(y, p_champion, "p_champion", task)[1]
    if task == "binary_classification" and len(np.unique(labels)) < 2:
        raise ValueError("y holds a single class; the gate needs test rows of both classes")
    checks = []

    for metric, floor in policy.floors().items():
        value = metric_value(metric, labels, candidate)
        ok = value >= floor
        detail = f"{metric} {value:.4f} {'≥' if ok else '<'} floor {floor:.4f}"
        checks.append(Check(f"floor:{metric}", passed=ok, judged=True, detail=detail))
    for metric, ceiling in policy.ceilings().items():
        value = metric_value(metric, labels, candidate)
        ok = value <= ceiling
        detail = f"{metric} {value:.4f} {'≤' if ok else '>'} ceiling {ceiling:.4f}"
        checks.append(Check(f"ceiling:{metric}", passed=ok, judged=True, detail=detail))

    metric, bound = policy.metric, policy.min_improvement
    if champion is None:
        detail = f"no champion yet: {metric} has nothing to be compared with"
        checks.append(Check(f"non_regression:{metric}", passed=True, judged=False, detail=detail))
    else:
        delta, low, high = paired_bootstrap_delta(
            labels,
            candidate,
            champion,
            metric,
            policy.bootstrap_resamples,
            policy.confidence,
            policy.bootstrap_seed,
        )
        ok = low >= bound
        detail = (
            f"{metric} candidate {metric_value(metric, labels, candidate):.4f} vs champion "
            f"{metric_value(metric, labels, champion):.4f}: improvement {delta:+.4f}, "
            f"{policy.confidence:.0%} CI [{low:+.4f}, {high:+.4f}] over {policy.bootstrap_resamples} "
            f"resamples; lower bound {'≥' if ok else '<'} {bound:+.4f} required"
        )
        checks.append(Check(f"non_regression:{metric}", passed=ok, judged=True, detail=detail))

    columns, given = _slice_columns(slices, policy.slices, len(labels))
    for column in policy.slices:
        if column not in columns:
            detail = f"slice column '{column}' is not among the test-row columns given ({', '.join(given)})"
            checks.append(Check(f"slice:{column}", passed=False, judged=True, detail=detail))
            continue
        checks.extend(_slice_checks(policy, column, columns[column], labels, candidate, champion))

    if task == "binary_classification":
        checks.append(_limit_check("brier", "brier", brier(labels, candidate), policy.max_brier, "", ".4f"))
        ece_label = f"ece ({ECE_BINS} bins)"
        checks.append(_limit_check("ece", ece_label, ece(labels, candidate), policy.max_ece, "", ".4f"))

    if onnx_model is None:
        for name in ("latency_p99", "model_bytes"):
            checks.append(Check(name, passed=True, judged=False, detail="no ONNX model given"))
    else:
        p99 = onnx_latency_p99_ms(onnx_model, latency_rows, runs=latency_runs)
        label = f"single-row p99 over {latency_runs} runs, 1 CPU thread,"
        checks.append(_limit_check("latency_p99", label, p99, policy.max_latency_ms_p99, " ms", ".3f"))
        limit = None if policy.max_model_bytes is None else float(policy.max_model_bytes)
        checks.append(_limit_check("model_bytes", "model.onnx", len(onnx_model), limit, " bytes", ",.0f"))

    if parity_diff is None:
        checks.append(Check("onnx_parity", passed=True, judged=False, detail="no parity measurement given"))
    else:
        ok = bool(parity_diff <= policy.max_parity_diff)  # NaN fails
        detail = f"max |onnx − native| {parity_diff:.2e} {'≤' if ok else '>'} {policy.max_parity_diff:.2e}"
        checks.append(Check("onnx_parity", passed=ok, judged=True, detail=detail))
    return checks


def passed(checks: list[Check]) -> bool:
    """The gate passes when every judged check passed; unjudged ones only inform."""
    return all(check.passed for check in checks if check.judged)


def summary(checks: list[Check]) -> str:
    """Every reason, one per line: failures first, then passes, then what was reported unjudged."""

    def rank(check: Check) -> int:
        return 2 if not check.judged else (1 if check.passed else 0)

    tag = {0: "FAIL", 1: "PASS", 2: "SKIP"}
    return "\n".join(f"{tag[rank(c)]} {c.name}: {c.detail}" for c in sorted(checks, key=rank))
