"""Synthetic reference data: deterministic, shaped like usecases/fraud.yaml, with a behavioural signal."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner, Result
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from pipelines.cli import main
from pipelines.datagen import (
    AMOUNT_SHIFT_FACTOR,
    BROKEN_FEED_COLUMN,
    BROKEN_FEED_NULL_SHARE,
    DRIFT_KINDS,
    MCC,
    NEW_CATEGORY,
    NEW_CATEGORY_MCC,
    NEW_CATEGORY_SHARE,
    SIZES,
    DriftKind,
    DriftScenario,
    GeneratedData,
    corrupt_partition,
    generate,
)

SPEC_PATH = Path(__file__).resolve().parents[2] / "usecases" / "fraud.yaml"
END = date(2026, 11, 1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> GeneratedData:
    return generate(tmp_path_factory.mktemp("tiny"), SIZES["tiny"], days=20, end=END, seed=7)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> GeneratedData:
    return generate(tmp_path_factory.mktemp("small"), SIZES["small"], end=END, seed=7)


def _transactions(data: GeneratedData) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in sorted((data.source_dir / "transactions").glob("*.csv"))]
    tx = pd.concat([f for f in frames if len(f)], ignore_index=True)
    tx["ts"] = pd.to_datetime(tx["event_timestamp"], utc=True, format="ISO8601")
    return tx


def _read_all(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*.csv"))}


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    # Given three runs, two with the same seed
    first = generate(tmp_path / "a", 2_000, days=10, seed=11)
    again = generate(tmp_path / "b", 2_000, days=10, seed=11)
    other = generate(tmp_path / "c", 2_000, days=10, seed=12)

    # When the written files are read back
    a, b, c = _read_all(first.source_dir), _read_all(again.source_dir), _read_all(other.source_dir)

    # Then the same seed is byte-identical and a different seed is not
    assert len(a) == 12
    assert a == b
    assert a.keys() == c.keys()
    assert a["customers.csv"] != c["customers.csv"]
    assert all(a[k] != c[k] for k in a if k.startswith("transactions/") and len(a[k]) > 200)
    assert (first.fraud_rate, first.n_transactions) == (again.fraud_rate, again.n_transactions)


def test_files_match_the_sources_declared_in_fraud_yaml(tiny: GeneratedData) -> None:
    # Given the use case's declared sources
    sources = yaml.safe_load(SPEC_PATH.read_text())["sources"]
    parsers = {
        "string": lambda s: s.astype(str),
        "float": lambda s: pd.to_numeric(s, errors="raise").astype(float),
        "int": lambda s: pd.to_numeric(s, errors="raise").astype(np.int64),
        "timestamp": lambda s: pd.to_datetime(s, utc=True, format="ISO8601"),
    }
    assert set(sources) == {"transactions", "customers", "merchants"}

    for name, source in sources.items():
        # When each source's files are found by its declared path
        pattern = source["path"].replace("{date}", "*")
        paths = sorted(tiny.source_dir.glob(pattern))
        assert paths, f"{name}: nothing matches {source['path']}"
        frame = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths])

        # Then the header is exactly the declared columns and every value parses as its declared type
        assert list(frame.columns) == list(source["columns"]), name
        for column, kind in source["columns"].items():
            assert (frame[column] != "").all(), f"{name}.{column} has blanks"
            parsed = parsers[kind](frame[column])
            assert parsed.notna().all(), f"{name}.{column} is not all {kind}"
        if source.get("event_time"):
            assert source["columns"][source["event_time"]] == "timestamp"
    assert tiny.files[:2] == [tiny.source_dir / "customers.csv", tiny.source_dir / "merchants.csv"]


def test_each_day_file_holds_only_that_utc_day_sorted_by_time(tiny: GeneratedData) -> None:
    # Given a 20-day window ending on END
    expected_days = [END - timedelta(days=20 - i) for i in range(20)]
    day_files = sorted((tiny.source_dir / "transactions").glob("*.csv"))

    # When the day files are listed and read
    names = [p.stem for p in day_files]

    # Then there is one file per day in [end - days, end), and each holds only its own UTC day, in order
    assert (tiny.start, tiny.end) == (expected_days[0], END)
    assert names == [d.isoformat() for d in expected_days]
    assert tiny.files[2:] == day_files
    total = 0
    for path in day_files:
        raw = pd.read_csv(path)["event_timestamp"]
        assert raw.str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\+00:00|Z)").all()
        ts = pd.to_datetime(raw, utc=True, format="ISO8601")
        assert (ts.dt.strftime("%Y-%m-%d") == path.stem).all(), path.name
        assert ts.is_monotonic_increasing, path.name
        total += len(ts)
    assert total == tiny.n_transactions == SIZES["tiny"]


def test_transactions_reference_real_customers_and_merchants(tiny: GeneratedData) -> None:
    # Given the three files
    customers = pd.read_csv(tiny.source_dir / "customers.csv")
    merchants = pd.read_csv(tiny.source_dir / "merchants.csv")
    tx = _transactions(tiny)

    # When transactions are joined to their merchant
    joined = tx.merge(merchants, on="merchant_id", suffixes=("", "_m"), validate="many_to_one")

    # Then keys resolve, categories and MCCs agree, and amounts are positive AED with two decimals
    assert len(customers) == tiny.n_customers and len(merchants) == tiny.n_merchants
    assert tx["transaction_id"].is_unique and tx["transaction_id"].str.fullmatch(r"T\d{10}").all()
    assert customers["customer_id"].str.fullmatch(r"C\d{7}").all()
    assert merchants["merchant_id"].str.fullmatch(r"M\d{5}").all() and merchants["merchant_id"].is_unique
    assert tx["customer_id"].isin(customers["customer_id"]).all()
    assert len(joined) == len(tx)
    assert (joined["merchant_category"] == joined["merchant_category_m"]).all()
    assert (merchants["mcc"] == merchants["merchant_category"].map(MCC)).all()
    assert set(merchants["is_online"]) <= {0, 1}
    assert (tx["amount_aed"] > 0).all()
    assert ((tx["amount_aed"] * 100).round(6) % 1 == 0).all()
    assert set(tx["currency"]) == {"AED"}
    assert set(tx["channel"]) == {"pos", "contactless", "ecommerce"}
    assert (joined.loc[joined["is_online"] == 1, "channel"] == "ecommerce").all()
    assert set(tx["is_fraud"]) == {0, 1}


def test_every_pii_value_identifies_one_customer(small: GeneratedData) -> None:
    # Given the customers of the small set
    customers = pd.read_csv(small.source_dir / "customers.csv", dtype=str)

    # When the PII columns are inspected
    dob = pd.to_datetime(customers["date_of_birth"], format="%Y-%m-%d")
    signup = pd.to_datetime(customers["signup_timestamp"], utc=True, format="ISO8601")
    age = (pd.Timestamp(END) - dob).dt.days / 365.25

    # Then names, Emirates IDs, phones and emails are unique and well-formed, and ages and signups plausible
    for column in ("customer_id", "full_name", "emirates_id", "phone", "email"):
        assert customers[column].is_unique, column
    assert customers["emirates_id"].str.fullmatch(r"784-\d{4}-\d{7}-\d").all()
    assert (customers["emirates_id"].str[4:8] == customers["date_of_birth"].str[:4]).all()
    assert customers["emirates_id"].str.replace("-", "").map(_luhn_ok).all()
    assert customers["phone"].str.fullmatch(r"\+9715\d{8}").all()
    assert customers["email"].str.fullmatch(r"[a-z]+\.[a-z]+\.\d+@mail\.example\.ae").all()
    assert customers["full_name"].str.split().str.len().min() >= 3
    assert age.between(18, 81).all()
    assert (signup < pd.Timestamp(small.start, tz="UTC")).all()
    assert customers["home_emirate"].value_counts().index[0] == "Dubai"
    assert set(customers["home_emirate"]) == {
        "Abu Dhabi",
        "Dubai",
        "Sharjah",
        "Ajman",
        "Umm Al Quwain",
        "Ras Al Khaimah",
        "Fujairah",
    }


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_fraud_rate_is_in_the_documented_range(size: str, tiny: GeneratedData, small: GeneratedData) -> None:
    # Given a generated set
    data = {"tiny": tiny, "small": small}[size]

    # When the labels are counted
    labels = _transactions(data)["is_fraud"]

    # Then 1.5-2.5% are fraud and the reported rate is the real one
    assert 0.015 <= labels.mean() <= 0.025
    assert data.fraud_rate == pytest.approx(labels.mean())


def test_fraud_only_hits_cards_with_history_and_comes_in_bursts(small: GeneratedData) -> None:
    # Given the small set ordered per customer
    tx = _transactions(small).sort_values(["customer_id", "ts"], kind="stable").reset_index(drop=True)

    # When each fraud transaction's earlier legit history and neighbours are counted
    legit = 1 - tx["is_fraud"]
    prior_legit = legit.groupby(tx["customer_id"]).cumsum() - legit
    gap_s = tx.groupby("customer_id")["ts"].diff().dt.total_seconds()
    fraud = tx["is_fraud"] == 1

    # Then every fraud follows at least 3 legit transactions after day 7, and most follow within minutes
    assert (prior_legit[fraud] >= 3).all()
    assert (tx.loc[fraud, "ts"] >= pd.Timestamp(small.start + timedelta(days=7), tz="UTC")).all()
    assert (gap_s[fraud] < 1_800).mean() > 0.6
    assert (gap_s[~fraud] < 1_800).mean() < 0.1


def _behaviour_features(tx: pd.DataFrame) -> pd.DataFrame:
    tx = tx.sort_values(["customer_id", "ts"], kind="stable").reset_index(drop=True)
    rolling = tx.set_index("ts").groupby("customer_id")["amount_aed"]
    # closed="left": only strictly earlier transactions, i.e. what was known at decision time.
    trailing_mean = rolling.rolling("30D", closed="left").mean().to_numpy()
    tx["prior_hour_count"] = np.nan_to_num(rolling.rolling("1h", closed="left").count().to_numpy())
    tx["log_amount_ratio"] = np.nan_to_num(np.log(tx["amount_aed"].to_numpy() / trailing_mean))
    return tx


def _auc(train: pd.DataFrame, test: pd.DataFrame, columns: list[str]) -> float:
    model = LogisticRegression(max_iter=2_000).fit(train[columns], train["is_fraud"])
    return float(roc_auc_score(test["is_fraud"], model.predict_proba(test[columns])[:, 1]))


def test_fraud_is_found_by_behaviour_not_by_static_columns(small: GeneratedData) -> None:
    # Given point-in-time behaviour features and the static columns, split in time
    tx = _behaviour_features(_transactions(small))
    static = pd.get_dummies(tx[["channel", "merchant_category"]], dtype=float)
    tx = pd.concat([tx, static], axis=1)
    tx["log_amount"] = np.log(tx["amount_aed"])
    cutoff = pd.Timestamp(small.start + timedelta(days=40), tz="UTC")
    train, test = tx[tx["ts"] < cutoff], tx[tx["ts"] >= cutoff]
    assert train["is_fraud"].sum() > 100 and test["is_fraud"].sum() > 100

    # When a logistic regression is fitted on each feature set
    behaviour = _auc(train, test, ["log_amount_ratio", "prior_hour_count"])
    ratio_only = _auc(train, test, ["log_amount_ratio"])
    velocity_only = _auc(train, test, ["prior_hour_count"])
    static_auc = _auc(train, test, ["log_amount", *static.columns])

    # Then behaviour separates fraud well, static columns only weakly, and both behaviour signals are needed
    assert behaviour > 0.92, behaviour
    assert static_auc < 0.80, static_auc
    assert behaviour - static_auc > 0.15
    assert behaviour > max(ratio_only, velocity_only) + 0.02, (behaviour, ratio_only, velocity_only)


def test_corrupt_partition_injects_bad_amounts_null_keys_and_negatives(
    tiny: GeneratedData, tmp_path: Path
) -> None:
    # Given a copy of one day file
    source = tiny.files[5]
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes())
    before = pd.read_csv(path, dtype=str, keep_default_na=False)

    # When it is corrupted in place
    corrupt_partition(path, seed=1)
    after = pd.read_csv(path, dtype=str, keep_default_na=False)

    # Then the header and rows survive, and the three kinds of corruption are all there
    assert path.read_text().splitlines()[0] == source.read_text().splitlines()[0]
    assert len(after) == len(before) and (after["transaction_id"] == before["transaction_id"]).all()
    text = after["amount_aed"].isin(["12,5O", "n/a"])
    blank_key = after["customer_id"] == ""
    negative = pd.to_numeric(after["amount_aed"], errors="coerce") < 0
    assert text.sum() >= 1 and blank_key.sum() >= 1 and negative.sum() >= 1
    assert pd.read_csv(path)["customer_id"].isna().sum() == blank_key.sum()
    untouched = ~(text | blank_key | negative)
    assert after[untouched].equals(before[untouched])
    assert (
        pd.to_numeric(after.loc[negative, "amount_aed"]).abs()
        == pd.to_numeric(before.loc[negative, "amount_aed"])
    ).all()


def test_generate_rejects_empty_requests(tmp_path: Path) -> None:
    # Given / When / Then: no transactions or no days is a caller error, not an empty drop
    with pytest.raises(ValueError, match="n_transactions"):
        generate(tmp_path, 0)
    with pytest.raises(ValueError, match="days"):
        generate(tmp_path, 100, days=0)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------------
# Injected drift
# ---------------------------------------------------------------------------------------------------------

DRIFT_START = END - timedelta(days=5)  # days 6..10 of a 10-day window drift


def _drift_run(root: Path, kind: DriftKind | None) -> GeneratedData:
    scenario = DriftScenario(kind, DRIFT_START) if kind else None
    return generate(root / (kind or "clean"), SIZES["tiny"], days=10, end=END, seed=7, drift=scenario)


@pytest.fixture(scope="module")
def drift_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[DriftKind | None, GeneratedData]:
    root = tmp_path_factory.mktemp("drift")
    return {kind: _drift_run(root, kind) for kind in (None, *DRIFT_KINDS)}


def _split_at_start(data: GeneratedData) -> tuple[pd.DataFrame, pd.DataFrame]:
    tx = _transactions(data)
    drifted = tx["ts"] >= pd.Timestamp(DRIFT_START, tz="UTC")
    return tx[~drifted], tx[drifted]


@pytest.mark.parametrize("kind", DRIFT_KINDS)
def test_days_before_the_drift_start_are_byte_identical_to_the_clean_run(
    kind: DriftKind, drift_runs: dict[DriftKind | None, GeneratedData]
) -> None:
    # Given a clean run and a drifted run with the same arguments
    clean, drifted = drift_runs[None], drift_runs[kind]

    # When their files are read back
    a, b = _read_all(clean.source_dir), _read_all(drifted.source_dir)

    # Then customers and every day before the start are the same bytes, and every day from it differs
    assert a.keys() == b.keys() and len(a) == 12
    assert a["customers.csv"] == b["customers.csv"]
    days = sorted(k for k in a if k.startswith("transactions/"))
    before = [k for k in days if k < f"transactions/{DRIFT_START.isoformat()}"]
    assert len(before) == 5
    assert all(a[k] == b[k] for k in before)
    assert all(a[k] != b[k] for k in days if k not in before)
    # merchants.csv only grows, and only when a new category opens
    assert b["merchants.csv"].startswith(a["merchants.csv"])
    assert (a["merchants.csv"] == b["merchants.csv"]) == (kind != "new_merchant_category")
    assert (drifted.n_transactions, drifted.fraud_rate) == (clean.n_transactions, clean.fraud_rate)
    assert drifted.drift == DriftScenario(kind, DRIFT_START)


def test_amount_shift_scales_amounts_from_the_start_day(
    drift_runs: dict[DriftKind | None, GeneratedData],
) -> None:
    # Given the clean and the amount-shifted transactions from the start day
    _, clean = _split_at_start(drift_runs[None])
    _, shifted = _split_at_start(drift_runs["amount_shift"])

    # When the same transactions are compared
    assert (clean["transaction_id"].to_numpy() == shifted["transaction_id"].to_numpy()).all()
    per_row = shifted["amount_aed"].to_numpy() / clean["amount_aed"].to_numpy()
    medians = shifted["amount_aed"].median() / clean["amount_aed"].median()

    # Then amounts rose by about the intended factor, and nothing else moved
    assert np.median(per_row) == pytest.approx(AMOUNT_SHIFT_FACTOR, rel=0.05)
    assert medians == pytest.approx(AMOUNT_SHIFT_FACTOR, rel=0.1)
    assert (per_row > 1).mean() > 0.9
    assert (shifted["amount_aed"] >= 1.0).all() and (shifted["amount_aed"] < 1_000_000).all()
    others = [c for c in shifted.columns if c != "amount_aed"]
    assert shifted[others].reset_index(drop=True).equals(clean[others].reset_index(drop=True))


def test_new_merchant_category_takes_its_share_at_merchants_created_before_they_trade(
    drift_runs: dict[DriftKind | None, GeneratedData],
) -> None:
    # Given the run where a new category opens, and the clean merchants
    data = drift_runs["new_merchant_category"]
    before, after = _split_at_start(data)
    clean_merchants = pd.read_csv(drift_runs[None].source_dir / "merchants.csv")
    merchants = pd.read_csv(data.source_dir / "merchants.csv")

    # When its transactions are joined to their merchants
    new_tx = after[after["merchant_category"] == NEW_CATEGORY]
    joined = new_tx.merge(merchants, on="merchant_id", suffixes=("", "_m"), validate="many_to_one")
    created = pd.to_datetime(joined["created_timestamp"], utc=True, format="ISO8601")

    # Then its MCC is new, it holds about the intended share from the start day and none before,
    assert NEW_CATEGORY_MCC not in set(clean_merchants["mcc"])
    assert NEW_CATEGORY not in set(MCC)
    assert (before["merchant_category"] != NEW_CATEGORY).all()
    assert len(new_tx) / len(after) == pytest.approx(NEW_CATEGORY_SHARE, abs=0.03)
    # and its merchants are real in-person merchants, appended and created before their first sale
    new_merchants = merchants.iloc[len(clean_merchants) :]
    assert data.n_merchants == len(merchants) > len(clean_merchants)
    assert (new_merchants["merchant_category"] == NEW_CATEGORY).all()
    assert (new_merchants["mcc"] == NEW_CATEGORY_MCC).all() and (new_merchants["is_online"] == 0).all()
    assert merchants["merchant_id"].is_unique
    assert len(joined) == len(new_tx)
    assert (created < joined["ts"]).all()
    assert (created < pd.Timestamp(DRIFT_START, tz="UTC")).all()
    assert (joined["mcc"] == NEW_CATEGORY_MCC).all()
    assert (joined["emirate"] == joined["emirate_m"]).all()
    assert (joined["channel"] != "ecommerce").all()
    assert after["merchant_id"].isin(merchants["merchant_id"]).all()


def test_broken_feed_blanks_its_column_on_the_intended_share_of_rows(
    drift_runs: dict[DriftKind | None, GeneratedData],
) -> None:
    # Given the clean and the broken-feed transactions
    _, clean_after = _split_at_start(drift_runs[None])
    before, after = _split_at_start(drift_runs["broken_feed"])

    # When nulls are counted per column
    blank = after[BROKEN_FEED_COLUMN].isna()

    # Then only the broken column has nulls, on about the intended share of rows from the start day
    assert blank.mean() == pytest.approx(BROKEN_FEED_NULL_SHARE, abs=0.04)
    assert before.notna().all().all()
    assert after.drop(columns=[BROKEN_FEED_COLUMN]).notna().all().all()
    # and every other value is the clean one
    kept = after.reset_index(drop=True)
    clean = clean_after.reset_index(drop=True)
    assert kept.drop(columns=[BROKEN_FEED_COLUMN]).equals(clean.drop(columns=[BROKEN_FEED_COLUMN]))
    assert (
        kept.loc[~blank.to_numpy(), BROKEN_FEED_COLUMN] == clean.loc[~blank.to_numpy(), BROKEN_FEED_COLUMN]
    ).all()


@pytest.mark.parametrize("kind", DRIFT_KINDS)
def test_same_drift_arguments_give_identical_bytes(
    kind: DriftKind, drift_runs: dict[DriftKind | None, GeneratedData], tmp_path: Path
) -> None:
    # Given a second run with the same arguments and drift
    again = _drift_run(tmp_path, kind)

    # When both are read back
    first = _read_all(drift_runs[kind].source_dir)

    # Then the bytes are identical
    assert _read_all(again.source_dir) == first


@pytest.mark.parametrize(
    ("kind", "start", "message"),
    [
        ("seasonality", DRIFT_START, r"unknown drift kind 'seasonality'; expected one of: amount_shift"),
        ("amount_shift", "2026-10-27", "drift start must be a date"),
        ("amount_shift", datetime(2026, 10, 27, tzinfo=UTC), "drift start must be a date"),
    ],
)
def test_a_bad_drift_scenario_is_rejected_naming_the_problem(kind: Any, start: Any, message: str) -> None:
    # Given / When / Then: an unknown kind, or a start that is not a day, is named in the error
    with pytest.raises(ValueError, match=message):
        DriftScenario(kind, start)


@pytest.mark.parametrize("start", [END - timedelta(days=11), END, END + timedelta(days=3)])
def test_a_drift_start_outside_the_window_is_rejected_before_anything_is_written(
    start: date, tmp_path: Path
) -> None:
    # Given a 10-day window ending on END (its days are END-10 .. END-1)
    scenario = DriftScenario("amount_shift", start)

    # When / Then generating with a start outside it fails naming the start and the window
    with pytest.raises(ValueError, match=rf"drift start {start} is outside the generated window"):
        generate(tmp_path, SIZES["tiny"], days=10, end=END, drift=scenario)
    assert not any(tmp_path.iterdir())


def test_the_cli_generates_drifted_data_and_explains_bad_drift_options(
    falaj_home: Path, tmp_path: Path
) -> None:
    # Given the `falaj generate` command run as a data engineer
    def run(*args: str) -> Result:
        return CliRunner().invoke(
            main,
            ["generate", "--size", "tiny", "--days", "10", "--out", str(tmp_path / "out"), *args],
            env={"FALAJ_USER": "data-engineer"},
        )

    # When it is asked for drift, well and badly
    good = run("--drift", "broken_feed", "--drift-start", "2026-10-27")
    unknown = run("--drift", "seasonality", "--drift-start", "2026-10-27")
    outside = run("--drift", "amount_shift", "--drift-start", "2027-01-01")
    half = run("--drift", "amount_shift")

    # Then the good request writes drifted days, and each bad one exits non-zero with the reason
    assert good.exit_code == 0, good.output
    assert "drift broken_feed from 2026-10-27" in good.output
    day = pd.read_csv(tmp_path / "out" / "transactions" / "2026-10-28.csv")
    assert day[BROKEN_FEED_COLUMN].isna().mean() > 0.2
    assert unknown.exit_code == 1 and "unknown drift kind 'seasonality'" in unknown.output
    assert outside.exit_code == 1 and "outside the generated window" in outside.output
    assert half.exit_code == 2 and "--drift and --drift-start go together" in half.output
