"""Experiment analysis: late labels joined to the prediction log, per-arm metrics, honest intervals, and a
proposal that an approver acts on (the analysis itself never moves an alias)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipelines import audit, registry, rollout
from pipelines import experiment_analysis as ea
from pipelines.predictions import write_rows
from pipelines.spec import UseCaseSpec
from pipelines.validate import cast_to_declared, dataset_dir, publish
from tests.registry_rows import add_version, decide

TRAINER, APPROVER = "ml-engineer", "risk-officer"
DAY = datetime(2026, 11, 20, 9, tzinfo=UTC)
SMALL = {"min_labelled": 200, "min_positives": 20}  # test-sized minimums (the defaults suit live traffic)


# --- a registry with a champion, a gated challenger and an experiment ------------------------------------


def _add_version(db: Session) -> registry.ModelVersion:
    """A version the gate passed."""
    version = add_version(db, features=("amount_aed",), created_by=TRAINER)
    decide(db, version, passed=True)
    return version


@pytest.fixture
def db(falaj_home: Path) -> Iterator[Session]:
    """fraud v1 champion, v2 gated, on the fresh platform DB of an isolated home."""
    with registry.session() as session:
        _add_version(session), _add_version(session)
        registry.promote(session, "fraud", 1, approver="demo-approver", reason="first model")
        session.commit()
        yield session


def _start(db: Session, mode: str, **options: Any) -> registry.Experiment:
    experiment = rollout.start_experiment(db, "fraud", mode, 2, APPROVER, f"try v2 ({mode})", **options)
    experiment.started_at = DAY - timedelta(hours=1)  # just before the traffic below
    db.commit()
    return experiment


# --- traffic: transactions, their scores in the log, and their labels in the lake --------------------------


def _traffic(n: int, seed: int, fraud_rate: float = 0.15) -> pd.DataFrame:
    """``n`` transactions over two days, three per customer, with labels and a shared noise per request."""
    rng = np.random.default_rng(seed)
    index = np.arange(n)
    return pd.DataFrame(
        {
            "transaction_id": [f"T{seed:02d}{i:06d}" for i in index],
            "customer_id": [f"C{seed:02d}{i // 3:05d}" for i in index],
            "event_timestamp": [DAY + timedelta(days=int(i >= 0.75 * n), seconds=int(i)) for i in index],
            "is_fraud": (rng.random(n) < fraud_rate).astype(int),
            "noise": rng.normal(0.0, 1.0, n),  # what is hard about a request, to every model alike
        }
    )


def _scores(traffic: pd.DataFrame, skill: float, seed: int) -> np.ndarray:
    """P(fraud) of a model whose separation of the classes is ``skill`` (0: coin flip)."""
    own = np.random.default_rng(seed).normal(0.0, 0.6, len(traffic))
    logit = skill * (2 * traffic["is_fraud"].to_numpy() - 1) + traffic["noise"].to_numpy() + own - 1.0
    return np.asarray(1.0 / (1.0 + np.exp(-logit)))


def _log(
    experiment: registry.Experiment,
    traffic: pd.DataFrame,
    arm: str,
    version: int,
    scores: np.ndarray,
    shadow: bool = False,
) -> None:
    """Write the rows the scoring service writes (through its own writer function)."""
    write_rows(
        [
            {
                "at": row.event_timestamp.to_pydatetime(),
                "use_case": "fraud",
                "request_id": row.transaction_id,
                "unit": row.customer_id,
                "arm": arm,
                "model_version": version,
                "experiment_id": experiment.id,
                "shadow": shadow,
                "score": None if np.isnan(score) else float(score),
                "decision": None if np.isnan(score) else ("review" if score >= 0.5 else "approve"),
                "threshold": 0.5,
                "latency_ms": 1.0,
                "degraded": False,
                "error": "model failed" if np.isnan(score) else None,
                "features": {},
                "freshness": {},
            }
            for row, score in zip(traffic.itertuples(), scores, strict=True)
        ]
    )


def _label(spec: UseCaseSpec, traffic: pd.DataFrame, days: int = 1) -> None:
    """Publish the first ``days`` days of transactions to the validated zone; later ones are not in yet."""
    day = traffic["event_timestamp"].dt.date
    for when in sorted(day.unique())[:days]:
        part = traffic[day == when].drop(columns="noise")
        frame = part.assign(
            card_id="K1",
            merchant_id="M00001",
            amount_aed=100.0,
            currency="AED",
            channel="pos",
            emirate="Dubai",
            merchant_category="grocery",
        )
        typed = cast_to_declared(frame, spec.event_source.columns)
        publish(dataset_dir(spec, "transactions", when.isoformat()), typed, version="v1")


def _ab(db: Session, spec: UseCaseSpec, challenger_skill: float, n: int = 1600) -> registry.Experiment:
    """An A/B test at 50%: each customer's transactions go to their sticky arm; day one is labelled."""
    experiment = _start(db, "ab", weight=0.5)
    traffic = _traffic(n, seed=experiment.id)
    arms = np.array([rollout.assign_arm(unit, experiment.id, 0.5) for unit in traffic["customer_id"]])
    challenger, champion = traffic[arms == "challenger"], traffic[arms == "champion"]
    _log(experiment, challenger, "challenger", 2, _scores(challenger, challenger_skill, seed=1))
    _log(experiment, champion, "champion", 1, _scores(champion, 1.0, seed=2))
    _label(spec, traffic)
    return experiment


