"""Great Expectations validation against the same checks in vectorised pandas, on one large batch.

The batch is what ``pipelines.validate.validate`` checks for a 60-day window of the fraud use case: the
landed ``transactions`` partitions of ``--rows`` transactions (default 1,000,000) from
``pipelines.datagen``, landed by ``pipelines.ingest`` and read back, concatenated into one frame. A few
faults are injected at seeded positions (``--fault-share`` of the rows each: null, duplicate and
malformed ids, malformed times, out-of-range amounts, unknown channels and labels, missing emirates), so
several expectations fail and both sides must count the same unexpected values.

- the platform: ``pipelines.validate.validate_frame`` with the platform's own file context and its
  ``transactions.landing`` suite (23 expectations: the column set, not-null on every column, a unique
  id, four regexes, a type, a range and four value sets), as ``validate`` runs it;
- the floor: the same 23 checks written by hand in vectorised pandas on the same frame (nulls left out
  of every check but not-null, as Great Expectations does; the same regex engine);
- the window check as ``validate`` runs it first: the same suite with ``BOOLEAN_ONLY`` results (each
  expectation's success; the unexpected counts and samples are computed only when a window fails).

Before anything is timed, both sides must agree on every expectation's success and unexpected count.
Target, reported and never asserted: the window check <= 3x the floor. Each time is the median of
``--repeats`` runs, the two sides alternating.

Run: `make bench` (or `.venv/bin/python -m bench.validation`; `--quick` checks 100,000 rows once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.common import Figure, alternating, compare, rates, write_report

if TYPE_CHECKING:
    import pandas as pd

SUITE = "transactions.landing"
# (expectation type, column) -> (success, unexpected count; None where the expectation counts no values)
Outcomes = dict[tuple[str, str | None], tuple[bool, int | None]]


def landing_batch(rows: int, seed: int) -> pd.DataFrame:
    """The landed transactions of a 60-day window, concatenated as ``validate`` does."""
    import pandas as pd

    from pipelines.datagen import generate
    from pipelines.ingest import ingest, read_landed
    from pipelines.settings import get_settings
    from pipelines.spec import load_spec

    spec = load_spec("fraud")
    data = generate(get_settings().source_dir, rows, days=60, seed=seed)
    landed = [item for item in ingest(spec, data.start, data.end) if item.dataset == "transactions"]
    return pd.concat(
        [read_landed(spec, "transactions", item.partition)[0] for item in landed], ignore_index=True
    )


def inject_faults(frame: pd.DataFrame, share: float, seed: int) -> int:
    """Break ``share`` of the rows with each fault, in place, at seeded positions; returns rows per fault."""
    rng = np.random.default_rng(seed)
    count = max(1, round(len(frame) * share))

    def rows() -> np.ndarray:
        return rng.choice(len(frame), size=count, replace=False)

    frame.loc[rows(), "transaction_id"] = None
    frame.loc[rows(), "transaction_id"] = frame["transaction_id"].to_numpy()[rows()]  # duplicates
    frame.loc[rows(), "event_timestamp"] = "2026/10/01 12:00"
    frame.loc[rows(), "customer_id"] = "C12"
    frame.loc[rows(), "amount_aed"] = np.nan
    frame.loc[rows(), "amount_aed"] = 0.0  # the range is strict at zero
    frame.loc[rows(), "amount_aed"] = 2_000_000.0
    frame.loc[rows(), "channel"] = "atm"
    frame.loc[rows(), "emirate"] = None
    frame.loc[rows(), "is_fraud"] = 2
    return count


def platform_outcomes(result: Any) -> Outcomes:
    """Each expectation's success and unexpected count, from a Great Expectations validation result."""
    return {
        (item.expectation_config.type, item.expectation_config.kwargs.get("column")): (
            bool(item.success),
            (item.result or {}).get("unexpected_count"),
        )
        for item in result.results
    }


def _present(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].dropna()


def _not_null(frame: pd.DataFrame, column: str) -> int:
    return int(frame[column].isna().sum())


def _unique(frame: pd.DataFrame, column: str) -> int:
    return int(_present(frame, column).duplicated(keep=False).sum())


def _match_regex(frame: pd.DataFrame, column: str, regex: str) -> int:
    return int((~_present(frame, column).str.contains(regex)).sum())


def _between(
    frame: pd.DataFrame,
    column: str,
    min_value: float,
    max_value: float,
    strict_min: bool = False,
    strict_max: bool = False,
) -> int:
    values = _present(frame, column).to_numpy()
    above = values > min_value if strict_min else values >= min_value
    below = values < max_value if strict_max else values <= max_value
    return int(np.count_nonzero(~(above & below)))


def _in_set(frame: pd.DataFrame, column: str, value_set: list[Any]) -> int:
    return int((~_present(frame, column).isin(value_set)).sum())


# Expectations that count unexpected values: success is a count of zero.
COUNTING: dict[str, Callable[..., int]] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_unique": _unique,
    "expect_column_values_to_match_regex": _match_regex,
    "expect_column_values_to_be_between": _between,
    "expect_column_values_to_be_in_set": _in_set,
}


