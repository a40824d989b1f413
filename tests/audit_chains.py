"""Random audit chains and the tampering an attacker with write access could try, for the verify tests."""

from __future__ import annotations

import random
from typing import Any

from pipelines.audit import GENESIS, Checkpoint, event_hash, verify

ACTORS = ["falaj-system", "risk@bank.ae", "ml@bank.ae", "auditor@bank.ae"]
ACTIONS = ["model.register", "gate.decide", "model.promote", "model.rollback", "features.export"]
MUTATIONS = ("byte_flip", "delete", "reorder", "insert", "field_swap", "truncate")


def chain(length: int, rng: random.Random) -> list[dict[str, Any]]:
    events, previous = [], GENESIS
    for seq in range(1, length + 1):
        event: dict[str, Any] = {
            "seq": seq,
            "at": f"2026-11-{1 + seq % 28:02d}T{seq % 24:02d}:00:{seq % 60:02d}.000000+00:00",
            "actor": rng.choice(ACTORS),
            "action": rng.choice(ACTIONS),
            "resource": f"fraud:v{rng.randint(1, 40)}",
            "source": f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            "outcome": rng.choice(["succeeded", "denied", "passed", "refused"]),
            "reason": rng.choice(["", "gate passed", "trainer cannot approve", "rollback: alert 17"]),
            "details": {"n": rng.randint(0, 10**6)},
        }
        event["prev_hash"], event["hash"] = previous, event_hash(event, previous)
        previous = event["hash"]
        events.append(event)
    return events


def mutate(events: list[dict[str, Any]], kind: str, rng: random.Random) -> tuple[list[dict[str, Any]], int]:
    """A tampered copy and the seq ``verify`` must name as the first bad record."""
    tampered = [dict(event) for event in events]
    n = len(tampered)
    if kind == "byte_flip":
        at = rng.randrange(n)
        field = rng.choice(["actor", "action", "resource", "reason", "at", "hash", "prev_hash"])
        text = str(tampered[at][field]) or " "
        position = rng.randrange(len(text))
        flipped = chr(ord(text[position]) ^ (1 << rng.randrange(7)))
        tampered[at][field] = text[:position] + flipped + text[position + 1 :]
        return tampered, at + 1
    if kind == "delete":
        at = rng.randrange(n - 1)
        del tampered[at]
        return tampered, at + 1
    if kind == "reorder":
        first = rng.randrange(n - 1)
        second = rng.randrange(first + 1, n)
        tampered[first], tampered[second] = tampered[second], tampered[first]
        return tampered, first + 1
    if kind == "insert":
        at = rng.randrange(n)
        forged = dict(tampered[at], reason="forged", actor="intruder")
        tampered.insert(at, forged)
        return tampered, at + 1
    if kind == "field_swap":
        first = rng.randrange(n - 1)
        candidates = [i for i in range(first + 1, n) if tampered[i]["actor"] != tampered[first]["actor"]]
        second = rng.choice(candidates) if candidates else first + 1
        tampered[first]["actor"], tampered[second]["actor"] = (
            tampered[second]["actor"],
            tampered[first]["actor"],
        )
        if tampered[first]["actor"] == events[first]["actor"]:
            tampered[first]["reason"] += "!"  # the same actor on both sides: swap something that differs
        return tampered, first + 1
    if kind == "truncate":
        keep = rng.randrange(1, n)
        return tampered[:keep], keep + 1
    raise ValueError(kind)


def head(events: list[dict[str, Any]]) -> Checkpoint:
    return Checkpoint(seq=events[-1]["seq"], hash=events[-1]["hash"])


def run(chain_length: int, mutations: int, clean_chains: int, seed: int) -> None:
    """Every mutation fails verification at the right record; every clean chain passes."""
    rng = random.Random(seed)
    base = chain(chain_length, rng)
    checkpoint = [head(base)]
    assert verify(base, checkpoint).ok
    for index in range(mutations):
        kind = MUTATIONS[index % len(MUTATIONS)]
        tampered, expected = mutate(base, kind, rng)
        verdict = verify(tampered, checkpoint)
        assert not verdict.ok, kind
        assert verdict.first_bad_seq == expected, (kind, verdict)
    for index in range(clean_chains):
        clean = chain(rng.randint(1, 50), random.Random(seed + index + 1))
        assert verify(clean, [head(clean)]).ok
