"""Drift statistics: one window of a model's inputs and scores against its reference profile.

Each feature gets an effect size and a test, chosen by its kind in the profile (the spec's
``monitoring.categorical`` when the model was registered; profiles older than that are all numeric):

- numeric, on the profile's decile bins: PSI, and a two-sample Kolmogorov-Smirnov test of the binned
  distribution functions (D at the bin edges, never larger than D over every value, so conservative);
- categorical, on the profile's category shares: PSI, and a two-sample chi-square test of homogeneity.

The window's p-values are adjusted together (Benjamini-Hochberg), and a feature has drifted only when its
adjusted p-value is below the false discovery rate and its PSI reaches the threshold. Data quality (missing
values, values outside the reference range, categories never seen at reference) is reported apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy import special, stats

from pipelines.reference_profile import category_key
from pipelines.spec import MonitoringSpec

PREDICTION = "prediction"
#: Stands in for an empty bin's share in PSI, which would be infinite otherwise.
PSI_EPSILON = 1e-4
#: The reference [min, max] is widened by this share of its range before a value counts as out of range.
RANGE_MARGIN = 0.1
#: Up to this effective size the KS p-value is exact; above it, Kolmogorov's limit (see ks_p_value).
EXACT_KS_MAX_N = 2_000
#: Whole-number category codes spanning at most this many values are counted by one bincount.
MAX_CODE_SPAN = 1 << 20
#: How many unseen categories a result lists by name (their total share counts all of them).
NEW_CATEGORIES_LISTED = 10

Kind = Literal["numeric", "categorical"]


class DriftInputError(ValueError):
    """The window does not fit the profile: a profiled column is missing, or the columns differ in length."""


@dataclass(frozen=True)
class FeatureDrift:
    """One feature (or the score, named ``prediction``) in one window, against its reference.

    ``psi``, ``statistic``, ``p_value`` and ``adjusted_p`` are None when the window or the reference has no
    non-null value of it; ``out_of_range_rate`` is None for categories, ``new_categories`` (unseen code ->
    share of the window's non-null values, the largest few) is empty for numbers.
    """

    name: str
    kind: Kind
    rows: int
    psi: float | None
    test: Literal["ks", "chi2"]
    statistic: float | None
    p_value: float | None
    adjusted_p: float | None
    null_rate: float
    reference_null_rate: float
    out_of_range_rate: float | None
    new_categories: dict[str, float]
    drifted: bool
    quality_issue: bool
    insufficient: bool
    findings: tuple[str, ...]


def compare(
    profile: Mapping[str, Any], current: Mapping[str, np.ndarray], policy: MonitoringSpec
) -> list[FeatureDrift]:
    """Every feature of the profile, and the score when the window has a ``prediction`` column.

    Args:
        profile: a model's ``reference_profile.json``, as read.
        current: the window, column name -> values (float64 arrays are used as given, NaN is missing).
        policy: the use case's monitoring section.

    Raises:
        DriftInputError: a profiled feature is missing from the window, or the columns differ in length.
    """
    entries: list[tuple[str, Mapping[str, Any]]] = list(profile["features"].items())
    if PREDICTION in profile and PREDICTION in current:
        entries.append((PREDICTION, profile[PREDICTION]))
    columns = [_column(current, name) for name, _ in entries]
    rows = columns[0].size if columns else 0
    if any(column.size != rows for column in columns):
        sizes = ", ".join(f"{name}={column.size}" for (name, _), column in zip(entries, columns, strict=True))
        raise DriftInputError(f"the window's columns differ in length ({sizes}); pass one row per event")
    insufficient = rows < policy.min_rows
    measured = [
        _measure(name, reference, column, policy, insufficient)
        for (name, reference), column in zip(entries, columns, strict=True)
    ]
    tested = [index for index, result in enumerate(measured) if result.p_value is not None]
    adjusted = stats.false_discovery_control([measured[index].p_value for index in tested]) if tested else []
    for index, adjusted_p in zip(tested, adjusted, strict=True):
        measured[index] = _judge(measured[index], float(adjusted_p), policy)
    return measured


def ks_p_value(statistic: float, n_eff: float) -> float:
    """P(D >= statistic) for the Kolmogorov-Smirnov distribution of effective size ``n_eff``.

    Exact (``scipy.stats.kstwo``) up to :data:`EXACT_KS_MAX_N`. Above it, Kolmogorov's limit with Stephens'
    correction: within 4% of the exact value at 2,000 and 1% from 50,000 on (for p above 1e-8), where the
    exact value costs up to half a second (scipy sums the Smirnov series term by term), and the two-sample
    test with n_eff is an approximation of its own.
    """
    n = max(round(n_eff), 1)
    if n <= EXACT_KS_MAX_N:
        p_value = stats.kstwo.sf(statistic, n)
    else:
        root = math.sqrt(n)
        p_value = special.kolmogorov(statistic * (root + 0.12 + 0.11 / root))
    return min(max(float(p_value), 0.0), 1.0)


def _column(current: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in current:
        raise DriftInputError(
            f"the window has no column '{name}', which the reference profile has; "
            "pass every feature the model was trained on"
        )
    values = np.asarray(current[name], dtype=np.float64)
    if values.ndim != 1:
        raise DriftInputError(f"column '{name}' must be one-dimensional, not of shape {values.shape}")
    return values


def _psi(reference: np.ndarray, current: np.ndarray) -> float:
    reference = np.maximum(reference, PSI_EPSILON)
    current = np.maximum(current, PSI_EPSILON)
    return float(np.sum((current - reference) * np.log(current / reference)))


def _present_at_reference(reference: Mapping[str, Any]) -> int:
    return round(reference["rows"] * (1 - reference["null_rate"]))


@dataclass
class _Statistics:
    psi: float | None = None
    statistic: float | None = None
    p_value: float | None = None
    out_of_range_rate: float | None = None
    new_categories: dict[str, float] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)


def _measure(
    name: str, reference: Mapping[str, Any], values: np.ndarray, policy: MonitoringSpec, insufficient: bool
) -> FeatureDrift:
    """The statistics and the data-quality findings; drift is judged once the window's p-values are in."""
    kind: Kind = "categorical" if reference.get("kind") == "categorical" else "numeric"
    nulls = int(np.count_nonzero(np.isnan(values)))
    present = values.size - nulls
    measured = (
        _categorical(reference, values, nulls, policy)
        if kind == "categorical"
        else _numeric(reference, values, present, policy)
    )
    null_rate = nulls / values.size if values.size else 0.0
    reference_null_rate = float(reference.get("null_rate", 0.0))
    findings = measured.findings
    if null_rate > reference_null_rate + policy.max_missing_rate_increase:
        findings.insert(0, f"missing rate {null_rate:.2f} vs {reference_null_rate:.2f} at reference")
    if insufficient:
        findings = [f"insufficient: {values.size} rows < min_rows {policy.min_rows}; nothing judged"]
    return FeatureDrift(
        name=name,
        kind=kind,
        rows=values.size,
        psi=measured.psi,
        test="chi2" if kind == "categorical" else "ks",
        statistic=measured.statistic,
        p_value=measured.p_value,
        adjusted_p=None,
        null_rate=null_rate,
        reference_null_rate=reference_null_rate,
        out_of_range_rate=measured.out_of_range_rate,
        new_categories=measured.new_categories,
        drifted=False,
        quality_issue=not insufficient and bool(findings),
        insufficient=insufficient,
        findings=tuple(findings),
    )


def _numeric(
    reference: Mapping[str, Any], values: np.ndarray, present: int, policy: MonitoringSpec
) -> _Statistics:
    if "edges" not in reference or not present:
        return _Statistics()
    # One comparison per edge; a NaN compares False, so the nulls drop out without copying the column.
    below = np.array([np.count_nonzero(values < edge) for edge in reference["edges"]], dtype=np.float64)
    counts = np.diff(below, prepend=0.0, append=float(present))
    reference_shares = np.asarray(reference["shares"], dtype=np.float64)
    gaps = np.abs(np.cumsum(reference_shares)[:-1] - below / present)
    statistic = float(gaps.max()) if gaps.size else 0.0
    n_reference = _present_at_reference(reference)
    margin = RANGE_MARGIN * (reference["max"] - reference["min"])
    low, high = reference["min"] - margin, reference["max"] + margin
    out_of_range = float(np.count_nonzero(values < low) + np.count_nonzero(values > high)) / present
    findings = []
    if out_of_range > policy.max_out_of_range_rate:
        findings.append(
            f"{out_of_range:.1%} of values outside [{low:.4g}, {high:.4g}], "
            f"the reference range widened by {RANGE_MARGIN:.0%}"
        )
    return _Statistics(
        psi=_psi(reference_shares, counts / present),
        statistic=statistic,
        p_value=ks_p_value(statistic, n_reference * present / (n_reference + present)),
        out_of_range_rate=out_of_range,
        findings=findings,
    )


def _categorical(
    reference: Mapping[str, Any], values: np.ndarray, nulls: int, policy: MonitoringSpec
) -> _Statistics:
    categories: Mapping[str, float] = reference.get("categories", {})
    present = values.size - nulls
    if not categories or not present:
        return _Statistics()
    reference_codes = np.array([float(key) for key in categories])
    order = np.argsort(reference_codes)
    reference_codes = reference_codes[order]
    reference_shares = np.fromiter(categories.values(), dtype=np.float64, count=len(categories))[order]
    codes, counts = _category_counts(values, nulls)
    at = np.minimum(np.searchsorted(reference_codes, codes), reference_codes.size - 1)
    seen = reference_codes[at] == codes
    current_counts = np.zeros(reference_codes.size + 1)
    current_counts[at[seen]] = counts[seen]
    # Every unseen category goes into one cell: each would otherwise add a degree of freedom whose only
    # news is "unseen", and a burst of distinct new codes would dilute the test instead of driving it.
    # The reference's count there is 0; the two-sample test still expects a positive count on both sides,
    # so no invented share is needed. (A test against the reference's shares, as if they were exact, would
    # need one, and would flag the reference's own sampling noise on large windows.)
    unseen_codes, unseen_counts = codes[~seen], counts[~seen]
    current_counts[-1] = unseen_counts.sum()
    reference_counts = np.append(reference_shares * _present_at_reference(reference), 0.0)
    statistic, p_value = _homogeneity(reference_counts, current_counts)
    largest = np.argsort(unseen_counts, kind="stable")[::-1][:NEW_CATEGORIES_LISTED]
    new_categories = {category_key(unseen_codes[i]): float(unseen_counts[i] / present) for i in largest}
    unseen_share = float(current_counts[-1]) / present
    findings = []
    if unseen_share > policy.max_new_category_rate:
        listed = ", ".join(f"{code} ({share:.1%})" for code, share in list(new_categories.items())[:3])
        findings.append(f"{unseen_share:.1%} of values in categories unseen at reference: {listed}")
    return _Statistics(
        psi=_psi(reference_counts / reference_counts.sum(), current_counts / present),
        statistic=statistic,
        p_value=p_value,
        new_categories=new_categories,
        findings=findings,
    )


def _category_counts(values: np.ndarray, nulls: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct non-null values in ascending order, and how often each occurs."""
    with np.errstate(invalid="ignore"):
        codes = values.astype(np.int64)
    whole = codes == values  # False for NaN and for any value with a fraction
    if values.size > nulls and np.count_nonzero(whole) == values.size - nulls:
        low = int(codes.min(where=whole, initial=np.iinfo(np.int64).max))
        high = int(codes.max(where=whole, initial=np.iinfo(np.int64).min))
        if high - low <= MAX_CODE_SPAN:
            codes -= low
            np.putmask(codes, ~whole, 0)  # the nulls are counted with the lowest code, and taken back out
            counts = np.bincount(codes, minlength=high - low + 1)
            counts[0] -= nulls
            found = np.flatnonzero(counts)
            return (found + low).astype(np.float64), counts[found]
    return np.unique(values[~np.isnan(values)], return_counts=True)


def _homogeneity(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Chi-square statistic and p-value that two samples' counts over the same cells share a distribution."""
    totals = reference + current
    kept = totals > 0
    reference, current, totals = reference[kept], current[kept], totals[kept]
    if totals.size < 2:
        return 0.0, 1.0
    expected_reference = totals * (reference.sum() / totals.sum())
    expected_current = totals - expected_reference
    statistic = float(
        np.sum((reference - expected_reference) ** 2 / expected_reference)
        + np.sum((current - expected_current) ** 2 / expected_current)
    )
    return statistic, float(special.chdtrc(totals.size - 1, statistic))


def _judge(drift: FeatureDrift, adjusted_p: float, policy: MonitoringSpec) -> FeatureDrift:
    # Both conditions: the adjusted p-value bounds false alarms across the window's features, and the PSI
    # floor keeps a very large window, where any shift at all is significant, from flagging a trivial one.
    drifted = (
        not drift.insufficient
        and adjusted_p < policy.false_discovery_rate
        and drift.psi is not None
        and drift.psi >= policy.psi_threshold
    )
    findings = drift.findings
    if drifted:
        test = "KS" if drift.test == "ks" else "chi2"
        reason = (
            f"PSI {drift.psi:.2f} >= {policy.psi_threshold:g} and {test} "
            f"p(adj)={adjusted_p:.1e} < {policy.false_discovery_rate:g}"
        )
        findings = (reason, *findings)
    return replace(drift, adjusted_p=adjusted_p, drifted=drifted, findings=findings)
