"""Shared fixtures of the unit tests: an isolated ``$FALAJ_HOME`` and the shipped reference spec."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import registry, spec
from pipelines.settings import PROJECT_DIR, get_settings

FRAUD_SPEC_PATH = PROJECT_DIR / "usecases" / "fraud.yaml"
# Every FALAJ_* variable the settings read besides the home: a developer's shell must not leak into tests.
_OTHER_SETTINGS = (
    "FALAJ_PROFILE",
    "FALAJ_PROJECT_DIR",
    "FALAJ_DATABASE_URL",
    "FALAJ_TRAINING_BACKEND",
    "FALAJ_ACTOR",
    "FALAJ_ALERT_WEBHOOK_URL",
    "FALAJ_UI_URL",
    "FALAJ_REQUIRE_TLS",
    "FALAJ_TLS_CA_FILE",
)


def _clear_caches() -> None:
    get_settings.cache_clear()
    spec._load_all.cache_clear()
    registry.engine.cache_clear()


@pytest.fixture
def falaj_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, empty platform home for one test; the cached settings are rebuilt around it."""
    home = tmp_path / "falaj-home"
    monkeypatch.setenv("FALAJ_HOME", str(home))
    for name in _OTHER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    _clear_caches()
    yield home
    _clear_caches()


@pytest.fixture
def fraud_spec() -> spec.UseCaseSpec:
    """The reference use case exactly as shipped (read from the file, independent of the settings)."""
    return spec.load_spec_file(FRAUD_SPEC_PATH)
