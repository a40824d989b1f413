"""DAG file parse time against a bare ``import airflow.sdk``, each in a fresh interpreter.

For each file in dags/, a fresh interpreter imports ``airflow.sdk`` and then parses the file the way
Airflow 3's DAG processor does: ``airflow.dag_processing.processor._parse_file``, the function its
per-file child runs (stability check, ``BundleDagBag`` imports the file under a mangled module name and
validates each DAG, then every DAG is serialized). The floor is a fresh interpreter that only imports
``airflow.sdk``, the price of any Airflow process. Rounds alternate the floor and every file, so a change
in the machine's load hits all of them; each figure is the median of ``--repeats`` rounds, after one
untimed parse that fills the bytecode caches and writes the throwaway ``airflow.cfg``. Each file gets its
wall time and its CPU time (user + system, steadier than wall time on a busy machine) against the floor's.

Each child also reports, from inside, what its parts cost: importing ``airflow.sdk``, importing Airflow's
parser (the DAG processor holds it before it forks a file's child) and the file's own parse and
serialization. That last part is the only one a DAG file controls, and the reason DAG files import no
torch, pandas, Feast or Great Expectations at top level.

Targets, reported and never asserted: a file's fresh-interpreter parse <= 1.5x ``import airflow.sdk``
(wall and CPU); its own parse and serialization <= 0.2x ``import airflow.sdk`` timed in the same children.

Run: `make bench` (or `.venv/bin/python -m bench.dag_parse`; `--quick` parses two files once).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Figure, write_report

PROJECT = Path(__file__).resolve().parents[1]
DAGS = PROJECT / "dags"
PLUGINS = PROJECT / "plugins"
HEAVY = ("torch", "pandas", "feast", "great_expectations", "lightgbm", "onnxruntime", "bentoml", "sklearn")
QUICK_FILES = ("ingest.py", "training.py")

FLOOR_CHILD = """
import json, time
started = time.perf_counter()
import airflow.sdk
print(json.dumps({"sdk": time.perf_counter() - started}))
"""

PARSE_CHILD = """
import json, sys, time
from pathlib import Path
started = time.perf_counter()
import airflow.sdk
imported = time.perf_counter()
import structlog
from airflow.dag_processing.processor import DagFileParseRequest, _parse_file
loaded = time.perf_counter()
request = DagFileParseRequest(
    file={path!r}, bundle_path=Path({dags!r}), bundle_name="dags-folder", callback_requests=[]
)
result = _parse_file(request, structlog.get_logger())
print(json.dumps({{
    "sdk": imported - started,
    "parser": loaded - imported,
    "file": time.perf_counter() - loaded,
    "dags": sorted(dag.dag_id for dag in result.serialized_dags),
    "errors": result.import_errors,
    "heavy": [name for name in {heavy!r} if name in sys.modules],
}}))
"""


def child_env(scratch: Path) -> dict[str, str]:
    """A throwaway Airflow home on the project's dags/ and plugins/, as tests/dags does."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "AIRFLOW_HOME": str(scratch / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "FALAJ_HOME": str(scratch / "falaj"),
    }


@dataclass(frozen=True)
class Child:
    """One fresh interpreter: its wall and CPU seconds, and what it reported from inside."""

    wall: float
    cpu: float
    report: dict[str, Any]


def run_child(code: str, env: dict[str, str]) -> Child:
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"a fresh interpreter failed (exit {completed.returncode}):\n{completed.stderr}")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return Child(wall, cpu, json.loads(completed.stdout.strip().splitlines()[-1]))


def spread(samples: list[float], scale: float = 1.0) -> dict[str, float]:
    return {"min": min(samples) * scale, "max": max(samples) * scale, "runs": float(len(samples))}


def main(files: list[Path], repeats: int) -> Path:
    with tempfile.TemporaryDirectory(prefix="falaj-bench-dag-parse-") as scratch:
        return measure(files, repeats, child_env(Path(scratch)))