def _aliases(db: Session) -> list[tuple[str, int | None]]:
    db.expire_all()
    return [(event.alias, event.version_id) for event in registry.alias_history(db, "fraud")]


# --- the proposals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skill", "expected"),
    [(2.0, "promote"), (0.2, "rollback"), (1.0, "continue")],
    ids=["clearly-better", "clearly-worse", "equal"],
)
def test_an_ab_review_proposes_by_the_interval_and_changes_no_alias(
    db: Session, fraud_spec: UseCaseSpec, skill: float, expected: str
) -> None:
    # Given an A/B test whose challenger separates fraud better, worse or as well as the champion
    experiment = _ab(db, fraud_spec, challenger_skill=skill)
    before = _aliases(db)

    # When the experiment is reviewed
    review = ea.review_experiment(fraud_spec, experiment.id, APPROVER, **SMALL)

    # Then the proposal follows the CI of the PR-AUC difference (and the precision test)
    assert review.proposal == expected, review.reason
    assert review.delta is not None and review.ci_low is not None and review.ci_high is not None
    assert review.ci_low <= review.delta <= review.ci_high
    if expected == "promote":
        assert review.ci_low > 0
    elif expected == "rollback":
        assert review.ci_high < 0 or (review.p_value is not None and review.p_value < 0.05)
    else:
        assert review.ci_low <= 0 <= review.ci_high and review.p_value is not None and review.p_value >= 0.05
    # And it was judged unpaired, per arm, with the gate's metric and settings
    assert (review.metric, review.confidence, review.mode) == ("pr_auc", 0.95, "ab")
    assert review.details["paired"] is False and review.details["look"] == 1
    assert {"champion", "challenger"} == set(review.arms)
    assert review.arms["challenger"]["model_version"] == 2 and review.arms["champion"]["model_version"] == 1
    # And nothing was promoted or rolled back: the aliases are exactly as before, the experiment runs on
    assert _aliases(db) == before
    assert registry.resolve_alias(db, "fraud", "champion").version == 1  # type: ignore[union-attr]
    assert rollout.active_experiment(db, "fraud") is not None


