"""`falaj up` and `falaj down`: the whole stack on this machine (see ``pipelines/stack.py``)."""

from __future__ import annotations

import click

from pipelines.cli_guard import guarded


@click.command("up")
@click.option(
    "--port", "api_port", type=int, default=8080, show_default=True, help="Airflow's web UI and API."
)
@click.option("--serve-port", type=int, default=3000, show_default=True, help="The scoring service.")
@click.option("--use-case", default="fraud", show_default=True, help="Whose champion is served.")
@click.option(
    "--profile", type=click.Choice(["local", "prod"]), default=None,
    help="Overrides FALAJ_PROFILE: prod runs on the PostgreSQL and Redis the settings name.",
)  # fmt: skip
@guarded("stack.run")
def up(api_port: int, serve_port: int, use_case: str, profile: str | None) -> None:
    """Start Airflow (api-server with the web UI, scheduler, DAG processor, triggerer) and the scoring
    service in the background; print where they answer and the web UI's login."""
    import os

    from pipelines import stack
    from pipelines.settings import get_settings

    if profile is not None:
        os.environ["FALAJ_PROFILE"] = profile  # for this process and every component it starts
        get_settings.cache_clear()
    click.echo(
        "starting Airflow's api-server, scheduler, dag-processor and triggerer, and the scoring service ..."
    )
    try:
        started = stack.up(api_port=api_port, serve_port=serve_port, use_case=use_case)
    except stack.StackError as failed:
        raise click.ClickException(str(failed)) from None
    user, password = started.login
    click.echo(f"Airflow web UI   {started.airflow_url}  (login {user} / {password})")
    click.echo(f"Falaj page       {started.airflow_url}/falaj/")
    click.echo(
        f"Airflow REST API {started.airflow_url}/api/v2  (token: POST {started.airflow_url}/auth/token)"
    )
    if started.scoring_url:
        click.echo(f"scoring service  {started.scoring_url}  (API docs {started.scoring_url}/docs)")
    if started.note:
        click.echo(started.note)
    click.echo(
        f"every user's password: {started.passwords_file}; logs: {started.processes[0].log.rsplit('/', 1)[0]}"
    )
    click.echo("stop it all with `falaj down`")


@click.command("down")
@guarded("stack.run")
def down() -> None:
    """Stop what `falaj up` started."""
    from pipelines import stack

    stopped = stack.down()
    click.echo(f"stopped {', '.join(p.name for p in stopped)}" if stopped else "nothing was running")
