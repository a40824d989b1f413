"""No plaintext of 100 planted canary identifiers or secrets in any database dump, store or artifact.

The reference loop runs on tiny data whose customers carry unique markers in every direct identifier,
with canary credentials in the environment; then every file the platform owns is read as raw bytes,
decoded Parquet, an SQLite dump, decrypted ``.enc`` plaintext and unescaped JSON, and none may hold one.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import sqlite3
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pytest

from pipelines import registry, spec
from pipelines.settings import get_settings

pytestmark = pytest.mark.integration

PLANTED_CUSTOMERS = 25
PII_COLUMNS = ("full_name", "emirates_id", "phone", "email")
NOT_OURS = {"source", "secrets"}  # the source system's drop; key material, checked on its own
SQLITE_MAGIC = b"SQLite format 3\x00"
TEXT_SUFFIXES = {".json", ".jsonl", ".log", ".txt", ".yaml", ".yml", ".csv", ".md", ".html", ".pem"}


@dataclass(frozen=True)
class Canary:
    kind: str
    value: str
    forms: tuple[str, ...]  # the value as the platform might rewrite it: no separators, URL-quoted


@dataclass
class Scan:
    views: dict[Path, set[str]] = field(default_factory=dict)
    hits: list[tuple[Path, str, str]] = field(default_factory=list)  # (file, view, what was found)


def luhn_digit(digits: str) -> int:
    total = 0
    for i, digit in enumerate(int(d) for d in reversed(digits)):
        doubled = digit * 2 if i % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return (10 - total % 10) % 10


def pii_canaries(n: int) -> dict[str, Canary]:
    """One customer's direct identifiers, each a unique marker in the shape the source delivers."""
    year, serial = 1960 + n, secrets.randbelow(10**7)
    eid_digits = f"784{year}{serial:07d}"
    emirates_id = f"784-{year}-{serial:07d}-{luhn_digit(eid_digits)}"
    phone = f"+9715{secrets.choice('024568')}{secrets.randbelow(10**7):07d}"
    email = f"canary{n:03d}x{secrets.token_hex(6)}@canary.example"
    name = f"CANARY{n:03d}X{secrets.token_hex(6)}"
    return {
        "full_name": Canary("full_name", name, (name,)),
        "emirates_id": Canary("emirates_id", emirates_id, (emirates_id, emirates_id.replace("-", ""))),
        "phone": Canary("phone", phone, (phone, phone[1:])),
        "email": Canary("email", email, (email, quote(email))),
    }


def plant_customers(source: Path) -> list[Canary]:
    """Overwrite the identifiers of the 25 busiest customers in the source drop with canaries."""
    path = source / "customers.csv"
    original = path.read_text()
    customers = pd.read_csv(path, dtype=str, keep_default_na=False)
    days = sorted((source / "transactions").glob("*.csv"))
    busiest = pd.concat(pd.read_csv(day, usecols=["customer_id"], dtype=str) for day in days)
    chosen = busiest["customer_id"].value_counts().index[:PLANTED_CUSTOMERS]
    planted: list[Canary] = []
    for n, customer_id in enumerate(chosen, start=1):
        row = customers["customer_id"] == customer_id
        for column, canary in pii_canaries(n).items():
            assert canary.value not in original, f"canary {canary.value} collides with generated data"
            customers.loc[row, column] = canary.value
            planted.append(canary)
    customers.to_csv(path, index=False, lineterminator="\n")
    return planted


def secret_canaries() -> tuple[dict[str, str], list[Canary]]:
    """Credentials in the environment: the platform may use them but never write them down."""
    hook, registry_pw, redis_pw, stream_pw = (f"CANARY{k}X{secrets.token_hex(8)}" for k in range(4))
    env = {
        "FALAJ_ALERT_WEBHOOK_URL": f"http://127.0.0.1:9/hooks/{hook}",
        "FALAJ_FEAST_REGISTRY_URL": f"postgresql+psycopg://falaj:{registry_pw}@127.0.0.1:5432/falaj_feast",
        "FALAJ_REDIS_CONNECTION": f"127.0.0.1:6379,db=0,password={redis_pw}",
        "FALAJ_STREAM_REDIS_URL": f"redis://:{stream_pw}@127.0.0.1:6379/0",
    }
    kinds = ("webhook_token", "registry_password", "redis_password", "stream_password")
    tokens = (hook, registry_pw, redis_pw, stream_pw)
    return env, [Canary(kind, token, (token,)) for kind, token in zip(kinds, tokens, strict=True)]