def test_the_review_is_stored_and_audited_with_its_proposal(db: Session, fraud_spec: UseCaseSpec) -> None:
    # Given a reviewed A/B test with a clearly better challenger
    experiment = _ab(db, fraud_spec, challenger_skill=2.0)
    review = ea.review_experiment(fraud_spec, experiment.id, APPROVER, **SMALL)

    # Then the review row is in the registry with its window, metrics, interval and proposal
    stored = db.scalars(select(registry.ExperimentReview)).one()
    assert (stored.id, stored.experiment_id, stored.proposal, stored.reviewed_by) == (
        review.id,
        experiment.id,
        "promote",
        APPROVER,
    )
    assert stored.window_start is not None and stored.window_end is not None
    assert stored.window_start <= stored.window_end
    assert stored.arms["challenger"]["pr_auc"] > stored.arms["champion"]["pr_auc"]
    assert stored.final is False  # the experiment is still active
    # And the audit trail holds the proposal, naming the challenger, on an intact chain
    [event] = [e for e in audit.load(db) if e["action"] == "model.experiment_review"]
    assert (event["actor"], event["resource"]) == (APPROVER, "fraud:v2")
    assert event["details"]["proposal"] == "promote" and event["details"]["review_id"] == review.id
    assert audit.verify(audit.load(db)).ok
    # And the XCom summary is small and tells the approver what to run
    summary = ea.to_xcom(review)
    assert summary["proposal"] == "promote" and "falaj models promote fraud:v2" in summary["message"]


def test_too_few_labels_give_insufficient_data(db: Session, fraud_spec: UseCaseSpec) -> None:
    # Given an A/B test that has seen only 120 transactions
    experiment = _ab(db, fraud_spec, challenger_skill=2.0, n=120)

    # When it is reviewed against the default minimums
    review = ea.review_experiment(fraud_spec, experiment.id, APPROVER)

    # Then nothing is proposed, and the reason names the shortfall
    assert review.proposal == "insufficient_data"
    assert "labelled predictions, 500 needed" in review.reason
    assert review.ci_low is None and review.ci_high is None and review.p_value is None


def test_late_labels_are_counted_as_pending_not_dropped(db: Session, fraud_spec: UseCaseSpec) -> None:
    # Given an A/B test over two days whose second day has no labels yet
    experiment = _ab(db, fraud_spec, challenger_skill=1.0)

    # When its labelled predictions are read
    frame = ea.labelled_predictions(fraud_spec, experiment.id)

    # Then every logged prediction is there, the unlabelled ones with a NaN label
    assert len(frame) == 1600
    assert frame["label"].isna().sum() == 400
    assert frame.loc[frame["at"] >= DAY + timedelta(days=1), "label"].isna().all()
    # And the analysis counts them per arm as pending
    analysis = ea.analyse(frame, 0.5, **SMALL)
    arms = analysis.arms
    assert arms["champion"].pending + arms["challenger"].pending == 400
    assert arms["champion"].labelled + arms["challenger"].labelled == 1200
    assert all(arm.n == arm.labelled + arm.pending + arm.failed for arm in arms.values())

    # When the second day's labels land, the same review has none pending
    _label(fraud_spec, _traffic(1600, seed=experiment.id), days=2)
    later = ea.analyse(ea.labelled_predictions(fraud_spec, experiment.id), 0.5, **SMALL)
    assert later.arms["champion"].pending == later.arms["challenger"].pending == 0


