"""Keyed pseudonyms: deterministic under one key, unlinkable across keys, key kept private on disk."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from pipelines.pseudonymize import KEY_BYTES, key_id, load_or_create_key, pseudonym

TOKEN = re.compile(r"^ps_[0-9a-f]{32}$")  # the shape the customers.landing suite expects
EMIRATES_ID = "784-1985-1234567-1"


def test_same_value_same_key_gives_same_token() -> None:
    # Given one key
    key = bytes(range(32))

    # When the same identifier is pseudonymized twice
    first, second = pseudonym(EMIRATES_ID, key), pseudonym(EMIRATES_ID, key)

    # Then the tokens are equal (joins keep working) and have the documented shape
    assert first == second
    assert TOKEN.match(first)


def test_another_key_gives_another_token() -> None:
    # Given two different keys
    key_a, key_b = b"a" * 32, b"b" * 32

    # When the same identifier is pseudonymized under each
    # Then the tokens differ: without the key nobody can recompute them
    assert pseudonym(EMIRATES_ID, key_a) != pseudonym(EMIRATES_ID, key_b)


def test_different_values_give_different_tokens_without_the_raw_value() -> None:
    # Given one key and a few identifiers of different kinds
    key = b"k" * 32
    values = [EMIRATES_ID, "784-1985-1234567-2", "+971501234567", "fatima.alshamsi.1042@mail.example.ae"]

    # When each is pseudonymized
    tokens = [pseudonym(value, key) for value in values]

    # Then no two collide and no token carries any recognisable part of its input
    assert len(set(tokens)) == len(values)
    for value, token in zip(values, tokens, strict=True):
        assert value not in token
        assert "1234567" not in token
        assert "alshamsi" not in token


def test_key_is_created_once_with_mode_0600_and_32_bytes(tmp_path: Path) -> None:
    # Given no key file yet
    path = tmp_path / "secrets" / "pseudonym.key"
    assert not path.exists()

    # When the key is loaded twice
    first = load_or_create_key(path)
    second = load_or_create_key(path)

    # Then a random 32-byte key was written readable by the owner only, and reused, not regenerated
    assert len(first) == KEY_BYTES == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == first == second
    assert first != bytes(KEY_BYTES)


def test_two_fresh_keys_differ(tmp_path: Path) -> None:
    # Given two separate key files created from scratch
    # When each is created
    # Then they are independent random keys
    assert load_or_create_key(tmp_path / "a.key") != load_or_create_key(tmp_path / "b.key")


def test_default_key_lives_under_the_home_secrets(falaj_home: Path) -> None:
    # Given an empty platform home
    # When the key is loaded without a path
    key = load_or_create_key()

    # Then it sits under $FALAJ_HOME/secrets, private
    path = falaj_home / "secrets" / "pseudonym.key"
    assert path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_wrong_length_key_is_rejected(tmp_path: Path, length: int) -> None:
    # Given a key file of the wrong size (truncated or someone else's format)
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"x" * length)

    # When it is loaded
    with pytest.raises(ValueError) as caught:
        load_or_create_key(path)

    # Then the message names the file, the expected and the found length; the file is left alone
    message = str(caught.value)
    assert str(path) in message
    assert "32 bytes" in message
    assert f"found {length}" in message
    assert path.read_bytes() == b"x" * length


def test_key_id_is_a_stable_fingerprint_that_does_not_reveal_the_key() -> None:
    # Given two keys
    key_a, key_b = bytes(range(32)), bytes(range(1, 33))

    # When their ids are computed
    # Then an id is stable, short, distinct per key and not the key itself
    assert key_id(key_a) == key_id(key_a)
    assert key_id(key_a) != key_id(key_b)
    assert len(key_id(key_a)) == 16
    assert key_a.hex()[:16] not in key_id(key_a)
