"""Every DAG file parses, follows the house policy and stays cheap to import."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.dags.conftest import DAGS, PLUGINS, PROJECT

ALL_DAG_FILES = sorted(path for path in DAGS.glob("*.py") if not path.name.startswith("_"))
# `platform_<name>.py` holds one DAG `falaj_<name>` for the whole platform; the rest one per use case.
PLATFORM_FILES = [path for path in ALL_DAG_FILES if path.stem.startswith("platform_")]
DAG_FILES = [path for path in ALL_DAG_FILES if path not in PLATFORM_FILES]
USE_CASES = sorted(path.stem for path in (PROJECT / "usecases").glob("*.yaml"))
HEAVY = ("torch", "pandas", "feast", "great_expectations", "lightgbm", "onnxruntime", "bentoml", "sklearn")


def test_no_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}


def test_one_dag_per_use_case_and_file(dagbag: Any) -> None:
    """Given the use-case specs, then each DAG file yields exactly `<use_case>_<file stem>` per use case."""
    expected = {f"{use_case}_{path.stem}" for use_case in USE_CASES for path in DAG_FILES}
    expected |= {f"falaj_{path.stem.removeprefix('platform_')}" for path in PLATFORM_FILES}
    assert set(dagbag.dags) == expected


@pytest.mark.parametrize("path", PLATFORM_FILES, ids=lambda p: p.stem)
def test_platform_dag_policy(dagbag: Any, path: Path) -> None:
    name = path.stem.removeprefix("platform_")
    dag = dagbag.dags[f"falaj_{name}"]
    assert {"falaj", "platform", name} <= set(dag.tags)
    assert dag.schedule is not None and dag.catchup is False and dag.max_active_runs == 1
    assert dag.doc_md == ast.get_docstring(ast.parse(path.read_text()), clean=False)
    assert all(task.retries >= 1 for task in dag.tasks)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_policy(dagbag: Any, path: Path) -> None:
    for use_case in USE_CASES:
        dag = dagbag.dags[f"{use_case}_{path.stem}"]
        assert {"falaj", use_case, path.stem} <= set(dag.tags)
        assert dag.schedule is not None, "every DAG states its schedule"
        assert dag.doc_md == ast.get_docstring(ast.parse(path.read_text()), clean=False)
        assert dag.catchup is False
        assert dag.max_active_runs == 1
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id} has no retries"


def test_files_are_short() -> None:
    for path in ALL_DAG_FILES:
        assert len(path.read_text().splitlines()) <= 100, f"{path.name} is no longer thin glue"


def test_assets_link_the_chain(dagbag: Any) -> None:
    """The features DAG is scheduled on what ingest produces; training on what features produces, or on
    the monitoring DAG's request to retrain."""
    monitoring = {outlet.name for task in dagbag.dags["falaj_monitoring"].tasks for outlet in task.outlets}
    for use_case in USE_CASES:
        produced = {
            stage: {
                outlet.name for task in dagbag.dags[f"{use_case}_{stage}"].tasks for outlet in task.outlets
            }
            for stage in ("ingest", "features", "training")
        }
        features_on = dagbag.dags[f"{use_case}_features"].timetable.asset_condition
        training_on = dagbag.dags[f"{use_case}_training"].timetable.asset_condition
        assert {asset.name for asset in features_on.objects} <= produced["ingest"]
        assert {asset.name for asset in training_on.objects} == produced["features"] | {
            f"falaj.{use_case}.retrain"
        }
        assert f"falaj.{use_case}.retrain" in monitoring
        assert produced["training"] == {f"falaj.{use_case}.model"}


@pytest.mark.parametrize("path", ALL_DAG_FILES, ids=lambda p: p.stem)
def test_import_is_fast_and_light(path: Path, dag_env: dict[str, str]) -> None:
    """Given airflow.sdk already imported (as in the DAG processor), a DAG file costs well under a second
    and loads none of the heavy libraries."""
    probe = f"""
import importlib.util, json, sys, time
sys.path.insert(0, {str(PLUGINS)!r})
import airflow.sdk
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", {str(path)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
elapsed = time.perf_counter() - started
print(json.dumps({{"seconds": elapsed, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env={**dag_env, "PATH": ""}
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["seconds"] < 0.5


def test_specs_drive_the_dags() -> None:
    """The DAG files name no use case: adding a spec is enough to get its DAGs."""
    for path in DAG_FILES:
        text = path.read_text()
        for use_case in USE_CASES:
            assert f'"{use_case}' not in text and f"'{use_case}" not in text
