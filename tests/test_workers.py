"""Worker processes sharing one port: their acceptors take turns by the
connections each holds (dcxsec.acceptor.LoadTable), so that a few long
associations spread over the workers.

First two acceptors in this process on one listening socket, as two workers
would have them, with real TLS clients; then ``dcxsec receive --workers 2``
with four associations held open at once, each worker's share read from
/proc.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from conftest import requestor, wait_until
from dcxsec.acceptor import Acceptor, LoadTable
from test_cli_receive import Receive

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the engine's acceptor and /proc are Linux's here")


def connect(client_ctx, port: int):
    client = client_ctx.wrap_socket(socket.socket())
    client.connect(("127.0.0.1", port))
    return client


class Workers:
    """Two balanced acceptors on one listening socket, and what each took."""

    def __init__(self, server_ctx, balanced: tuple[int, ...] = (0, 1)) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.loads = LoadTable(2)
        self.acceptors = []
        for worker in balanced:
            self.acceptors.append(Acceptor(server_ctx, self.listener, loads=self.loads,
                                           worker=worker))
        self.taken: list[list] = [[] for _ in self.acceptors]

    def take_next(self) -> int:
        """The acceptor that handed over the next connection."""
        found: list[int] = []

        def handed_over() -> bool:
            for i, acceptor in enumerate(self.acceptors):
                sock = acceptor.take()
                if sock is not None:
                    self.taken[i].append(sock)
                    found.append(i)
            return bool(found)

        assert wait_until(handed_over, 10)
        assert len(found) == 1
        return found[0]

    def close(self) -> None:
        for socks in self.taken:
            for sock in socks:
                sock.close()
        for acceptor in self.acceptors:
            acceptor.close()
        self.listener.close()


@pytest.fixture
def workers(server_ctx):
    made: list[Workers] = []

    def make(**kw) -> Workers:
        made.append(Workers(server_ctx, **kw))
        return made[-1]

    yield make
    for w in made:
        w.close()


def test_connections_alternate_between_two_workers(workers, client_ctx):
    w = workers()
    clients = []
    for _ in range(6):
        clients.append(connect(client_ctx, w.port))
        w.take_next()
    assert [len(t) for t in w.taken] == [3, 3]
    assert [w.loads.held(i) for i in range(2)] == [3, 3]
    # Two of worker 0's connections end: the next two are its own.
    for _ in range(2):
        w.taken[0].pop().close()
        w.loads.release(0)
    for _ in range(2):
        clients.append(connect(client_ctx, w.port))
        assert w.take_next() == 0
    for client in clients:
        client.close()


def test_a_refused_handshake_is_not_counted(workers, client_ctx, pki):
    w = workers()
    raw = socket.create_connection(("127.0.0.1", w.port))
    raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert wait_until(lambda: sum(a.stats()["refused"] for a in w.acceptors) == 1, 10)
    raw.close()
    assert [w.loads.held(i) for i in range(2)] == [0, 0]


def test_a_worker_that_takes_nothing_does_not_stall_the_port(workers, client_ctx):
    """Worker 1 holds nothing and takes nothing (hung): worker 0 takes every
    connection after its wait, and at once when worker 1 is retired."""
    w = workers(balanced=(0,))
    clients = [connect(client_ctx, w.port) for _ in range(3)]
    for _ in clients:
        assert w.take_next() == 0
    w.loads.retire(1)
    clients.append(connect(client_ctx, w.port))
    assert w.take_next() == 0
    assert w.loads.held(0) == 4
    for client in clients:
        client.close()


def worker_pids(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def established_on(pid: int, port: int) -> int:
    """Connections accepted on ``port`` whose descriptor ``pid`` holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(fields[9])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        held += target.startswith("socket:[") and target[8:-1] in inodes
    return held


def test_receive_spreads_four_associations_over_two_workers(pki, tmp_path, client_ctx):
    """Four associations held open at once: two in each worker, every time."""
    r = Receive(pki, tmp_path / "archive", "--workers", "2", "--layout", "flat")
    try:
        assert wait_until(lambda: r.text().count("receiving on port") == 2, 20), r.text()
        for round_ in range(3):
            associations = []
            for _ in range(4):
                assoc = requestor().associate("127.0.0.1", r.port, ae_title="ARCHIVE",
                                              tls_args=(client_ctx, None))
                assert assoc.is_established
                associations.append(assoc)
            shares = [established_on(pid, r.port) for pid in worker_pids(r.proc.pid)]
            for assoc in associations:
                assert assoc.send_c_echo().Status == 0
                assoc.release()
            assert shares == [2, 2], f"round {round_}: {shares}"
            # The next round starts once both workers have closed this one's connections.
            assert wait_until(lambda: [established_on(pid, r.port)
                                       for pid in worker_pids(r.proc.pid)] == [0, 0], 30)
    finally:
        assert r.stop() == 0