def _clear_caches() -> None:
    get_settings.cache_clear()
    spec._load_all.cache_clear()
    registry.engine.cache_clear()


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The reference loop, as its DAGs run it, on tiny data with 100+ canaries planted before ingest."""
    from pipelines import audit
    from pipelines.datagen import SIZES, generate
    from pipelines.features import apply_definitions, build_feature_tables, materialize
    from pipelines.gate import evaluate_gate
    from pipelines.ingest import ingest
    from pipelines.packaging import package
    from pipelines.spec import load_spec
    from pipelines.training import train_local
    from pipelines.training_set import build_training_set
    from pipelines.validate import validate

    home = tmp_path_factory.mktemp("canary-home")
    secret_env, planted_secrets = secret_canaries()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("FALAJ_HOME", str(home))
            env.setenv("FALAJ_PROFILE", "local")
            env.setenv("FALAJ_USER", "falaj-system")
            env.delenv("BENTOML_HOME", raising=False)  # packaging points it into the home
            for name, value in secret_env.items():
                env.setenv(name, value)
            _clear_caches()
            # Given tiny reference data whose source drop and environment carry canaries
            use_case = load_spec("fraud")
            data = generate(get_settings().source_dir, SIZES["tiny"], days=3)
            canaries = plant_customers(get_settings().source_dir) + planted_secrets

            # When every step of the ingest, features and training DAGs runs, and the day is exported
            landed = ingest(use_case, data.start, data.end)
            validate(use_case, [(item.dataset, item.partition) for item in landed])
            build_feature_tables(use_case)
            apply_definitions()
            start = datetime.combine(data.start, time.min, UTC)
            end = datetime.combine(data.end, time.min, UTC)
            materialize(use_case, start, end)
            training_set = build_training_set(use_case, start, end)
            model_dir = train_local(use_case, training_set.uri, training_set.sha256, "lightgbm")
            decision = evaluate_gate(use_case, training_set.to_xcom(), [model_dir])
            # Packaged even when the tiny data's gate refuses it: the Bento store must be scanned too.
            bento = package(use_case, decision.candidate_version)
            today = datetime.now(UTC).date().isoformat()
            with registry.session() as db:
                export = audit.export_day(db, today, home / "audit" / "exports")
            yield {
                "home": home,
                "canaries": canaries,
                "decision": decision,
                "bento": bento,
                "export": Path(export),
                "model_dir": Path(model_dir),
                "training_set": Path(training_set.uri),
                "scan": scan_home(home, needles_of(canaries)),
            }
    finally:
        _clear_caches()


# --- the scanner --------------------------------------------------------------------------------------


def needles_of(canaries: list[Canary]) -> dict[bytes, str]:
    return {form.lower().encode(): f"{c.kind} {c.value!r}" for c in canaries for form in c.forms}


def owned_files(home: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(home):  # symlinks are not followed: their targets are walked anyway
        if Path(root) == home:
            dirs[:] = [d for d in dirs if d not in NOT_OURS]
        files += [Path(root, name) for name in names if not Path(root, name).is_symlink()]
    return sorted(files)


def parquet_text(data: bytes) -> bytes:
    """Every column of every row as text: compressed or dictionary-encoded pages hide raw matches."""
    frame = pd.read_parquet(io.BytesIO(data))
    return "\n".join("\n".join(frame[c].astype(str)) for c in frame.columns).encode()


def sqlite_dump(path: Path | None, data: bytes) -> bytes:
    if path is not None:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # the file itself, with its WAL
    else:
        db = sqlite3.connect(":memory:")
        db.deserialize(data)
    try:
        return "\n".join(db.iterdump()).encode()
    finally:
        db.close()


def unsealed(path: Path, blob: bytes) -> bytes:
    """The plaintext of an encrypted artifact under whichever logical name the platform bound it to."""
    from pipelines import crypto

    logical = path.name.removesuffix(crypto.SEALED_SUFFIX)
    for name in (logical, f"audit/{path.parent.name}/{logical}"):
        try:
            return crypto.decrypt(blob, name)
        except crypto.ArtifactTamperedError:
            continue
    raise AssertionError(f"{path}: no logical name decrypts it, so the scan would be blind to it")


def json_text(text: str) -> bytes:
    """JSON re-dumped without escapes, so an escaped ``\\u0040`` or ``\\/`` cannot hide a value."""
    try:
        documents = [json.loads(text)]
    except ValueError:
        documents = [json.loads(line) for line in text.splitlines() if line.strip()]
    return "\n".join(json.dumps(d, ensure_ascii=False) for d in documents).encode()


def views(name: str, data: bytes, path: Path | None) -> Iterator[tuple[str, bytes]]:
    """Every reading of one file's bytes a leak could hide behind, as (view, bytes)."""
    yield "raw", data
    if data.startswith(b"PAR1"):
        yield "parquet", parquet_text(data)
    if data.startswith(SQLITE_MAGIC):
        yield "sqlite-dump", sqlite_dump(path, data)
    if name.endswith(".enc") and path is not None:
        plaintext = unsealed(path, data)
        for view, content in views(name.removesuffix(".enc"), plaintext, None):
            yield f"decrypted-{view}", content
    if data.startswith(b"\x1f\x8b"):
        for view, content in views(name.removesuffix(".gz"), gzip.decompress(data), None):
            yield f"gunzip-{view}", content
    if data.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                for view, content in views(member, archive.read(member), None):
                    yield f"unzip-{view}", content
    if Path(name).suffix in TEXT_SUFFIXES:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return
        yield "text", text.encode()
        if Path(name).suffix in {".json", ".jsonl"}:
            try:
                yield "json", json_text(text)
            except ValueError:
                pass


