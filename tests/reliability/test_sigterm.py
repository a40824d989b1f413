"""SIGTERM to the scorer with requests in flight: each one already sent is answered whole, and logged.

A scorer of its own serves 8 connections posting single transactions and one posting 1,000-row batches,
every transaction id unique. Three seconds in, its process group gets SIGTERM, as
``pipelines.demo.bento_server`` stops it, and the clients keep sending until it has exited. Every
request written before the signal must get a whole 200 answer (none refused, reset or cut short), and
every transaction those answers scored must be in the prediction log (PostgreSQL) once it has exited,
none left in the spool.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

from sqlalchemy import create_engine, select

from pipelines.registry import Prediction
from tests.reliability.conftest import Platform, serve_scorer
from tests.reliability.traffic import Answer, drive, post

SINGLES = 8
# Connection 0 posts batches: one scoring thread per worker takes a batch at a time, and a single waiting
# behind two of them on a loaded box might pass the 2 s the scorer lets a request wait (a deliberate 503).
BATCHES = 1
BATCH_ROWS = 1_000
BEFORE_SIGNAL_S = 3
EXIT_S = 120
PREFIX = "sigterm-"


def test_sigterm_answers_and_logs_every_request_already_sent(
    platform: Platform, figures: Callable[..., None]
) -> None:
    with serve_scorer(platform, "sigterm") as scorer:

        def request_for(connection: int, turn: int) -> bytes:
            known = platform.transactions[(connection + turn) % len(platform.transactions)]
            if connection >= BATCHES:
                transaction = {**known, "transaction_id": f"{PREFIX}{connection}-{turn}"}
                return post(scorer.url, "/v1/score", {"transaction": transaction}, platform.consumer_key)
            rows = [
                {**known, "transaction_id": f"{PREFIX}{connection}-{turn}-{row}"} for row in range(BATCH_ROWS)
            ]
            return post(scorer.url, "/v1/score/batch", {"transactions": rows}, platform.consumer_key)

        answers: list[Answer] = []
        running = threading.Event()
        running.set()
        clients = drive(scorer.url, request_for, SINGLES + BATCHES, running.is_set, timeout_s=EXIT_S)
        traffic = threading.Thread(target=lambda: answers.extend(asyncio.run(clients)))
        traffic.start()
        try:
            # Given requests flowing, batches among them
            time.sleep(BEFORE_SIGNAL_S)
            # When the scorer's process group gets SIGTERM
            signalled_at = time.monotonic()
            os.killpg(scorer.process.pid, signal.SIGTERM)
            exit_code = scorer.process.wait(timeout=EXIT_S)
            exited_s = time.monotonic() - signalled_at
        finally:
            running.clear()
            traffic.join(timeout=EXIT_S)

    # Then every request sent before the signal was answered whole, with scores
    sent_before = [answer for answer in answers if answer.sent_at < signalled_at]
    in_flight = [answer for answer in sent_before if answer.sent_at + answer.seconds > signalled_at]
    unanswered = [
        (answer.status, answer.error, answer.body[:200]) for answer in sent_before if answer.status != 200
    ]
    assert in_flight, "no request was in flight when the signal came"
    assert not unanswered, unanswered[:5]
    assert exit_code == 0, f"bentoml serve exited {exit_code}; see {scorer.log}"

    # And every transaction scored is in the prediction log, none left in the spool
    scored = {
        transaction_id for answer in answers if answer.status == 200 for transaction_id in _scored(answer)
    }
    engine = create_engine(platform.database_url)
    try:
        with engine.connect() as db:
            logged = set(
                db.scalars(select(Prediction.request_id).where(Prediction.request_id.startswith(PREFIX)))
            )
    finally:
        engine.dispose()
    spool = platform.home / "spool" / "predictions.jsonl"
    figures(
        "SIGTERM under traffic", connections=SINGLES + BATCHES, sent_before_signal=len(sent_before),
        in_flight_at_signal=len(in_flight),
        in_flight_batches=sum(1 for answer in in_flight if answer.connection < BATCHES),
        slowest_before_ms=round(max(answer.seconds for answer in sent_before) * 1000),
        after_signal=dict(Counter(answer.status for answer in answers if answer.sent_at >= signalled_at)),
        scored=len(scored), logged=len(logged), seconds_to_exit=round(exited_s, 1),
    )  # fmt: skip
    assert scored <= logged, f"{len(scored - logged)} scored transactions missing from the log"
    assert not spool.exists() or not spool.read_text().strip(), f"rows left in {spool}"


def _scored(answer: Answer) -> list[str]:
    """The transaction ids a 200 answer scored: one, or each of a batch."""
    body = json.loads(answer.body)
    return [score["transaction_id"] for score in (body if isinstance(body, list) else [body])]
