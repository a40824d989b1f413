"""Signed releases: a tagged commit's wheel, the champion's serving Bento and the container definitions,
listed with their SHA-256 in a manifest the release-signing key signs (Ed25519).

A release directory holds::

    manifest.json        the release (tag, commit, model) and every artifact's path, size and sha256
    manifest.json.sig    the detached Ed25519 signature over manifest.json's bytes, exactly as written
    wheel/falaj-<version>-py3-none-any.whl
    bento/<use case>-scorer-<version>.bento
    docker/...           the tagged commit's container definitions

Verification trusts only a public key it is given (the platform's, or a published ``.pub`` file), never one
that travels with the release. Without falaj: ``openssl pkeyutl -verify -pubin -inkey release-signing.pub
-rawin -in manifest.json -sigfile manifest.json.sig``, then compare ``sha256sum`` with the manifest.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pipelines import keys, lake
from pipelines.settings import get_settings

PURPOSE = "release-signing"
FORMAT = "falaj-release/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"


class ReleaseRefusedError(RuntimeError):
    """The release cannot be built from this state; the message says what to fix."""


@dataclass(frozen=True)
class Release:
    directory: Path
    tag: str
    commit: str
    model: str
    bento_tag: str
    artifacts: int
    manifest_sha256: str
    signing_key_id: str
    public_key: Path


@dataclass(frozen=True)
class Problem:
    """One way a release fails verification: ``kind`` is tampered, missing, extra, malformed or signature."""

    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail}"


def key_id(public_key_pem: bytes) -> str:
    """The SHA-256 of the raw Ed25519 public key: names the key without shipping it."""
    from cryptography.hazmat.primitives import serialization

    raw = keys.load_public(public_key_pem).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def canonical_bytes(manifest: dict[str, Any]) -> bytes:
    """The one serialization of a manifest that is written and signed."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()


def _git(project: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(project), *args],  # noqa: S607 - git from PATH, as the developer runs it
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise ReleaseRefusedError(f"`git {' '.join(args)}` failed in {project}: {completed.stderr.strip()}")
    return completed.stdout


def package_version(project: Path, commit: str) -> str:
    """The version setup.cfg declares at ``commit``: the wheel's version."""
    config = configparser.ConfigParser()
    config.read_string(_git(project, "show", f"{commit}:setup.cfg"))
    return config.get("metadata", "version")


def tagged_commit(project: Path, tag: str | None = None) -> tuple[str, str]:
    """The release tag and commit: the tree is clean, HEAD carries the tag, the tag is ``v<version>``.

    A tag is the release trigger; tying it to the package version keeps the wheel's name and the
    release's name from disagreeing.
    """
    changes = _git(project, "status", "--porcelain", "--untracked-files=all").splitlines()
    if changes:
        shown = ", ".join(line[3:] for line in changes[:5]) + (" ..." if len(changes) > 5 else "")
        raise ReleaseRefusedError(f"{project}: the working tree is not clean ({shown}); commit or remove it")
    commit = _git(project, "rev-parse", "HEAD").strip()
    expected = f"v{package_version(project, commit)}"
    tag = tag or expected
    if tag != expected:
        raise ReleaseRefusedError(
            f"tag {tag} does not match the package version: setup.cfg says {expected[1:]}, "
            f"so the tag is {expected}"
        )
    on_head = _git(project, "tag", "--points-at", "HEAD").split()
    if tag not in on_head:
        carried = f"it carries {', '.join(on_head)}" if on_head else "it carries no tag"
        raise ReleaseRefusedError(
            f"HEAD ({commit[:12]}) is not tagged {tag} ({carried}): `git tag -a {tag}` to release it"
        )
    return tag, commit


def _parse_model(model: str) -> tuple[str, int | None]:
    use_case, _, number = model.partition(":")
    if not use_case or (number and not number.lstrip("v").isdigit()):
        raise ReleaseRefusedError(
            f"expected USE_CASE or USE_CASE:vN for the model, e.g. fraud:v3, got '{model}'"
        )
    return use_case, int(number.lstrip("v")) if number else None


