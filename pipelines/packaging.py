"""Package the champion as a Bento: the ONNX model goes into BentoML's model store, the service around it."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path

from pipelines import lake, registry, signing
from pipelines.settings import get_settings
from pipelines.spec import UseCaseSpec

log = logging.getLogger(__name__)


class PackagingRefusedError(RuntimeError):
    """The artifact does not verify or failed parity; it must not be served."""


def bentoml_home() -> Path:
    """This home's BentoML stores, for BentoML in this process and in the processes it starts."""
    home = get_settings().home.resolve() / "bentoml"
    os.environ["BENTOML_HOME"] = str(home)
    if "bentoml" in sys.modules:
        _point_bentoml_at(home)
    return home


def _point_bentoml_at(home: Path) -> None:
    """BentoML resolves its store paths once per process and keeps them: a process that used another
    home before (a test session, a long-lived worker) would read and write that home's stores."""
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    if BentoMLContainer.bentoml_home.get() == str(home):
        return
    folders = {name: home / name for name in ("bentos", "models", "envs", "tmp")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    BentoMLContainer.bentoml_home.set(str(home))
    BentoMLContainer.bento_store_dir.set(str(folders["bentos"]))
    BentoMLContainer.model_store_dir.set(str(folders["models"]))
    BentoMLContainer.env_store_dir.set(str(folders["envs"]))
    BentoMLContainer.tmp_bento_store_dir.set(str(folders["tmp"]))
    BentoMLContainer.bento_store.set(BentoStore(folders["bentos"]))
    BentoMLContainer.model_store.set(ModelStore(folders["models"]))
    BentoMLContainer.tmp_bento_store.set(BentoStore(folders["tmp"]))


def verify_artifact(model_dir: Path, expected_sha256: str) -> None:
    manifest = lake.read_json(model_dir / "manifest.json")
    if not manifest["parity"]["passed"]:
        raise PackagingRefusedError(f"{model_dir}: ONNX parity failed ({manifest['parity']['max_abs_diff']})")
    try:
        actual = hashlib.sha256(signing.read_model_file(model_dir, "model.onnx")).hexdigest()
    except signing.ModelSignatureError as bad:
        raise PackagingRefusedError(str(bad)) from None
    if actual != expected_sha256:
        raise PackagingRefusedError(
            f"{model_dir}/model.onnx: sha256 {actual} != registered {expected_sha256}"
        )


def package(spec: UseCaseSpec, version: int | None = None) -> str:
    """Build the Bento of a version (the champion by default) and record its tag on the version."""
    bentoml_home()
    import bentoml

    with registry.session() as db, db.begin():
        if version is None:
            champion = registry.resolve_alias(db, spec.name, "champion")
            if champion is None:
                raise PackagingRefusedError(f"{spec.name} has no champion to package")
        else:
            champion = registry.find_version(db, spec.name, version)
        model_dir = Path(champion.artifact_uri)
        verify_artifact(model_dir, champion.onnx_sha256)
        model_name = f"{spec.name}-model"
        model_version = f"v{champion.version}-{champion.onnx_sha256[:12]}"
        try:
            stored = bentoml.models.get(f"{model_name}:{model_version}")
        except bentoml.exceptions.NotFound:
            with bentoml.models.create(
                f"{model_name}:{model_version}",
                labels={
                    "use_case": spec.name,
                    "family": champion.family,
                    "registry_version": str(champion.version),
                },
                metadata={
                    "onnx_sha256": champion.onnx_sha256,
                    "features": champion.features,
                    "feature_service": champion.feature_service,
                }
                # BentoML metadata holds no None: a regression model has no threshold.
                | ({"threshold": spec.serving.threshold} if spec.serving.threshold is not None else {}),
            ) as created:
                for name in map(signing.stored_name, signing.MODEL_FILES):
                    shutil.copy2(model_dir / name, Path(created.path) / name)
                signing.sign_model(Path(created.path))
            stored = bentoml.models.get(f"{model_name}:{model_version}")
        try:
            signing.verify_model(Path(stored.path))  # what gets deployed is what was signed
        except signing.ModelSignatureError as bad:
            raise PackagingRefusedError(str(bad)) from None
        bento = bentoml.bentos.build_bentofile(
            str(get_settings().project_dir / "bento" / "bentofile.yaml"),
            build_ctx=str(get_settings().project_dir),
            name=f"{spec.name}-scorer",
            version=model_version,
            args={"use_case": spec.name, "model_tag": str(stored.tag)},
            labels={"use_case": spec.name, "registry_version": str(champion.version)},
            # The service reads its build arguments at import: a process that built another Bento before
            # holds the module with that build's model.
            reload=True,
        )
        champion.bento_tag = str(bento.tag)
    log.info("built bento %s around %s", bento.tag, stored.tag)
    return str(bento.tag)
