"""Integration tests run the real thing: Airflow DAGs, Feast, the Bento server over HTTP, PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def platform_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A FALAJ_HOME for the whole session, visible to this process's cached settings too."""
    from pipelines.settings import get_settings

    home = tmp_path_factory.mktemp("falaj-home")
    previous = os.environ.get("FALAJ_HOME")
    os.environ["FALAJ_HOME"] = str(home)
    get_settings.cache_clear()
    yield home
    if previous is None:
        os.environ.pop("FALAJ_HOME", None)
    else:
        os.environ["FALAJ_HOME"] = previous
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def demo_run(platform_home: Path) -> dict[str, Any]:
    """`falaj demo` on the small dataset: every DAG through `airflow dags test`, then five HTTP scores."""
    falaj = str(Path(sys.executable).with_name("falaj"))
    completed = subprocess.run(
        [falaj, "demo", "--size", "small"],
        cwd=PROJECT,
        env={**os.environ, "FALAJ_HOME": str(platform_home)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = json.loads((platform_home / "reports" / "demo-summary.json").read_text())
    return {"stdout": completed.stdout, "summary": summary}