def serving_bento(model: str) -> tuple[str, str]:
    """The registered version ``model`` names (a use case's champion, or ``fraud:v3``) and its Bento tag.

    The Bento must be in this home's store and its model must still verify and be the registered one.
    """
    from pipelines import packaging, registry, signing

    use_case, number = _parse_model(model)
    with registry.session() as db:
        try:
            version = (
                registry.resolve_alias(db, use_case, "champion")
                if number is None
                else registry.find_version(db, use_case, number)
            )
        except registry.PromotionRefusedError as missing:
            raise ReleaseRefusedError(str(missing)) from None
        if version is None:
            raise ReleaseRefusedError(f"{use_case} has no champion: name a version, e.g. {use_case}:v1")
        tag, bento_tag, onnx_sha256 = version.tag, version.bento_tag, version.onnx_sha256
    if bento_tag is None:
        raise ReleaseRefusedError(f"{tag} has no Bento: its training run packages it once the gate passes")
    packaging.bentoml_home()
    import bentoml

    try:
        bento = bentoml.bentos.get(bento_tag)
    except bentoml.exceptions.NotFound:
        raise ReleaseRefusedError(f"{tag}'s Bento {bento_tag} is not in this home's Bento store") from None
    for info in bento.info.all_models:
        stored = bentoml.models.get(info.tag)
        try:
            signing.verify_model(Path(stored.path))
        except signing.ModelSignatureError as bad:
            raise ReleaseRefusedError(f"{bento_tag}: {bad}") from None
        if stored.info.metadata.get("onnx_sha256") != onnx_sha256:
            raise ReleaseRefusedError(f"{bento_tag}: model {info.tag} is not {tag}'s registered ONNX model")
    return tag, bento_tag


def _export_source(project: Path, commit: str, target: Path) -> None:
    """The tracked files of ``commit``, nothing the working tree adds (build outputs, ignored files)."""
    archive = target.with_suffix(".tar")
    _git(project, "archive", "--format=tar", f"--output={archive}", commit)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    archive.unlink()


def _build_wheel(source: Path, commit_time: str, target: Path) -> None:
    """``pip wheel`` without build isolation: offline, and SOURCE_DATE_EPOCH makes it byte-reproducible."""
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--wheel-dir", str(target), str(source)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SOURCE_DATE_EPOCH": commit_time},
    )  # fmt: skip
    if completed.returncode != 0:
        raise ReleaseRefusedError(f"the wheel did not build: {completed.stderr.strip()[-1500:]}")


def _artifacts(directory: Path) -> list[dict[str, Any]]:
    return [
        {
            "path": path.relative_to(directory).as_posix(),
            "size": path.stat().st_size,
            "sha256": lake.sha256_file(path),
        }
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    ]


def build_release(
    out: Path, model: str = "fraud", tag: str | None = None, project: Path | None = None
) -> Release:
    """Build, hash and sign a release of the tagged HEAD into ``out`` (a new or empty directory).

    Raises:
        ReleaseRefusedError: the tree is dirty, HEAD lacks the tag, the Bento is missing or does not
            verify, the wheel does not build, or ``out`` already holds something.
    """
    project = project or get_settings().project_dir
    if out.exists() and any(out.iterdir()):
        raise ReleaseRefusedError(f"{out} is not empty: a release is written once, into a new directory")
    tag, commit = tagged_commit(project, tag)
    model_tag, bento_tag = serving_bento(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory() as scratch:
            source = Path(scratch) / "source"
            _export_source(project, commit, source)
            if not (source / "docker").is_dir():
                raise ReleaseRefusedError(f"{tag} has no docker/ directory of container definitions")
            _build_wheel(
                source, _git(project, "log", "-1", "--format=%ct", commit).strip(), staging / "wheel"
            )
            shutil.copytree(source / "docker", staging / "docker")
        import bentoml

        (staging / "bento").mkdir()
        bentoml.bentos.export_bento(
            bento_tag, str(staging / "bento" / f"{bento_tag.replace(':', '-')}.bento")
        )
        signing_key = keys.private_key(PURPOSE)
        public_pem = keys.public_pem(signing_key)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "release": tag,
            "git_commit": commit,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": {"version": model_tag, "bento": bento_tag},
            "signing_key_id": key_id(public_pem),
            "artifacts": _artifacts(staging),
        }
        statement = canonical_bytes(manifest)
        (staging / MANIFEST).write_bytes(statement)
        (staging / SIGNATURE).write_bytes(signing_key.sign(statement))
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the release from whoever ships it
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Release(
        directory=out,
        tag=tag,
        commit=commit,
        model=model_tag,
        bento_tag=bento_tag,
        artifacts=len(manifest["artifacts"]),
        manifest_sha256=hashlib.sha256(statement).hexdigest(),
        signing_key_id=manifest["signing_key_id"],
        public_key=keys.public_key_path(PURPOSE),
    )


