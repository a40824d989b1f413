"""The DVC pipeline's stages outside Airflow: the functions the DAGs call, one process per stage.

``dvc repro`` (see ``dvc.yaml``) runs ``data`` (the seeded reference data), then ``training-set``
(ingest, validation, feature tables and the point-in-time training set of the whole window), then the
training entrypoint per family. Each stage works in its own ``FALAJ_HOME`` and writes only its outputs.
"""

from __future__ import annotations

import argparse
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipelines.datagen import SIZES, generate
from pipelines.demo import DATA_END
from pipelines.features import apply_definitions, build_feature_tables
from pipelines.ingest import ingest
from pipelines.settings import get_settings
from pipelines.spec import load_spec
from pipelines.training_set import build_training_set
from pipelines.validate import validate


def data(size: str, days: int, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    generate(out, SIZES[size], days=days, end=DATA_END)


def training_set(use_case: str, source: Path, days: int, out: Path) -> str:
    """Take the source drop through the platform's pipeline; copy the training set to ``out``."""
    shutil.copytree(source, get_settings().source_dir, dirs_exist_ok=True)
    spec = load_spec(use_case)
    first = DATA_END - timedelta(days=days)
    landed = ingest(spec, first, DATA_END)
    validate(spec, [(item.dataset, item.partition) for item in landed])
    build_feature_tables(spec)
    apply_definitions()
    start, end = (datetime.combine(day, datetime.min.time(), UTC) for day in (first, DATA_END))
    built = build_training_set(spec, start, end)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in ("data.parquet.enc", "manifest.json"):
        shutil.copy2(Path(built.uri) / name, out / name)
    return built.sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True)
    data_stage = stages.add_parser("data")
    data_stage.add_argument("--size", choices=sorted(SIZES), required=True)
    data_stage.add_argument("--days", type=int, required=True)
    data_stage.add_argument("--out", type=Path, required=True)
    set_stage = stages.add_parser("training-set")
    set_stage.add_argument("--use-case", required=True)
    set_stage.add_argument("--source", type=Path, required=True)
    set_stage.add_argument("--days", type=int, required=True)
    set_stage.add_argument("--out", type=Path, required=True)
    arguments = parser.parse_args()
    if arguments.stage == "data":
        data(arguments.size, arguments.days, arguments.out)
    else:
        print(training_set(arguments.use_case, arguments.source, arguments.days, arguments.out))


if __name__ == "__main__":
    main()
