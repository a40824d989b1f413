"""One monitoring window of a use case: the champion's served traffic against its reference profile.

Reads the prediction log (``pipelines/predictions.py``) for the window, compares every feature and the
score with the reference profile recorded in the champion's lineage (``pipelines/drift.py``), and
judges the champion's performance on the predictions of the lookback whose labels have arrived,
against the gate's floors. It records the run (table ``monitor_runs``), writes the HTML report, and
turns what it found into alerts (``pipelines/alerts.py``): one each for drift, input quality and
performance, deduplicated across windows. A critical drift or performance alert, when it is new or
has just become critical, asks for retraining; a critical performance alert also proposes rolling
back to the previous champion (an approver decides).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from pipelines import alerts, lake, registry
from pipelines.drift import FeatureDrift, compare
from pipelines.monitor_report import Distribution, Report, Trend, write_report
from pipelines.reference_profile import category_key
from pipelines.registry import MonitorRun, Prediction
from pipelines.settings import get_settings
from pipelines.spec import Metric, UseCaseSpec

TREND_WINDOWS = 30
REGRESSION_METRICS: tuple[Metric, ...] = ("rmse", "mae", "wape", "r2")
DEGRADED = "degraded"  # the served-on-stale-features column; reported as the pseudo-feature "freshness"


class MonitoringError(RuntimeError):
    """The window cannot be judged (no reference profile, or one that does not verify); says why."""


@dataclass(frozen=True)
class MonitorResult:
    use_case: str
    model_version: int | None
    window_start: datetime
    window_end: datetime
    rows: int
    insufficient: bool
    drifted: list[str]
    quality: list[str]
    report_uri: str | None
    to_deliver: list[dict[str, Any]]  # alerts that are new or just escalated, as alerts.as_dict gives them
    retrain: bool

    def to_xcom(self) -> dict[str, Any]:
        return {
            "use_case": self.use_case, "model_version": self.model_version,
            "window": [self.window_start.isoformat(), self.window_end.isoformat()], "rows": self.rows,
            "insufficient": self.insufficient, "drifted": self.drifted, "quality": self.quality,
            "report_uri": self.report_uri, "to_deliver": self.to_deliver, "retrain": self.retrain,
        }  # fmt: skip


def monitor_window(spec: UseCaseSpec, start: datetime, end: datetime) -> MonitorResult:
    """Judge ``[start, end)`` of the champion's traffic; record it, report it, raise its alerts.

    Raises:
        MonitoringError: the champion's reference profile is missing or not the one its lineage recorded.
    """
    with registry.session() as db:
        champion = registry.resolve_alias(db, spec.name, "champion")
    if champion is None:
        return MonitorResult(spec.name, None, start, end, 0, True, [], [], None, [], False)
    profile = _reference_profile(champion)
    current = _served(spec.name, champion.version, champion.features, start, end)
    results = compare(profile, current, spec.monitoring)
    judged = performance(spec, champion.version, end)
    rows = len(current["prediction"])
    insufficient = any(result.insufficient for result in results) or rows == 0
    drifted = [r.name for r in results if r.drifted]
    stale_rate = float(current[DEGRADED].mean()) if rows else 0.0
    stale = not insufficient and stale_rate > spec.monitoring.max_stale_rate
    quality = [r.name for r in results if r.quality_issue] + (["freshness"] if stale else [])
    with registry.session() as db, db.begin():
        registry.lock(db, f"monitor:{spec.name}")  # attempts of one window take turns
        # A window judged again (a retry after its commit, a rerun) replaces its earlier run.
        db.execute(
            delete(MonitorRun).where(
                MonitorRun.use_case == spec.name, MonitorRun.model_version == champion.version,
                MonitorRun.window_start == start, MonitorRun.window_end == end,
            )
        )  # fmt: skip
        history = list(
            db.scalars(
                select(MonitorRun)
                .where(MonitorRun.use_case == spec.name, MonitorRun.window_end < end)
                .order_by(MonitorRun.window_end.desc())
                .limit(TREND_WINDOWS - 1)
            )
        )[::-1]
        report = _report_path(spec.name, start, end)
        run = MonitorRun(
            use_case=spec.name, model_version=champion.version, window_start=start, window_end=end, rows=rows,
            insufficient=insufficient, drifted=drifted, quality=quality,
            features={r.name: _summary(r) for r in results} | {"freshness": {"stale_rate": stale_rate}},
            performance=judged, report_uri=str(report),
        )  # fmt: skip
        db.add(run)
        write_report(report, _report(spec, champion.tag, run, results, profile, current, [*history, run]))
        raised = [
            alerts.raise_alert(db, finding)
            for finding in _findings(
                spec, champion.version, start, end, results, stale_rate if stale else None, str(report)
            )
            + _performance_findings(db, spec, champion.version, start, end, judged, str(report))
        ]
        to_deliver = [alerts.as_dict(alert) for alert, deliver in raised if deliver]
    retrain = any(a["kind"] in ("drift", "performance") and a["severity"] == "critical" for a in to_deliver)
    return MonitorResult(
        spec.name, champion.version, start, end, rows, insufficient, drifted, quality, str(report),
        to_deliver, retrain,
    )  # fmt: skip


def _reference_profile(champion: registry.ModelVersion) -> dict[str, Any]:
    recorded = (champion.lineage or {}).get("reference_profile")
    if not recorded:
        raise MonitoringError(f"{champion.tag} has no reference profile in its lineage: register it again")
    path = Path(recorded["uri"])
    if not path.exists():
        raise MonitoringError(f"{champion.tag}'s reference profile {path} is missing")
    if lake.sha256_file(path) != recorded["sha256"]:
        raise MonitoringError(f"{champion.tag}'s reference profile {path} is not the one registered (sha256)")
    return dict(json.loads(path.read_text()))


def _served(
    use_case: str, version: int, features: list[str], start: datetime, end: datetime
) -> dict[str, Any]:
    """The window's answers of this version as columns: each feature, the score as 'prediction', and
    whether the freshness policy replaced stale or missing online features."""
    import numpy as np

    rows = _answers(use_case, version, start, end, Prediction.features, Prediction.score, Prediction.degraded)
    nan = float("nan")
    columns = {
        name: np.array([nan if row.features.get(name) is None else row.features[name] for row in rows], float)
        for name in features
    }
    columns["prediction"] = np.array([row.score for row in rows], dtype=float)
    columns[DEGRADED] = np.array([row.degraded for row in rows], dtype=bool)
    return columns


def _answers(use_case: str, version: int, start: datetime, end: datetime, *columns: Any) -> list[Any]:
    """``columns`` of the scores this version returned to callers in ``[start, end)``."""
    with registry.session() as db:
        return list(
            db.execute(
                select(*columns).where(
                    Prediction.use_case == use_case, Prediction.model_version == version,
                    Prediction.shadow.is_(False), Prediction.score.is_not(None),
                    Prediction.at >= start, Prediction.at < end,
                )
            )
        )  # fmt: skip


def performance(spec: UseCaseSpec, version: int, end: datetime) -> dict[str, Any]:
    """The version's predictions of the lookback before ``end`` whose labels have arrived, judged against
    the gate's limits: for binary classification ROC-AUC, precision and recall at the served threshold,
    calibration; for regression the errors and r2; per slice. ``critical`` when the model is past the
    gate's limit on its headline metric (ROC-AUC, or the regression's primary metric)."""
    import pandas as pd

    from pipelines.experiment_analysis import load_labels

    policy, gate = spec.monitoring, spec.gate
    since = end - timedelta(days=policy.performance_lookback_days)
    logged = _answers(spec.name, version, since, end, Prediction.request_id, Prediction.score)
    served = pd.DataFrame([tuple(row) for row in logged], columns=["request_id", "score"])
    served = served.drop_duplicates(subset=["request_id"], keep="last")
    labels = load_labels(spec, since.date(), extra=gate.slices)
    joined = served.merge(labels, on="request_id", how="inner")
    binary = spec.task == "binary_classification"
    positives = int(joined["label"].sum()) if binary else None
    result: dict[str, Any] = {
        "since": since.isoformat(), "served": len(served), "labelled": len(joined), "positives": positives,
        "judged": False, "critical": False, "metrics": None, "slices": {}, "findings": [],
    }  # fmt: skip
    if len(joined) < policy.min_labelled:
        return result
    if binary:
        return _classification_performance(spec, joined, result)
    return _regression_performance(spec, joined, result)


def _classification_performance(spec: UseCaseSpec, joined: Any, result: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from models.metrics import classification_metrics, expected_calibration_error

    gate, threshold = spec.gate, spec.serving.threshold
    y, p = joined["label"].to_numpy(dtype=np.int64), joined["score"].to_numpy(dtype=np.float64)
    if threshold is None or int(y.sum()) < spec.monitoring.min_positives or y.min() == y.max():
        return result
    metrics = classification_metrics(y, p, threshold) | {"ece": expected_calibration_error(y, p)}
    below_floor = gate.min_roc_auc is not None and metrics["roc_auc"] < gate.min_roc_auc
    result.update(judged=True, metrics=metrics, critical=below_floor)
    findings: list[str] = result["findings"]
    if below_floor:
        findings.append(f"ROC-AUC {metrics['roc_auc']:.3f} < {gate.min_roc_auc} (the gate's floor)")
    if gate.max_ece is not None and metrics["ece"] > gate.max_ece:
        findings.append(f"calibration error {metrics['ece']:.3f} > {gate.max_ece}")
    for column in gate.slices:
        for value, rows in joined.groupby(column):
            ys, ps = rows["label"].to_numpy(dtype=np.int64), rows["score"].to_numpy(dtype=np.float64)
            if len(rows) < gate.min_slice_rows or ys.sum() < gate.min_slice_positives or ys.min() == ys.max():
                continue
            auc = classification_metrics(ys, ps, threshold)["roc_auc"]
            result["slices"][f"{column}={value}"] = {
                "roc_auc": auc,
                "n": len(rows),
                "positives": int(ys.sum()),
            }
            if gate.min_roc_auc is not None and auc < gate.min_roc_auc:
                findings.append(f"{column}={value}: ROC-AUC {auc:.3f} < {gate.min_roc_auc}")
    return result


def _regression_performance(spec: UseCaseSpec, joined: Any, result: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from pipelines.gate_policy import metric_value

    gate = spec.gate
    y, p = joined["label"].to_numpy(dtype=np.float64), joined["score"].to_numpy(dtype=np.float64)
    metrics: dict[str, float] = {name: metric_value(name, y, p) for name in REGRESSION_METRICS}
    metrics["bias"] = float(np.mean(p - y))
    limit = gate.min_value if gate.higher_is_better else gate.max_value
    result.update(judged=True, metrics=metrics, critical=not _within(gate, metrics[gate.metric]))
    findings: list[str] = result["findings"]
    side = "floor" if gate.higher_is_better else "ceiling"
    if result["critical"]:
        findings.append(f"{gate.metric} {metrics[gate.metric]:.3f} past {limit} (the gate's {side})")
    for column in gate.slices:
        for value, rows in joined.groupby(column):
            if len(rows) < gate.min_slice_rows:
                continue
            ys, ps = rows["label"].to_numpy(dtype=np.float64), rows["score"].to_numpy(dtype=np.float64)
            scored = metric_value(gate.metric, ys, ps)
            result["slices"][f"{column}={value}"] = {gate.metric: scored, "n": len(rows)}
            if not _within(gate, scored):
                findings.append(f"{column}={value}: {gate.metric} {scored:.3f} past {limit}")
    return result


def _within(gate: Any, value: float) -> bool:
    return bool(value >= gate.min_value) if gate.higher_is_better else bool(value <= gate.max_value)


def _performance_findings(
    db: Any, spec: UseCaseSpec, version: int, start: datetime, end: datetime, judged: dict[str, Any],
    report: str,
) -> list[alerts.Finding]:  # fmt: skip
    if not judged["findings"]:
        return []
    below_floor = bool(judged["critical"])
    previous = _previous_champion(db, spec.name, version)
    proposal = (
        f" Proposal: roll back to {spec.name}:v{previous} (`falaj models rollback {spec.name} --reason ...`)"
        if below_floor and previous is not None else ""
    )  # fmt: skip
    return [
        alerts.Finding(
            use_case=spec.name, kind="performance", subject="model", model_version=version,
            severity="critical" if below_floor else "warning", window_start=start, window_end=end,
            report_uri=report, details=judged,
            summary=f"{judged['labelled']:,} labelled predictions since {judged['since'][:10]}: "
            + "; ".join(judged["findings"]) + "." + proposal,
        )
    ]  # fmt: skip


def _previous_champion(db: Any, use_case: str, version: int) -> int | None:
    """The champion before ``version``, if there was one: what a rollback would serve."""
    events = db.scalars(
        select(registry.AliasEvent)
        .where(registry.AliasEvent.use_case == use_case, registry.AliasEvent.alias == "champion")
        .order_by(registry.AliasEvent.id.desc())
    )
    for event in events:
        earlier = db.get(registry.ModelVersion, event.version_id) if event.version_id else None
        if earlier is not None and earlier.version != version:
            return int(earlier.version)
    return None


def _summary(result: FeatureDrift) -> dict[str, Any]:
    return {
        "kind": result.kind, "psi": result.psi, "adjusted_p": result.adjusted_p, "drifted": result.drifted,
        "quality_issue": result.quality_issue, "null_rate": result.null_rate,
        "out_of_range_rate": result.out_of_range_rate, "findings": list(result.findings),
    }  # fmt: skip


def _findings(
    spec: UseCaseSpec,
    version: int,
    start: datetime,
    end: datetime,
    results: list[FeatureDrift],
    stale_rate: float | None,
    report: str,
) -> list[alerts.Finding]:
    common: dict[str, Any] = {"use_case": spec.name, "model_version": version, "window_start": start,
                              "window_end": end, "report_uri": report}  # fmt: skip
    found = []
    drifted = sorted((r for r in results if r.drifted), key=lambda r: -(r.psi or 0))
    if drifted:
        # Critical: the scores themselves moved, or an input moved far past the threshold.
        severe = any(
            r.name == "prediction" or (r.psi or 0) >= 2 * spec.monitoring.psi_threshold for r in drifted
        )
        listed = ", ".join(f"{r.name} (PSI {r.psi:.2f})" for r in drifted)
        found.append(
            alerts.Finding(
                kind="drift",
                subject="features",
                severity="critical" if severe else "warning",
                summary=f"{len(drifted)} drifted in {start:%Y-%m-%d}..{end:%Y-%m-%d}: {listed}",
                details={r.name: _summary(r) for r in drifted},
                **common,
            )
        )
    troubled = [r for r in results if r.quality_issue]
    reasons = [f"{r.name}: {', '.join(r.findings)}" for r in troubled]
    if stale_rate is not None:
        reasons.append(
            f"freshness: {stale_rate:.1%} of answers were served on stale or missing online features "
            f"(more than {spec.monitoring.max_stale_rate:.0%}): is materialization or the stream behind?"
        )
    if reasons:
        found.append(
            alerts.Finding(
                kind="data_quality",
                subject="serving inputs",
                severity="warning",
                summary=f"input quality in {start:%Y-%m-%d}..{end:%Y-%m-%d}: {'; '.join(reasons)}",
                details={r.name: _summary(r) for r in troubled} | {"stale_rate": stale_rate},
                **common,
            )
        )
    return found


def _report(
    spec: UseCaseSpec,
    tag: str,
    run: MonitorRun,
    results: list[FeatureDrift],
    profile: dict[str, Any],
    current: dict[str, Any],
    history: list[MonitorRun],
) -> Report:
    flagged = [r for r in results if r.drifted or r.quality_issue]
    ordered = flagged + [r for r in results if r not in flagged]
    window = f"{run.window_start:%Y-%m-%d %H:%M} to {run.window_end:%Y-%m-%d %H:%M} UTC"
    verdict = (
        "too few predictions to judge" if run.insufficient
        else f"{len(run.drifted)} drifted, {len(run.quality)} with input-quality findings; "
        f"{run.features['freshness']['stale_rate']:.1%} served on stale features"
    )  # fmt: skip
    trend_names = sorted({name for past in history for name in past.drifted} | {"prediction"})
    trended: tuple[str, ...]
    if spec.task == "binary_classification":
        trended, limit = ("roc_auc", "precision", "recall", "ece"), spec.gate.min_roc_auc
    else:
        trended = REGRESSION_METRICS if spec.gate.metric != "r2" else ("r2",)
        limit = spec.gate.min_value if spec.gate.higher_is_better else spec.gate.max_value
    windows = [f"{past.window_end:%m-%d}" for past in history]
    return Report(
        title=f"{spec.name} monitoring, {tag}, {window}",
        summary=[("Model", tag), ("Window", window), ("Predictions", f"{run.rows:,}"), ("Verdict", verdict),
                 ("Performance", _performance_line(run.performance)),
                 ("Policy", f"PSI >= {spec.monitoring.psi_threshold} and BH-adjusted p < "
                            f"{spec.monitoring.false_discovery_rate}")],
        table_header=["feature", "kind", "PSI", "test", "adjusted p", "missing", "drifted", "findings"],
        table_rows=[
            [r.name, r.kind, _fmt(r.psi), r.test, _fmt(r.adjusted_p, ".1e"), f"{r.null_rate:.1%}",
             "yes" if r.drifted else "no", "; ".join(r.findings)]
            for r in ordered
        ],
        distributions=[_distribution(r, _entry(profile, r.name), current[r.name]) for r in flagged],
        trends=[
            Trend("PSI by window", windows,
                  {name: [run.features.get(name, {}).get("psi") for run in history] for name in trend_names},
                  spec.monitoring.psi_threshold),
            Trend("Performance on labelled predictions (lookback) by window", windows,
                  {name: [(past.performance.get("metrics") or {}).get(name) for past in history]
                   for name in trended},
                  limit),
            Trend("Predictions by window", windows, {"rows": [float(past.rows) for past in history]}),
        ],
    )  # fmt: skip


def _performance_line(judged: dict[str, Any]) -> str:
    labelled = f"{judged['labelled']:,} labelled of {judged['served']:,} since {judged['since'][:10]}"
    positives = judged.get("positives")
    if not judged["judged"]:
        return f"not judged yet: {labelled}" + (f", {positives} positive" if positives is not None else "")
    metrics = judged["metrics"]
    verdict = "; ".join(judged["findings"]) or "within the gate's limits"
    if "rmse" in metrics:
        shown = ", ".join(f"{name} {metrics[name]:.3f}" for name in (*REGRESSION_METRICS, "bias"))
        return f"{shown} ({labelled}): {verdict}"
    return (
        f"ROC-AUC {metrics['roc_auc']:.3f}, precision {metrics['precision']:.3f} and recall "
        f"{metrics['recall']:.3f} at {metrics['threshold']}, ECE {metrics['ece']:.3f} ({labelled}): {verdict}"
    )


def _entry(profile: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(profile["prediction"] if name == "prediction" else profile["features"][name])


def _distribution(result: FeatureDrift, reference: dict[str, Any], values: Any) -> Distribution:
    """The reference's bins and the window's shares over them (categories: unseen ones pooled)."""
    import numpy as np

    present = values[~np.isnan(values)]
    caption = f"PSI {_fmt(result.psi)}; " + "; ".join(result.findings)
    if reference.get("kind") == "categorical":
        shares = reference["categories"]
        tally = Counter(category_key(v) for v in present)
        labels = [*shares, "unseen"]
        counts = [tally[label] for label in shares]
        counts.append(present.size - sum(counts))
        total = max(present.size, 1)
        return Distribution(
            result.name, labels, [*shares.values(), 0.0], [c / total for c in counts], caption
        )
    edges = np.asarray(reference.get("edges", []), dtype=float)
    binned = np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)
    bounds = ["-inf", *(f"{e:.3g}" for e in edges), "inf"]
    labels = [f"{low}..{high}" for low, high in pairwise(bounds)]
    current = (binned / max(present.size, 1)).tolist()
    return Distribution(result.name, labels, reference.get("shares", [0.0] * len(labels)), current, caption)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _report_path(use_case: str, start: datetime, end: datetime) -> Path:
    stamp = f"{start.astimezone(UTC):%Y%m%dT%H%M%S}-{end.astimezone(UTC):%Y%m%dT%H%M%S}"
    return get_settings().home / "reports" / "monitoring" / use_case / f"{stamp}.html"
