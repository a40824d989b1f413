"""docs/adding-a-use-case.md, followed literally: its bash blocks, in order, in a fresh copy of the checkout
with a new platform home, end with a forecast served over HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.demo import free_port
from tests.checkouts import copy_checkout

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
GUIDE = PROJECT / "docs" / "adding-a-use-case.md"


def guide_script(port: int) -> str:
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    # The only liberty taken: a free port instead of 3000, which another test may hold.
    return "set -euo pipefail\n" + "".join(blocks).replace("3000", str(port))


def test_the_guide_adds_a_use_case_that_answers_a_forecast(tmp_path: Path) -> None:
    # Given a fresh copy of the checkout (its tracked files) using this environment as its .venv
    checkout = copy_checkout(tmp_path / "checkout")
    (checkout / ".venv").symlink_to(Path(sys.prefix))
    # The environment's editable install points at PROJECT; the copy's code comes first.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALAJ_")}
    env |= {"PYTHONPATH": str(checkout), "FALAJ_PROJECT_DIR": str(checkout)}
    env["FALAJ_HOME"] = str(checkout / ".falaj")
    # When its commands run, in order
    script = subprocess.Popen(
        ["bash", "-c", guide_script(free_port())], cwd=checkout, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = script.communicate(timeout=1200)
    finally:
        try:
            os.killpg(script.pid, signal.SIGTERM)  # the server it started in the background
        except ProcessLookupError:
            pass
    # Then every step succeeded and the last one is a forecast from the approved model
    assert script.returncode == 0, output[-5000:]
    assert "usecases/demand.yaml: valid spec 'demand'" in output
    assert "demand:v1 is the champion (approved by risk-officer)" in output
    answer = output.strip().splitlines()[-1]
    assert '"model_version":"demand:v1"' in answer and '"decision":null' in answer, output[-3000:]
    assert float(re.search(r'"score":([0-9.]+)', answer).group(1)) > 0  # type: ignore[union-attr]
