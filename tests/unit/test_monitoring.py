"""A monitoring window: the champion's served traffic against its reference profile, alerts raised once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from pipelines import alerts, lake, registry
from pipelines.monitoring import MonitoringError, monitor_window
from pipelines.predictions import write_rows
from pipelines.reference_profile import write_reference_profile
from pipelines.spec import UseCaseSpec
from tests.unit.test_rollout import _add_version, _decide

FEATURES = ["txn_amount_aed", "txn_count_24h", "mcc"]
DAY0 = datetime(2026, 10, 1, tzinfo=UTC)
ROWS_PER_DAY = 800


def traffic(rng: np.random.Generator, n: int, amount_factor: float = 1.0, null_share: float = 0.0,
            new_mcc_share: float = 0.0) -> pd.DataFrame:  # fmt: skip
    frame = pd.DataFrame(
        {
            "txn_amount_aed": rng.lognormal(4.8, 0.9, n) * amount_factor,
            "txn_count_24h": rng.poisson(3, n).astype(float),
            "mcc": rng.choice([5411.0, 5812.0, 5999.0], n, p=[0.5, 0.3, 0.2]),
        }
    )
    frame.loc[rng.random(n) < null_share, "txn_count_24h"] = np.nan
    frame.loc[rng.random(n) < new_mcc_share, "mcc"] = 5552.0
    return frame


def score(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-4.5 * (np.log(frame.txn_amount_aed) - 5.8))))


def register_champion(home: Path, spec: UseCaseSpec) -> registry.ModelVersion:
    """A champion whose reference profile comes from 20,000 rows of clean traffic."""
    train = traffic(np.random.default_rng(0), 20_000)
    model_dir = home / "artifacts" / "v1"
    profile = write_reference_profile(model_dir, train, FEATURES, score(train), spec.monitoring.categorical)
    with registry.session() as db, db.begin():
        version = _add_version(db)
        version.features = FEATURES
        version.lineage = {"reference_profile": {"uri": str(profile), "sha256": lake.sha256_file(profile)}}
        _decide(db, version, passed=True)
        registry.promote(db, "fraud", version.version, approver="demo-approver", reason="first model")
    return version


@pytest.fixture
def champion(falaj_home: Path, fraud_spec: UseCaseSpec) -> registry.ModelVersion:
    return register_champion(falaj_home, fraud_spec)


def serve(version: registry.ModelVersion, day: int, frame: pd.DataFrame, degraded_share: float = 0.0) -> None:
    """Log the day's answers as the scoring service does."""
    at = DAY0 + timedelta(days=day, hours=12)
    scores = score(frame)
    degraded = np.random.default_rng(day).random(len(frame)) < degraded_share
    write_rows([
        {"at": at, "use_case": "fraud", "request_id": f"{day}-{i}", "unit": f"u{i}", "arm": "champion",
         "model_version": version.version, "experiment_id": None, "shadow": False, "score": float(scores[i]),
         "decision": "approve", "threshold": 0.5, "latency_ms": 1.0, "degraded": bool(degraded[i]),
         "error": None, "freshness": {},
         "features": {k: (None if pd.isna(v) else float(v)) for k, v in row.items()}}
        for i, row in enumerate(frame.to_dict("records"))
    ])  # fmt: skip


def window(spec: UseCaseSpec, day: int) -> Any:
    return monitor_window(spec, DAY0 + timedelta(days=day), DAY0 + timedelta(days=day + 1))


def test_thirty_clean_windows_raise_nothing(champion: registry.ModelVersion, fraud_spec: UseCaseSpec) -> None:
    rng = np.random.default_rng(1)
    results = []
    for day in range(30):
        serve(champion, day, traffic(rng, ROWS_PER_DAY))
        results.append(window(fraud_spec, day))
    assert all(r.rows == ROWS_PER_DAY and not r.insufficient for r in results)
    assert [r.drifted + r.quality for r in results] == [[]] * 30
    with registry.session() as db:
        assert alerts.list_alerts(db) == []
    page = Path(results[-1].report_uri or "").read_text()
    assert page.count("<svg") == 3  # the three trends; nothing flagged, so no distribution plots


def test_a_shift_is_flagged_on_its_first_day_and_alerted_once(
    champion: registry.ModelVersion, fraud_spec: UseCaseSpec
) -> None:
    rng = np.random.default_rng(2)
    serve(champion, 0, traffic(rng, ROWS_PER_DAY))
    assert window(fraud_spec, 0).drifted == []
    serve(champion, 1, traffic(rng, ROWS_PER_DAY, amount_factor=2.5))
    first = window(fraud_spec, 1)
    assert set(first.drifted) == {"txn_amount_aed", "prediction"} and first.retrain
    [alert] = first.to_deliver
    assert (alert["kind"], alert["severity"]) == ("drift", "critical") and "txn_amount_aed" in alert[
        "summary"
    ]
    serve(champion, 2, traffic(rng, ROWS_PER_DAY, amount_factor=2.5))
    second = window(fraud_spec, 2)
    assert second.drifted == first.drifted and second.to_deliver == [] and not second.retrain
    with registry.session() as db:
        [stored] = alerts.list_alerts(db)
    assert stored.occurrences == 2
    page = Path(second.report_uri or "").read_text()
    assert "<td>txn_amount_aed</td>" in page and page.count("<svg") == 5  # 2 distributions + 3 trends


