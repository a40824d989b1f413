"""`falaj release build` and `falaj verify-release`: signed releases of a tagged commit."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.cli_guard import guarded


@click.group("release")
def release_group() -> None:
    """Signed releases: the wheel, the serving Bento and the container definitions of a tagged commit."""


@release_group.command("build")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="A new (or empty) directory for the release.",
)
@click.option("--tag", default=None, help="Default: v<package version>. HEAD must carry it.")
@click.option(
    "--model",
    default="fraud",
    show_default=True,
    help="The Bento to ship: a use case's champion (fraud) or a version (fraud:v3).",
)
@guarded("release.build", lambda a: a["model"])
def release_build(out: Path, tag: str | None, model: str) -> None:
    """Build the tagged HEAD's release, write its SHA-256 manifest and sign it with the release key."""
    from pipelines import audit, authz, release

    actor = authz.current_user()
    try:
        built = release.build_release(out, model=model, tag=tag)
    except release.ReleaseRefusedError as refused:
        audit.emit("release.build", tag or model, actor=actor, outcome="refused", reason=str(refused))
        raise click.ClickException(f"refused: {refused}") from None
    audit.emit(
        "release.build",
        built.tag,
        actor=actor,
        details={
            "commit": built.commit,
            "model": built.model,
            "bento": built.bento_tag,
            "artifacts": built.artifacts,
            "manifest_sha256": built.manifest_sha256,
            "signing_key_id": built.signing_key_id,
            "directory": str(built.directory),
        },
    )
    click.echo(
        f"release {built.tag} (commit {built.commit[:12]}, {built.model} as {built.bento_tag}): "
        f"{built.artifacts} artifacts in {built.directory}"
    )
    click.echo(f"manifest sha256 {built.manifest_sha256}, signed by key {built.signing_key_id}")
    click.echo(f"publish the public key for consumers: {built.public_key}")


@click.command("verify-release")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The published release-signing key (PEM). Default: this platform home's.",
)
@guarded("release.verify", lambda a: str(a["directory"]))
def verify_release(directory: Path, public_key: Path | None) -> None:
    """Check every file's SHA-256, that none is missing or extra, and the manifest's signature."""
    from pipelines import release

    try:
        pem = public_key.read_bytes() if public_key else release.platform_public_key()
        problems = release.verify_release(directory, pem)
    except (FileNotFoundError, ValueError) as unusable:
        raise click.ClickException(str(unusable)) from None
    if problems:
        raise click.ClickException(
            f"{directory} does not verify ({len(problems)} problems):\n"
            + "\n".join(f"  {problem}" for problem in problems)
        )
    manifest = release.describe(directory)
    click.echo(
        f"{directory}: release {manifest['release']} (commit {manifest['git_commit'][:12]}, "
        f"{manifest['model']['version']} as {manifest['model']['bento']}) verifies: "
        f"{manifest['artifacts']} artifacts unchanged, signed by key {manifest['signing_key_id']}"
    )
