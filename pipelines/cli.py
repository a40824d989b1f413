"""The `falaj` command line for ML engineers, approvers and auditors."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from pipelines.cli_guard import guarded
from pipelines.settings import get_settings


@click.group()
def main() -> None:
    """Falaj: an open, local-first ML platform."""


@main.command()
@click.option(
    "--size", type=click.Choice(["tiny", "small", "demo", "large"]), default="demo", show_default=True
)
@guarded("demo.run")
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
@click.option(
    "--drift",
    metavar="KIND",
    default=None,
    help="Inject drift from --drift-start on: amount_shift, new_merchant_category or broken_feed.",
)
@click.option(
    "--drift-start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First affected UTC day (YYYY-MM-DD), inside the generated window.",
)
@guarded("data.generate")
def generate(
    size: str, days: int, seed: int, out: Path | None, drift: str | None, drift_start: datetime | None
) -> None:
    """Generate the reference card-fraud data as source files, optionally with injected drift."""
    from pipelines.datagen import SIZES, DriftScenario
    from pipelines.datagen import generate as make

    if (drift is None) != (drift_start is None):
        raise click.UsageError("--drift and --drift-start go together")
    try:
        scenario = None
        if drift is not None and drift_start is not None:
            # A str, not yet a DriftKind: DriftScenario rejects an unknown kind with the valid ones.
            scenario = DriftScenario(drift, drift_start.date())  # type: ignore[arg-type]
        data = make(out or get_settings().source_dir, SIZES[size], days=days, seed=seed, drift=scenario)
    except ValueError as bad:
        raise click.ClickException(str(bad)) from None
    click.echo(
        f"{data.n_transactions:,} transactions ({data.fraud_rate:.2%} fraud), {data.n_customers:,} "
        f"customers, {data.n_merchants:,} merchants in {data.source_dir}"
    )
    if scenario is not None:
        click.echo(f"drift {scenario.kind} from {scenario.start}; earlier days are the clean data")


@main.group()
def spec() -> None:
    """Use-case specs."""


@spec.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@guarded("spec.check")
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
@guarded("model.read", lambda a: a["use_case"])
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
            shown = " ".join(
                f"{name} {version.metrics[name]:.4f}"
                for name in ("pr_auc", "roc_auc", "wape", "rmse", "r2")
                if isinstance(version.metrics.get(name), int | float)
            )
            click.echo(
                f"{version.tag:<12} {version.family:<12} {shown} {','.join(names):<10} "
                f"{version.created_at:%Y-%m-%d %H:%M} {version.bento_tag or ''}"
            )


def _version_arg(value: str) -> tuple[str, int]:
    """``fraud:v3`` (as `models list` prints it) or ``fraud:3``."""
    use_case, _, number = value.partition(":")
    if not use_case or not number.lstrip("v").isdigit():
        raise click.BadParameter(f"expected USE_CASE:vN, e.g. fraud:v3, got '{value}'")
    return use_case, int(number.lstrip("v"))


@models.command("show")
@click.argument("version")
@guarded("model.read", lambda a: a["version"])
def models_show(version: str) -> None:
    """A version's metrics, gate decision, approvals and alias history."""
    from sqlalchemy import select

    from pipelines import registry

    use_case, number = _version_arg(version)
    with registry.session() as db:
        found = _find(registry, db, use_case, number)
        click.echo(
            f"{found.tag} {found.family}, trained by {found.created_by} at {found.created_at:%Y-%m-%d %H:%M}"
        )
        click.echo(
            "metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(found.metrics.items()) if _is_number(v))
        )
        for decision in db.scalars(
            select(registry.GateDecision).where(registry.GateDecision.candidate_id == found.id)
        ):
            verdict = "PASSED" if decision.passed else "REFUSED"
            click.echo(f"gate {verdict} by {decision.decided_by}: {decision.reason}")
            for check in decision.checks:
                mark = "-- " if not check.get("judged", True) else ("ok " if check["passed"] else "NO ")
                click.echo(f"  {mark} {check['name']}: {check['detail']}")
        for approval in db.scalars(select(registry.Approval).where(registry.Approval.version_id == found.id)):
            click.echo(f"approved by {approval.approver} at {approval.at:%Y-%m-%d %H:%M}: {approval.reason}")
        for event in registry.alias_history(db, use_case):
            if event.version_id == found.id:
                click.echo(
                    f"alias {event.alias} <- {event.actor} at {event.at:%Y-%m-%d %H:%M}: {event.reason}"
                )