def floor_outcomes(frame: pd.DataFrame, expectations: list[dict[str, Any]]) -> Outcomes:
    """The suite's checks, written directly in vectorised pandas."""
    outcomes: Outcomes = {}
    for expectation in expectations:
        kind, kwargs = expectation["type"], expectation["kwargs"]
        column = kwargs.get("column")
        if kind in COUNTING:
            unexpected = COUNTING[kind](frame, **kwargs)
            outcomes[(kind, column)] = (unexpected == 0, unexpected)
        elif kind == "expect_column_values_to_be_in_type_list":
            outcomes[(kind, column)] = (str(frame[column].dtype) in kwargs["type_list"], None)
        elif kind == "expect_table_columns_to_match_set":
            found, wanted = set(frame.columns), set(kwargs["column_set"])
            matched = found == wanted if kwargs.get("exact_match", True) else wanted <= found
            outcomes[(kind, column)] = (matched, None)
        else:
            raise SystemExit(
                f"the floor has no hand-written check for {kind}; add one to bench/validation.py"
            )
    if len(outcomes) != len(expectations):
        raise SystemExit(f"{SUITE} checks one column twice with one expectation type: outcomes would collide")
    return outcomes


def main(rows: int, repeats: int, fault_share: float, seed: int) -> Path:
    with tempfile.TemporaryDirectory(prefix="falaj-bench-validation-") as home:
        os.environ.update({"FALAJ_HOME": home, "FALAJ_PROFILE": "local"})
        return measure(rows, repeats, fault_share, seed)


def measure(rows: int, repeats: int, fault_share: float, seed: int) -> Path:
    from pipelines.validate import SUCCESS_ONLY, _context, load_suite_config, validate_frame

    frame = landing_batch(rows, seed)
    per_fault = inject_faults(frame, fault_share, seed)
    expectations = load_suite_config(SUITE)["expectations"]
    context = _context()

    engine = platform_outcomes(validate_frame(context, SUITE, frame))
    direct = floor_outcomes(frame, expectations)
    if engine != direct:
        differing = sorted(key for key in engine.keys() | direct.keys() if engine.get(key) != direct.get(key))
        lines = "\n".join(f"  {key}: GX {engine.get(key)} vs pandas {direct.get(key)}" for key in differing)
        raise SystemExit(f"Great Expectations and the pandas floor disagree:\n{lines}")
    passed = {
        key: ok
        for key, (ok, _) in platform_outcomes(validate_frame(context, SUITE, frame, SUCCESS_ONLY)).items()
    }
    if passed != {key: ok for key, (ok, _) in direct.items()}:
        raise SystemExit(f"{SUCCESS_ONLY} and the pandas floor disagree on which expectations pass")

    gx_samples, floor_samples, window_samples = alternating(
        [
            lambda: validate_frame(context, SUITE, frame),
            lambda: floor_outcomes(frame, expectations),
            lambda: validate_frame(context, SUITE, frame, SUCCESS_ONLY),
        ],
        repeats,
    )
    gx_s, floor_s = statistics.median(gx_samples), statistics.median(floor_samples)
    shape = f"{len(frame):,} rows x {len(expectations)} expectations"
    spread = {
        "min": min(gx_samples),
        "max": max(gx_samples),
        "floor_min": min(floor_samples),
        "floor_max": max(floor_samples),
        "runs": float(repeats),
    }
    figures = [
        Figure(
            f"GX with unexpected counts and samples (SUMMARY: a failure's report), {shape}",
            "s",
            gx_s,
            floor_s,
            "same checks, vectorised pandas",
            "-",
            True,
            spread,
        ),
        Figure(
            f"GX validate_frame throughput, {shape}",
            "rows/s",
            len(frame) / gx_s,
            len(frame) / floor_s,
            "same checks, vectorised pandas",
            "-",
            True,
            rates(len(frame), spread),
        ),
        compare(
            f"GX as validate() checks a window ({SUCCESS_ONLY}; described only on failure), {shape}",
            "s",
            window_samples,
            floor_samples,
            "same checks, vectorised pandas",
            "ratio <= 3",
            lambda ratio: ratio <= 3,
        ),
    ]
    return write_report(
        "validation",
        figures,
        {
            "rows": len(frame),
            "expectations": len(expectations),
            "suite": SUITE,
            "faulty_rows_per_fault": per_fault,
            "failed_expectations": sorted(
                f"{kind}({column})" for (kind, column), (ok, _) in engine.items() if not ok
            ),
            "repeats": repeats,
            "great_expectations": _version("great_expectations"),
            "pandas": _version("pandas"),
            "cpus": os.cpu_count(),
        },
    )


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Transactions in the 60-day batch.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per side; the median counts.")
    parser.add_argument(
        "--fault-share", type=float, default=1e-4, help="Share of the rows each injected fault breaks."
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, one run per side.")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.rows, arguments.repeats = 100_000, 1
    if arguments.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not 0 < arguments.fault_share <= 0.01:
        parser.error("--fault-share must be above 0 and at most 0.01 (the faults must stay a few)")
    main(arguments.rows, arguments.repeats, arguments.fault_share, arguments.seed)
