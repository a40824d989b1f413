"""Every `falaj` command runs behind ``guarded``: the policy's check, a second factor where it is due."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import click


def guarded(action: str, resource: Callable[[dict[str, Any]], str] | str = "*") -> Callable[[Any], Any]:
    """Check the caller's role for ``action`` on ``resource`` before the command runs; privileged
    actions get an ``--otp`` option for the second factor. Denials are audited."""

    def wrap(command: Callable[..., Any]) -> Any:
        from pipelines import authz

        @functools.wraps(command)
        def run(**arguments: Any) -> Any:
            from pipelines import audit, tls

            otp = arguments.pop("otp", None)
            target = resource(arguments) if callable(resource) else resource
            user = os.environ.get("FALAJ_USER", "unidentified")
            try:
                user = authz.current_user()
                authz.require(user, action, target, otp)
            except authz.AccessDeniedError as denied:
                audit.emit(action, target, actor=user, outcome="denied", reason=str(denied))
                raise click.ClickException(str(denied)) from None
            try:
                return command(**arguments)
            except tls.InsecureConnectionError as insecure:
                raise click.ClickException(str(insecure)) from None

        run.falaj_action = action  # type: ignore[attr-defined]
        if action in authz.policy()["privileged"]:
            run = click.option("--otp", default=None, help="TOTP code: this action needs a second factor.")(
                run
            )
        return run

    return wrap