@models.command("lineage")
@click.argument("version")
@guarded("model.read", lambda a: a["version"])
def models_lineage(version: str) -> None:
    """Every item a version came from, as JSON."""
    import json

    found = _load_version(version)
    record = {
        "version": found.tag,
        "family": found.family,
        "trained_by": found.created_by,
        "trained_at": found.created_at.isoformat(),
        **found.lineage,
        "bento_tag": found.bento_tag,
        "params": found.params,
    }
    click.echo(json.dumps(record, indent=2))


@models.command("promote")
@click.argument("version")
@click.option("--reason", required=True, help="Why, for the audit trail.")
@guarded("model.promote", lambda a: a["version"])
def models_promote(version: str, reason: str) -> None:
    """Approve a version that passed the gate: it becomes champion (the old one is archived).

    The caller is the approver, and may not be the version's trainer.
    """
    from pipelines import audit, authz, registry

    approver = authz.current_user()
    use_case, number = _version_arg(version)
    try:
        with registry.session() as db, db.begin():
            promoted = registry.promote(db, use_case, number, approver, reason)
    except registry.PromotionRefusedError as refused:
        audit.emit("model.promote", version, actor=approver, outcome="denied", reason=str(refused))
        raise click.ClickException(f"refused: {refused}") from None
    click.echo(f"{promoted.tag} is the champion (approved by {approver})")


@models.command("rollback")
@click.argument("use_case")
@click.option(
    "--to", "to", type=int, default=None, help="An earlier champion's number; default the last one."
)
@click.option("--reason", required=True, help="Why, for the audit trail.")
@guarded("model.rollback", lambda a: a["use_case"])
def models_rollback(use_case: str, to: int | None, reason: str) -> None:
    """Point the champion back at an earlier champion, in one step."""
    from pipelines import audit, authz, registry

    actor = authz.current_user()
    try:
        with registry.session() as db, db.begin():
            target = registry.rollback(db, use_case, actor, reason, to)
    except registry.PromotionRefusedError as refused:
        audit.emit("model.rollback", use_case, actor=actor, outcome="denied", reason=str(refused))
        raise click.ClickException(f"refused: {refused}") from None
    click.echo(f"{target.tag} is the champion again; serve its Bento: {target.bento_tag or 'not packaged'}")


@models.command("replay")
@click.argument("version")
@guarded("model.replay", lambda a: a["version"])
def models_replay(version: str) -> None:
    """Rebuild a version's training set from its lineage and check it hashes the same."""
    from datetime import datetime

    from pipelines.spec import load_spec
    from pipelines.training_set import build_training_set

    found = _load_version(version)
    window = found.lineage["training_set"]["window"]
    rebuilt = build_training_set(
        load_spec(found.use_case),
        datetime.fromisoformat(window["start"]),
        datetime.fromisoformat(window["end"]),
        make_current=False,
    )
    if rebuilt.sha256 != found.training_set_sha256:
        raise click.ClickException(
            f"{found.tag}: rebuilt training set {rebuilt.sha256} != recorded {found.training_set_sha256}"
        )
    click.echo(f"{found.tag}: training set reproduced, sha256 {rebuilt.sha256}")


