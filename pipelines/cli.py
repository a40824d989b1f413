"""The `falaj` command line for ML engineers, approvers and auditors."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipelines.settings import get_settings


@click.group()
def main() -> None:
    """Falaj: an open, local-first ML platform."""


@main.command()
@click.option(
    "--size", type=click.Choice(["tiny", "small", "demo", "large"]), default="demo", show_default=True
)
def demo(size: str) -> None:
    """Run the whole loop on the embedded default and score five transactions over HTTP."""
    from pipelines.demo import main as run

    sys.exit(run(size))


@main.command()
@click.option(
    "--size", type=click.Choice(["tiny", "small", "demo", "large"]), default="demo", show_default=True
)
@click.option("--days", type=click.IntRange(1, 3660), default=60, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Default: $FALAJ_HOME/source.")
def generate(size: str, days: int, seed: int, out: Path | None) -> None:
    """Generate the reference card-fraud data as source files."""
    from pipelines.datagen import SIZES
    from pipelines.datagen import generate as make

    data = make(out or get_settings().source_dir, SIZES[size], days=days, seed=seed)
    click.echo(
        f"{data.n_transactions:,} transactions ({data.fraud_rate:.2%} fraud), {data.n_customers:,} "
        f"customers, {data.n_merchants:,} merchants in {data.source_dir}"
    )


@main.group()
def spec() -> None:
    """Use-case specs."""


@spec.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def spec_check(path: Path) -> None:
    """Validate a use-case spec file; exits 1 naming each bad field."""
    from pipelines.spec import SpecError, load_spec_file

    try:
        loaded = load_spec_file(path)
    except SpecError as bad:
        raise click.ClickException(str(bad)) from None
    click.echo(
        f"{path}: valid spec '{loaded.name}' ({len(loaded.sources)} sources, "
        f"{len(loaded.models)} model families)"
    )


@main.group()
def models() -> None:
    """The model registry."""


@models.command("list")
@click.argument("use_case")
def models_list(use_case: str) -> None:
    """List a use case's model versions, newest first, with their aliases."""
    from sqlalchemy import select

    from pipelines import registry

    with registry.session() as db:
        aliases = {alias: registry.resolve_alias(db, use_case, alias) for alias in registry.ALIASES}
        versions = db.scalars(
            select(registry.ModelVersion)
            .where(registry.ModelVersion.use_case == use_case)
            .order_by(registry.ModelVersion.version.desc())
        ).all()
        if not versions:
            raise click.ClickException(f"no model versions for use case '{use_case}'")
        for version in versions:
            names = [
                alias for alias, target in aliases.items() if target is not None and target.id == version.id
            ]
            click.echo(
                f"{version.tag:<12} {version.family:<12} pr_auc {version.metrics['pr_auc']:.4f} "
                f"roc_auc {version.metrics['roc_auc']:.4f} {','.join(names):<10} "
                f"{version.created_at:%Y-%m-%d %H:%M} {version.bento_tag or ''}"
            )


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def airflow(args: tuple[str, ...]) -> None:
    """Run an `airflow` command against this platform's DAGs and its SQLite metadata (e.g. `standalone`)."""
    import os

    from pipelines.airflow_cli import airflow_bin, airflow_env, migrate

    migrate()
    os.execve(airflow_bin(), [airflow_bin(), *args], airflow_env())  # noqa: S606 - argv is the user's own
