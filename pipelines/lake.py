"""The lake's layout and its two write rules: atomic, and immutable once landed.

Zones: ``landing`` (pseudonymized, as the source sent it), ``validated`` (typed, passed its suite),
``features`` (inputs of feature views), ``training_sets`` (content-addressed).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipelines import residency
from pipelines.settings import get_settings

SNAPSHOT = "snapshot"  # partition name of unpartitioned (dimension) sources


def zone_dir(zone: str, use_case: str, dataset: str) -> Path:
    return get_settings().lake_dir / zone / use_case / dataset


def partition_dir(zone: str, use_case: str, dataset: str, partition: str) -> Path:
    return zone_dir(zone, use_case, dataset) / f"partition={partition}"


def days(start: date, end: date) -> list[date]:
    """Every day in ``[start, end)``."""
    return [start + timedelta(days=offset) for offset in range((end - start).days)]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place only if the block succeeds."""
    residency.require_storage(str(target))  # before a byte is written
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.replace(target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))
