"""Model signing: a SHA-256 manifest of every file of a packaged model, signed (Ed25519).

Packaging signs; packaging and serving verify against the public key they are given, never one that
travels with the model, so a replaced model and a replaced signature are caught alike. The model itself
lies encrypted (``model.onnx.enc``); its digest is that of the plaintext, which is what gets served.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from pipelines import crypto, keys

PURPOSE = "model-signing"
SIGNATURE = "signature.json"
MODEL_FILES = ("model.onnx", "manifest.json", "metrics.json")  # the model; the store's own files are not
ENCRYPTED_FILES = ("model.onnx",)


class ModelSignatureError(RuntimeError):
    """The model's files or signature do not verify; the message names what."""


def stored_name(name: str) -> str:
    """The file that holds ``name`` on disk: ``model.onnx.enc`` for the encrypted model."""
    return crypto.sealed_path(Path(name)).name if name in ENCRYPTED_FILES else name


def read_model_file(directory: Path, name: str) -> bytes:
    """The plaintext of one of the model's files."""
    if not (directory / stored_name(name)).exists():
        raise ModelSignatureError(f"{directory}: {stored_name(name)} is missing")
    if name not in ENCRYPTED_FILES:
        return (directory / name).read_bytes()
    try:
        return crypto.unseal(directory / name)
    except crypto.ArtifactTamperedError as bad:
        raise ModelSignatureError(f"{directory}: {name} does not decrypt: {bad}") from None


def _digests(directory: Path, names: tuple[str, ...] = MODEL_FILES) -> dict[str, str]:
    return {name: hashlib.sha256(read_model_file(directory, name)).hexdigest() for name in names}


def _statement(files: dict[str, str]) -> bytes:
    return json.dumps(files, sort_keys=True, separators=(",", ":")).encode()


def sign_model(directory: Path) -> Path:
    files = _digests(directory)
    signature = keys.private_key(PURPOSE).sign(_statement(files))
    target = directory / SIGNATURE
    target.write_text(
        json.dumps(
            {
                "files": files,
                "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "signature": base64.b64encode(signature).decode(),
            },
            indent=2,
        )
    )
    return target


def verify_model(directory: Path, public_key_pem: bytes | None = None) -> None:
    """Raise unless every file is listed, unchanged, and the list carries a valid signature."""
    from cryptography.exceptions import InvalidSignature

    path = directory / SIGNATURE
    if not path.exists():
        raise ModelSignatureError(f"{directory}: unsigned model, refusing it")
    signed = json.loads(path.read_text())
    if set(signed["files"]) != set(MODEL_FILES):
        raise ModelSignatureError(
            f"{directory}: the signature covers {sorted(signed['files'])}, not the model"
        )
    for name, digest in sorted(signed["files"].items()):
        if hashlib.sha256(read_model_file(directory, name)).hexdigest() != digest:
            raise ModelSignatureError(f"{directory}: {name} changed after signing")
    pem = public_key_pem or keys.public_key_path(PURPOSE).read_bytes()
    try:
        keys.load_public(pem).verify(base64.b64decode(signed["signature"]), _statement(signed["files"]))
    except InvalidSignature:
        raise ModelSignatureError(f"{directory}: the signature is not the model-signing key's") from None
