"""Writes off the hot path: callers hand rows to a queue; a background thread writes them in batches.

``put`` never waits on a database, nor on a lock: it appends to a deque, and the writer thread wakes on
its own clock to drain it. (A ``queue.Queue`` would wake the writer for every row, and each wake-up
contends for the GIL with the request that caused it: a fifth of a scoring request's time in
bench/serving.py.) When the store is unreachable, batches go to an append-only spool
file (fsynced) and an alert is raised once per outage; the next successful write drains the spool
first, in order, so nothing is lost. A full queue spills to the same spool rather than blocking.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Row = dict[str, Any]


class BufferedWriter:
    """A daemon thread that calls ``write(rows)`` with batches of what ``put`` was given.

    Args:
        name: For logs and the thread's name.
        write: Writes one batch in one transaction; raises if the store is unreachable.
        spool: JSON Lines file that holds batches ``write`` could not take yet.
        alert: Called with a message when the store becomes unreachable (once per outage).
        max_batch: Rows per ``write`` call.
        interval_s: How often the writer drains the queue when it holds less than a batch.
        capacity: Rows the queue holds before ``put`` spills to the spool.
    """

    def __init__(
        self,
        name: str,
        write: Callable[[list[Row]], None],
        spool: Path,
        alert: Callable[[str], None] | None = None,
        *,
        max_batch: int = 500,
        interval_s: float = 0.2,
        capacity: int = 100_000,
    ) -> None:
        self.name, self.write, self.spool, self.alert = name, write, spool, alert
        self.max_batch, self.interval_s, self.capacity = max_batch, interval_s, capacity
        self.rows: deque[Row] = deque()
        self.taken = 0  # rows the writer thread holds, not yet written or spooled
        self.spool_lock = threading.Lock()
        self.failing = False
        self.written = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"falaj-{name}-writer", daemon=True)
        self.thread.start()

    def put(self, row: Row) -> None:
        if len(self.rows) >= self.capacity:
            self._to_spool([row])
        else:
            self.rows.append(row)  # atomic in CPython: no lock, no wake-up

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every row put so far was written (or spooled); True if the queue emptied in time."""
        deadline = time.monotonic() + timeout_s
        while self._holding() and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._holding()

    def _holding(self) -> bool:
        return bool(self.rows or self.taken or self._spooled())

    def close(self, timeout_s: float = 10.0) -> None:
        self.flush(timeout_s)
        self.stopping.set()
        self.thread.join(timeout_s)

    def _run(self) -> None:
        while not self.stopping.is_set():
            batch = self._next_batch()
            if not batch and not self._spooled():
                continue
            try:
                self._write_spool_first(batch)
            except Exception as error:
                self._to_spool(batch)
                if not self.failing:
                    self.failing = True
                    message = f"{self.name} store unreachable, spooling to {self.spool}: {error}"
                    log.error(message)
                    if self.alert is not None:
                        self.alert(message)
                self.stopping.wait(1.0)
            else:
                self.failing = False
            finally:
                self.taken = 0

    def _next_batch(self) -> list[Row]:
        if len(self.rows) < self.max_batch:
            self.stopping.wait(self.interval_s)
        self.taken = count = min(len(self.rows), self.max_batch)  # before the deque looks empty: flush
        return [self.rows.popleft() for _ in range(count)]

    def _write_spool_first(self, batch: list[Row]) -> None:
        # The spool is moved aside under the lock and written outside it: ``put`` may append to the
        # spool while the store is slow, so it must never wait for a write.
        with self.spool_lock:
            if self.spool.exists() and not self.draining.exists():
                self.spool.rename(self.draining)
        if self.draining.exists():
            rows = [json.loads(line) for line in self.draining.read_text().splitlines() if line.strip()]
            self.write(rows)  # one transaction: a spool is written whole or not at all
            self.draining.unlink()
        if batch:
            self.write(batch)
        self.written += len(batch)

    @property
    def draining(self) -> Path:
        """The spool moved aside while it is written: older than anything in the spool."""
        return self.spool.with_name(self.spool.name + ".draining")

    def _spooled(self) -> bool:
        return self.spool.exists() or self.draining.exists()

    def _to_spool(self, rows: list[Row]) -> None:
        if not rows:
            return
        with self.spool_lock:
            self.spool.parent.mkdir(parents=True, exist_ok=True)
            with self.spool.open("a") as out:
                out.writelines(json.dumps(row, default=str) + "\n" for row in rows)
                out.flush()
                os.fsync(out.fileno())