def test_a_broken_feed_is_input_quality_not_retraining(
    champion: registry.ModelVersion, fraud_spec: UseCaseSpec
) -> None:
    serve(champion, 0, traffic(np.random.default_rng(3), ROWS_PER_DAY, null_share=0.4))
    result = window(fraud_spec, 0)
    assert result.quality == ["txn_count_24h"] and result.drifted == []
    [alert] = result.to_deliver
    assert alert["kind"] == "data_quality" and "missing rate 0.40" in alert["summary"]
    assert not result.retrain  # retraining on a broken feed would learn the breakage


def test_a_new_merchant_category_drifts_and_is_named(
    champion: registry.ModelVersion, fraud_spec: UseCaseSpec
) -> None:
    serve(champion, 0, traffic(np.random.default_rng(5), ROWS_PER_DAY, new_mcc_share=0.15))
    result = window(fraud_spec, 0)
    assert result.drifted == ["mcc"] and result.quality == ["mcc"]
    assert sorted(alert["kind"] for alert in result.to_deliver) == ["data_quality", "drift"]
    quality = next(alert for alert in result.to_deliver if alert["kind"] == "data_quality")
    assert "5552" in quality["summary"]


def test_a_thin_window_is_insufficient_and_silent(
    champion: registry.ModelVersion, fraud_spec: UseCaseSpec
) -> None:
    serve(champion, 0, traffic(np.random.default_rng(4), 50, amount_factor=3.0))
    result = window(fraud_spec, 0)
    assert result.insufficient and result.to_deliver == [] and result.drifted == []


def test_a_tampered_reference_profile_is_refused(
    champion: registry.ModelVersion, fraud_spec: UseCaseSpec
) -> None:
    profile = Path(champion.lineage["reference_profile"]["uri"])
    profile.write_text(profile.read_text().replace('"null_rate"', '"null_rate" ', 1))
    with pytest.raises(MonitoringError, match="not the one registered"):
        window(fraud_spec, 0)


def test_the_latest_report_on_the_cli(
    champion: registry.ModelVersion, fraud_spec: UseCaseSpec, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from pipelines.cli import main

    def falaj(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), env={"FALAJ_USER": "auditor"})

    none_yet = falaj("monitor", "report")
    assert none_yet.exit_code == 1 and "no monitoring run for fraud yet" in none_yet.output
    serve(champion, 0, traffic(np.random.default_rng(6), ROWS_PER_DAY))
    serve(champion, 1, traffic(np.random.default_rng(6), ROWS_PER_DAY, amount_factor=2.5))
    window(fraud_spec, 0)
    latest = window(fraud_spec, 1)
    shown = falaj("monitor", "report", "--out", str(tmp_path / "latest.html"))
    assert shown.exit_code == 0 and "2026-10-02: 2 drifted" in shown.output
    assert (tmp_path / "latest.html").read_text() == Path(latest.report_uri or "").read_text()


def label(day: int, frame: pd.DataFrame, rng: np.random.Generator, informative: bool = True) -> None:
    """The day's labels as they land in the validated source: the score's own odds, or a coin toss."""
    odds = score(frame) if informative else np.full(len(frame), 0.3)
    target = (
        lake.zone_dir("validated", "fraud", "transactions")
        / f"partition={(DAY0 + timedelta(days=day)).date()}"
    )
    target.mkdir(parents=True, exist_ok=True)
    n = len(frame)
    pd.DataFrame(
        {"transaction_id": [f"{day}-{i}" for i in range(n)], "is_fraud": (rng.random(n) < odds).astype(int),
         "channel": rng.choice(["pos", "ecommerce"], n), "emirate": "Dubai"}
    ).to_parquet(target / "data.parquet")  # fmt: skip


