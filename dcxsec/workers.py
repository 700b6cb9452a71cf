"""Several processes serving one port (``dcxsec receive --workers N``).

Each worker is a forked child with its own listening socket on the port
(SO_REUSEPORT: the kernel spreads new connections over them), its own
acceptor and its own GIL, so N workers use N cores.  SIGTERM or Ctrl-C to
the parent goes to every worker, which finishes its associations in flight.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Callable

from dcxsec.errors import ConfigurationError


def check_workers_supported() -> None:
    if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigurationError(f"--workers needs fork() and SO_REUSEPORT, which {sys.platform} "
                                 "does not have: run one process per port instead")


def run_workers(count: int, serve: Callable[[], int]) -> int:
    """Fork ``count`` workers running ``serve``; the worst exit status of them."""
    check_workers_supported()
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = serve()
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum, _frame) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for pid in children:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        worst = max(worst, os.waitstatus_to_exitcode(status) if status else 0)
    return worst