def first_hit(content: bytes, needles: dict[bytes, str]) -> str | None:
    folded = content.lower()
    return next((label for needle, label in needles.items() if needle in folded), None)


def scan_paths(paths: list[Path], needles: dict[bytes, str]) -> Scan:
    scan = Scan()
    for path in paths:
        scan.views[path] = set()
        for view, content in views(path.name, path.read_bytes(), path):
            scan.views[path].add(view)
            hit = first_hit(content, needles)
            if hit:
                scan.hits.append((path, view, hit))
    return scan


def scan_home(home: Path, needles: dict[bytes, str]) -> Scan:
    return scan_paths(owned_files(home), needles)


def key_material(secrets_dir: Path) -> dict[bytes, str]:
    """Private keys only, as raw bytes, hex and PEM body: public keys and pointers are not secret."""
    from cryptography.hazmat.primitives import serialization

    needles: dict[bytes, str] = {}
    for path in sorted(p for p in secrets_dir.rglob("*") if p.is_file()):
        if path.suffix in {".pub", ".last", ".crt"} or path.name in {"current", "current.tmp"}:
            continue
        key, label = path.read_bytes(), str(path.relative_to(secrets_dir))
        if len(key) == 32:
            needles.update({key.lower(): label, key.hex().encode(): label})
        elif b"PRIVATE KEY" in key:
            private = serialization.load_pem_private_key(key, password=None)
            try:  # Ed25519 has a raw form; RSA and EC keys are matched by their DER
                raw = private.private_bytes(
                    serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
                )
            except ValueError:
                raw = private.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            body = b"".join(line for line in key.splitlines() if not line.startswith(b"-----"))
            needles.update({raw.lower(): label, raw.hex().encode(): label, body.lower(): label})
        else:
            needles[key.strip().lower()] = label
    return needles


# --- the tests ----------------------------------------------------------------------------------------


