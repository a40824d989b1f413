"""The full tamper fuzz (`make fuzz`): 1,000 random mutations of a 10,000-event chain, 100 clean chains."""

from __future__ import annotations

import pytest

from tests.audit_chains import run

pytestmark = pytest.mark.fuzz


def test_every_mutation_of_a_long_chain_is_caught_at_its_first_bad_record() -> None:
    run(chain_length=10_000, mutations=1_000, clean_chains=100, seed=20261128)
