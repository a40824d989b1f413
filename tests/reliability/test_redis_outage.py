"""The online store (the platform's own redis-server) stopped while the scorer serves, then restarted.

While eight clients keep posting ``/v1/score``, the redis-server is stopped for 5 s and started again on
the same port, from its last snapshot. Every answer must be a score or a deliberate 503 that says the
online store is unavailable and when to retry, within the traffic timeout: never another status, a
reset connection or a hang. Once Redis is back the scorer must serve scores again by itself, and go
on doing so; time-to-recover is from the restart to the first score answered after it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx

from bench.common import percentile
from tests.reliability.conftest import Platform, Scorer
from tests.reliability.traffic import Answer, drive, post, rotating

CONNECTIONS = 8
SERVING_S = 2
OUTAGE_S = 5
AFTER_S = 5
TRAFFIC_TIMEOUT_S = 3  # bento/service.py's


def test_a_stopped_online_store_is_answered_503_and_the_scorer_recovers_by_itself(
    platform: Platform, served: Scorer, figures: Callable[..., None]
) -> None:
    key = platform.consumer_key
    requests = [post(served.url, "/v1/score", {"transaction": txn}, key) for txn in platform.transactions]
    answers: list[Answer] = []
    running = threading.Event()
    running.set()
    traffic = threading.Thread(
        target=lambda: answers.extend(
            asyncio.run(drive(served.url, rotating(requests), CONNECTIONS, running.is_set))
        )
    )
    traffic.start()
    try:
        # Given the scorer serving from Redis
        time.sleep(SERVING_S)
        # When its redis-server stops, and starts again on the same port 5 s later
        stopped_at = time.monotonic()
        platform.online.stop()
        time.sleep(OUTAGE_S)
        platform.online.start()
        restarted_at = time.monotonic()
        time.sleep(AFTER_S)
    finally:
        running.clear()
        traffic.join(timeout=60)

    # Then every answer was a score or a clear 503, in time
    statuses = Counter(answer.status for answer in answers)
    refusals = [answer for answer in answers if answer.status == 503]
    assert set(statuses) <= {200, 503}, statuses  # None: a reset or closed connection, or no answer
    assert refusals, "no request was refused while Redis was down"
    assert all(b"online feature store is unavailable" in answer.body for answer in refusals), refusals[0]
    assert all(answer.retry_after for answer in refusals)
    slowest = max(answer.seconds for answer in answers)
    assert slowest < TRAFFIC_TIMEOUT_S
    assert {answer.status for answer in answers if answer.sent_at < stopped_at} == {200}

    # And the scorer recovered by itself once Redis was back, for good
    after = sorted((answer for answer in answers if answer.sent_at >= restarted_at), key=lambda a: a.sent_at)
    first = next((answer for answer in after if answer.status == 200), None)
    assert first is not None, (
        f"no score in the {AFTER_S} s after Redis restarted: {Counter(a.status for a in after)}"
    )
    assert all(answer.status == 200 for answer in after if answer.sent_at >= first.sent_at)
    recovered_s = first.sent_at + first.seconds - restarted_at
    during = [answer for answer in answers if stopped_at <= answer.sent_at < restarted_at]
    figures(
        "Redis stopped 5 s under /v1/score", requests=len(answers), statuses=dict(sorted(statuses.items())),
        during_outage=dict(Counter(answer.status for answer in during)),
        refused_p99_ms=round(percentile([answer.seconds * 1000 for answer in refusals], 99), 1),
        slowest_answer_ms=round(slowest * 1000, 1), time_to_recover_s=round(recovered_s, 3),
    )  # fmt: skip
    again = httpx.post(
        f"{served.url}/v1/score", json={"transaction": platform.transactions[0]}, headers={"X-API-Key": key}
    )
    assert again.status_code == 200 and again.json()["degraded"] is False, again.text
