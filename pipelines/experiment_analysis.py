"""Experiment analysis: join late-arriving labels to an experiment's prediction log, compare the two arms,
and propose promotion or rollback to an approver. Nothing here moves an alias: an approver acts with
``falaj models promote`` or ``falaj rollout stop --rolled-back``.

Which predictions count (:func:`labelled_predictions`):

- A/B and canary: the non-shadow rows, by the arm the unit was assigned to. A challenger that failed on a
  request counts as a challenger failure; the champion's fallback answer to that request is left out, so
  the champion arm keeps only the champion's own units (the split stays randomized).
- Shadow: the shadow rows are the challenger's, the served rows the champion's, on the same requests.
- Only rows of the experiment's two versions: after a promotion mid-experiment the log keeps the
  experiment id while the new champion answers alone, and those rows compare nothing.
- A request logged twice for an arm (a client retry) counts once, its last score.
- Labels come from the validated zone of the use case's event source (``training_set.id_column`` joins
  ``Prediction.request_id``). Labels arrive late: a scored row without one is counted as pending.

The statistics (:func:`analyse`), chosen for what the data is:

- Units (customers, cards) are what an A/B split randomizes, and one unit's transactions are correlated
  (a compromised card bursts). Rows are not independent, so every interval resamples or linearizes by unit
  (a cluster bootstrap; a cluster-robust variance); treating rows as independent would make the intervals
  too narrow and the proposals too eager.
- The primary metric (the gate's: PR-AUC or ROC-AUC) differs between challenger and champion by ``delta``;
  its percentile CI comes from a bootstrap of units. A/B and canary arms hold different units, so each arm
  is resampled on its own (unpaired). A shadow scores the same requests with both models, so both are
  scored on the same resampled units (paired), on the requests both scored and that are labelled: the
  spread then reflects the traffic, not the two models' shared luck, and the interval is tighter.
- At the served threshold, precision (the share of flagged transactions that are fraud) is compared with
  a two-sided Wald z-test of the difference of the two proportions, with a cluster-robust variance: the
  ratio's linearization summed per unit (with the covariance of the two arms in a shadow, where they share
  units). With one transaction per unit it is the textbook unpooled two-proportion test.
- A canary's challenger share grows by steps, so its rows lean towards the later days: if the fraud rate
  drifts during the experiment, PR-AUC (which depends on the base rate) moves with the mix; ROC-AUC does
  not, and every review carries both per arm for an approver to weigh.
- Before any proposal each arm needs ``min_labelled`` labelled rows and ``min_positives`` of each class
  (the shadow's paired rows too); otherwise the proposal is ``insufficient_data``.
- The intervals are not adjusted for repeated looks: the daily DAG reviews an active experiment every day,
  and a CI checked daily excludes 0 by chance more often than 1 − confidence. Each review records its look
  number; the final review (the experiment ended, no label pending) is the one to act on, and a proposal
  is only ever a proposal.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipelines import audit, lake, registry

# The gate's weighted-resample metric: the same tie handling as scikit-learn, vectorized over resamples.
from pipelines.gate_policy import _CHUNK_CELLS, _weighted_metric, metric_value
from pipelines.registry import Experiment, ExperimentReview, ModelVersion, Prediction
from pipelines.spec import Metric, UseCaseSpec

if TYPE_CHECKING:
    import pandas as pd

ACTION = "model.experiment_review"
Proposal = Literal["promote", "rollback", "continue", "insufficient_data"]
ARMS = ("champion", "challenger")
MIN_LABELLED = 500
MIN_POSITIVES = 20
ENDED_WITHIN_DAYS = 30
COLUMNS = ("request_id", "unit", "arm", "model_version", "score", "at", "label")


class ExperimentNotFoundError(LookupError):
    """The experiment does not exist, or belongs to another use case."""


@dataclass(frozen=True)
class ArmMetrics:
    """One arm's counts and metrics; metrics are over its labelled, scored rows (None where undefined).

    Attributes:
        n: Requests logged for the arm (failed ones included).
        failed: Requests the arm's model failed on (no score).
        pending: Scored requests whose label has not arrived yet.
        flagged: Labelled requests scored at or above the threshold (the served ``review`` decision).
    """

    model_version: int | None
    n: int
    failed: int
    labelled: int
    pending: int
    positives: int
    units: int
    flagged: int
    roc_auc: float | None
    pr_auc: float | None
    precision: float | None
    recall: float | None
    brier: float | None


@dataclass(frozen=True)
class Analysis:
    """Both arms, the challenger − champion difference with its CI, and the precision test.

    Attributes:
        compared: Rows behind ``delta``: the paired requests of a shadow, else both arms' labelled rows.
        delta: Challenger − champion on ``metric``; None unless both arms hold both classes.
        ci_low: Lower bound of the two-sided ``confidence`` CI of ``delta``; None if insufficient.
        precision_delta: Challenger − champion precision at ``threshold``.
        p_value: Two-sided p-value of the precision test; None if insufficient or undefined.
        problems: Why the data is insufficient; empty when it suffices.
    """

    metric: Metric
    threshold: float
    paired: bool
    arms: dict[str, ArmMetrics]
    compared: int
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    resamples: int
    seed: int
    precision_delta: float | None
    z: float | None
    p_value: float | None
    min_labelled: int
    min_positives: int
    problems: tuple[str, ...] = ()
    window_start: datetime | None = None
    window_end: datetime | None = None
    tests: dict[str, str] = field(default_factory=dict)

    @property
    def sufficient(self) -> bool:
        return not self.problems

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence


# --- the labelled prediction log --------------------------------------------------------------------------


def _experiment(db: Session, spec: UseCaseSpec, experiment_id: int) -> Experiment:
    experiment = db.get(Experiment, experiment_id)
    if experiment is None or experiment.use_case != spec.name:
        raise ExperimentNotFoundError(f"{spec.name} has no experiment #{experiment_id}")
    return experiment


def _arm_versions(db: Session, experiment: Experiment) -> dict[str, int]:
    champion = db.get(ModelVersion, experiment.champion_id)
    challenger = db.get(ModelVersion, experiment.challenger_id)
    assert champion is not None and challenger is not None  # foreign keys
    return {"champion": champion.version, "challenger": challenger.version}


def _partition_day(path: Any) -> date | None:
    try:
        return date.fromisoformat(path.parent.name.removeprefix("partition="))
    except ValueError:
        return None  # an unpartitioned snapshot: always read


def load_labels(spec: UseCaseSpec, since: date | None, extra: Sequence[str] = ()) -> pd.DataFrame:
    """``request_id`` -> ``label`` (and the ``extra`` source columns, e.g. slices) from the validated event
    source, from the day before ``since`` on.

    Only these columns of the partitions that can hold the transactions are read; a later partition's
    label for the same transaction wins (a corrected landing).
    """
    import pandas as pd

    source, id_column = spec.training_set.entity_source, spec.training_set.id_column
    first = since - timedelta(days=1) if since is not None else None
    paths = sorted(lake.zone_dir("validated", spec.name, source).glob("partition=*/data.parquet"))
    wanted = [p for p in paths if first is None or (day := _partition_day(p)) is None or day >= first]
    if not wanted:
        empty = {"request_id": pd.Series(dtype=str), "label": pd.Series(dtype="float64")}
        return pd.DataFrame({**empty, **{column: pd.Series(dtype=str) for column in extra}})
    labels = pd.concat(
        [pd.read_parquet(p, columns=[id_column, spec.label, *extra]) for p in wanted], ignore_index=True
    )
    labels = labels.dropna(subset=[spec.label]).drop_duplicates(subset=[id_column], keep="last")
    return pd.DataFrame(
        {
            "request_id": labels[id_column].astype(str),
            "label": labels[spec.label].astype("float64"),
            **{column: labels[column] for column in extra},
        }
    )


def _arm_rows(frame: pd.DataFrame, mode: str, versions: Mapping[str, int]) -> pd.DataFrame:
    """The rows each arm is judged on (see the module docstring), in log order."""
    if mode == "shadow":
        frame = frame.assign(arm=np.where(frame["shadow"], "challenger", "champion"))
    else:
        frame = frame[~frame["shadow"]]
        challenger_failed = frame["request_id"][(frame["arm"] == "challenger") & frame["score"].isna()]
        fallback = (frame["arm"] == "champion") & frame["request_id"].isin(set(challenger_failed))
        frame = frame[~fallback]
    own_version = frame["model_version"] == frame["arm"].map(versions)
    frame = frame[own_version]
    return frame.drop_duplicates(subset=["arm", "request_id"], keep="last")


def labelled_predictions(spec: UseCaseSpec, experiment_id: int) -> pd.DataFrame:
    """The experiment's logged predictions per arm, joined to the labels that have arrived.

    Returns:
        One row per (arm, request): ``request_id``, ``unit``, ``arm`` (champion or challenger),
        ``model_version``, ``score`` (NaN where the model failed), ``at`` and ``label`` (1.0, 0.0, or NaN
        while pending). Rows without a label are kept: they are counted as pending, never dropped.

    Raises:
        ExperimentNotFoundError: No such experiment for this use case.
    """
    import pandas as pd

    with registry.session() as db:
        experiment = _experiment(db, spec, experiment_id)
        versions, mode = _arm_versions(db, experiment), experiment.mode
        logged = db.execute(
            select(
                Prediction.request_id,
                Prediction.unit,
                Prediction.arm,
                Prediction.model_version,
                Prediction.shadow,
                Prediction.score,
                Prediction.at,
            )
            .where(Prediction.use_case == spec.name, Prediction.experiment_id == experiment_id)
            # Bounds the scan by the (use_case, at) index; the margin allows for servers' clock skew.
            .where(Prediction.at >= experiment.started_at - timedelta(days=1))
            .order_by(Prediction.id)
        ).all()
    frame = pd.DataFrame(
        [tuple(row) for row in logged],
        columns=["request_id", "unit", "arm", "model_version", "shadow", "score", "at"],
    )
    frame = frame.astype({"request_id": str, "unit": str, "arm": str, "shadow": bool, "score": "float64"})
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    frame = _arm_rows(frame, mode, versions)
    since = frame["at"].min().date() if len(frame) else None
    joined = frame.merge(load_labels(spec, since), on="request_id", how="left", validate="many_to_one")
    return joined[list(COLUMNS)].reset_index(drop=True)


# --- the statistics --------------------------------------------------------------------------------------


def _arm_metrics(rows: pd.DataFrame, threshold: float) -> ArmMetrics:
    scored = rows[rows["score"].notna()]
    labelled = scored[scored["label"].notna()]
    y = labelled["label"].to_numpy(dtype=np.float64)
    p = labelled["score"].to_numpy(dtype=np.float64)
    positives = int(y.sum())
    flagged = p >= threshold  # as served: "review" at or above the threshold
    both = 0 < positives < len(y)
    versions = rows["model_version"].unique()
    return ArmMetrics(
        model_version=int(versions[-1]) if len(versions) else None,
        n=len(rows),
        failed=len(rows) - len(scored),
        labelled=len(labelled),
        pending=len(scored) - len(labelled),
        positives=positives,
        units=int(labelled["unit"].nunique()),
        flagged=int(flagged.sum()),
        roc_auc=metric_value("roc_auc", y, p) if both else None,
        pr_auc=metric_value("pr_auc", y, p) if both else None,
        precision=float(y[flagged].mean()) if flagged.any() else None,
        recall=float(flagged[y == 1].mean()) if positives else None,
        brier=float(np.mean((p - y) ** 2)) if len(y) else None,
    )


@dataclass(frozen=True)
class _Sample:
    """Labelled rows the comparison uses: labels, scores and each row's unit as a code 0..units-1."""

    y: np.ndarray
    p: np.ndarray
    unit: np.ndarray
    units: int

    @classmethod
    def of(cls, y: Any, p: Any, units: Any) -> _Sample:
        import pandas as pd

        codes, uniques = pd.factorize(pd.Series(units, dtype=str))
        return cls(np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64), codes, len(uniques))


