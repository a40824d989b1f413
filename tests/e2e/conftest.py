"""End-to-end: the stack `falaj up` starts, driven as its users drive it (a browser, a REST client)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipelines import stack
from pipelines.demo import free_port
from tests.homes import falaj_home

PROJECT = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT / ".falaj" / "test-artifacts" / "e2e"


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Stack]:
    """`falaj demo --size small` in a home of its own (data, a champion, its Bento), then `falaj up`."""
    # Module scope: the stack's scheduler and workers stop before the next test file runs.
    home = tmp_path_factory.mktemp("e2e-home")
    falaj = str(Path(sys.executable).with_name("falaj"))
    demo = subprocess.run(
        [falaj, "demo", "--size", "small"], cwd=PROJECT, env={**os.environ, "FALAJ_HOME": str(home)},
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    with falaj_home(home):
        started = stack.up(api_port=free_port(), serve_port=free_port())
        try:
            yield started
        finally:
            stack.down()


@pytest.fixture(scope="module")
def airflow_api(running_stack: stack.Stack) -> Iterator[httpx.Client]:
    """A REST client of Airflow's API, holding a token for the stack's login."""
    user, password = running_stack.login
    token = httpx.post(
        f"{running_stack.airflow_url}/auth/token", json={"username": user, "password": password}, timeout=30
    )
    assert token.status_code in (200, 201), token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    with httpx.Client(base_url=f"{running_stack.airflow_url}/api/v2", headers=headers, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
