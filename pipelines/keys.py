"""The platform's signing keys (Ed25519): one per purpose, made on first use, readable by the owner only.

In production these live in a KMS or HSM and only their public halves are distributed; the local files
under ``$FALAJ_HOME/secrets`` stand in for that.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipelines.settings import get_settings


def private_key(purpose: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = get_settings().secrets_dir / f"{purpose}-ed25519.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(pem)
        public_key_path(purpose).write_bytes(public_pem(key))
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def public_key_path(purpose: str) -> Path:
    return get_settings().secrets_dir / f"{purpose}-ed25519.pub"


def public_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public(pem: bytes) -> Any:
    """An Ed25519 public key, or ValueError: a key of another kind must not pass as one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("expected an Ed25519 public key")
    return key
