"""Keyed, deterministic pseudonyms: the same identifier always maps to the same token under one key,
so joins keep working, and nobody without the key can reverse or recompute them."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from pipelines.settings import get_settings

KEY_BYTES = 32


def load_or_create_key(path: Path | None = None) -> bytes:
    """Read the pseudonymization key, creating a random one (mode 0600) on first use."""
    path = path or get_settings().secrets_dir / "pseudonym.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ValueError(f"pseudonymization key {path} must be {KEY_BYTES} bytes, found {len(key)}")
    return key


def key_id(key: bytes) -> str:
    """A public fingerprint of the key, recorded in manifests (the key itself never is)."""
    return hashlib.sha256(b"falaj-key-id:" + key).hexdigest()[:16]


def pseudonym(value: str, key: bytes) -> str:
    return "ps_" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
