"""Every test session gets its own ``$FALAJ_HOME``: no test reads or writes the checkout's ``.falaj``.

Fixtures that need a fresh home per test or per module set their own over this one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.settings import get_settings


@pytest.fixture(scope="session", autouse=True)
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("session-home")
    previous = os.environ.get("FALAJ_HOME")
    os.environ["FALAJ_HOME"] = str(home)
    get_settings.cache_clear()
    yield home
    if previous is None:
        os.environ.pop("FALAJ_HOME", None)
    else:
        os.environ["FALAJ_HOME"] = previous
    get_settings.cache_clear()
