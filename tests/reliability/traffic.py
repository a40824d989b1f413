"""Keep-alive HTTP/1.1 clients on raw asyncio streams: many connections from one core, every answer timed.

An HTTP library's per-request cost would cap the load one process can offer well below what the scorer
refuses per second; here a request is a byte string written and an answer a status line, headers and
a ``Content-Length`` body read back. Each connection sends its next request as soon as it has an
answer, or, if the answer said ``Retry-After: N`` and the client honours it, N seconds later; after a
failure (a reset, a refused connection) it connects again 50 ms later.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from httpx import URL

RECONNECT_S = 0.05  # how long a client whose connection failed waits before it connects again
#: (connection, turn) -> the raw request that connection sends on its turn-th go
RequestFor = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Answer:
    connection: int
    turn: int
    sent_at: float  # time.monotonic() once the request was written
    seconds: float  # from then until its answer had been read whole
    status: int | None  # None: no whole answer (the connection was reset or closed, or it timed out)
    retry_after: str | None
    body: bytes
    error: str | None = None


def post(url: str, path: str, body: Any, key: str) -> bytes:
    """A POST of ``body`` as JSON, as raw HTTP/1.1 bytes."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {URL(url).netloc.decode()}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {key}\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def rotating(requests: Sequence[bytes]) -> RequestFor:
    """Each connection sends ``requests`` in turn, from an offset of its own."""
    return lambda connection, turn: requests[(connection + turn) % len(requests)]


async def drive(
    url: str, request_for: RequestFor, connections: int, keep_going: Callable[[], bool],
    timeout_s: float = 30, honour_retry_after: bool = False,
) -> list[Answer]:  # fmt: skip
    """``connections`` clients, each sending its requests one after another while ``keep_going()``; one
    told to retry after N seconds waits them first if ``honour_retry_after``."""
    answers: list[Answer] = []
    await asyncio.gather(
        *(
            _connection(url, request_for, n, keep_going, answers, timeout_s, honour_retry_after)
            for n in range(connections)
        )
    )
    return answers


async def _connection(
    url: str, request_for: RequestFor, connection: int, keep_going: Callable[[], bool], answers: list[Answer],
    timeout_s: float, honour_retry_after: bool,
) -> None:  # fmt: skip
    address = URL(url)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    turn = 0
    while keep_going():
        request = request_for(connection, turn)
        started = sent = time.monotonic()
        try:
            if reader is None or writer is None:
                reader, writer = await asyncio.open_connection(address.host, address.port)
            writer.write(request)
            await writer.drain()
            sent = time.monotonic()
            status, headers, body = await asyncio.wait_for(_answer(reader), timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as failed:
            answers.append(
                Answer(connection, turn, sent, time.monotonic() - started, None, None, b"", repr(failed))
            )
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(RECONNECT_S)
        else:
            retry_after = headers.get("retry-after")
            answers.append(Answer(connection, turn, sent, time.monotonic() - sent, status, retry_after, body))
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
            if retry_after is not None and honour_retry_after:
                await asyncio.sleep(float(retry_after))
        turn += 1
    if writer is not None:
        writer.close()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    fields = (line.partition(":") for line in head[1:])
    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
    if "content-length" not in headers:
        raise ValueError(f"an answer without Content-Length: {head[0]}")
    return status, headers, await reader.readexactly(int(headers["content-length"]))
