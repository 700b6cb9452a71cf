"""Several processes serving one port (``dcxsec receive --workers N``).

The parent binds and listens, then forks N workers that share its listening
socket, each with its own acceptor and its own GIL, so N workers use N
cores.  With TLS the workers' acceptors take turns by the connections each
one holds (``dcxsec.acceptor.LoadTable``), so that a few long associations
spread over them.  SIGTERM or Ctrl-C to the parent goes to every worker,
which finishes its associations in flight.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Callable

from dcxsec.acceptor import DEFAULT_BACKLOG, LoadTable
from dcxsec.errors import ConfigurationError


@dataclass
class Worker:
    """One worker's share: its number, the listening socket, the load table (TLS only)."""

    index: int
    listener: socket.socket
    loads: LoadTable | None


def check_workers_supported() -> None:
    if not hasattr(os, "fork"):
        raise ConfigurationError(f"--workers needs fork(), which {sys.platform} does not have: "
                                 "run one process per port instead")


def listen(address: tuple[str, int]) -> socket.socket:
    """The listening socket all workers share."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    return socket.create_server(address, family=family, backlog=DEFAULT_BACKLOG)


def run_workers(count: int, address: tuple[str, int], serve: Callable[[Worker], int],
                balanced: bool) -> int:
    """Fork ``count`` workers running ``serve`` on one listening socket; the
    worst exit status of them.  ``balanced``: their acceptors take turns."""
    check_workers_supported()
    listener = listen(address)
    loads = LoadTable(count) if balanced else None
    children: dict[int, int] = {}  # pid -> worker
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = serve(Worker(index, listener, loads))
            finally:
                os._exit(code)
        children[pid] = index
    listener.close()

    def forward(signum, _frame) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst, running = 0, set(children)
    while running:
        try:
            pid, status = os.wait()
        except InterruptedError:
            continue
        except ChildProcessError:
            break
        running.discard(pid)
        if loads is not None and pid in children:
            loads.retire(children[pid])  # the others no longer leave connections to it
        worst = max(worst, os.waitstatus_to_exitcode(status) if status else 0)
    return worst