@main.command("erase")
@click.option("--subject", required=True, help="The data subject's identifier, e.g. a customer_id.")
@click.option("--use-case", default="fraud", show_default=True)
@click.option("--reason", required=True, help="The request it answers, for the audit trail.")
@guarded("data.erase", lambda a: a["use_case"])
def erase(subject: str, use_case: str, reason: str) -> None:
    """Erase a data subject (GDPR Art. 17, PDPL) and flag the models trained on their rows."""
    from pipelines import authz
    from pipelines.erasure import ErasureError
    from pipelines.erasure import erase as erase_subject
    from pipelines.spec import load_spec

    try:
        report = erase_subject(load_spec(use_case), subject, authz.current_user(), reason)
    except ErasureError as refused:
        raise click.ClickException(str(refused)) from None
    click.echo(f"erasure {report.erasure_id}: subject {report.subject}")
    for zone, rows in sorted(report.rows_removed.items()):
        click.echo(f"  {zone:<14} {rows} rows removed")
    click.echo(f"  {'online store':<14} {report.online_keys_deleted} entity keys deleted")
    flagged = ", ".join(report.models_flagged) or "none"
    click.echo(f"  models flagged for retraining: {flagged}")


@main.group("audit")
def audit_group() -> None:
    """The tamper-evident audit trail."""


@audit_group.command("verify")
@click.option("--exports", type=click.Path(path_type=Path), default=None, help="Signed checkpoints' folder.")
@guarded("audit.verify")
def audit_verify(exports: Path | None) -> None:
    """Check every link of the chain and every signed checkpoint; name the first bad record."""
    from pipelines import audit, registry
    from pipelines.settings import get_settings

    root = exports or get_settings().home / "audit" / "exports"
    try:
        checkpoints = audit.load_checkpoints(root) if root.exists() else []
    except ValueError as bad:
        raise click.ClickException(str(bad)) from None
    with registry.session() as db:
        verdict = audit.verify(audit.load(db), checkpoints)
    if not verdict.ok:
        raise click.ClickException(str(verdict))
    click.echo(f"{verdict}; {len(checkpoints)} signed checkpoints hold")


@audit_group.command("show")
@click.option("--actor", default=None)
@click.option("--action", default=None, help="e.g. model.promote")
@click.option("--resource", default=None, help="Substring, e.g. fraud:v3.")
@click.option("--outcome", default=None, help="e.g. denied")
@click.option("--since", default=None, help="UTC date or time, ISO 8601.")
@click.option("--limit", type=int, default=100, show_default=True)
@guarded("audit.read")
def audit_show(
    actor: str | None,
    action: str | None,
    resource: str | None,
    outcome: str | None,
    since: str | None,
    limit: int,
) -> None:
    """Events for an auditor, newest last, one per line."""
    from pipelines import audit, registry

    with registry.session() as db:
        events = [
            event
            for event in audit.load(db)
            if (actor is None or event["actor"] == actor)
            and (action is None or event["action"] == action)
            and (resource is None or resource in event["resource"])
            and (outcome is None or event["outcome"] == outcome)
            and (since is None or event["at"] >= since)
        ]
    for event in events[-limit:]:
        click.echo(
            f"{event['seq']:>6} {event['at'][:19]} {event['actor']:<16} {event['action']:<16} "
            f"{event['resource']:<24} {event['outcome']:<9} {event['reason']}"
        )


@audit_group.command("export")
@click.option("--day", required=True, help="UTC day, YYYY-MM-DD.")
@guarded("audit.export", lambda a: a["day"])
def audit_export(day: str) -> None:
    """Write a day's events with a manifest and a signed checkpoint of the chain head (write-once)."""
    from pipelines import audit, registry
    from pipelines.settings import get_settings

    with registry.session() as db:
        click.echo(audit.export_day(db, day, get_settings().home / "audit" / "exports"))


@main.group("auth")
def auth_group() -> None:
    """Identities' second factor."""


@auth_group.command("enroll")
@click.argument("user")
@guarded("auth.enroll", lambda a: a["user"])
def auth_enroll(user: str) -> None:
    """Give USER a TOTP secret; prints the otpauth URI for their authenticator app (shown once)."""
    from pipelines import audit, authz

    click.echo(authz.enroll(user))
    audit.emit("auth.enroll", user, actor=authz.current_user())


@main.group("authz")
def authz_group() -> None:
    """The access policy (policies/rbac.yaml)."""


