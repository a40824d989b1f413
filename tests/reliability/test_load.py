"""Twice the scorer's configured concurrency for 60 s: the excess is refused, the rest served in budget.

512 keep-alive connections (2 x ``MAX_CONCURRENCY`` in ``bento/service.py``) post ``/v1/score``
transactions, each sending its next request as soon as it has an answer, or ``Retry-After`` seconds
after a refusal, as HTTP asks of a client. The scorer must answer every request 200, or 429/503 with
``Retry-After``; keep the 99th percentile of accepted answers within the traffic timeout, 3 s (the
scorer refuses a request that waited 2 s for its worker's scoring thread: ``MAX_WAIT_S``); lose no
worker; and answer normally afterwards. Then 10 s of clients that ignore ``Retry-After`` (each retries
at once, the harshest overload at this concurrency): it must stay up and still say when to retry.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from bench.common import percentile
from tests.reliability.conftest import WORKERS, Platform, Scorer, scorer_workers_started
from tests.reliability.traffic import Answer, drive, post, rotating

MAX_CONCURRENCY = 256  # bento/service.py's; the refusals' own words are checked against it
CONNECTIONS = 2 * MAX_CONCURRENCY
LOAD_S = 60
STORM_S = 10
ACCEPTED_P99_BUDGET_MS = 3_000  # bento/service.py's traffic timeout


def test_twice_the_configured_concurrency_is_refused_with_retry_after_and_the_rest_served_in_budget(
    platform: Platform, served: Scorer, figures: Callable[..., None]
) -> None:
    requests = [
        post(served.url, "/v1/score", {"transaction": t}, platform.consumer_key)
        for t in platform.transactions
    ]
    workers = scorer_workers_started(served.log)

    # When 512 clients that honour Retry-After keep posting for 60 s
    answers = _load(served.url, requests, LOAD_S, honour_retry_after=True)

    # Then every answer is a score or a refusal that says when to retry, and the scores came in budget
    summary = _summary(answers, LOAD_S)
    figures("2x concurrency, clients honour Retry-After", **summary)
    assert summary["statuses"].keys() <= {200, 429, 503}, summary
    assert summary["refused_without_retry_after"] == 0 and summary["errors"] == 0, summary
    assert summary["statuses"].get(429, 0) > 0, "no request was refused: the load did not pass the limit"
    assert summary["statuses"].get(200, 0) > 0, "nothing was served under load"
    assert summary["accepted_p99_ms"] <= ACCEPTED_P99_BUDGET_MS, summary
    refusal = next(answer for answer in answers if answer.status == 429).body.decode()
    assert f"{MAX_CONCURRENCY // WORKERS} requests in flight" in refusal, (
        refusal
    )  # the limit is the configured one

    # When clients that ignore Retry-After retry at once for 10 s
    storm = _summary(_load(served.url, requests, STORM_S, honour_retry_after=False), STORM_S)
    figures("2x concurrency, clients ignore Retry-After", **storm)

    # Then the scorer stays up (no worker restarted), and still says when to retry
    assert storm["statuses"].keys() <= {200, 429, 503, 504}, storm  # 504: BentoML's traffic timeout
    assert storm["refused_without_retry_after"] == 0 and storm["errors"] == 0, storm
    assert served.process.poll() is None and scorer_workers_started(served.log) == workers

    # And afterwards it answers as before
    after = httpx.post(
        f"{served.url}/v1/score", json={"transaction": platform.transactions[0]},
        headers={"X-API-Key": platform.consumer_key}, timeout=5,
    )  # fmt: skip
    assert after.status_code == 200 and after.json()["degraded"] is False, after.text


def _load(url: str, requests: list[bytes], seconds: float, honour_retry_after: bool) -> list[Answer]:
    until = time.monotonic() + seconds

    def running() -> bool:
        return time.monotonic() < until

    return asyncio.run(
        drive(url, rotating(requests), CONNECTIONS, running, honour_retry_after=honour_retry_after)
    )


def _summary(answers: list[Answer], seconds: float) -> dict[str, Any]:
    statuses = Counter(answer.status for answer in answers if answer.status is not None)
    accepted = [answer.seconds * 1000 for answer in answers if answer.status == 200]
    return {
        "connections": CONNECTIONS,
        "seconds": seconds,
        "requests": len(answers),
        "statuses": dict(sorted(statuses.items())),
        "accepted_per_s": round(len(accepted) / seconds, 1),
        "accepted_p50_ms": round(percentile(accepted, 50), 1) if accepted else None,
        "accepted_p99_ms": round(percentile(accepted, 99), 1) if accepted else None,
        "refused_without_retry_after": sum(
            1 for answer in answers if answer.status in (429, 503) and answer.retry_after is None
        ),
        "errors": sum(1 for answer in answers if answer.status is None),
    }
