"""Drift statistics against their floor, in one run: ``pipelines.drift.compare`` on a large window.

A synthetic window of ``--rows`` rows (default 1,000,000) and ``--features`` features (default 50: every
tenth a category code, merchant codes or a flag; the rest lognormal amounts, normal scores, Poisson counts
and gamma amounts 5% missing; every sixth shifted, so some features drift) is compared with a reference
profiled from a separate sample of ``--reference-rows`` rows (seeded rng throughout).

- the platform: ``drift.compare`` (PSI, binned two-sample KS or chi-square of homogeneity, missing,
  out-of-range and unseen-category shares, Benjamini-Hochberg across the window, findings);
- the floor: the same PSI, test statistics, adjusted p-values, null and out-of-range shares, written
  directly with numpy/scipy (counts by one comparison per bin edge, category codes by ``np.bincount``,
  ``scipy.stats.chi2_contingency``, ``scipy.stats.false_discovery_control``);
- for reference, the textbook recipe: ``np.searchsorted`` + ``np.bincount`` on each column's non-null copy
  and ``np.unique`` for categories (the binning the engine avoids: about ten times slower per column).

All three use one KS rule (``drift.ks_p_value``, written out again in the floor): exact ``kstwo`` up to
n_eff 2,000, Kolmogorov's limit with Stephens' correction above, where ``kstwo.sf`` costs up to half a
second a call. Before anything is timed, all three must agree on every feature's PSI, statistic, adjusted
p-value, null rate and out-of-range share.

Targets, reported and never asserted: compare <= 3x the floor; time per feature at 50 features within
0.8-1.25x of that at 10 (linear in the number of features). Each time is the median of ``--repeats`` runs.

Run: `make bench` (or `.venv/bin/python -m bench.drift --rows 1000000 --features 50`).
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
from scipy import stats

from bench.common import Figure, alternating, write_report
from pipelines import drift
from pipelines.reference_profile import categorical_profile, column_profile
from pipelines.spec import MonitoringSpec

SIZES = (10, 25, 50)
MERCHANT_CODES = np.arange(1000, 1300, dtype=np.float64)
Counts = tuple[int, np.ndarray, float]  # nulls, counts per bin, out-of-range share
Codes = tuple[int, np.ndarray, np.ndarray]  # nulls, distinct codes, their counts


def is_categorical(index: int) -> bool:
    return index % 10 == 9


def draw(index: int, rng: np.random.Generator, rows: int, shifted: bool) -> np.ndarray:
    """Feature ``index``'s values; ``shifted`` moves every sixth feature's distribution, from the fourth."""
    moved = shifted and index % 6 == 3
    if is_categorical(index):
        if index % 20 == 9:
            return (rng.random(rows) < (0.45 if moved else 0.3)).astype(np.float64)
        weights = np.linspace(2.0, 1.0, MERCHANT_CODES.size)
        codes = rng.choice(MERCHANT_CODES, size=rows, p=weights / weights.sum())
        if moved:
            codes[rng.random(rows) < 0.03] = 9999.0  # a merchant code never seen in training
        return codes
    shape = index % 4
    if shape == 0:
        return rng.lognormal(3.5 if moved else 3.0, 1.0, rows)
    if shape == 1:
        return rng.normal(0.5 if moved else 0.0, 1.0, rows)
    if shape == 2:
        return rng.poisson(3.0 if moved else 2.0, rows).astype(np.float64)
    values = rng.gamma(2.0, 90.0 if moved else 50.0, rows)
    values[rng.random(rows) < 0.05] = np.nan
    return values


def ks_p(statistic: float, n_eff: float) -> float:
    n = max(round(n_eff), 1)
    if n <= drift.EXACT_KS_MAX_N:
        return float(stats.kstwo.sf(statistic, n))
    root = np.sqrt(n)
    return float(stats.kstwobign.sf(statistic * (root + 0.12 + 0.11 / root)))


def lean_numeric(values: np.ndarray, edges: list[float], low: float, high: float) -> Counts:
    nulls = int(np.count_nonzero(np.isnan(values)))
    present = values.size - nulls
    below = np.array([np.count_nonzero(values < edge) for edge in edges])
    outside = np.count_nonzero(values < low) + np.count_nonzero(values > high)
    return nulls, np.diff(below, prepend=0, append=present), outside / present


def textbook_numeric(values: np.ndarray, edges: list[float], low: float, high: float) -> Counts:
    missing = np.isnan(values)
    present = values[~missing]
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return int(missing.sum()), counts, float(np.mean((present < low) | (present > high)))


def lean_codes(values: np.ndarray) -> Codes:
    missing = np.isnan(values)
    counts = np.bincount(values[~missing].astype(np.int64))  # the codes are small whole numbers here
    found = np.flatnonzero(counts)
    return int(np.count_nonzero(missing)), found.astype(np.float64), counts[found]


def textbook_codes(values: np.ndarray) -> Codes:
    missing = np.isnan(values)
    codes, counts = np.unique(values[~missing], return_counts=True)
    return int(missing.sum()), codes, counts


def floor(
    profile: Mapping[str, Any],
    window: Mapping[str, np.ndarray],
    numeric: Callable[[np.ndarray, list[float], float, float], Counts],
    codes_of: Callable[[np.ndarray], Codes],
) -> np.ndarray:
    """Per feature: PSI, statistic, BH-adjusted p-value, null rate and out-of-range share (NaN for codes)."""
    rows = []
    for name, reference in profile["features"].items():
        values = window[name]
        present_at_reference = round(reference["rows"] * (1 - reference["null_rate"]))
        if reference["kind"] == "categorical":
            nulls, codes, counts = codes_of(values)
            present = values.size - nulls
            known = {float(key): share for key, share in reference["categories"].items()}
            reference_counts = np.array([*known.values(), 0.0]) * present_at_reference
            current_counts = np.zeros(len(known) + 1)
            slot = {code: position for position, code in enumerate(known)}
            for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
                current_counts[slot.get(code, len(known))] += count
            table = np.array([reference_counts, current_counts])
            table = table[:, table.sum(axis=0) > 0]
            test = stats.chi2_contingency(table, correction=False)
            statistic, p_value = float(test.statistic), float(test.pvalue)
            reference_shares, current_shares = (
                reference_counts / present_at_reference,
                current_counts / present,
            )
            out_of_range = np.nan
        else:
            margin = drift.RANGE_MARGIN * (reference["max"] - reference["min"])
            low, high = reference["min"] - margin, reference["max"] + margin
            nulls, counts, out_of_range = numeric(values, reference["edges"], low, high)
            present = values.size - nulls
            reference_shares = np.asarray(reference["shares"])
            current_shares = counts / present
            statistic = float(np.max(np.abs(np.cumsum(reference_shares - current_shares)[:-1])))
            p_value = ks_p(statistic, present_at_reference * present / (present_at_reference + present))
        expected = np.maximum(reference_shares, drift.PSI_EPSILON)
        actual = np.maximum(current_shares, drift.PSI_EPSILON)
        psi = float(np.sum((actual - expected) * np.log(actual / expected)))
        rows.append([psi, statistic, p_value, nulls / values.size, out_of_range])
    result = np.array(rows)
    result[:, 2] = stats.false_discovery_control(result[:, 2])
    return result


def median_and_range(calls: list[Callable[[], Any]], repeats: int) -> list[tuple[float, dict[str, float]]]:
    """Median seconds of each call and their range, timed in alternating rounds."""
    return [
        (statistics.median(taken), {"min": min(taken), "max": max(taken), "runs": float(repeats)})
        for taken in alternating(calls, repeats)
    ]


def main(rows: int, features: int, reference_rows: int, repeats: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = [f"{'code' if is_categorical(i) else 'value'}_{i:02d}" for i in range(features)]
    policy = MonitoringSpec(categorical=[name for i, name in enumerate(names) if is_categorical(i)])
    profile = {
        "rows": reference_rows,
        "features": {
            name: (categorical_profile if is_categorical(i) else column_profile)(
                draw(i, rng, reference_rows, shifted=False)
            )
            for i, name in enumerate(names)
        },
    }
    window = {name: draw(i, rng, rows, shifted=True) for i, name in enumerate(names)}

    results = drift.compare(profile, window, policy)
    engine = np.array(
        [
            [result.psi, result.statistic, result.adjusted_p, result.null_rate, result.out_of_range_rate]
            for result in results
        ],
        dtype=float,
    )
    for label, numeric, codes_of in (
        ("floor", lean_numeric, lean_codes),
        ("textbook recipe", textbook_numeric, textbook_codes),
    ):
        direct = floor(profile, window, numeric, codes_of)
        if not np.allclose(engine, direct, rtol=1e-7, atol=1e-12, equal_nan=True):
            worst = int(np.nanargmax(np.abs(engine - direct).max(axis=1)))
            raise SystemExit(
                f"{label} disagrees with drift.compare on {names[worst]}: {direct[worst]} vs {engine[worst]}"
            )

    def subset(size: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        kept = names[:size]
        return {**profile, "features": {name: profile["features"][name] for name in kept}}, {
            name: window[name] for name in kept
        }

    timed: dict[int, tuple[float, float]] = {}
    spreads: dict[int, dict[str, float]] = {}
    for size in sorted(size for size in {*SIZES, features} if size <= features):
        part_profile, part_window = subset(size)
        calls: list[Callable[[], Any]] = [
            partial(drift.compare, part_profile, part_window, policy),
            partial(floor, part_profile, part_window, lean_numeric, lean_codes),
        ]
        if size == features:
            calls.append(partial(floor, profile, window, textbook_numeric, textbook_codes))
        measured = median_and_range(calls, repeats)
        timed[size] = (measured[0][0], measured[1][0])
        spreads[size] = measured[0][1]
    textbook_s, textbook_spread = measured[2]

    engine_s, floor_s = timed[features]
    shape = f"{rows:,} rows x {features} features"
    figures = [
        Figure(
            f"drift.compare, {shape}",
            "s",
            engine_s,
            floor_s,
            "same statistics, numpy/scipy directly",
            "ratio <= 3",
            engine_s <= 3 * floor_s,
            spreads[features],
        ),
        Figure(
            f"drift.compare vs the textbook recipe, {shape}",
            "s",
            engine_s,
            textbook_s,
            "searchsorted + bincount on a non-null copy, np.unique",
            "-",
            True,
            textbook_spread,
        ),
    ]
    for size, (size_engine, size_floor) in sorted(timed.items()):
        figures.append(
            Figure(
                f"drift.compare per feature, {size} features",
                "ms",
                size_engine / size * 1000,
                size_floor / size * 1000,
                "floor per feature",
                "-",
                True,
                {key: value / size * 1000 for key, value in spreads[size].items() if key != "runs"},
            )
        )
    smallest = min(timed)
    per_feature = {size: timed[size][0] / size * 1000 for size in timed}
    growth = per_feature[features] / per_feature[smallest]
    figures.append(
        Figure(
            f"per-feature time, {features} vs {smallest} features",
            "ms",
            per_feature[features],
            per_feature[smallest],
            f"per-feature time at {smallest} features",
            "ratio 0.8-1.25",
            0.8 <= growth <= 1.25,
        )
    )
    write_report(
        "drift",
        figures,
        {
            "rows": rows,
            "reference_rows": reference_rows,
            "features": features,
            "categorical": len(policy.categorical),
            "repeats": repeats,
            "drifted": [result.name for result in results if result.drifted],
            "quality_issues": [result.name for result in results if result.quality_issue],
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Rows of the window.")
    parser.add_argument("--features", type=int, default=50, help="Features; every tenth is a category.")
    parser.add_argument(
        "--reference-rows", type=int, default=200_000, help="Rows the reference is built from."
    )
    parser.add_argument("--repeats", type=int, default=7, help="Timed runs per figure; the median counts.")
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args()
    main(arguments.rows, arguments.features, arguments.reference_rows, arguments.repeats, arguments.seed)
