"""Model signing: packaging signs the files; an altered, unsigned or foreign-signed model is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import crypto, keys, signing


@pytest.fixture
def model(falaj_home: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    crypto.seal(directory / "model.onnx", b"\x08\x07onnx-bytes")
    (directory / "manifest.json").write_text('{"family": "lightgbm"}')
    (directory / "metrics.json").write_text('{"pr_auc": 0.9}')
    signing.sign_model(directory)
    (directory / "model.yaml").write_text("written by the model store after signing: not the model")
    return directory


def test_a_signed_model_verifies(model: Path) -> None:
    signing.verify_model(model)


def test_a_changed_file_is_refused(model: Path) -> None:
    crypto.seal(model / "model.onnx", b"\x08\x07onnx-bytez")  # validly encrypted, but not what was signed
    with pytest.raises(signing.ModelSignatureError, match=r"model\.onnx changed after signing"):
        signing.verify_model(model)


def test_a_model_whose_ciphertext_was_altered_is_refused(model: Path) -> None:
    sealed = model / "model.onnx.enc"
    blob = bytearray(sealed.read_bytes())
    blob[-1] ^= 0x01
    sealed.write_bytes(bytes(blob))
    with pytest.raises(signing.ModelSignatureError, match=r"model\.onnx does not decrypt"):
        signing.verify_model(model)


def test_a_plaintext_model_in_place_of_the_encrypted_one_is_refused(model: Path) -> None:
    (model / "model.onnx.enc").unlink()
    (model / "model.onnx").write_bytes(b"\x08\x07onnx-bytes")
    with pytest.raises(signing.ModelSignatureError, match=r"model\.onnx\.enc is missing"):
        signing.verify_model(model)


def test_an_unsigned_model_is_refused(model: Path) -> None:
    (model / signing.SIGNATURE).unlink()
    with pytest.raises(signing.ModelSignatureError, match="unsigned model"):
        signing.verify_model(model)


def test_a_signature_from_another_key_is_refused(model: Path, tmp_path: Path) -> None:
    signed = json.loads((model / signing.SIGNATURE).read_text())
    other = tmp_path / "other"
    other.mkdir()
    for name in map(signing.stored_name, signing.MODEL_FILES):
        (other / name).write_bytes((model / name).read_bytes())
    (other / signing.SIGNATURE).write_text(json.dumps(signed))
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = keys.public_pem(Ed25519PrivateKey.generate())
    with pytest.raises(signing.ModelSignatureError, match="not the model-signing key's"):
        signing.verify_model(other, public_key_pem=stranger)


def test_a_signature_must_cover_the_whole_model(model: Path) -> None:
    signed = json.loads((model / signing.SIGNATURE).read_text())
    del signed["files"]["metrics.json"]
    (model / signing.SIGNATURE).write_text(json.dumps(signed))
    with pytest.raises(signing.ModelSignatureError, match="not the model"):
        signing.verify_model(model)