def test_a_shadow_is_analysed_paired_on_the_same_requests(db: Session, fraud_spec: UseCaseSpec) -> None:
    # Given a shadow experiment: every request scored by the champion (served) and the challenger (copy)
    experiment = _start(db, "shadow")
    traffic = _traffic(900, seed=experiment.id)
    _log(experiment, traffic, "champion", 1, _scores(traffic, 1.0, seed=3))
    _log(experiment, traffic, "challenger", 2, _scores(traffic, 1.4, seed=4), shadow=True)
    _label(fraud_spec, traffic)

    # When it is reviewed
    review = ea.review_experiment(fraud_spec, experiment.id, APPROVER, **SMALL)

    # Then the shadow rows are the challenger's, compared on the same labelled requests, paired
    assert review.details["paired"] is True
    assert review.details["compared"] == review.arms["challenger"]["labelled"] == 675
    assert review.arms["champion"]["labelled"] == 675
    assert review.proposal == "promote", review.reason

    # And pairing is what makes the difference visible: unpaired, the same rows give a wider interval
    frame = ea.labelled_predictions(fraud_spec, experiment.id)
    paired = ea.analyse(frame, 0.5, paired=True, **SMALL)
    unpaired = ea.analyse(frame, 0.5, paired=False, **SMALL)
    assert paired.ci_low is not None and paired.ci_high is not None
    assert unpaired.ci_low is not None and unpaired.ci_high is not None
    assert paired.ci_high - paired.ci_low < 0.75 * (unpaired.ci_high - unpaired.ci_low)
    assert paired.delta == pytest.approx(unpaired.delta)


def test_a_failed_challenger_counts_against_it_and_other_versions_are_left_out(
    db: Session, fraud_spec: UseCaseSpec
) -> None:
    # Given an A/B test where the challenger failed on one request (the champion answered it instead),
    # a client retried another, and the log holds a row of a version outside the experiment
    experiment = _start(db, "ab", weight=0.5)
    traffic = _traffic(6, seed=experiment.id)
    one, two, three = (traffic.iloc[[i]] for i in range(3))
    _log(experiment, one, "challenger", 2, np.array([np.nan]))
    _log(experiment, one, "champion", 1, np.array([0.9]))
    _log(experiment, two, "champion", 1, np.array([0.2]))
    _log(experiment, two, "champion", 1, np.array([0.3]))
    _log(experiment, three, "champion", 2, np.array([0.7]))  # v2 promoted mid-experiment: compares nothing

    # When the log is read
    frame = ea.labelled_predictions(fraud_spec, experiment.id)

    # Then the failure is the challenger's, its fallback is nobody's, the retry counts once (its last score)
    assert sorted(zip(frame["arm"], frame["request_id"], strict=True)) == [
        ("challenger", one["transaction_id"].item()),
        ("champion", two["transaction_id"].item()),
    ]
    analysis = ea.analyse(frame, 0.5, **SMALL)
    assert (analysis.arms["challenger"].failed, analysis.arms["champion"].n) == (1, 1)
    assert frame.loc[frame["arm"] == "champion", "score"].item() == 0.3


def test_review_all_covers_the_active_and_recently_ended_until_a_final_review(
    db: Session, fraud_spec: UseCaseSpec
) -> None:
    # Given an A/B test, fully labelled, that has been stopped
    experiment = _ab(db, fraud_spec, challenger_skill=2.0)
    _label(fraud_spec, _traffic(1600, seed=experiment.id), days=2)
    rollout.stop_experiment(db, "fraud", APPROVER, "enough traffic")
    db.commit()

    # When every due experiment is reviewed
    [review] = ea.review_all(fraud_spec, APPROVER, **SMALL)

    # Then the ended one got its final review (no label pending), and the next run has nothing left to do
    assert (review.experiment_id, review.final, review.proposal) == (experiment.id, True, "promote")
    assert ea.review_all(fraud_spec, APPROVER, **SMALL) == []

    # And an active experiment is reviewed on every run, each review a new look
    active = _start(db, "canary", steps=[0.5, 1.0])
    first = ea.review_all(fraud_spec, APPROVER, **SMALL)
    second = ea.review_all(fraud_spec, APPROVER, **SMALL)
    assert [(r.experiment_id, r.proposal) for r in first] == [(active.id, "insufficient_data")]
    assert (second[0].details["look"], second[0].final) == (2, False)


def test_an_experiment_ended_long_ago_is_left_alone(db: Session, fraud_spec: UseCaseSpec) -> None:
    experiment = _ab(db, fraud_spec, challenger_skill=1.0)
    rollout.roll_back_experiment(db, "fraud", APPROVER, "breached", {"by": "hand"})
    db.commit()
    later = datetime.now(UTC) + timedelta(days=ea.ENDED_WITHIN_DAYS + 1)
    assert ea.review_all(fraud_spec, APPROVER, now=later, **SMALL) == []
    assert [r.experiment_id for r in ea.review_all(fraud_spec, APPROVER, **SMALL)] == [experiment.id]


