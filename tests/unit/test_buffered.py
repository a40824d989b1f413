"""The off-hot-path writer: put never waits, an outage spools and alerts once, nothing is lost or doubled."""

from __future__ import annotations

import threading
from pathlib import Path

from pipelines.buffered import BufferedWriter


class FlakyStore:
    """A store that is down until ``up`` is set; it records what it took."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.up = threading.Event()

    def write(self, rows: list[dict]) -> None:
        if not self.up.is_set():
            raise ConnectionError("store is down")
        self.rows.extend(row["n"] for row in rows)


def test_an_outage_spools_alerts_once_and_loses_nothing(tmp_path: Path) -> None:
    store, alerts = FlakyStore(), []
    writer = BufferedWriter("test", store.write, tmp_path / "spool.jsonl", alerts.append, interval_s=0.01)
    # Given the store is down while rows arrive
    for n in range(300):
        writer.put({"n": n})
    assert not writer.flush(timeout_s=0.5)
    assert (tmp_path / "spool.jsonl").exists() and len(alerts) == 1 and "unreachable" in alerts[0]
    # When it comes back and more rows arrive
    store.up.set()
    for n in range(300, 400):
        writer.put({"n": n})
    # Then every row is written exactly once, in order, and the spool is gone
    assert writer.flush(timeout_s=10)
    writer.close()
    assert store.rows == list(range(400))
    assert not (tmp_path / "spool.jsonl").exists()


def test_a_full_queue_spills_instead_of_blocking(tmp_path: Path) -> None:
    store = FlakyStore()
    store.up.set()
    gate = threading.Event()

    def slow_write(rows: list[dict]) -> None:
        gate.wait()
        store.write(rows)

    writer = BufferedWriter("test", slow_write, tmp_path / "spool.jsonl", capacity=10, interval_s=0.01)
    for n in range(100):  # the writer is stuck; put must still return at once
        writer.put({"n": n})
    assert (tmp_path / "spool.jsonl").exists()
    gate.set()
    assert writer.flush(timeout_s=10)
    writer.close()
    assert sorted(store.rows) == list(range(100))


def test_put_never_waits_for_a_slow_store_draining_the_spool(tmp_path: Path) -> None:
    # Given rows spooled by an earlier outage, and a store that now takes them slowly
    spool = tmp_path / "spool.jsonl"
    spool.write_text("".join(f'{{"n": {n}}}\n' for n in range(5)))
    store, gate, writing = FlakyStore(), threading.Event(), threading.Event()
    store.up.set()

    def slow_write(rows: list[dict]) -> None:
        writing.set()
        gate.wait()
        store.write(rows)

    writer = BufferedWriter("test", slow_write, spool, capacity=10, interval_s=0.01)
    # When requests keep putting rows while the writer is stuck writing the old spool
    assert writing.wait(timeout=5)
    putting = threading.Thread(target=lambda: [writer.put({"n": n}) for n in range(5, 200)])
    putting.start()
    putting.join(timeout=5)
    # Then every put returned at once, and once the store speeds up nothing is lost or doubled
    assert not putting.is_alive(), "put waited for the store"
    gate.set()
    assert writer.flush(timeout_s=10)
    writer.close()
    assert store.rows[:5] == list(range(5)) and sorted(store.rows) == list(range(200))