def test_performance_is_judged_once_labels_arrive(
    champion: registry.ModelVersion, fraud_spec: UseCaseSpec
) -> None:
    rng = np.random.default_rng(8)
    frames = [traffic(rng, ROWS_PER_DAY) for _ in range(3)]
    for day, frame in enumerate(frames):
        serve(champion, day, frame)
    # Before any label: reported as not judged, no alert
    early = window(fraud_spec, 2)
    with registry.session() as db:
        run = db.scalars(select(registry.MonitorRun).order_by(registry.MonitorRun.id.desc())).first()
        assert run is not None and run.performance["judged"] is False and run.performance["labelled"] == 0
    assert early.to_deliver == []
    # Labels that follow the score: judged within the gate's floors
    for day, frame in enumerate(frames):
        label(day, frame, rng)
    healthy = window(fraud_spec, 2)
    with registry.session() as db:
        run = db.scalars(select(registry.MonitorRun).order_by(registry.MonitorRun.id.desc())).first()
    assert run is not None and run.performance["judged"] and run.performance["labelled"] == 3 * ROWS_PER_DAY
    assert run.performance["metrics"]["roc_auc"] > 0.9 and run.performance["findings"] == []
    assert set(run.performance["slices"]) == {"channel=pos", "channel=ecommerce", "emirate=Dubai"}
    assert healthy.to_deliver == []
    assert "ROC-AUC" in Path(healthy.report_uri or "").read_text()


def test_a_model_that_stopped_ranking_proposes_rollback_and_retraining(
    champion: registry.ModelVersion, fraud_spec: UseCaseSpec
) -> None:
    # Given an earlier champion, and a current one whose scores no longer say anything about the labels
    with registry.session() as db, db.begin():
        newer = _add_version(db)
        newer.features = champion.features
        newer.lineage = champion.lineage
        _decide(db, newer, passed=True)
        registry.promote(db, "fraud", newer.version, approver="risk-officer", reason="second model")
    rng = np.random.default_rng(9)
    for day in range(3):
        frame = traffic(rng, ROWS_PER_DAY)
        serve(newer, day, frame)
        label(day, frame, rng, informative=False)
    result = window(fraud_spec, 2)
    [alert] = [a for a in result.to_deliver if a["kind"] == "performance"]
    assert alert["severity"] == "critical" and "ROC-AUC" in alert["summary"]
    assert f"roll back to fraud:v{champion.version}" in alert["summary"] and result.retrain


def test_answers_on_stale_features_are_an_input_quality_finding(
    champion: registry.ModelVersion, fraud_spec: UseCaseSpec
) -> None:
    rng = np.random.default_rng(10)
    serve(champion, 0, traffic(rng, ROWS_PER_DAY), degraded_share=0.02)
    assert window(fraud_spec, 0).quality == []  # under the spec's 5%
    serve(champion, 1, traffic(rng, ROWS_PER_DAY), degraded_share=0.3)
    result = window(fraud_spec, 1)
    assert result.quality == ["freshness"] and result.drifted == [] and not result.retrain
    [alert] = result.to_deliver
    assert (
        alert["kind"] == "data_quality" and "served on stale or missing online features" in alert["summary"]
    )


def test_a_regressions_performance_is_judged_by_its_error_against_the_gate_ceiling(
    champion: registry.ModelVersion, fraud_spec: UseCaseSpec
) -> None:
    from pipelines.monitoring import performance
    from pipelines.spec import GatePolicy

    # Given the same traffic judged as a regression: the label is a quantity, the gate a WAPE ceiling
    gate = GatePolicy(metric="wape", max_value=0.3, slices=["channel"], min_slice_rows=100)
    spec = fraud_spec.model_copy(
        update={"task": "regression", "gate": gate,
                "serving": fraud_spec.serving.model_copy(update={"threshold": None})}
    )  # fmt: skip
    rng = np.random.default_rng(12)
    frames = [traffic(rng, ROWS_PER_DAY) for _ in range(2)]
    for day, frame in enumerate(frames):
        serve(champion, day, frame)

    def land(factor: float) -> None:
        for day, frame in enumerate(frames):
            partition = f"partition={(DAY0 + timedelta(days=day)).date()}"
            target = lake.zone_dir("validated", "fraud", "transactions") / partition
            target.mkdir(parents=True, exist_ok=True)
            units = score(frame) * factor * rng.normal(1.0, 0.05, len(frame))
            pd.DataFrame(
                {"transaction_id": [f"{day}-{i}" for i in range(len(frame))], "is_fraud": units,
                 "channel": rng.choice(["pos", "ecommerce"], len(frame)), "emirate": "Dubai"}
            ).to_parquet(target / "data.parquet")  # fmt: skip

    # When the labels follow the forecasts: judged, within the ceiling, per slice
    land(1.0)
    judged = performance(spec, champion.version, DAY0 + timedelta(days=2))
    assert judged["judged"] and not judged["critical"] and judged["findings"] == []
    assert judged["positives"] is None and judged["metrics"]["wape"] < 0.1
    assert {"rmse", "mae", "wape", "r2", "bias"} <= set(judged["metrics"])
    assert set(judged["slices"]) == {"channel=pos", "channel=ecommerce"}
    # When the quantities turn out three times what was forecast: critical, naming the ceiling
    land(3.0)
    judged = performance(spec, champion.version, DAY0 + timedelta(days=2))
    assert judged["critical"] and judged["metrics"]["wape"] > 0.3
    [finding, *_] = judged["findings"]
    assert finding.startswith("wape ") and "past 0.3 (the gate's ceiling)" in finding
