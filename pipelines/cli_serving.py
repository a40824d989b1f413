"""`falaj rollout`, `falaj serving keys` and `falaj serve`: what reaches the scoring service, and how."""

from __future__ import annotations

import json
import os

import click

from pipelines.cli_guard import guarded


@click.group("rollout")
def rollout_group() -> None:
    """Live experiments next to the champion: A/B, shadow and canary (switched without a rebuild)."""


@rollout_group.command("start")
@click.argument("use_case")
@click.option("--mode", type=click.Choice(["ab", "shadow", "canary"]), required=True)
@click.option("--challenger", type=int, required=True, help="The gated version's number, as in fraud:v3.")
@click.option("--weight", type=float, default=None, help="A/B: the challenger's share of customers.")
@click.option("--steps", default=None, help="Canary: comma-separated shares, e.g. 0.01,0.05,0.25,0.5.")
@click.option("--max-error-rate", type=float, default=None, help="Canary budget: failed requests' share.")
@click.option("--max-p99-ms", type=float, default=None, help="Canary budget: the challenger's p99 latency.")
@click.option("--min-requests", type=int, default=None, help="Canary: requests a step needs to be judged.")
@click.option("--reason", required=True, help="Why, for the audit trail.")
@guarded("model.experiment", lambda a: a["use_case"])
def rollout_start(
    use_case: str,
    mode: str,
    challenger: int,
    weight: float | None,
    steps: str | None,
    max_error_rate: float | None,
    max_p99_ms: float | None,
    min_requests: int | None,
    reason: str,
) -> None:
    """Start an experiment; running servers pick it up at their next poll (a few seconds)."""
    from pipelines import authz, registry, rollout

    budget = {
        key: value
        for key, value in (
            ("max_error_rate", max_error_rate),
            ("max_p99_ms", max_p99_ms),
            ("min_requests", min_requests),
        )
        if value is not None
    }
    try:
        shares = [float(share) for share in steps.split(",")] if steps else None
    except ValueError:
        raise click.BadParameter(f"'{steps}' is not a list of numbers", param_hint="--steps") from None
    try:
        with registry.session() as db, db.begin():
            experiment = rollout.start_experiment(
                db, use_case, mode, challenger, authz.current_user(), reason,
                weight=weight, steps=shares, budget=budget or None,
            )  # fmt: skip
            summary = f"experiment #{experiment.id}: {mode} with {use_case}:v{challenger}"
            share = experiment.challenger_share
    except (registry.PromotionRefusedError, ValueError) as refused:
        raise click.ClickException(f"refused: {refused}") from None
    click.echo(f"{summary}, challenger share {share:.0%}")


@rollout_group.command("status")
@click.argument("use_case")
@guarded("model.read", lambda a: a["use_case"])
def rollout_status(use_case: str) -> None:
    """The serving plan: champion, the active experiment, its share and budget."""
    from pipelines import registry, rollout

    with registry.session() as db:
        try:
            plan = rollout.serving_plan(db, use_case)
        except rollout.NoChampionError as missing:
            raise click.ClickException(str(missing)) from None
    shown = {
        "champion": plan.champion.tag,
        "mode": plan.mode,
        "challenger": plan.challenger.tag if plan.challenger else None,
        "challenger_share": plan.challenger_share,
        "experiment_id": plan.experiment_id,
        "budget": plan.budget.as_dict() if plan.budget else None,
        "revision": plan.revision,
    }
    click.echo(json.dumps(shown, indent=2))


@rollout_group.command("advance")
@click.argument("use_case")
@click.option("--reason", required=True)
@guarded("model.experiment", lambda a: a["use_case"])
def rollout_advance(use_case: str, reason: str) -> None:
    """Move a canary to its next step by hand (servers also do it when a step stays within budget)."""
    from pipelines import authz, registry, rollout

    try:
        with registry.session() as db, db.begin():
            step = rollout.advance_canary(db, use_case, authz.current_user(), reason)
    except registry.PromotionRefusedError as refused:
        raise click.ClickException(f"refused: {refused}") from None
    click.echo(step.message)


@rollout_group.command("stop")
@click.argument("use_case")
@click.option("--rolled-back", is_flag=True, help="Record it as failed and take the challenger off.")
@click.option("--reason", required=True)
@guarded("model.experiment", lambda a: a["use_case"])
def rollout_stop(use_case: str, rolled_back: bool, reason: str) -> None:
    """End the active experiment; every request goes to the champion again."""
    from pipelines import authz, registry, rollout

    actor = authz.current_user()
    try:
        with registry.session() as db, db.begin():
            if rolled_back:
                ended = rollout.roll_back_experiment(db, use_case, actor, reason, {"by": "hand"})
            else:
                ended = rollout.stop_experiment(db, use_case, actor, reason)
            summary = f"experiment #{ended.id} {ended.status}"
    except registry.PromotionRefusedError as refused:
        raise click.ClickException(f"refused: {refused}") from None
    click.echo(summary)


