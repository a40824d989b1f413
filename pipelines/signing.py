"""Model signing: a SHA-256 manifest of every file of a packaged model, signed (Ed25519).

Packaging signs; packaging and serving verify against the public key they are given, never one that
travels with the model, so a replaced model and a replaced signature are caught alike.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from pipelines import keys

PURPOSE = "model-signing"
SIGNATURE = "signature.json"
MODEL_FILES = ("model.onnx", "manifest.json", "metrics.json")  # the model; the store's own files are not


class ModelSignatureError(RuntimeError):
    """The model's files or signature do not verify; the message names what."""


def _digests(directory: Path, names: tuple[str, ...] = MODEL_FILES) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in names}


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
        if not (directory / name).exists():
            raise ModelSignatureError(f"{directory}: signed file {name} is missing")
        if hashlib.sha256((directory / name).read_bytes()).hexdigest() != digest:
            raise ModelSignatureError(f"{directory}: {name} changed after signing")
    pem = public_key_pem or keys.public_key_path(PURPOSE).read_bytes()
    try:
        keys.load_public(pem).verify(base64.b64decode(signed["signature"]), _statement(signed["files"]))
    except InvalidSignature:
        raise ModelSignatureError(f"{directory}: the signature is not the model-signing key's") from None
