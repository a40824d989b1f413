"""Every BentoML worker but the first listens on a socket of its own, so the kernel spreads connections.

BentoML's workers inherit one listening socket, and uvloop accepts until that socket's queue is empty:
a burst of new keep-alive connections (a load balancer's pool, a client's connection pool) lands on
whichever worker woke first, and stays there while the others idle. With ``SO_REUSEPORT`` set on the
shared socket, and a socket bound beside it to the same address in workers 2..N, Linux hashes each new
connection to one of N sockets, each accepted by exactly one worker. Worker 1 keeps the shared socket,
which the arbiter holds open across restarts.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence
from itertools import pairwise

log = logging.getLogger(__name__)
DEFAULT_BACKLOG = 2048  # BentoML's


def own_listening_socket(argv: Sequence[str], worker: int | None) -> bool:
    """In worker ``worker`` (1-based, as circus numbers them) started with ``--fd N``: replace fd N by a
    socket of its own on the same address. True when it did; a worker 1, a single-worker server, a
    non-TCP socket or a platform without ``SO_REUSEPORT`` keeps the shared socket."""
    fd = _option(argv, "--fd")
    if fd is None or worker is None or worker < 2 or not hasattr(socket, "SO_REUSEPORT"):
        return False
    shared = socket.socket(fileno=os.dup(int(fd)))
    try:
        if shared.type != socket.SOCK_STREAM or shared.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        # Set on the shared socket after it was bound: Linux then lets another socket join its port.
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        own = socket.socket(shared.family, socket.SOCK_STREAM)
        try:
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            own.bind(shared.getsockname())
            own.listen(int(_option(argv, "--backlog") or DEFAULT_BACKLOG))
            os.dup2(own.fileno(), int(fd))
        except OSError as failed:
            log.warning("worker %s keeps the shared listening socket: %s", worker, failed)
            return False
        finally:
            own.close()
    finally:
        shared.close()
    return True


def _option(argv: Sequence[str], name: str) -> str | None:
    for flag, value in pairwise(argv):
        if flag == name:
            return value
    return None


def spread_connections() -> bool:
    """``own_listening_socket`` for this process, when it is a BentoML HTTP worker."""
    from bentoml._internal.context import server_context

    return own_listening_socket(sys.argv, server_context.worker_index)