def test_another_use_cases_experiment_and_bad_arguments_are_refused(
    db: Session, fraud_spec: UseCaseSpec
) -> None:
    with pytest.raises(ea.ExperimentNotFoundError, match="fraud has no experiment #99"):
        ea.labelled_predictions(fraud_spec, 99)
    frame = pd.DataFrame(columns=list(ea.COLUMNS))
    with pytest.raises(ValueError, match="unknown metric"):
        ea.analyse(frame, 0.5, metric="accuracy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold must be in"):
        ea.analyse(frame, 1.5)
    with pytest.raises(ValueError, match="lacks column"):
        ea.analyse(frame.drop(columns="label"), 0.5)
    with pytest.raises(registry.PromotionRefusedError, match=r"may not model\.read"):
        ea.review_experiment(fraud_spec, 1, "scoring-client")


# --- the statistics on their own ------------------------------------------------------------------------


def _frame(arm: str, y: list[int], p: list[float], units: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": [f"{arm}-{i}" for i in range(len(y))],
            "unit": units,
            "arm": arm,
            "model_version": 1 if arm == "champion" else 2,
            "score": p,
            "at": pd.Timestamp(DAY),
            "label": np.asarray(y, dtype=float),
        }
    )


def test_the_precision_test_is_the_two_proportion_test_with_one_row_per_unit() -> None:
    # Given 200 flagged rows per arm, one per unit: precision 0.60 (challenger) vs 0.50 (champion)
    rng = np.random.default_rng(0)
    y_c, y_h = [1] * 120 + [0] * 80, [1] * 100 + [0] * 100
    challenger = _frame("challenger", y_c, list(rng.uniform(0.6, 1, 200)), [f"a{i}" for i in range(200)])
    champion = _frame("champion", y_h, list(rng.uniform(0.6, 1, 200)), [f"b{i}" for i in range(200)])

    # When analysed
    analysis = ea.analyse(
        pd.concat([challenger, champion]), 0.5, resamples=200, min_labelled=10, min_positives=10
    )

    # Then it is the unpooled Wald test up to the k/(k−1) small-sample factor
    se = np.sqrt(0.6 * 0.4 / 200 + 0.5 * 0.5 / 200) * np.sqrt(200 / 199)
    assert analysis.precision_delta == pytest.approx(0.1)
    assert analysis.z == pytest.approx(0.1 / se)


def test_correlated_transactions_of_a_unit_widen_the_precision_test() -> None:
    # Given 40 customers of 10 flagged transactions each, every customer's transactions sharing one label
    # (fully correlated), the challenger's 20 customers more often fraud than the champion's
    rng = np.random.default_rng(1)
    per_unit = (rng.random(40) < np.r_[np.full(20, 0.7), np.full(20, 0.3)]).astype(int)
    y, p = list(np.repeat(per_unit, 10)), list(rng.uniform(0.6, 1, 400))

    def z(units: list[str]) -> float:
        frame = pd.concat(
            [
                _frame("challenger", y[:200], p[:200], units[:200]),
                _frame("champion", y[200:], p[200:], units[200:]),
            ]
        )
        result = ea.analyse(frame, 0.5, resamples=100, min_labelled=10, min_positives=5)
        assert result.z is not None and result.precision_delta not in (None, 0.0)
        return abs(result.z)

    # When the rows are tested as if each were its own unit, and as the customers they belong to
    naive, robust = z([f"u{i}" for i in range(400)]), z([f"u{i // 10}" for i in range(400)])

    # Then clustering by unit keeps ten copies of one outcome from counting as ten outcomes (~sqrt(10))
    assert robust < naive / 2