@authz_group.command("explain")
@click.argument("user")
@click.argument("action")
@click.argument("resource")
@guarded("authz.explain")
def authz_explain(user: str, action: str, resource: str) -> None:
    """Whether USER may take ACTION on RESOURCE, and by which rule."""
    from pipelines import authz

    click.echo(authz.decide(user, action, resource).explain())


@main.group("compliance")
def compliance_group() -> None:
    """Records for the data protection officer and the regulator."""


@compliance_group.command("ropa")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable, one record per use case.")
@guarded("compliance.read")
def compliance_ropa(as_json: bool) -> None:
    """The records of processing activities (GDPR Art. 30, UAE PDPL) the use-case specs declare."""
    import json

    from pipelines.spec import list_specs

    records = []
    for spec in list_specs():
        personal = {
            name: {column: treatment for column, treatment in source.pii.items()}
            for name, source in spec.sources.items()
            if source.pii
        }
        records.append(
            {
                "processing": spec.name,
                **(spec.processing.model_dump() if spec.processing else {"purpose": "no personal data"}),
                "region": spec.region,
                "personal_data": personal,
                "other_data": {
                    name: sorted(set(source.columns) - set(source.pii))
                    for name, source in spec.sources.items()
                },
                "measures": [
                    "direct identifiers pseudonymized (keyed HMAC-SHA256) or dropped at ingest",
                    "role-based access with a second factor for privileged actions",
                    "hash-chained audit trail with signed daily checkpoints",
                    f"processing and storage pinned to region {spec.region}",
                ],
            }
        )
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for record in records:
        click.echo(f"== {record['processing']} ({record['controller']}, region {record['region']})")
        for key in ("purpose", "legal_basis", "data_subjects", "recipients", "retention_days"):
            click.echo(f"  {key}: {record[key]}")
        for source, columns in record["personal_data"].items():
            click.echo(
                f"  personal data from {source}: " + ", ".join(f"{c} ({t})" for c, t in columns.items())
            )
        click.echo("  measures: " + "; ".join(record["measures"]))


@compliance_group.command("residency-report")
@click.argument("version")
@guarded("compliance.read", lambda a: a["version"])
def compliance_residency_report(version: str) -> None:
    """Where every input and artifact of a model version lives, and whether the policy allows it."""
    from pipelines import residency
    from pipelines.settings import get_settings

    found = _load_version(version)
    use_case = found.use_case
    lineage = found.lineage
    regions = lineage.get("residency", {})
    storage = regions.get("storage_region", "unrecorded")
    rows = [
        ("validated source data", str(get_settings().lake_dir / "validated" / use_case), storage),
        ("validation report", lineage["validation"]["report"], storage),
        ("training set", lineage["training_set"]["uri"], storage),
        ("training compute", f"{found.family} training", regions.get("training_region", "unrecorded")),
        ("model artifacts", found.artifact_uri, storage),
        ("reference profile", lineage["reference_profile"]["uri"], storage),
        ("Bento", found.bento_tag or "not packaged", storage),
        ("platform DB (registry, audit)", get_settings().platform_db_url.split("@")[-1], storage),
    ]
    allowed = residency.allowed_regions()
    for what, where, region in rows:
        verdict = "ok" if region in allowed else "OFF-POLICY"
        click.echo(f"{what:<30} {region:<14} {verdict:<10} {where}")


@main.group("certs")
def certs_group() -> None:
    """TLS certificates for development: a local CA and the certificate of this machine's servers."""


@certs_group.command("dev")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Default: $FALAJ_HOME/secrets/tls.",
)
@click.option("--host", "hosts", multiple=True, help="A further name or IP the server certificate covers.")
@click.option("--force", is_flag=True, help="Make a new CA too, instead of signing with the existing one.")
@guarded("certs.dev")
def certs_dev(out: Path | None, hosts: tuple[str, ...], force: bool) -> None:
    """Make a development CA (kept if present) and a 90-day server certificate for localhost it signs."""
    from pipelines import audit, certs

    try:
        made = certs.make_dev_certificates(out, hosts, force=force)
    except certs.CertificateError as unusable:
        raise click.ClickException(str(unusable)) from None
    details = {"hosts": list(made.hosts), "new_ca": not made.ca_reused}
    audit.emit("certs.dev", str(made.server_cert), details=details)
    click.echo(f"CA ({'kept' if made.ca_reused else 'new'}): {made.ca_cert}  key {made.ca_key}")
    click.echo(f"server certificate for {', '.join(made.hosts)}: {made.server_cert}  key {made.server_key}")
    click.echo(f"clients: FALAJ_TLS_CA_FILE={made.ca_cert}")