def test_at_least_100_unique_canaries_were_planted(planted_run: dict[str, Any]) -> None:
    canaries = planted_run["canaries"]
    customers = (planted_run["home"] / "source" / "customers.csv").read_text()
    assert len(canaries) >= 100 and len({c.value for c in canaries}) == len(canaries)
    assert sum(c.kind in PII_COLUMNS for c in canaries) == PLANTED_CUSTOMERS * len(PII_COLUMNS)
    assert all(c.value in customers for c in canaries if c.kind in PII_COLUMNS)
    assert {c.kind for c in canaries} >= {*PII_COLUMNS, "webhook_token"}


def test_the_scanner_finds_canaries_where_they_are(planted_run: dict[str, Any], tmp_path: Path) -> None:
    """Positive controls: the source drop holds every PII canary, and a snappy Parquet value is found
    although its raw bytes, compressed, do not show it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Given the source drop, and a Parquet value that snappy compresses with a back-reference into itself
    canaries = [c for c in planted_run["canaries"] if c.kind in PII_COLUMNS]
    source = planted_run["home"] / "source" / "customers.csv"
    canary = next(c for c in canaries if c.kind == "full_name")
    hidden = tmp_path / "hidden.parquet"
    table = pa.table({"note": [f"{canary.value[:14]}-{canary.value}"]})
    pq.write_table(table, hidden, compression="snappy", use_dictionary=False, write_statistics=False)

    # Then every canary is found in the source, and the hidden one only by decoding the column
    for planted in canaries:
        assert scan_paths([source], needles_of([planted])).hits, planted
    assert first_hit(hidden.read_bytes(), needles_of([canary])) is None
    assert scan_paths([hidden], needles_of([canary])).hits == [
        (hidden, "parquet", f"full_name {canary.value!r}")
    ]


def test_the_scan_covered_every_store_and_artifact(planted_run: dict[str, Any]) -> None:
    home, seen = planted_run["home"], planted_run["scan"].views
    assert planted_run["decision"].candidate_version >= 1  # registered, whatever the gate said
    assert "sqlite-dump" in seen[home / "platform.db"] and "sqlite-dump" in seen[home / "feast" / "online.db"]
    assert (home / "feast" / "registry.db") in seen
    for zone in ("landing", "validated", "features"):
        assert any(p.is_relative_to(home / "lake" / zone) and "parquet" in v for p, v in seen.items()), zone
    sealed = {p: v for p, v in seen.items() if p.name.endswith(".enc")}
    training_set = planted_run["training_set"].resolve()
    assert "decrypted-parquet" in sealed[training_set / "data.parquet.enc"]
    assert "decrypted-raw" in sealed[planted_run["model_dir"] / "model.onnx.enc"]
    assert "decrypted-json" in sealed[planted_run["export"] / "events.jsonl.enc"]
    assert "json" in seen[planted_run["export"] / "manifest.json"]
    stored = home / "bentoml" / "models" / "fraud-model" / planted_run["bento"].split(":")[1]
    assert "decrypted-raw" in sealed[stored / "model.onnx.enc"]
    assert any(p.is_relative_to(home / "bentoml" / "bentos") and p.suffix == ".py" for p in seen)
    assert not any(p.is_relative_to(home / d) for p in seen for d in NOT_OURS)


def test_no_canary_in_any_dump_store_or_artifact(planted_run: dict[str, Any]) -> None:
    hits = planted_run["scan"].hits
    found = [f"{path} ({view}): {what}" for path, view, what in hits]
    assert not hits, f"{len(hits)} leak(s), first: {found[0]}\n" + "\n".join(found[1:20])


def test_no_key_material_in_any_scanned_file(planted_run: dict[str, Any]) -> None:
    home = planted_run["home"]
    needles = key_material(home / "secrets")
    labels = set(needles.values())
    assert any(label == "pseudonym.key" for label in labels)
    assert any(label.startswith("kms/") and label.endswith(".key") for label in labels)
    assert any(label.endswith("-ed25519.pem") for label in labels)
    scan = scan_home(home, needles)
    found = [f"{path} ({view}): {what}" for path, view, what in scan.hits]
    assert not scan.hits, f"key material outside secrets/, first: {found[0]}\n" + "\n".join(found[1:20])
