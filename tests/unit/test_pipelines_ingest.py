"""Ingest: immutable, idempotent Parquet partitions with PII treated before any byte reaches the lake."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from pipelines.datagen import SIZES, GeneratedData, generate
from pipelines.ingest import MANIFEST, SourceMissingError, ingest, read_landed, treat_pii
from pipelines.pseudonymize import key_id, load_or_create_key, pseudonym
from pipelines.spec import UseCaseSpec

PII_COLUMNS = ("full_name", "emirates_id", "phone", "email", "date_of_birth")
TOKEN = re.compile(r"^ps_[0-9a-f]{32}$")


@pytest.fixture
def source(falaj_home: Path) -> GeneratedData:
    """Ten days of tiny reference data where the settings expect source systems to drop it."""
    return generate(falaj_home / "source", SIZES["tiny"], days=10)


def _lake_files(home: Path) -> dict[Path, tuple[bytes, int]]:
    return {
        path: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted((home / "lake").rglob("*"))
        if path.is_file()
    }


def _data_rows(path: Path) -> int:
    return len(path.read_text().splitlines()) - 1  # minus the header


def test_ingest_lands_every_partition_of_the_window(
    falaj_home: Path, source: GeneratedData, fraud_spec: UseCaseSpec
) -> None:
    # Given ten day files and two dimension files in the source directory
    # When the whole window is ingested
    landed = ingest(fraud_spec, source.start, source.end)

    # Then every day lands once, dimensions land as a snapshot dated the window's last day, all new
    by_dataset: dict[str, list[str]] = {}
    for item in landed:
        by_dataset.setdefault(item.dataset, []).append(item.partition)
    days = [(source.start + timedelta(days=offset)).isoformat() for offset in range(10)]
    last_day = (source.end - timedelta(days=1)).isoformat()
    assert by_dataset == {"transactions": days, "customers": [last_day], "merchants": [last_day]}
    assert all(item.created for item in landed)

    # And each partition holds exactly the source rows, behind a manifest naming the current file
    for item in landed:
        frame, manifest = read_landed(fraud_spec, item.dataset, item.partition)
        is_day = item.dataset == "transactions"
        name = f"transactions/{item.partition}.csv" if is_day else f"{item.dataset}.csv"
        assert item.rows == len(frame) == _data_rows(source.source_dir / name) == manifest["rows"]
        assert manifest["version"] == item.version
        assert manifest["file"] == f"data-{item.version}.parquet"
    assert sum(item.rows for item in landed if item.dataset == "transactions") == source.n_transactions


def test_no_raw_pii_reaches_the_lake(
    falaj_home: Path, source: GeneratedData, fraud_spec: UseCaseSpec
) -> None:
    # Given the raw direct identifiers of every generated customer
    raw = pd.read_csv(source.source_dir / "customers.csv", dtype=str, keep_default_na=False)
    secrets = {value for column in PII_COLUMNS for value in raw[column]}
    # pandas may read a phone as a number: its digits without '+' must not leak either
    secrets |= {phone.lstrip("+") for phone in raw["phone"]}
    assert len(raw) == source.n_customers and len(secrets) > 4 * len(raw)

    # When the window is ingested
    ingest(fraud_spec, source.start, source.end)

    # Then no raw value appears in the bytes of any file of the lake ...
    files = [path for path in (falaj_home / "lake").rglob("*") if path.is_file()]
    assert any(path.suffix == ".parquet" for path in files)
    for path in files:
        content = path.read_bytes()
        leaked = [value for value in secrets if value.encode("utf-8") in content]
        assert not leaked, f"{path} holds raw PII {leaked[:3]}"

    # ... nor in any decoded cell of any Parquet file (compression could hide a leak from the byte scan)
    cells = []
    for path in files:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            cells.extend(frame.columns)
            cells.extend(frame.astype(str).to_numpy().ravel().tolist())
    everything = "\x1f".join(cells)
    assert not [value for value in secrets if value in everything]


def test_pii_is_treated_as_the_spec_says(
    falaj_home: Path, source: GeneratedData, fraud_spec: UseCaseSpec
) -> None:
    # Given the raw customers and the spec's treatments (drop, pseudonymize, year_only)
    raw = pd.read_csv(source.source_dir / "customers.csv", dtype=str, keep_default_na=False)

    # When the window is ingested
    ingest(fraud_spec, source.start, source.end)

    # Then the landed customers keep every row, lose full_name, and carry tokens and birth years
    landed, manifest = read_landed(fraud_spec, "customers", (source.end - timedelta(days=1)).isoformat())
    key = load_or_create_key()
    assert "full_name" not in landed.columns
    assert list(landed["customer_id"]) == list(raw["customer_id"])
    for column in ("emirates_id", "phone", "email"):
        assert landed[column].map(lambda token: bool(TOKEN.match(token))).all(), column
        assert landed[column].nunique() == len(raw), f"{column}: distinct people must keep distinct tokens"
    # Emirates ID and email are read as text, so their tokens are the keyed pseudonyms of the raw values
    assert list(landed["emirates_id"]) == [pseudonym(value, key) for value in raw["emirates_id"]]
    assert list(landed["email"]) == [pseudonym(value, key) for value in raw["email"]]
    assert list(landed["date_of_birth"].astype(str)) == [value[:4] for value in raw["date_of_birth"]]
    # And the manifest records which key was used, never the key
    assert manifest["pseudonym_key_id"] == key_id(key)
    assert (
        key.hex()
        not in (falaj_home / "lake")
        .joinpath(
            "landing",
            "fraud",
            "customers",
            f"partition={(source.end - timedelta(days=1)).isoformat()}",
            MANIFEST,
        )
        .read_text()
    )


def test_treat_pii_on_a_hand_made_frame(fraud_spec: UseCaseSpec) -> None:
    # Given two customers, one with a missing email, all values as text
    frame = pd.DataFrame(
        {
            "customer_id": ["C0000001", "C0000002"],
            "full_name": ["Mariam Saeed Al Ketbi", "Rahul Kumar Nair"],
            "emirates_id": ["784-1990-0000001-1", "784-1988-0000002-2"],
            "phone": ["+971501111111", "+971502222222"],
            "email": ["mariam@example.ae", None],
            "date_of_birth": ["1990-02-03", "1988-12-31"],
            "home_emirate": ["Dubai", "Sharjah"],
        }
    )
    key = b"z" * 32

    # When the customers source's treatments are applied
    treated = treat_pii(frame, fraud_spec.sources["customers"], key)

    # Then names are gone, identifiers are keyed tokens, birth dates keep only the year, gaps stay gaps
    assert "full_name" not in treated.columns
    assert list(treated["emirates_id"]) == [
        pseudonym("784-1990-0000001-1", key),
        pseudonym("784-1988-0000002-2", key),
    ]
    assert list(treated["phone"]) == [pseudonym("+971501111111", key), pseudonym("+971502222222", key)]
    assert treated.loc[0, "email"] == pseudonym("mariam@example.ae", key)
    assert pd.isna(treated.loc[1, "email"])
    assert list(treated["date_of_birth"]) == ["1990", "1988"]
    assert list(treated["home_emirate"]) == ["Dubai", "Sharjah"]
    # And the caller's frame is untouched
    assert frame.loc[0, "full_name"] == "Mariam Saeed Al Ketbi"


def test_rerun_is_a_no_op(falaj_home: Path, source: GeneratedData, fraud_spec: UseCaseSpec) -> None:
    # Given a window already landed
    first = ingest(fraud_spec, source.start, source.end)
    before = _lake_files(falaj_home)

    # When the same window is ingested again from the same source bytes
    again = ingest(fraud_spec, source.start, source.end)

    # Then nothing is created and not one file of the lake changes, appears or disappears
    assert [item.created for item in again] == [False] * len(first)
    assert [(i.dataset, i.partition, i.version, i.rows) for i in again] == [
        (i.dataset, i.partition, i.version, i.rows) for i in first
    ]
    assert _lake_files(falaj_home) == before


def test_changed_source_lands_a_new_version_and_keeps_the_old(
    falaj_home: Path, source: GeneratedData, fraud_spec: UseCaseSpec
) -> None:
    # Given a landed window
    first = {(i.dataset, i.partition): i for i in ingest(fraud_spec, source.start, source.end)}
    day = (source.start + timedelta(days=3)).isoformat()
    old = first[("transactions", day)]
    old_file = (
        falaj_home
        / "lake"
        / "landing"
        / "fraud"
        / "transactions"
        / f"partition={day}"
        / (f"data-{old.version}.parquet")
    )
    old_bytes = old_file.read_bytes()

    # When the source system re-delivers that day with its last row removed, and the window is rerun
    day_file = source.source_dir / "transactions" / f"{day}.csv"
    lines = day_file.read_text().splitlines(keepends=True)
    day_file.write_text("".join(lines[:-1]))
    second = {(i.dataset, i.partition): i for i in ingest(fraud_spec, source.start, source.end)}

    # Then only that partition lands anew, as a new version with one row fewer
    changed = [key for key, item in second.items() if item.created]
    assert changed == [("transactions", day)]
    new = second[("transactions", day)]
    assert new.version != old.version
    assert new.rows == old.rows - 1
    # And reads now see the new version, while the old file is still there, byte for byte (immutable)
    frame, manifest = read_landed(fraud_spec, "transactions", day)
    assert manifest["version"] == new.version and len(frame) == new.rows
    assert old_file.read_bytes() == old_bytes


@pytest.mark.parametrize("missing", ["transactions/day4", "customers.csv"])
def test_missing_source_file_raises_naming_it(
    falaj_home: Path, source: GeneratedData, fraud_spec: UseCaseSpec, missing: str
) -> None:
    # Given a window whose source drop lacks one file
    if missing == "customers.csv":
        gone = source.source_dir / "customers.csv"
    else:
        gone = source.source_dir / "transactions" / f"{(source.start + timedelta(days=4)).isoformat()}.csv"
    gone.unlink()

    # When the window is ingested
    with pytest.raises(SourceMissingError) as caught:
        ingest(fraud_spec, source.start, source.end)

    # Then the error names the missing file; it is also a FileNotFoundError for generic handlers
    assert str(gone) in str(caught.value)
    assert "is missing" in str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)


def test_window_past_the_delivered_days_raises(source: GeneratedData, fraud_spec: UseCaseSpec) -> None:
    # Given data delivered up to (not including) ``end``
    # When a window one day longer is ingested
    with pytest.raises(SourceMissingError, match=re.escape(f"{source.end.isoformat()}.csv")):
        ingest(fraud_spec, source.start, source.end + timedelta(days=1))


def test_text_columns_stay_text_so_pseudonyms_do_not_depend_on_type_guessing(
    falaj_home: Path, source: GeneratedData, fraud_spec: UseCaseSpec
) -> None:
    # Given a customers file whose phones pandas would read as numbers, one of them blank
    customers = pd.read_csv(falaj_home / "source" / "customers.csv", dtype=str)
    raw_phone = customers.loc[0, "phone"]
    customers.loc[1, "phone"] = None
    customers.to_csv(falaj_home / "source" / "customers.csv", index=False)

    # When the window is landed
    landed = ingest(fraud_spec, source.start, source.end)
    snapshot = next(item for item in landed if item.dataset == "customers")
    frame, _ = read_landed(fraud_spec, "customers", snapshot.partition)

    # Then the token is the keyed pseudonym of the phone exactly as delivered, leading '+' included
    assert frame.loc[0, "phone"] == pseudonym(raw_phone, load_or_create_key())
    assert pd.isna(frame.loc[1, "phone"])