@main.group("keys")
def keys_group() -> None:
    """Key rotation: the master keys that wrap artifacts' data keys, and Airflow's Fernet key."""


@keys_group.command("rotate")
@guarded("keys.rotate")
def keys_rotate() -> None:
    """Make a new master key current and re-wrap every encrypted artifact's data key under it."""
    from pipelines import audit, crypto
    from pipelines.settings import get_settings

    provider = crypto.LocalKeyProvider()
    key_id = provider.rotate()
    artifacts = sorted(get_settings().home.rglob("*.enc"))
    for path in artifacts:
        blob = crypto.rewrap(path.read_bytes(), provider)
        mode = path.stat().st_mode
        path.chmod(0o600)
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_bytes(blob)
        staging.replace(path)
        path.chmod(mode)
    audit.emit("keys.rotate", key_id, details={"rewrapped": len(artifacts)})
    click.echo(f"master key {key_id} is current; {len(artifacts)} artifacts re-wrapped")


@keys_group.command("rotate-fernet")
@guarded("keys.rotate")
def keys_rotate_fernet() -> None:
    """Rotate Airflow's Fernet key: connections, variables and triggers re-encrypted, old keys dropped.

    Stop Airflow first (`falaj down`), or restart it after: its processes keep the keys they started with.
    """
    import subprocess

    from pipelines import airflow_cli, audit, authz

    actor = authz.current_user()
    try:
        airflow_cli.migrate()  # rotating needs Airflow's tables, even in a home that never ran a DAG
        rotation = airflow_cli.rotate_fernet_key()
    except subprocess.CalledProcessError as failed:
        reason = f"`airflow db migrate` failed: {(failed.stderr or b'').decode(errors='replace')[-1500:]}"
        audit.emit("keys.rotate_fernet", "airflow-fernet", actor=actor, outcome="failed", reason=reason)
        raise click.ClickException(reason) from None
    except airflow_cli.FernetKeyError as failed:
        audit.emit("keys.rotate_fernet", "airflow-fernet", actor=actor, outcome="failed", reason=str(failed))
        raise click.ClickException(str(failed)) from None
    audit.emit(
        "keys.rotate_fernet",
        "airflow-fernet",
        actor=actor,
        details={"fingerprint": rotation.fingerprint, "retired_keys": rotation.retired},
    )
    click.echo(
        f"Airflow Fernet key {rotation.fingerprint} is current; {rotation.retired} old key(s) retired. "
        "Restart running Airflow processes."
    )


@main.command("train")
@click.argument("use_case")
@click.option("--family", required=True, help="A model family the use case declares.")
@click.option("--backend", type=click.Choice(["local", "kubernetes"]), default="local", show_default=True)
@click.option("--render", is_flag=True, help="Print the Kubernetes pod manifest instead of running it.")
@guarded("model.train", lambda a: a["use_case"])
def train(use_case: str, family: str, backend: str, render: bool) -> None:
    """Train one family on the use case's newest training set (the `current` link)."""
    from pipelines import lake
    from pipelines.spec import load_spec
    from pipelines.training import TrainingFailedError, output_dir, train_local

    spec = load_spec(use_case)
    if family not in {model.family for model in spec.models}:
        raise click.ClickException(f"{use_case} declares no family '{family}'")
    current = lake.zone_dir("training_sets", use_case, "") / "current"
    if not (current / "manifest.json").exists():
        raise click.ClickException(
            f"no training set for {use_case} yet: run its training DAG (or `falaj demo`)"
        )
    training_set = current.resolve()
    sha256 = lake.read_json(training_set / "manifest.json")["sha256"]
    if backend == "kubernetes":
        if not render:
            raise click.ClickException(
                "no cluster is reachable from the CLI; use --render, or the training DAG"
            )
        import yaml
        from kubernetes.client import ApiClient

        from pipelines.k8s import training_pod

        pod = training_pod(spec, family, str(training_set), str(output_dir(spec, sha256, family)))
        click.echo(yaml.safe_dump(ApiClient().sanitize_for_serialization(pod), sort_keys=False))
        return
    if render:
        raise click.ClickException("--render prints a Kubernetes pod; it needs --backend kubernetes")
    try:
        click.echo(train_local(spec, str(training_set), sha256, family))
    except TrainingFailedError as failed:
        raise click.ClickException(str(failed)) from None


