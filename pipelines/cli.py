"""The `falaj` command line for ML engineers, approvers and auditors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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


@main.group()
def features() -> None:
    """The feature store of the current profile."""


@features.command("list")
def features_list() -> None:
    """Feature views, on-demand views and feature services in the registry."""
    from pipelines.features import feature_store

    store = feature_store()
    for view in sorted(store.list_feature_views(), key=lambda v: v.name):
        click.echo(f"view      {view.name:<22} ttl {view.ttl}  entities {', '.join(view.entities)}")
    for odfv in sorted(store.list_on_demand_feature_views(), key=lambda v: v.name):
        click.echo(f"on-demand {odfv.name:<22} {', '.join(f.name for f in odfv.features)}")
    for service in sorted(store.list_feature_services(), key=lambda s: s.name):
        click.echo(
            f"service   {service.name:<22} {', '.join(p.name for p in service.feature_view_projections)}"
        )


@features.command("describe")
@click.argument("name")
def features_describe(name: str) -> None:
    """One feature view or service: its features, types, TTL and source."""
    from feast.errors import FeastObjectNotFoundException

    from pipelines.features import feature_store

    store = feature_store()
    try:
        view = store.get_feature_view(name)
    except FeastObjectNotFoundException:
        try:
            service = store.get_feature_service(name)
        except FeastObjectNotFoundException:
            raise click.ClickException(f"no feature view or feature service named '{name}'") from None
        for projection in service.feature_view_projections:
            for feature in projection.features:
                click.echo(f"{projection.name}:{feature.name}  {feature.dtype}")
        return
    click.echo(
        f"{view.name}: entities {', '.join(view.entities)}, ttl {view.ttl}, source {view.batch_source.path}"
    )
    for feature in view.features:
        click.echo(f"  {feature.name:<22} {feature.dtype}  {feature.description}")


@features.command("materialize")
@click.option("--start", type=click.DateTime(), required=True, help="UTC, inclusive.")
@click.option("--end", type=click.DateTime(), required=True, help="UTC, exclusive.")
def features_materialize(start: Any, end: Any) -> None:
    """Load a window of every feature view into the online store (idempotent)."""
    import logging
    from datetime import UTC

    from pipelines.features import materialize

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if end <= start:
        raise click.ClickException("--end must be after --start")
    for result in materialize(start.replace(tzinfo=UTC), end.replace(tzinfo=UTC)):
        click.echo(f"{result.view}: {result.latest_rows} entities in window, {result.written} written")


@features.command("get")
@click.argument("service")
@click.option(
    "--entity", "entities", multiple=True, required=True, help="KEY=VALUE, e.g. customer_id=C1028897."
)
@click.option("--request", "requests", multiple=True, help="KEY=VALUE request data for on-demand features.")
def features_get(service: str, entities: tuple[str, ...], requests: tuple[str, ...]) -> None:
    """Print the online feature vector of one entity row, with each value's age."""
    import json
    import time

    from feast.errors import FeastObjectNotFoundException

    from pipelines.features import feature_store

    row: dict[str, Any] = {}
    for item in [*entities, *requests]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.ClickException(f"expected KEY=VALUE, got '{item}'")
        row[key] = _number_or_text(value)
    store = feature_store()
    try:
        features = store.get_feature_service(service)
    except FeastObjectNotFoundException:
        raise click.ClickException(f"no feature service named '{service}'") from None
    try:
        response = store.get_online_features(features=features, entity_rows=[row]).to_dict(
            include_event_timestamps=True
        )
    except (KeyError, ValueError) as bad:
        raise click.ClickException(f"cannot fetch {service} for {row}: {bad}") from None
    now = time.time()
    vector = {
        name: {
            "value": values[0],
            "age_seconds": now - response[f"{name}__ts"][0] if response.get(f"{name}__ts", [0])[0] else None,
        }
        for name, values in response.items()
        if not name.endswith("__ts")
    }
    click.echo(json.dumps(vector, indent=2, default=str))


def _number_or_text(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


@main.group()
def stream() -> None:
    """Streaming feature ingestion."""


@stream.command("consume")
@click.option("--use-case", default="fraud", show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=200, show_default=True)
@click.option(
    "--until-idle", is_flag=True, help="Stop when the broker has nothing more (for backfills and tests)."
)
@click.option(
    "--claim-idle-ms",
    type=click.IntRange(0),
    default=30_000,
    show_default=True,
    help="prod: take over events another consumer read but did not acknowledge for this long.",
)
@click.option("--bootstrap", is_flag=True, help="First seed the state with the lake's last 30 days.")
def stream_consume(
    use_case: str, batch_size: int, until_idle: bool, claim_idle_ms: int, bootstrap: bool
) -> None:
    """Push each transaction event's behaviour state to the online store; SIGTERM or Ctrl-C stops cleanly."""
    import logging
    import signal
    import threading

    from pipelines.stream import run_consumer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stats = run_consumer(
        use_case,
        stop,
        batch_size=batch_size,
        until_idle=until_idle,
        claim_idle_ms=claim_idle_ms,
        bootstrap=bootstrap,
    )
    click.echo(
        f"stopped: {stats.consumed} events consumed, {stats.pushed} state rows pushed, "
        f"{stats.dead_lettered} dead-lettered"
    )


@stream.command("produce")
@click.argument(
    "day_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--use-case", default="fraud", show_default=True)
def stream_produce(day_files: tuple[Path, ...], use_case: str) -> None:
    """Publish source day files as transaction events (what a core-banking system would emit)."""
    from pipelines.stream import open_broker, source_events

    broker, _ = open_broker(use_case, consumer="producer")
    published = sum(broker.publish(source_events(path)) for path in day_files)
    click.echo(f"published {published} events")