def measure(files: list[Path], repeats: int, env: dict[str, str]) -> Path:
    children = {"floor": FLOOR_CHILD} | {
        path.name: PARSE_CHILD.format(path=str(path), dags=str(DAGS), heavy=HEAVY) for path in files
    }
    runs: dict[str, list[Child]] = {name: [] for name in children}
    run_child(children[files[0].name], env)  # untimed: fills the bytecode caches, writes airflow.cfg
    for _ in range(repeats):
        for name, code in children.items():
            child = run_child(code, env)
            if child.report.get("errors"):
                raise SystemExit(f"dags/{name} does not parse: {child.report['errors']}")
            if name != "floor" and not child.report["dags"]:
                raise SystemExit(f"dags/{name} parsed to no DAG at all")
            runs[name].append(child)

    def walls(name: str) -> list[float]:
        return [child.wall for child in runs[name]]

    def cpus(name: str) -> list[float]:
        return [child.cpu for child in runs[name]]

    def inside(name: str, part: str) -> list[float]:
        return [child.report[part] for child in runs[name]]

    def median_ms(samples: list[float]) -> float:
        return round(statistics.median(samples) * 1000, 1)

    floor_wall, floor_cpu = statistics.median(walls("floor")), statistics.median(cpus("floor"))
    figures, increments, parser_ms, heavy, dag_ids = [], {}, {}, {}, {}
    for path in files:
        name = path.name
        wall = statistics.median(walls(name))
        figures.append(
            Figure(
                f"dags/{name}: fresh interpreter parses it",
                "s",
                wall,
                floor_wall,
                "fresh interpreter, import airflow.sdk",
                "ratio <= 1.5",
                wall <= 1.5 * floor_wall,
                spread(walls(name)) | {"floor_min": min(walls("floor")), "floor_max": max(walls("floor"))},
            )
        )
        cpu_s = statistics.median(cpus(name))
        figures.append(
            Figure(
                f"dags/{name}: fresh interpreter parses it, CPU",
                "s",
                cpu_s,
                floor_cpu,
                "fresh interpreter, import airflow.sdk, CPU",
                "ratio <= 1.5",
                cpu_s <= 1.5 * floor_cpu,
                spread(cpus(name)) | {"floor_min": min(cpus("floor")), "floor_max": max(cpus("floor"))},
            )
        )
        own = statistics.median(inside(name, "file")) * 1000
        sdk_inside = statistics.median(inside(name, "sdk")) * 1000
        figures.append(
            Figure(
                f"dags/{name}: its own parse + serialization",
                "ms",
                own,
                sdk_inside,
                "import airflow.sdk, same children",
                "ratio <= 0.2",
                own <= 0.2 * sdk_inside,
                spread(inside(name, "file"), 1000),
            )
        )
        increments[name] = round((wall - floor_wall) * 1000, 1)
        parser_ms[name] = median_ms(inside(name, "parser"))
        heavy[name] = sorted({module for child in runs[name] for module in child.report["heavy"]})
        dag_ids[name] = runs[name][0].report["dags"]
    return write_report(
        "dag_parse",
        figures,
        {
            "repeats": repeats,
            "increment_over_floor_ms": increments,
            "airflow_parser_import_ms": parser_ms,
            "floor_import_airflow_sdk_in_process_ms": median_ms(inside("floor", "sdk")),
            "heavy_modules_loaded": heavy,
            "dags": dag_ids,
            "airflow": _airflow_version(),
            "cpus": os.cpu_count(),
        },
    )


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def dag_files(names: list[str] | None) -> list[Path]:
    files = sorted(path for path in DAGS.glob("*.py") if not path.name.startswith("_"))
    if names is None:
        return files
    chosen = [path for path in files if path.name in names or path.stem in names]
    unknown = sorted(set(names) - {path.name for path in chosen} - {path.stem for path in chosen})
    if unknown:
        raise SystemExit(f"no such DAG file(s) in {DAGS}: {unknown}")
    return chosen


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4, help="Timed rounds; the median counts.")
    parser.add_argument("--files", nargs="+", help="Only these DAG files (names or stems).")
    parser.add_argument("--quick", action="store_true", help=f"One round over {', '.join(QUICK_FILES)}.")
    arguments = parser.parse_args()
    if arguments.repeats < 1:
        parser.error("--repeats must be at least 1")
    chosen = dag_files(list(QUICK_FILES) if arguments.quick else arguments.files)
    main(chosen, 1 if arguments.quick else arguments.repeats)
