"""`falaj rollout` and `falaj serving keys`: what an approver and an admin type, and what they get back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyotp
import pytest
from click.testing import CliRunner

from pipelines import audit, authz, registry, serving_auth
from pipelines.cli import main
from tests.unit.test_rollout import _add_version, _decide


@pytest.fixture
def registered(falaj_home: Path) -> None:
    with registry.session() as db, db.begin():
        champion, challenger = _add_version(db), _add_version(db)
        _decide(db, champion, passed=True)
        _decide(db, challenger, passed=True)
        registry.promote(db, "fraud", champion.version, approver="demo-approver", reason="first model")


def falaj(user: str, *args: str, otp: bool = False) -> Any:
    if otp:
        # Each call stands for its own 30-second window: the code a test just used is not a replay here.
        authz.totp_secret_path(user).with_suffix(".last").unlink(missing_ok=True)
        secret = authz.totp_secret_path(user)
        if not secret.exists():
            authz.enroll(user)
        args = (*args, "--otp", pyotp.TOTP(secret.read_text().strip()).now())
    return CliRunner().invoke(main, list(args), env={"FALAJ_USER": user})


def test_an_approver_runs_a_canary_by_hand(registered: None) -> None:
    started = falaj("risk-officer", "rollout", "start", "fraud", "--mode", "canary", "--challenger", "2",
                    "--steps", "0.05,0.5", "--max-p99-ms", "20", "--reason", "try v2", otp=True)  # fmt: skip
    assert started.exit_code == 0, started.output
    assert "canary with fraud:v2, challenger share 5%" in started.output
    status = json.loads(falaj("auditor", "rollout", "status", "fraud").output)
    assert (status["mode"], status["challenger"], status["budget"]["max_p99_ms"]) == (
        "canary",
        "fraud:v2",
        20.0,
    )
    advanced = falaj("risk-officer", "rollout", "advance", "fraud", "--reason", "healthy", otp=True)
    assert advanced.exit_code == 0 and "now serves 50%" in advanced.output
    stopped = falaj(
        "risk-officer", "rollout", "stop", "fraud", "--rolled-back", "--reason", "alerts", otp=True
    )
    assert stopped.exit_code == 0 and "rolled_back" in stopped.output
    assert json.loads(falaj("auditor", "rollout", "status", "fraud").output)["mode"] == "none"


def test_a_rollout_needs_the_role_the_factor_and_good_steps(registered: None) -> None:
    denied = falaj("ml-engineer", "rollout", "start", "fraud", "--mode", "ab", "--challenger", "2",
                   "--weight", "0.5", "--reason", "mine")  # fmt: skip
    assert denied.exit_code == 1 and "may not model.experiment" in denied.output
    no_factor = falaj("risk-officer", "rollout", "start", "fraud", "--mode", "ab", "--challenger", "2",
                      "--weight", "0.5", "--reason", "x")  # fmt: skip
    assert no_factor.exit_code == 1 and "second factor" in no_factor.output
    bad = falaj("risk-officer", "rollout", "start", "fraud", "--mode", "canary", "--challenger", "2",
                "--steps", "0.5,lots", "--reason", "x", otp=True)  # fmt: skip
    assert bad.exit_code == 2 and "--steps" in bad.output


def test_an_admin_creates_and_revokes_an_api_key(registered: None) -> None:
    created = falaj("falaj-system", "serving", "keys", "create", "scoring-client", otp=True)
    assert created.exit_code == 0, created.output
    key = created.output.strip()
    principal = serving_auth.Authenticator(None).authenticate({"x-api-key": key})
    assert principal.user == "scoring-client" and principal.roles == ("consumer",)
    key_id = serving_auth.api_key_id(key)
    listed = falaj("falaj-system", "serving", "keys", "list", otp=True)
    assert key_id in listed.output and key not in listed.output
    revoked = falaj("falaj-system", "serving", "keys", "revoke", key_id, otp=True)
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    with pytest.raises(serving_auth.AuthenticationError):
        serving_auth.Authenticator(None).authenticate({"x-api-key": key})
    with registry.session() as db:
        events = [e for e in audit.load(db) if e["action"] == "endpoint.keys"]
    assert [e["details"]["event"] for e in events] == ["create", "revoke"]
    assert all(key not in json.dumps(e) for e in events)


def test_a_review_with_no_labels_yet_proposes_nothing(registered: None) -> None:
    started = falaj("risk-officer", "rollout", "start", "fraud", "--mode", "ab", "--challenger", "2",
                    "--weight", "0.5", "--reason", "try v2", otp=True)  # fmt: skip
    assert started.exit_code == 0, started.output
    reviewed = falaj("auditor", "rollout", "review", "fraud")
    assert reviewed.exit_code == 0, reviewed.output
    assert "proposes insufficient_data" in reviewed.output and "champion" in reviewed.output