@rollout_group.command("review")
@click.argument("use_case")
@click.option("--experiment", "experiment_id", type=int, default=None, help="Default: the latest one.")
@guarded("model.read", lambda a: a["use_case"])
def rollout_review(use_case: str, experiment_id: int | None) -> None:
    """Compare an experiment's arms on the labels that have arrived, and say what it proposes."""
    from pipelines import authz, registry, rollout
    from pipelines.experiment_analysis import ExperimentNotFoundError, next_step, review_experiment
    from pipelines.spec import load_spec

    if experiment_id is None:
        with registry.session() as db:
            known = rollout.experiments(db, use_case)
        if not known:
            raise click.ClickException(f"{use_case} has had no experiment")
        experiment_id = known[-1].id
    try:
        review = review_experiment(load_spec(use_case), experiment_id, authz.current_user())
    except (ExperimentNotFoundError, registry.PromotionRefusedError) as refused:
        raise click.ClickException(str(refused)) from None
    click.echo(f"experiment #{review.experiment_id} ({review.mode}), review #{review.id}")
    columns = "{:<11} {:>7} {:>8} {:>7} {:>8} {:>9}"
    click.echo(columns.format("arm", "version", "labelled", "pending", review.metric, "precision"))
    for arm, metrics in review.arms.items():
        row = (arm, metrics["model_version"] or "-", metrics["labelled"], metrics["pending"])
        scores = (_shown(metrics.get(review.metric)), _shown(metrics.get("precision")))
        click.echo(columns.format(*row, *scores))
    if review.delta is not None:
        interval = f"[{_shown(review.ci_low)}, {_shown(review.ci_high)}]"
        click.echo(
            f"challenger − champion: {review.delta:+.4f}, {review.confidence:.0%} CI {interval}, "
            f"precision test p = {_shown(review.p_value)}"
        )
    click.echo(f"proposes {review.proposal}: {review.reason}")
    if step := next_step(review):
        click.echo(f"an approver decides: {step}")


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@click.group("serving")
def serving_group() -> None:
    """The scoring service's credentials."""


@serving_group.group("keys")
def keys_group() -> None:
    """API keys for consumers of the scoring endpoints (stored as SHA-256 only)."""


@keys_group.command("create")
@click.argument("user")
@guarded("endpoint.keys", lambda a: a["user"])
def keys_create(user: str) -> None:
    """Make an API key for a user of the policy; it is printed once and never stored."""
    from pipelines import audit, serving_auth

    try:
        key = serving_auth.create_api_key(user)
    except serving_auth.ApiKeyError as refused:
        raise click.ClickException(str(refused)) from None
    audit.emit("endpoint.keys", user, details={"event": "create", "key_id": serving_auth.api_key_id(key)})
    click.echo(key)


@keys_group.command("revoke")
@click.argument("key_id")
@guarded("endpoint.keys", lambda a: a["key_id"])
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id; servers refuse it within their refresh interval (30 s)."""
    from pipelines import audit, serving_auth

    try:
        record = serving_auth.revoke_api_key(key_id)
    except serving_auth.ApiKeyError as refused:
        raise click.ClickException(str(refused)) from None
    audit.emit("endpoint.keys", record.user, details={"event": "revoke", "key_id": key_id})
    click.echo(f"revoked {key_id} ({record.user})")


@keys_group.command("list")
@guarded("endpoint.keys")
def keys_list() -> None:
    """Every key's id, user, creation time and whether it is revoked (never the key)."""
    from pipelines import serving_auth

    for record in serving_auth.list_api_keys():
        state = "revoked" if record.revoked else "active"
        click.echo(f"{record.key_id}  {record.user:<20} {record.created}  {state}")


@click.command("serve")
@click.option("--use-case", default="fraud", show_default=True)
@click.option("--port", type=int, default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--tls/--no-tls", default=False, help="HTTPS with the certificate `falaj certs dev` made.")
@guarded("endpoint.serve", lambda a: a["use_case"])
def serve(use_case: str, port: int, host: str, tls: bool) -> None:
    """Serve the champion's Bento on this machine (the same server the Kubernetes manifests run)."""
    from pipelines.stack import StackError, bento_serve_command

    try:
        argv, env, champion = bento_serve_command(use_case, host, port, tls)
    except StackError as missing:
        raise click.ClickException(str(missing)) from None
    click.echo(
        f"serving {champion.tag} ({champion.bento_tag}) on {'https' if tls else 'http'}://{host}:{port}"
    )
    os.execve(argv[0], argv, env)  # noqa: S606 - replaces this process with the server, fixed argv