def _load_version(version: str) -> Any:
    from pipelines import registry

    use_case, number = _version_arg(version)
    with registry.session() as db:
        return _find(registry, db, use_case, number)


def _find(registry: Any, db: Any, use_case: str, number: int) -> Any:
    try:
        return registry.find_version(db, use_case, number)
    except registry.PromotionRefusedError as missing:
        raise click.ClickException(str(missing)) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@guarded("airflow.run")
def airflow(args: tuple[str, ...]) -> None:
    """Run an `airflow` command against this platform's DAGs and its SQLite metadata (e.g. `standalone`)."""

    from pipelines.airflow_cli import airflow_bin, airflow_env, migrate

    migrate()
    os.execve(airflow_bin(), [airflow_bin(), *args], airflow_env())  # noqa: S606 - argv is the user's own


@main.group()
def features() -> None:
    """The feature store of the current profile."""


@features.command("list")
@guarded("features.read")
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
@guarded("features.read", lambda a: a["name"])
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
@click.option("--use-case", default="fraud", show_default=True, help="Whose feature views to load.")
@guarded("features.materialize", lambda a: a["use_case"])
def features_materialize(start: Any, end: Any, use_case: str) -> None:
    """Load a window of a use case's feature views into the online store (idempotent)."""
    import logging
    from datetime import UTC

    from pipelines.feature_tables import FeatureTableError
    from pipelines.features import materialize
    from pipelines.spec import SpecError, load_spec

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if end <= start:
        raise click.ClickException("--end must be after --start")
    try:
        spec = load_spec(use_case)
        results = materialize(spec, start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))
    except (SpecError, FeatureTableError) as refused:
        raise click.ClickException(str(refused)) from None
    for result in results:
        click.echo(f"{result.view}: {result.latest_rows} entities in window, {result.written} written")


@features.command("get")
@click.argument("service")
@click.option(
    "--entity", "entities", multiple=True, required=True, help="KEY=VALUE, e.g. customer_id=C1028897."
)
@click.option("--request", "requests", multiple=True, help="KEY=VALUE request data for on-demand features.")
@guarded("features.read", lambda a: a["service"])
def features_get(service: str, entities: tuple[str, ...], requests: tuple[str, ...]) -> None:
    """Print the online feature vector of one entity row, with each value's age."""
    import json
    import time

    from feast.errors import FeastObjectNotFoundException

    from pipelines import audit
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
    audit.emit("features.export", service, details={"entities": sorted(row), "features": len(vector)})
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
@guarded("stream.consume")
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
@guarded("stream.produce")
def stream_produce(day_files: tuple[Path, ...], use_case: str) -> None:
    """Publish source day files as transaction events (what a core-banking system would emit)."""
    from pipelines.stream import open_broker, source_events

    broker, _ = open_broker(use_case, consumer="producer")
    published = sum(broker.publish(source_events(path)) for path in day_files)
    click.echo(f"published {published} events")


def _register_commands() -> None:
    from pipelines.cli_monitor import alerts_group, monitor_group
    from pipelines.cli_release import release_group, verify_release
    from pipelines.cli_serving import rollout_group, serve, serving_group
    from pipelines.cli_stack import down, up

    for command in (
        rollout_group,
        serving_group,
        serve,
        alerts_group,
        monitor_group,
        up,
        down,
        release_group,
        verify_release,
    ):
        main.add_command(command)


_register_commands()
