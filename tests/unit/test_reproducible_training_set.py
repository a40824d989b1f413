"""The same source data builds the same training set, byte for byte, in any home (lineage relies on it)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines import spec as spec_module
from pipelines.settings import get_settings
from pipelines.training_set import build_training_set
from tests.reference_lake import prepare_features

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def training_set_sha(home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FALAJ_HOME", str(home))
    get_settings.cache_clear()
    spec_module._load_all.cache_clear()
    use_case, data = prepare_features(days=15)
    start, end = (datetime.combine(day, datetime.min.time(), UTC) for day in (data.start, data.end))
    return build_training_set(use_case, start, end).sha256


def test_two_homes_build_the_same_training_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, falaj_home: Path
) -> None:
    # Different homes mean different pseudonym keys and paths, none of which may reach a training set.
    assert training_set_sha(tmp_path / "one", monkeypatch) == training_set_sha(tmp_path / "two", monkeypatch)
