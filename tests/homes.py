"""Point this process (and its cached settings) at a platform home for a while."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.settings import get_settings


@contextmanager
def falaj_home(home: Path) -> Iterator[Path]:
    """``FALAJ_HOME`` is ``home`` inside the block, and what it was before afterwards."""
    previous = os.environ.get("FALAJ_HOME")
    os.environ["FALAJ_HOME"] = str(home)
    get_settings.cache_clear()
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("FALAJ_HOME", None)
        else:
            os.environ["FALAJ_HOME"] = previous
        get_settings.cache_clear()
