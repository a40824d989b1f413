"""`falaj up` and `falaj down` bookkeeping: what runs is recorded, stopped by `down`, never started twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import stack
from pipelines.settings import get_settings


def record(processes: list[stack.Process]) -> None:
    stack.state_path().parent.mkdir(parents=True, exist_ok=True)
    stack.state_path().write_text(json.dumps({"processes": [p.__dict__ for p in processes]}))


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


def test_down_stops_what_up_recorded_and_forgets_it(falaj_home: Path) -> None:
    child = sleeper()
    record([stack.Process("scheduler", child.pid, "scheduler.log")])
    assert [p.name for p in stack.running()] == ["scheduler"]
    stopped = stack.down(timeout_s=5)
    assert [p.pid for p in stopped] == [child.pid]
    assert child.wait(timeout=5) is not None and not stack.state_path().exists()
    assert stack.down() == []  # nothing left: a second `falaj down` is a no-op


def test_up_refuses_while_the_stack_is_already_up(falaj_home: Path) -> None:
    child = sleeper()
    try:
        record([stack.Process("api-server", child.pid, "api-server.log", "http://127.0.0.1:8080")])
        with pytest.raises(stack.StackError, match=r"already up \(api-server\): `falaj down` first"):
            stack.up()
    finally:
        stack.down(timeout_s=5)


def test_a_dead_record_is_not_running(falaj_home: Path) -> None:
    child = sleeper()
    child.kill()
    child.wait()
    record([stack.Process("triggerer", child.pid, "triggerer.log")])
    assert stack.running() == []


def test_prod_needs_the_databases_named(falaj_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALAJ_PROFILE", "prod")
    monkeypatch.delenv("FALAJ_AIRFLOW_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(stack.StackError, match="FALAJ_AIRFLOW_DATABASE_URL"):
            stack.up()
    finally:
        monkeypatch.delenv("FALAJ_PROFILE")
        get_settings.cache_clear()


def test_serving_needs_a_packaged_champion(falaj_home: Path) -> None:
    with pytest.raises(stack.StackError, match="fraud has no packaged champion; run the training DAG first"):
        stack.bento_serve_command("fraud", "127.0.0.1", 3000)
