"""Every test session gets its own ``$FALAJ_HOME``: no test reads or writes the checkout's ``.falaj``.

Fixtures that need a fresh home per test or per module set their own over this one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.homes import falaj_home


@pytest.fixture(scope="session", autouse=True)
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with falaj_home(tmp_path_factory.mktemp("session-home")) as home:
        yield home
