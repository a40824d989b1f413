"""Role-based access control from ``policies/rbac.yaml``, with a TOTP step-up for privileged actions."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipelines.settings import get_settings


class AccessDeniedError(PermissionError):
    """The user may not take the action; the message says which rule was missing or which factor failed."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    user: str
    roles: tuple[str, ...]
    action: str
    resource: str
    rule: str | None
    privileged: bool

    def explain(self) -> str:
        who = f"{self.user} ({', '.join(self.roles) or 'no role'})"
        if not self.allowed:
            return f"DENY: {who} may not {self.action} {self.resource}: no rule of their roles grants it"
        step_up = "; privileged: needs a TOTP code" if self.privileged else ""
        return f"ALLOW: {who} may {self.action} {self.resource} by rule '{self.rule}'{step_up}"


@lru_cache(maxsize=4)
def policy(path: Path | None = None) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((path or get_settings().project_dir / "policies" / "rbac.yaml").read_text())


def current_user() -> str:
    """Who runs this command: ``FALAJ_USER``, set by the login wrapper.

    Unset, the ``local`` profile (one developer's machine) acts as the platform's own identity;
    ``prod`` refuses to guess.
    """
    user = os.environ.get("FALAJ_USER")
    if user:
        return user
    settings = get_settings()
    if settings.profile == "local":
        return settings.actor
    raise AccessDeniedError(f"no identity: set FALAJ_USER (OS account {getpass.getuser()} is not one)")


def decide(user: str, action: str, resource: str) -> Decision:
    return decide_for_roles(user, tuple(policy()["users"].get(user, [])), action, resource)


def decide_for_roles(user: str, roles: tuple[str, ...], action: str, resource: str) -> Decision:
    """The decision for roles vouched for elsewhere (an identity provider's token), not looked up by user.

    A role the policy does not define grants nothing.
    """
    rules = policy()
    for role in roles:
        if role not in rules["roles"]:
            continue
        for rule in rules["roles"][role]:
            action_glob, resource_glob = rule.split()
            if fnmatchcase(action, action_glob) and fnmatchcase(resource, resource_glob):
                return Decision(
                    True, user, roles, action, resource, f"{role}: {rule}", action in rules["privileged"]
                )
    return Decision(False, user, roles, action, resource, None, action in rules["privileged"])


def totp_secret_path(user: str) -> Path:
    return get_settings().secrets_dir / "totp" / user


def enroll(user: str) -> str:
    """Give the user a TOTP secret; returns the otpauth URI for their authenticator app."""
    import pyotp

    secret = pyotp.random_base32()
    path = totp_secret_path(user)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(secret)
    return pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name="Falaj")


def require(user: str, action: str, resource: str, otp: str | None = None) -> Decision:
    """Allow or raise; privileged actions also need the user's current TOTP code."""
    decision = decide(user, action, resource)
    if not decision.allowed:
        raise AccessDeniedError(decision.explain())
    if decision.privileged and not _first_enrollment(user, action, resource):
        import pyotp

        path = totp_secret_path(user)
        if not path.exists():
            raise AccessDeniedError(
                f"{action} is privileged and {user} has no second factor: `falaj auth enroll`"
            )
        step = _matching_step(pyotp.TOTP(path.read_text().strip()), otp or "")
        if step is None:
            raise AccessDeniedError(f"{action} is privileged: a valid TOTP code (--otp) is required")
        _spend(user, step, action)
    return decision


def _first_enrollment(user: str, action: str, resource: str) -> bool:
    """A new installation's first second factor: an admin enrolling themselves while nobody has one.
    Without it, enrolling would need a code from a factor that cannot exist yet."""
    folder = totp_secret_path(user).parent
    nobody = not folder.exists() or all(path.name.endswith(".last") for path in folder.iterdir())
    return action == "auth.enroll" and resource == user and nobody


def _matching_step(totp: Any, code: str) -> int | None:
    """The time step a code belongs to, allowing one step of clock drift either way."""
    import time

    now = int(time.time())
    for drift in (0, -1, 1):
        at = now + drift * totp.interval
        if code and totp.at(at) == code:
            return int(totp.timecode(datetime.fromtimestamp(at, UTC)))
    return None


def _spend(user: str, step: int, action: str) -> None:
    """A code works once: a step at or before the last one used is a replay."""
    used = totp_secret_path(user).with_suffix(".last")
    if used.exists() and step <= int(used.read_text()):
        raise AccessDeniedError(f"{action} is privileged: that TOTP code was already used; wait for the next")
    staging = used.with_suffix(".tmp")
    staging.write_text(str(step))
    staging.replace(used)


def airflow_users() -> str:
    """``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS``: each local identity at its nearest Airflow role."""
    rules = policy()
    ranked = ["admin", "op", "user", "viewer"]
    entries = []
    for user, roles in sorted(rules["users"].items()):
        mapped = [rules["airflow_roles"][role] for role in roles if role in rules["airflow_roles"]]
        if mapped:
            entries.append(f"{user}:{min(mapped, key=ranked.index)}")
    return ",".join(entries)
