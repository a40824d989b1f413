"""Signed releases: a tagged checkout's wheel, the champion's Bento and docker/ under a signed manifest;
`falaj verify-release` names every tampered, missing or extra file and a manifest changed after signing."""

from __future__ import annotations

import configparser
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from click.testing import CliRunner

from pipelines import audit, authz, keys, lake, packaging, registry, release, signing
from pipelines.cli import main
from pipelines.settings import get_settings
from pipelines.spec import load_spec
from tests import homes
from tests.checkouts import PROJECT, copy_checkout
from tests.unit.test_models_train_cli import write_training_set

VERSION = configparser.ConfigParser()
VERSION.read(PROJECT / "setup.cfg")
TAG = f"v{VERSION.get('metadata', 'version')}"
WHEEL = f"wheel/falaj-{TAG[1:]}-py3-none-any.whl"
ADMIN = "falaj-system"


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=Release Test", "-c", "user.email=release@falaj.test"]
    unsigned = ["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"]
    return subprocess.run(
        ["git", "-C", str(repo), *identity, *unsigned, *args], capture_output=True, text=True, check=True
    ).stdout


def tagged_repo(repo: Path, tag: str | None = TAG) -> Path:
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "release candidate")
    if tag:
        git(repo, "tag", "-a", tag, "-m", tag)
    return repo


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home whose fraud champion is a real LightGBM model: trained, registered, signed and packaged."""
    root = tmp_path_factory.mktemp("release")
    with homes.falaj_home(root / "home") as home:
        training_set = write_training_set(root / "training-set" / "fraud", n=600)
        model_dir = home / "artifacts" / "models" / "fraud" / "lightgbm"
        params = {"n_estimators": 20, "learning_rate": 0.1, "num_leaves": 7, "early_stopping_rounds": 5}
        subprocess.run(
            [sys.executable, "-m", "models.train", "--training-set", str(training_set), "--family",
             "lightgbm", "--params", json.dumps(params), "--output", str(model_dir)],
            cwd=PROJECT, capture_output=True, check=True, timeout=300,
        )  # fmt: skip
        manifest = lake.read_json(model_dir / "manifest.json")
        spec = load_spec("fraud")
        with registry.session() as db, db.begin():
            version = registry.ModelVersion(
                use_case="fraud",
                version=registry.next_version(db, "fraud"),
                family="lightgbm",
                artifact_uri=str(model_dir),
                onnx_sha256=manifest["onnx_sha256"],
                parity_max_abs_diff=manifest["parity"]["max_abs_diff"],
                metrics=lake.read_json(model_dir / "metrics.json"),
                params=manifest["params"],
                features=manifest["features"],
                feature_service=spec.feature_service,
                training_set_uri=str(training_set),
                training_set_sha256=manifest["training_set_sha256"],
                code_version="release-test",
                created_by="ml-engineer",
            )
            db.add(version)
            db.flush()
            signing.sign_model(model_dir)
            registry.set_alias(db, "fraud", "champion", version, "risk-officer", "the release's model")
        packaging.package(spec)
        yield home


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tagged_repo(copy_checkout(tmp_path_factory.mktemp("checkout")))


def falaj(*args: str, user: str = ADMIN, project: Path | None = None) -> Any:
    """Run the CLI as ``user``; ``project`` stands in for the checkout being released."""
    env = {"FALAJ_USER": user} | ({"FALAJ_PROJECT_DIR": str(project)} if project else {})
    get_settings.cache_clear()  # the settings are read inside the command, with ``env`` in place
    try:
        return CliRunner().invoke(main, list(args), env=env)
    finally:
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def built(platform: Path, checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("dist") / "release"
    code = pyotp.parse_uri(authz.enroll(ADMIN)).now()
    result = falaj("release", "build", "--out", str(out), "--otp", code, project=checkout)
    assert result.exit_code == 0, result.output
    return {"out": out, "output": result.output}


@pytest.fixture
def copy(built: dict[str, Any], tmp_path: Path) -> Path:
    """A copy of the built release for one test to tamper with."""
    return Path(shutil.copytree(built["out"], tmp_path / "release"))


def problems(directory: Path) -> list[tuple[str, str]]:
    pem = keys.public_key_path(release.PURPOSE).read_bytes()
    return [(problem.kind, problem.path) for problem in release.verify_release(directory, pem)]


def test_a_tagged_release_holds_the_wheel_the_bento_and_docker_signed(
    built: dict[str, Any], checkout: Path
) -> None:
    out = built["out"]
    manifest = json.loads((out / release.MANIFEST).read_bytes())
    paths = [artifact["path"] for artifact in manifest["artifacts"]]
    docker = sorted(git(checkout, "ls-files", "docker").split())
    [bento] = [path for path in paths if path.startswith("bento/")]
    assert sorted(paths) == sorted([WHEEL, bento, *docker])
    assert (manifest["release"], manifest["git_commit"]) == (TAG, git(checkout, "rev-parse", "HEAD").strip())
    assert manifest["model"]["version"] == "fraud:v1" and bento.startswith("bento/fraud-scorer-v1-")
    for artifact in manifest["artifacts"]:
        assert artifact["sha256"] == hashlib.sha256((out / artifact["path"]).read_bytes()).hexdigest()
        assert artifact["size"] == (out / artifact["path"]).stat().st_size
    with zipfile.ZipFile(out / WHEEL) as wheel:
        assert "pipelines/cli.py" in wheel.namelist()
    with tarfile.open(out / bento) as archive:
        assert any(name.endswith("/signature.json") for name in archive.getnames())  # the signed model
    verified = falaj("verify-release", str(out))
    assert verified.exit_code == 0, verified.output
    assert f"release {TAG}" in verified.output and "verifies" in verified.output


def test_the_build_is_audited_with_the_manifest_digest(built: dict[str, Any]) -> None:
    with registry.session() as db:
        [event] = [event for event in audit.load(db) if event["action"] == "release.build"]
    digest = hashlib.sha256((built["out"] / release.MANIFEST).read_bytes()).hexdigest()
    assert (event["actor"], event["resource"], event["outcome"]) == (ADMIN, TAG, "succeeded")
    assert event["details"]["manifest_sha256"] == digest
    assert digest in built["output"]


def test_a_consumer_without_the_key_store_verifies_with_the_published_key(
    built: dict[str, Any], tmp_path: Path
) -> None:
    published = tmp_path / "release-signing.pub"
    published.write_bytes(keys.public_key_path(release.PURPOSE).read_bytes())
    with homes.falaj_home(tmp_path / "consumer-home"):
        without = falaj("verify-release", str(built["out"]))
        assert without.exit_code == 1 and "--public-key" in without.output
        verified = falaj("verify-release", str(built["out"]), "--public-key", str(published))
    assert verified.exit_code == 0, verified.output


def test_a_flipped_byte_in_the_wheel_is_named(copy: Path) -> None:
    blob = bytearray((copy / WHEEL).read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (copy / WHEEL).write_bytes(bytes(blob))
    assert problems(copy) == [("tampered", WHEEL)]
    result = falaj("verify-release", str(copy))
    assert result.exit_code == 1 and f"tampered: {WHEEL}" in result.output


def test_a_missing_file_is_named(copy: Path) -> None:
    (copy / "docker" / "Dockerfile.serve").unlink()
    assert problems(copy) == [("missing", "docker/Dockerfile.serve")]
    assert "missing: docker/Dockerfile.serve" in falaj("verify-release", str(copy)).output


def test_an_extra_file_or_link_is_named(copy: Path) -> None:
    (copy / "docker" / "k8s" / "sidecar.yaml").write_text("kind: Pod\n")
    (copy / "wheel" / "latest.whl").symlink_to(copy / WHEEL)
    assert problems(copy) == [("tampered", "wheel/latest.whl"), ("extra", "docker/k8s/sidecar.yaml")]
    result = falaj("verify-release", str(copy))
    assert result.exit_code == 1 and "extra: docker/k8s/sidecar.yaml" in result.output


def test_a_manifest_changed_to_match_a_replaced_wheel_fails_its_signature(copy: Path) -> None:
    (copy / WHEEL).write_bytes(b"not the wheel that was built")
    manifest = json.loads((copy / release.MANIFEST).read_bytes())
    [entry] = [artifact for artifact in manifest["artifacts"] if artifact["path"] == WHEEL]
    entry |= {"size": (copy / WHEEL).stat().st_size, "sha256": lake.sha256_file(copy / WHEEL)}
    (copy / release.MANIFEST).write_bytes(release.canonical_bytes(manifest))
    assert problems(copy) == [("signature", release.MANIFEST)]
    result = falaj("verify-release", str(copy))
    assert result.exit_code == 1 and "signature: manifest.json: changed after signing" in result.output


def test_a_release_signed_by_another_key_or_unsigned_is_refused(copy: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = tmp_path / "stranger.pub"
    stranger.write_bytes(keys.public_pem(Ed25519PrivateKey.generate()))
    result = falaj("verify-release", str(copy), "--public-key", str(stranger))
    assert result.exit_code == 1 and "not signed by key sha256:" in result.output
    assert "names key sha256:" in result.output  # the manifest's key is not the one given
    (copy / release.SIGNATURE).unlink()
    assert problems(copy) == [("signature", release.SIGNATURE)]


def test_building_needs_the_admin_and_a_second_factor(built: dict[str, Any], tmp_path: Path) -> None:
    no_factor = falaj("release", "build", "--out", str(tmp_path / "r"))
    assert no_factor.exit_code == 1 and "privileged" in no_factor.output
    engineer = falaj("release", "build", "--out", str(tmp_path / "r"), user="ml-engineer")
    assert engineer.exit_code == 1 and "may not release.build" in engineer.output
    assert not (tmp_path / "r").exists()


def test_only_a_clean_checkout_whose_head_carries_the_version_tag_is_released(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "setup.cfg").write_text("[metadata]\nname = falaj\nversion = 1.2.3\n")
    tagged_repo(repo, tag=None)
    with pytest.raises(release.ReleaseRefusedError, match=r"is not tagged v1\.2\.3 \(it carries no tag\)"):
        release.tagged_commit(repo)
    git(repo, "tag", "-a", "v1.2.3", "-m", "v1.2.3")
    assert release.tagged_commit(repo) == ("v1.2.3", git(repo, "rev-parse", "HEAD").strip())
    with pytest.raises(release.ReleaseRefusedError, match=r"setup\.cfg says 1\.2\.3, so the tag is v1\.2\.3"):
        release.tagged_commit(repo, "v1.3.0")
    (repo / "notes.txt").write_text("not committed")
    with pytest.raises(release.ReleaseRefusedError, match=r"not clean \(notes\.txt\)"):
        release.tagged_commit(repo)


def test_a_release_is_written_once_and_ships_a_packaged_model(
    built: dict[str, Any], checkout: Path, tmp_path: Path
) -> None:
    with pytest.raises(release.ReleaseRefusedError, match="is not empty"):
        release.build_release(built["out"], project=checkout)
    with pytest.raises(release.ReleaseRefusedError, match="fraud has no version 7"):
        release.build_release(tmp_path / "r", model="fraud:v7", project=checkout)
    with pytest.raises(release.ReleaseRefusedError, match="churn has no champion"):
        release.build_release(tmp_path / "r", model="churn", project=checkout)
    assert not (tmp_path / "r").exists()
