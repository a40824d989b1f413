"""Validate landed partitions with Great Expectations; publish to the validated zone only if all pass."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import lake
from pipelines.ingest import read_landed
from pipelines.settings import get_settings
from pipelines.spec import ColumnType, UseCaseSpec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class DataValidationError(RuntimeError):
    """At least one expectation failed; the message names each expectation, column and partition."""


@dataclass(frozen=True)
class Failure:
    dataset: str
    partition: str
    expectation: str
    column: str | None
    detail: str

    def __str__(self) -> str:
        column = f" on column '{self.column}'" if self.column else ""
        return f"{self.dataset} partition={self.partition}: {self.expectation}{column} failed ({self.detail})"


@dataclass(frozen=True)
class ValidationSummary:
    partitions: int
    rows: int
    expectations_evaluated: int
    data_docs: str


def load_suite_config(name: str) -> dict[str, Any]:
    """Read ``expectations/<name>.json``, a suite in Great Expectations' own JSON form."""
    path = get_settings().expectations_dir / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"expectation suite '{name}' not found at {path}")
    config = dict(json.loads(path.read_text()))
    if config.get("name") != name:
        raise ValueError(f"{path}: suite name must be '{name}'")
    return config


@contextmanager
def _one_process_at_a_time() -> Iterator[None]:
    """Every run rewrites Great Expectations' file stores and Data Docs, so two processes at once (two
    use cases' validations, a retry beside the attempt it replaced) read each other's half-written
    files: the functions under this decorator take turns, through a lock file beside the stores."""
    import fcntl

    reports = get_settings().reports_dir
    reports.mkdir(parents=True, exist_ok=True)
    with (reports / ".gx.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)
    context = gx.get_context(mode="file", project_root_dir=str(get_settings().reports_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _describe(result: Any) -> str:
    details = result.result or {}
    if result.exception_info and any(info.get("raised_exception") for info in _exceptions(result)):
        return "could not be evaluated: " + "; ".join(
            str(info.get("exception_message")) for info in _exceptions(result) if info.get("raised_exception")
        )
    if "unexpected_count" in details:
        sample = details.get("partial_unexpected_list", [])[:3]
        return f"{details['unexpected_count']} unexpected values, e.g. {sample}"
    if "observed_value" in details:
        return f"observed {details['observed_value']}"
    return "could not be evaluated on these values"


def _exceptions(result: Any) -> list[dict[str, Any]]:
    info = result.exception_info or {}
    return [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]


#: What a passing check needs: each expectation's success. SUMMARY's unexpected counts and samples cost about
#: twice the checks themselves on a million rows (bench/validation.py); they are computed only where a
#: failure must be described.
SUCCESS_ONLY = "BOOLEAN_ONLY"
DESCRIBED = "SUMMARY"


def validate_frame(context: Any, suite_name: str, frame: pd.DataFrame, result_format: str = DESCRIBED) -> Any:
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite

    source = context.data_sources.add_or_update_pandas("falaj")
    asset = source.get_asset(suite_name) if suite_name in source.get_asset_names() else None
    asset = asset or source.add_dataframe_asset(suite_name)
    batch = asset.add_batch_definition_whole_dataframe(f"{suite_name}.partition")
    suite = context.suites.add_or_update(ExpectationSuite(**load_suite_config(suite_name)))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
    )
    return definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)


def cast_to_declared(frame: pd.DataFrame, columns: dict[str, ColumnType]) -> pd.DataFrame:
    """Give validated data the types the spec declares (safe: the suite has already passed)."""
    import pandas as pd

    casts = {
        "string": lambda s: s.astype("string"),
        "float": lambda s: s.astype("float64"),
        "int": lambda s: s.astype("int64"),
        "bool": lambda s: s.astype("bool"),
        "timestamp": lambda s: pd.to_datetime(s, utc=True, format="ISO8601"),
    }
    typed = frame.copy()
    for column, kind in columns.items():
        if column in typed:
            typed[column] = casts[kind](typed[column])
    return typed


def dataset_dir(spec: UseCaseSpec, dataset: str, partition: str) -> Path:
    return lake.partition_dir("validated", spec.name, dataset, partition)


def publish(target: Path, typed: pd.DataFrame, version: str) -> None:
    """Write one validated partition, unless this landing version is already there."""
    manifest_path = target / "_manifest.json"
    if manifest_path.exists() and lake.read_json(manifest_path).get("landing_version") == version:
        return
    with lake.atomic_path(target / "data.parquet") as tmp:
        typed.to_parquet(tmp, index=False)
    lake.write_json(manifest_path, {"landing_version": version, "rows": len(typed)})


def _failures(context: Any, suite: str, dataset: str, partition: str, frame: pd.DataFrame) -> list[Failure]:
    result = validate_frame(context, suite, frame)
    return [
        Failure(
            dataset,
            partition,
            item.expectation_config.type,
            item.expectation_config.kwargs.get("column"),
            _describe(item),
        )
        for item in result.results
        if not item.success
    ]


def _window_label(parts: list[tuple[str, Any, str]]) -> str:
    names = sorted(partition for partition, _, _ in parts)
    return names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"


def _cast_all(
    spec: UseCaseSpec, loaded: dict[str, list[tuple[str, Any, str]]]
) -> tuple[list[Any], list[Failure]]:
    """Every frame in its declared types, or the casts that failed: nothing is published half-way."""
    typed, failures = [], []
    for dataset, parts in loaded.items():
        for partition, frame, version in parts:
            try:
                typed.append(
                    (dataset, partition, cast_to_declared(frame, spec.sources[dataset].columns), version)
                )
            except (ValueError, TypeError) as bad:
                failures.append(
                    Failure(dataset, partition, "cast to the spec's declared types", None, str(bad))
                )
    return typed, failures


@_one_process_at_a_time()
def validate(spec: UseCaseSpec, partitions: list[tuple[str, str]]) -> ValidationSummary:
    """Validate each landed ``(dataset, partition)``; publish all of them, or none.

    Each dataset's window is checked as one batch; only when that fails is each partition checked
    alone, so the report names the partitions at fault. A failure only the whole window shows (a
    duplicate key across two days) is reported against the window's range.

    Raises:
        DataValidationError: any expectation or type cast failed. Data Docs are written either way.
    """
    import pandas as pd

    context = _context()
    failures: list[Failure] = []
    loaded: dict[str, list[tuple[str, pd.DataFrame, str]]] = {}
    for dataset, partition in partitions:
        frame, manifest = read_landed(spec, dataset, partition)
        loaded.setdefault(dataset, []).append((partition, frame, str(manifest["version"])))
    evaluated = rows = 0
    for dataset, parts in loaded.items():
        suite = spec.sources[dataset].suite
        batch = pd.concat([frame for _, frame, _ in parts], ignore_index=True)
        result = validate_frame(context, suite, batch, SUCCESS_ONLY)
        evaluated += len(result.results)
        rows += len(batch)
        if result.success:
            continue
        found = [
            f for partition, frame, _ in parts for f in _failures(context, suite, dataset, partition, frame)
        ]
        if not found and len(parts) > 1:
            found = _failures(context, suite, dataset, _window_label(parts), batch)
        failures.extend(found)
    typed: list[Any] = []
    if not failures:
        typed, failures = _cast_all(spec, loaded)
    context.build_data_docs()
    docs = context.get_docs_sites_urls()[0]["site_url"]
    report = {
        "use_case": spec.name,
        "success": not failures,
        "partitions": len(partitions),
        "rows": rows,
        "expectations_evaluated": evaluated,
        "failures": [str(f) for f in failures],
        "data_docs": docs,
    }
    lake.write_json(get_settings().reports_dir / "validation" / f"{spec.name}.json", report)
    if failures:
        lines = "\n".join(f"  - {failure}" for failure in failures)
        raise DataValidationError(
            f"{len(failures)} check(s) failed; nothing was published:\n{lines}\nData Docs: {docs}"
        )
    for dataset, partition, frame, version in typed:
        publish(dataset_dir(spec, dataset, partition), frame, version)
    log.info("validated %d partitions, %d rows, %d expectations", len(partitions), rows, evaluated)
    return ValidationSummary(len(partitions), rows, evaluated, docs)


@_one_process_at_a_time()
def check_feature_tables(tables: dict[str, pd.DataFrame]) -> int:
    """Run each table's ``<view>.features`` suite; raise before anything is published or served.

    Returns:
        The number of expectations evaluated.

    Raises:
        DataValidationError: naming each failed expectation, column and feature view.
    """
    context = _context()
    failures: list[Failure] = []
    evaluated = 0
    for view, frame in tables.items():
        result = validate_frame(context, f"{view}.features", frame)
        evaluated += len(result.results)
        failures.extend(
            Failure(
                view,
                "all",
                item.expectation_config.type,
                item.expectation_config.kwargs.get("column"),
                _describe(item),
            )
            for item in result.results
            if not item.success
        )
    if failures:
        lines = "\n".join(f"  - {failure}" for failure in failures)
        raise DataValidationError(
            f"feature quality: {len(failures)} expectation(s) failed; nothing was published:\n{lines}"
        )
    return evaluated
