"""The scorer's HTTP API fuzzed against its own OpenAPI document (schemathesis strategies, hypothesis).

Each scoring and admin operation of the served ``/docs.json`` gets at least 1,000 generated cases,
valid and invalid (schemathesis' positive and negative modes), sent with a key allowed to call it. Every
answer must pass schemathesis' checks: no 5xx; a documented status, content type, body and headers;
invalid input refused with a 4xx; valid input accepted. Half the valid transactions name a customer,
card and merchant the online store holds, so answers that score are checked as well as 404s. The same
case sent without a credential must be refused 401 with ``WWW-Authenticate``. Reproducible: hypothesis
derandomized. (schemathesis' pytest plugin needs pytest's ``Node._nodeid``, gone in pytest 9: its
strategies run under hypothesis here instead.)
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.reliability.conftest import Platform, Scorer

CASES = 1_000
SCORING = ("/v1/score", "/v1/score/batch", "/v1/score/features")
ADMIN = ("/v1/admin/plan", "/v1/admin/reload")
ONLINE = ("/v1/score", "/v1/score/batch")  # the routes that read the online store
PER_MODE = {GenerationMode.POSITIVE: CASES // 2, GenerationMode.NEGATIVE: CASES // 2}
# Past 256 KiB a body is refused 413 before it is parsed, valid or not (a 1,000-row batch of long ids).
TOO_LARGE = "413"


@pytest.fixture(scope="module")
def api_schema(served: Scorer) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "generation": {"with-security-parameters": False},  # the test sends the credential
            "operations": [
                {
                    "include-path": "/v1/score/batch",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "404", TOO_LARGE]}},
                },
                {
                    # A vector valid by the schema may still lack features of the model serving now (which
                    # one serves changes at run time): 422 names the missing ones.
                    "include-path": "/v1/score/features",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "422"]}},
                },
            ],
            "checks": {
                # Valid transactions of customers the online store does not hold: 404.
                "positive_data_acceptance": {"expected-statuses": ["2xx", "404"]},
                # schemathesis' own list, and 413 (5xx in it is caught by not_a_server_error)
                "negative_data_rejection": {
                    "expected-statuses": [
                        "400",
                        "401",
                        "403",
                        "404",
                        "405",
                        "406",
                        "409",
                        TOO_LARGE,
                        "415",
                        "422",
                        "428",
                        "429",
                        "5xx",
                    ]
                },
            },
        }
    )
    return schemathesis.openapi.from_url(f"{served.url}/docs.json", config=config)


@pytest.mark.parametrize("path", SCORING + ADMIN)
def test_every_operation_answers_as_its_document_says(
    path: str, api_schema: Any, platform: Platform, figures: Callable[..., None]
) -> None:
    operation = api_schema[path]["POST"]
    key = platform.admin_key if path in ADMIN else platform.consumer_key
    seen: Counter[str] = Counter()
    started = time.monotonic()

    def send(case: Any, mode: GenerationMode) -> None:
        seen[mode.value] += 1
        if path in ONLINE and mode is GenerationMode.POSITIVE and seen[mode.value] % 2:
            known = platform.transactions[seen[mode.value] % len(platform.transactions)]
            _name_known_entities(case.body, known)

        # When the case is sent with a key that may call the operation, the answer keeps to the document
        response = case.call_and_validate(headers={"X-API-Key": key})
        seen[str(response.status_code)] += 1

        # And the same case without a credential is refused before anything else is looked at
        anonymous = case.call()
        assert anonymous.status_code == 401, (anonymous.status_code, anonymous.text[:300])
        assert "ApiKey" in " ".join(anonymous.headers.get("www-authenticate", []))  # values are lists
        seen["anonymous 401"] += 1

    for mode, examples in PER_MODE.items():
        _fuzz(operation.as_strategy(generation_mode=mode), examples, functools.partial(send, mode=mode))

    cases = seen["positive"] + seen["negative"]
    statuses = {status: n for status, n in sorted(seen.items()) if status.isdigit()}
    figures(
        f"POST {path}", cases=cases, positive=seen["positive"], negative=seen["negative"], statuses=statuses,
        unauthenticated_401=seen["anonymous 401"], seconds=round(time.monotonic() - started, 1),
    )  # fmt: skip
    assert cases >= CASES, f"{path}: only {cases} cases"


def _fuzz(cases: Any, examples: int, send: Callable[[Any], None]) -> None:
    @settings(
        max_examples=examples, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(case=cases)
    def fuzz(case: Any) -> None:
        send(case)

    fuzz()


def _name_known_entities(body: Any, known: dict[str, Any]) -> None:
    """Point a valid transaction (or each of a batch) at a customer, card and merchant with features."""
    if not isinstance(body, dict):
        return
    transactions = [body["transaction"]] if "transaction" in body else body.get("transactions", [])
    for transaction in transactions:
        transaction.update({key: known[key] for key in ("customer_id", "card_id", "merchant_id")})
