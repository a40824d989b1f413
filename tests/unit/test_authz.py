"""RBAC: every CLI command has a rule, every role gets exactly what the matrix says, step-up for privilege."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pyotp
import pytest
from click.testing import CliRunner

from pipelines import audit, authz, registry
from pipelines.cli import main

# One representative identity per role (policies/rbac.yaml's users).
USERS = {
    "platform-admin": "falaj-system",
    "data-engineer": "data-engineer",
    "ml-engineer": "ml-engineer",
    "approver": "risk-officer",
    "consumer": "scoring-client",
    "auditor": "auditor",
    "scoring-service": "falaj-scorer",
}
# The expected matrix, written out by hand: what each role may do. Anything else is denied.
ALLOWED = {
    "platform-admin": "*",
    "data-engineer": {"data.generate", "spec.check", "features.read", "features.materialize",
                      "data.erase", "stream.consume", "stream.produce", "airflow.run", "monitor.read",
                      "monitor.manage"},
    "ml-engineer": {"spec.check", "features.read", "model.read", "model.train", "model.replay",
                    "airflow.run", "monitor.read", "monitor.manage"},
    "approver": {"model.read", "model.promote", "model.rollback", "model.experiment", "monitor.read",
                 "monitor.manage"},
    "consumer": {"endpoint.score"},
    "scoring-service": {"model.read", "model.experiment"},
    "auditor": {"compliance.read", "authz.explain", "audit.read", "audit.verify", "audit.export",
                "model.read", "monitor.read", "release.verify"},
}  # fmt: skip
ADMIN_ONLY = {
    "demo.run",
    "auth.enroll",
    "keys.rotate",
    "certs.dev",
    "endpoint.keys",
    "endpoint.serve",
    "stack.run",
    "release.build",
}
PRIVILEGED = {
    "model.promote",
    "model.rollback",
    "model.experiment",
    "audit.export",
    "auth.enroll",
    "keys.rotate",
    "data.erase",
    "endpoint.keys",
    "release.build",
}


def leaf_commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        path = f"{prefix} {name}".strip()
        if isinstance(command, click.Group):
            found |= leaf_commands(command, path)
        else:
            found[path] = command
    return found


COMMANDS = leaf_commands(main)
ACTIONS = {getattr(command.callback, "falaj_action", None) for command in COMMANDS.values()} | {
    "endpoint.score",
    "endpoint.admin",
}


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_has_a_rule(path: str) -> None:
    action = getattr(COMMANDS[path].callback, "falaj_action", None)
    assert action, f"`falaj {path}` checks no permission"
    holders = [role for role in ALLOWED if role != "platform-admin" and action in ALLOWED[role]]
    assert holders or action in ADMIN_ONLY, f"`falaj {path}` ({action}): no role but platform-admin holds it"
    assert ("--otp" in {opt for p in COMMANDS[path].params for opt in p.opts}) == (action in PRIVILEGED)


@pytest.mark.parametrize("role", sorted(USERS))
def test_the_role_matrix(role: str) -> None:
    for action in sorted(a for a in ACTIONS if a):
        expected = ALLOWED[role] == "*" or action in ALLOWED[role]
        decision = authz.decide(USERS[role], action, "fraud:v1")
        assert decision.allowed == expected, decision.explain()
        assert decision.privileged == (action in PRIVILEGED)


def test_unknown_users_get_nothing() -> None:
    assert not any(authz.decide("mallory", action, "*").allowed for action in ACTIONS if action)


def invoke(user: str, *args: str) -> Any:
    return CliRunner().invoke(main, list(args), env={"FALAJ_USER": user})


def test_a_denied_command_exits_with_the_reason_and_is_audited(falaj_home: Path) -> None:
    result = invoke("scoring-client", "models", "list", "fraud")
    assert result.exit_code == 1
    assert "DENY: scoring-client (consumer) may not model.read fraud" in result.output
    with registry.session() as db:
        [event] = audit.load(db)
    assert (event["actor"], event["action"], event["outcome"]) == ("scoring-client", "model.read", "denied")


def test_privileged_actions_need_a_valid_second_factor(falaj_home: Path) -> None:
    no_factor = invoke("risk-officer", "models", "rollback", "fraud", "--reason", "drift")
    assert no_factor.exit_code == 1 and "has no second factor" in no_factor.output
    secret = pyotp.parse_uri(authz.enroll("risk-officer")).secret
    wrong = invoke("risk-officer", "models", "rollback", "fraud", "--reason", "drift", "--otp", "000000")
    assert wrong.exit_code == 1 and "a valid TOTP code (--otp) is required" in wrong.output
    code = pyotp.TOTP(secret).now()
    right = invoke("risk-officer", "models", "rollback", "fraud", "--reason", "drift", "--otp", code)
    # Past both checks, the registry answers: there is nothing to roll back yet.
    assert right.exit_code == 1 and "has no champion to roll back" in right.output
    replayed = invoke("risk-officer", "models", "rollback", "fraud", "--reason", "drift", "--otp", code)
    assert replayed.exit_code == 1 and "already used" in replayed.output


def test_prod_has_no_default_identity(falaj_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.settings import get_settings

    monkeypatch.setenv("FALAJ_PROFILE", "prod")
    get_settings.cache_clear()
    with pytest.raises(authz.AccessDeniedError, match="no identity: set FALAJ_USER"):
        authz.current_user()


def test_explain_names_the_rule() -> None:
    assert authz.decide("auditor", "audit.verify", "*").explain() == (
        "ALLOW: auditor (auditor) may audit.verify * by rule 'auditor: audit.verify *'"
    )
    assert (
        "privileged: needs a TOTP code" in authz.decide("risk-officer", "model.promote", "fraud:v2").explain()
    )


def test_records_of_processing_name_purpose_basis_and_personal_data() -> None:
    import json

    result = invoke("auditor", "compliance", "ropa", "--json")
    assert result.exit_code == 0, result.output
    [fraud] = json.loads(result.output)
    assert fraud["legal_basis"] and fraud["retention_days"] > 0 and fraud["region"] == "ae-dubai-1"
    assert fraud["personal_data"]["customers"]["emirates_id"] == "pseudonymize"
    assert "emirates_id" not in fraud["other_data"]["customers"]


def test_a_new_installation_enrolls_its_first_admin_without_a_code(falaj_home: Path) -> None:
    # Given a home where nobody has a second factor: enrolling someone else still needs one
    with pytest.raises(authz.AccessDeniedError, match="has no second factor"):
        authz.require("falaj-system", "auth.enroll", "risk-officer")
    # When the admin enrolls themselves, no code is asked
    authz.require("falaj-system", "auth.enroll", "falaj-system")
    authz.enroll("falaj-system")
    # Then, with a factor enrolled, the exception is over: enrolling again needs the admin's code
    with pytest.raises(authz.AccessDeniedError, match="a valid TOTP code"):
        authz.require("falaj-system", "auth.enroll", "falaj-system")
    # And a non-admin never enrolls themselves
    with pytest.raises(authz.AccessDeniedError, match="DENY"):
        authz.require("risk-officer", "auth.enroll", "risk-officer")
