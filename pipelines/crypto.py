"""Encryption at rest: AES-256-GCM per artifact, under a data key wrapped by a KMS-style master key.

Each artifact gets its own data key; only the wrapped data key is stored, in the artifact's header.
Rotating the master key makes new artifacts use the new key, and ``rewrap`` re-wraps old data keys
without touching the ciphertext. The artifact's logical name is authenticated with its data, so a
file swapped for another (or any byte changed) is refused.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pipelines.settings import get_settings

MAGIC = b"FALAJENC1\n"
SEALED_SUFFIX = ".enc"


class ArtifactTamperedError(RuntimeError):
    """The ciphertext, its header or its name do not authenticate."""


class KeyProvider(Protocol):
    """What a KMS offers: wrap and unwrap data keys under named master keys it never hands out."""

    def current(self) -> str: ...

    def wrap(self, key_id: str, data_key: bytes) -> bytes: ...

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes: ...


class LocalKeyProvider:
    """Master keys as owner-only files under ``$FALAJ_HOME/secrets/kms``; the default outside a cloud."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or get_settings().secrets_dir / "kms"

    def current(self) -> str:
        pointer = self.root / "current"
        return pointer.read_text().strip() if pointer.exists() else self.rotate()

    def rotate(self) -> str:
        """Make a new master key the current one; earlier keys stay to unwrap what they wrapped."""
        key_id = datetime.now(UTC).strftime("mk-%Y%m%dT%H%M%S%f")
        self.root.mkdir(parents=True, exist_ok=True)
        with os.fdopen(
            os.open(self.root / f"{key_id}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb"
        ) as out:
            out.write(os.urandom(32))
        staging = self.root / "current.tmp"
        staging.write_text(key_id)
        staging.replace(self.root / "current")
        return key_id

    def _master(self, key_id: str) -> bytes:
        path = self.root / f"{key_id}.key"
        if not path.exists():
            raise ArtifactTamperedError(f"master key {key_id} is not in this key store")
        return path.read_bytes()

    def wrap(self, key_id: str, data_key: bytes) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        return nonce + AESGCM(self._master(key_id)).encrypt(nonce, data_key, key_id.encode())

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            return AESGCM(self._master(key_id)).decrypt(wrapped[:12], wrapped[12:], key_id.encode())
        except InvalidTag:
            raise ArtifactTamperedError(f"the data key does not unwrap under {key_id}") from None


def encrypt(plaintext: bytes, name: str, provider: KeyProvider | None = None) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    provider = provider or LocalKeyProvider()
    data_key, nonce, key_id = AESGCM.generate_key(bit_length=256), os.urandom(12), provider.current()
    header = _header(key_id, provider.wrap(key_id, data_key), nonce)
    return _assemble(header, AESGCM(data_key).encrypt(nonce, plaintext, name.encode()))


def decrypt(blob: bytes, name: str, provider: KeyProvider | None = None) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    provider = provider or LocalKeyProvider()
    _, fields, ciphertext = _parse(blob)
    data_key = provider.unwrap(fields["key_id"], base64.b64decode(fields["wrapped_key"]))
    try:
        return AESGCM(data_key).decrypt(base64.b64decode(fields["nonce"]), ciphertext, name.encode())
    except InvalidTag:
        raise ArtifactTamperedError(f"{name}: does not authenticate (altered, or another artifact)") from None


def sealed_path(path: Path) -> Path:
    """Where the artifact with logical path ``path`` lies encrypted: ``model.onnx`` -> ``model.onnx.enc``."""
    return path.with_name(path.name + SEALED_SUFFIX)


def seal(path: Path, plaintext: bytes, provider: KeyProvider | None = None) -> Path:
    """Encrypt ``plaintext`` as the artifact ``path``: written atomically, owner-only, bound to its name."""
    from pipelines import lake

    target = sealed_path(path)
    with lake.atomic_path(target) as staging:  # mkstemp: owner-only from the first byte
        staging.write_bytes(encrypt(plaintext, path.name, provider))
    return target


def unseal(path: Path, provider: KeyProvider | None = None) -> bytes:
    """The plaintext of the artifact ``path``; never written to disk.

    Raises:
        FileNotFoundError: No encrypted artifact at ``path`` (a plaintext file there does not count).
        ArtifactTamperedError: It does not authenticate.
    """
    target = sealed_path(path)
    if not target.exists():
        raise FileNotFoundError(f"no encrypted artifact {target}")
    return decrypt(target.read_bytes(), path.name, provider)


def rewrap(blob: bytes, provider: KeyProvider | None = None) -> bytes:
    """The same ciphertext with its data key wrapped under the current master key (after a rotation)."""
    provider = provider or LocalKeyProvider()
    _, fields, ciphertext = _parse(blob)
    key_id = provider.current()
    if key_id == fields["key_id"]:
        return blob
    data_key = provider.unwrap(fields["key_id"], base64.b64decode(fields["wrapped_key"]))
    header = _header(key_id, provider.wrap(key_id, data_key), base64.b64decode(fields["nonce"]))
    return _assemble(header, ciphertext)


def _assemble(header: bytes, ciphertext: bytes) -> bytes:
    return MAGIC + len(header).to_bytes(4, "big") + header + ciphertext


def _header(key_id: str, wrapped: bytes, nonce: bytes) -> bytes:
    return json.dumps(
        {
            "key_id": key_id,
            "wrapped_key": base64.b64encode(wrapped).decode(),
            "nonce": base64.b64encode(nonce).decode(),
        },
        sort_keys=True,
    ).encode()


def _parse(blob: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """(header bytes, header fields, ciphertext)."""
    if not blob.startswith(MAGIC):
        raise ArtifactTamperedError("not an encrypted artifact (no header)")
    size = int.from_bytes(blob[len(MAGIC) : len(MAGIC) + 4], "big")
    start = len(MAGIC) + 4
    header = blob[start : start + size]
    try:
        return header, json.loads(header), blob[start + size :]
    except ValueError:
        raise ArtifactTamperedError("the header is damaged") from None