def platform_public_key() -> bytes:
    """The release-signing public key of this platform home; never makes a key."""
    path = keys.public_key_path(PURPOSE)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: pass the published release-signing key (--public-key)"
        )
    return path.read_bytes()


def verify_release(directory: Path, public_key_pem: bytes) -> list[Problem]:
    """Every way the release differs from what was signed; an empty list means it verifies.

    The signature is checked over the manifest's bytes before they are parsed; the files are still compared
    against the manifest when it does not verify, so the report shows what changed as well.
    """
    from cryptography.exceptions import InvalidSignature

    manifest_path, signature_path = directory / MANIFEST, directory / SIGNATURE
    if not manifest_path.is_file():
        return [Problem("missing", MANIFEST, "not a release: no manifest")]
    statement = manifest_path.read_bytes()
    problems = []
    expected_key = key_id(public_key_pem)
    if not signature_path.is_file():
        problems.append(Problem("signature", SIGNATURE, "missing: the manifest is unsigned"))
    else:
        try:
            keys.load_public(public_key_pem).verify(signature_path.read_bytes(), statement)
        except InvalidSignature:
            problems.append(
                Problem("signature", MANIFEST, f"changed after signing, or not signed by key {expected_key}")
            )
    try:
        manifest = json.loads(statement)
        listed = {entry["path"]: entry for entry in manifest["artifacts"]}
    except (ValueError, KeyError, TypeError) as bad:
        return [*problems, Problem("malformed", MANIFEST, f"not a release manifest: {bad}")]
    if manifest.get("signing_key_id") != expected_key:
        problems.append(
            Problem("signature", MANIFEST, f"names key {manifest.get('signing_key_id')}, not {expected_key}")
        )
    present, links = _release_files(directory)
    problems += [Problem("tampered", name, "a symbolic link; a release holds plain files") for name in links]
    for name, entry in sorted(listed.items()):
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or name in (MANIFEST, SIGNATURE):
            problems.append(Problem("malformed", name, "not a path inside the release"))
        elif name in links:
            continue
        elif name not in present:
            problems.append(Problem("missing", name, "listed in the manifest, not in the release"))
        else:
            size, actual = (directory / name).stat().st_size, lake.sha256_file(directory / name)
            if (actual, size) != (entry.get("sha256"), entry.get("size")):
                problems.append(
                    Problem("tampered", name, f"sha256 {actual}, {size} bytes; the manifest says "
                            f"sha256 {entry.get('sha256')}, {entry.get('size')} bytes")
                )  # fmt: skip
    problems += [
        Problem("extra", name, "in the release, not in the manifest")
        for name in sorted(present - set(listed) - {MANIFEST, SIGNATURE})
    ]
    return problems


def _release_files(directory: Path) -> tuple[set[str], list[str]]:
    """The plain files under ``directory``, and every symbolic link (never followed) as a finding."""
    files, links = set(), []
    for root, folders, names in os.walk(directory):
        for name in [*folders, *names]:
            path = Path(root) / name
            relative = path.relative_to(directory).as_posix()
            if path.is_symlink():
                links.append(relative)
            elif path.is_file():
                files.add(relative)
    return files, sorted(links)


def describe(directory: Path) -> dict[str, Any]:
    """The manifest's release fields (call after it verified)."""
    manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_bytes())
    manifest["artifacts"] = len(manifest["artifacts"])
    return manifest