def _unit_weights(sample: _Sample, size: int, rng: np.random.Generator) -> np.ndarray:
    """Row weights (rows × size) of ``size`` cluster-bootstrap resamples: units drawn with replacement,
    each row weighted by how often its unit was drawn."""
    k = sample.units
    draws = rng.integers(0, k, size=(size, k)) + (np.arange(size) * k)[:, None]
    counts = np.bincount(draws.ravel(), minlength=size * k).reshape(size, k).T
    return np.asarray(counts[sample.unit], dtype=np.float64)


def _chunks(resamples: int, rows: int) -> Iterator[int]:
    chunk = max(1, min(resamples, _CHUNK_CELLS // max(rows, 1)))
    for done in range(0, resamples, chunk):
        yield min(chunk, resamples - done)


def _bootstrap_ci(
    challenger: _Sample,
    champion: _Sample,
    metric: Metric,
    resamples: int,
    confidence: float,
    seed: int,
    paired: bool,
) -> tuple[float | None, float | None]:
    """Percentile CI of challenger − champion by a bootstrap of units (shared resamples when paired).

    A resample holding a single class has no AUC and is skipped; (None, None) if none holds both.
    """
    rng = np.random.default_rng(seed)
    rows = max(len(challenger.y), len(champion.y))
    spread = []
    for size in _chunks(resamples, rows):
        w_challenger = _unit_weights(challenger, size, rng)
        w_champion = w_challenger if paired else _unit_weights(champion, size, rng)
        spread.append(
            _weighted_metric(metric, challenger.y, challenger.p, w_challenger)
            - _weighted_metric(metric, champion.y, champion.p, w_champion)
        )
    deltas = np.concatenate(spread)
    deltas = deltas[np.isfinite(deltas)]
    if deltas.size == 0:
        return None, None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(deltas, [tail, 1.0 - tail])
    return float(low), float(high)


def _precision_influence(sample: _Sample, threshold: float, units: int) -> tuple[float, np.ndarray] | None:
    """Precision at the threshold and each unit's linearized contribution to its error (None: no flag)."""
    flagged = (sample.p >= threshold).astype(np.float64)
    total = flagged.sum()
    if total == 0:
        return None
    precision = float((flagged * sample.y).sum() / total)
    per_unit_flagged = np.bincount(sample.unit, weights=flagged, minlength=units)
    per_unit_hits = np.bincount(sample.unit, weights=flagged * sample.y, minlength=units)
    return precision, (per_unit_hits - precision * per_unit_flagged) / total


def _precision_test(
    challenger: _Sample, champion: _Sample, threshold: float, paired: bool
) -> tuple[float | None, float | None, float | None]:
    """(challenger − champion precision, z, two-sided p) of a Wald test with cluster-robust variance.

    Var(precision) of a ratio of sums over units is k/(k−1) Σ_u e_u², e_u the unit's linearized term.
    Unpaired arms are independent, so their variances add; paired arms share units (the same codes), so
    the difference is linearized per unit and its variance includes the covariance.
    """
    units = challenger.units if paired else None
    ours = _precision_influence(challenger, threshold, units or challenger.units)
    theirs = _precision_influence(champion, threshold, units or champion.units)
    if ours is None or theirs is None:
        return None, None, None
    difference = ours[0] - theirs[0]

    def variance(terms: np.ndarray) -> float:
        k = len(terms)
        return float(k / (k - 1) * np.sum(terms**2)) if k > 1 else math.nan

    var = variance(ours[1] - theirs[1]) if paired else variance(ours[1]) + variance(theirs[1])
    if not math.isfinite(var):
        return difference, None, None
    if var == 0:
        return difference, None, (1.0 if difference == 0 else 0.0)
    z = difference / math.sqrt(var)
    return difference, z, math.erfc(abs(z) / math.sqrt(2.0))


def _shortfalls(name: str, labelled: int, positives: int, min_labelled: int, min_positives: int) -> list[str]:
    problems = []
    if labelled < min_labelled:
        problems.append(f"{name} has {labelled} labelled predictions, {min_labelled} needed")
    if positives < min_positives or labelled - positives < min_positives:
        problems.append(
            f"{name} has {positives} positives and {labelled - positives} negatives, "
            f"{min_positives} of each needed"
        )
    return problems


def analyse(
    frame: pd.DataFrame,
    threshold: float,
    metric: Metric = "pr_auc",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    paired: bool = False,
    min_labelled: int = MIN_LABELLED,
    min_positives: int = MIN_POSITIVES,
) -> Analysis:
    """Per-arm metrics, challenger − champion on ``metric`` with a unit-bootstrap CI, and a precision test.

    Args:
        frame: As :func:`labelled_predictions` returns it.
        threshold: The served threshold: a score at or above it was flagged for review.
        metric: The primary metric, ``pr_auc`` or ``roc_auc``.
        resamples: Bootstrap resamples of units.
        confidence: Two-sided level of the CI; the precision test is judged at 1 − confidence.
        seed: Seeds the resampling: the same rows give the same interval.
        paired: The arms scored the same requests (a shadow): compare on the requests both scored.
        min_labelled: Labelled rows each arm (and a shadow's paired rows) needs before a proposal.
        min_positives: Positives and negatives each of them needs.

    Raises:
        ValueError: A column is missing, or an argument is out of range.
    """
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"the frame lacks column(s) {', '.join(missing)}; build it with labelled_predictions"
        )
    if metric not in get_args(Metric):
        raise ValueError(f"unknown metric '{metric}'; one of {', '.join(get_args(Metric))}")
    if not 0.0 <= threshold <= 1.0 or resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError("threshold must be in [0, 1], resamples positive and confidence in (0, 1)")
    if min_labelled < 1 or min_positives < 1:
        raise ValueError("min_labelled and min_positives must be at least 1")

    arms = {arm: _arm_metrics(frame[frame["arm"] == arm], threshold) for arm in ARMS}
    usable = frame[frame["score"].notna() & frame["label"].notna()]
    if paired:
        both = usable[usable["arm"] == "challenger"].merge(
            usable[usable["arm"] == "champion"], on="request_id", suffixes=("_c", "_h")
        )
        challenger = _Sample.of(both["label_c"], both["score_c"], both["unit_c"])
        champion = _Sample.of(both["label_h"], both["score_h"], both["unit_c"])
        compared = len(both)
    else:
        samples = {
            arm: _Sample.of(rows["label"], rows["score"], rows["unit"]) for arm, rows in usable.groupby("arm")
        }
        empty = _Sample.of([], [], [])
        challenger, champion = samples.get("challenger", empty), samples.get("champion", empty)
        compared = len(challenger.y) + len(champion.y)

    problems = []
    for name, arm in arms.items():
        problems += _shortfalls(name, arm.labelled, arm.positives, min_labelled, min_positives)
    if paired:
        problems += _shortfalls(
            "the paired requests", compared, int(challenger.y.sum()), min_labelled, min_positives
        )

    def scorable(sample: _Sample) -> bool:
        return 0 < sample.y.sum() < len(sample.y)

    delta = None
    if scorable(challenger) and scorable(champion):
        delta = metric_value(metric, challenger.y, challenger.p) - metric_value(
            metric, champion.y, champion.p
        )
    low = high = z = p_value = precision_delta = None
    if not problems:
        low, high = _bootstrap_ci(challenger, champion, metric, resamples, confidence, seed, paired)
        precision_delta, z, p_value = _precision_test(challenger, champion, threshold, paired)
    kind = "paired, on the requests both arms scored" if paired else "unpaired, each arm on its own units"
    tests = {
        "delta": f"{metric} challenger − champion, {confidence:.0%} percentile CI, unit bootstrap ({kind})",
        "precision": f"precision at {threshold:g}: two-sided Wald z-test, cluster-robust (unit) variance",
    }
    at = frame["at"].dropna()
    return Analysis(
        metric=metric,
        threshold=threshold,
        paired=paired,
        arms=arms,
        compared=compared,
        delta=delta,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        precision_delta=precision_delta,
        z=z,
        p_value=p_value,
        min_labelled=min_labelled,
        min_positives=min_positives,
        problems=tuple(problems),
        window_start=at.min().to_pydatetime() if len(at) else None,
        window_end=at.max().to_pydatetime() if len(at) else None,
        tests=tests,
    )


def judge(analysis: Analysis) -> tuple[Proposal, str]:
    """The proposal and why, in words an approver can check against the numbers.

    ``rollback`` when the CI lies below 0, or when the challenger's precision at the threshold is
    significantly lower (it costs now, at the served decision, whatever its ranking); ``promote`` when the
    CI lies above 0; ``continue`` otherwise; ``insufficient_data`` before the minimums are met.
    """
    if not analysis.sufficient:
        return "insufficient_data", "; ".join(analysis.problems)
    if analysis.delta is None or analysis.ci_low is None or analysis.ci_high is None:
        return "insufficient_data", "no bootstrap resample held both classes in both arms"
    interval = (
        f"{analysis.metric} challenger − champion {analysis.delta:+.4f}, {analysis.confidence:.0%} CI "
        f"[{analysis.ci_low:+.4f}, {analysis.ci_high:+.4f}]"
    )
    precision = "precision test undefined (an arm flagged nothing)"
    if analysis.precision_delta is not None:
        shown = "n/a" if analysis.p_value is None else f"{analysis.p_value:.3g}"
        precision = f"precision at {analysis.threshold:g} {analysis.precision_delta:+.4f} (p = {shown})"
    worse_precision = (
        analysis.p_value is not None
        and analysis.precision_delta is not None
        and analysis.precision_delta < 0
        and analysis.p_value < analysis.alpha
    )
    if analysis.ci_high < 0:
        return "rollback", f"the challenger ranks worse: {interval}; {precision}"
    if worse_precision:
        return "rollback", (
            f"the challenger's {precision} is significantly lower at alpha {analysis.alpha:.3g}; {interval}"
        )
    if analysis.ci_low > 0:
        return "promote", f"the challenger ranks better: {interval}; {precision}"
    return "continue", f"no significant difference yet: {interval}; {precision}"


def propose(analysis: Analysis) -> Proposal:
    """``promote``, ``rollback``, ``continue`` or ``insufficient_data`` (see :func:`judge` for the rule)."""
    return judge(analysis)[0]


# --- reviews in the registry -----------------------------------------------------------------------------


def review_experiment(
    spec: UseCaseSpec,
    experiment_id: int,
    actor: str,
    *,
    min_labelled: int = MIN_LABELLED,
    min_positives: int = MIN_POSITIVES,
) -> ExperimentReview:
    """Analyse an experiment, store the review with its proposal, and audit it; never promote or roll back.

    The metric, resamples, confidence and seed are the use case's gate policy's; the threshold is the
    served one. An approver acts on the proposal with ``falaj models promote`` or
    ``falaj rollout stop --rolled-back``.

    Raises:
        ExperimentNotFoundError: No such experiment for this use case.
        registry.PromotionRefusedError: ``actor`` may not read the use case's models.
    """
    registry._require_role(actor, "model.read", spec.name)
    if spec.serving.threshold is None:
        raise ValueError(f"{spec.name} is a {spec.task} use case: experiments are analysed for binary ones")
    frame = labelled_predictions(spec, experiment_id)
    with registry.session() as db, db.begin():
        experiment = _experiment(db, spec, experiment_id)
        analysis = analyse(
            frame,
            spec.serving.threshold,
            spec.gate.metric,  # an AUC: binary classification
            spec.gate.bootstrap_resamples,
            spec.gate.confidence,
            spec.gate.bootstrap_seed,
            paired=experiment.mode == "shadow",
            min_labelled=min_labelled,
            min_positives=min_positives,
        )
        proposal, reason = judge(analysis)
        pending = sum(arm.pending for arm in analysis.arms.values())
        tags = {arm: f"{spec.name}:v{number}" for arm, number in _arm_versions(db, experiment).items()}
        looks = db.scalar(
            select(func.count(ExperimentReview.id)).where(ExperimentReview.experiment_id == experiment_id)
        )
        details = {
            "look": (looks or 0) + 1,
            "paired": analysis.paired,
            "compared": analysis.compared,
            "resamples": analysis.resamples,
            "seed": analysis.seed,
            "precision_delta": analysis.precision_delta,
            "z": analysis.z,
            "min_labelled": analysis.min_labelled,
            "min_positives": analysis.min_positives,
            "pending": pending,
            "tests": analysis.tests,
            "experiment_status": experiment.status,
            **tags,
        }
        review = ExperimentReview(
            experiment_id=experiment.id,
            use_case=spec.name,
            mode=experiment.mode,
            window_start=analysis.window_start,
            window_end=analysis.window_end,
            metric=analysis.metric,
            threshold=analysis.threshold,
            arms={name: asdict(arm) for name, arm in analysis.arms.items()},
            delta=analysis.delta,
            ci_low=analysis.ci_low,
            ci_high=analysis.ci_high,
            confidence=analysis.confidence,
            p_value=analysis.p_value,
            proposal=proposal,
            reason=reason[:1024],
            final=experiment.status != "active" and pending == 0,
            details=details,
            reviewed_by=actor,
        )
        db.add(review)
        db.flush()
        audit.record(
            db,
            ACTION,
            tags["challenger"],
            actor=actor,
            reason=reason,
            details={
                "review_id": review.id,
                "experiment_id": experiment.id,
                "proposal": proposal,
                "delta": analysis.delta,
                "ci": [analysis.ci_low, analysis.ci_high],
                "p_value": analysis.p_value,
                "final": review.final,
            },
        )
    return review


def review_all(
    spec: UseCaseSpec,
    actor: str,
    *,
    ended_within_days: int = ENDED_WITHIN_DAYS,
    now: datetime | None = None,
    min_labelled: int = MIN_LABELLED,
    min_positives: int = MIN_POSITIVES,
) -> list[ExperimentReview]:
    """Review the active experiment and those ended in the last ``ended_within_days`` without a final
    review yet (late labels keep arriving after an experiment ends), oldest first."""
    since = (now or datetime.now(UTC)) - timedelta(days=ended_within_days)
    with registry.session() as db:
        finished = set(
            db.scalars(select(ExperimentReview.experiment_id).where(ExperimentReview.final.is_(True)))
        )
        candidates = db.scalars(
            select(Experiment).where(Experiment.use_case == spec.name).order_by(Experiment.id)
        ).all()
        due = [
            experiment.id
            for experiment in candidates
            if experiment.status == "active"
            or (
                experiment.id not in finished
                and experiment.ended_at is not None
                and registry.as_utc(experiment.ended_at) >= since
            )
        ]
    return [
        review_experiment(spec, experiment_id, actor, min_labelled=min_labelled, min_positives=min_positives)
        for experiment_id in due
    ]


def next_step(review: ExperimentReview) -> str:
    """What an approver runs if they agree with the proposal (nothing for continue or insufficient data)."""
    if review.proposal == "promote":
        return f"falaj models promote {review.details['challenger']} --reason '...'"
    if review.proposal == "rollback" and review.details.get("experiment_status") == "active":
        return f"falaj rollout stop {review.use_case} --rolled-back --reason '...'"
    return ""


def to_xcom(review: ExperimentReview) -> dict[str, Any]:
    """Ids, the proposal and a one-paragraph message: small enough for XCom and a chat alert."""
    step = next_step(review)
    message = (
        f"{review.use_case} experiment #{review.experiment_id} ({review.mode}) review #{review.id}: "
        f"proposes {review.proposal}: {review.reason}"
    )
    if step:
        message += f". An approver decides: {step}"
    return {
        "review_id": review.id,
        "experiment_id": review.experiment_id,
        "proposal": review.proposal,
        "final": review.final,
        "message": message[:2000],
    }
