"""Scenario 6: memory of one SCP holding many idle associations.

The SCP (pynetdicom, in a process of its own: memory_scp.py) is measured once
after a warm-up association and again with N associations established and
idle; the clients are plain sockets in this process that send an
A-ASSOCIATE-RQ, read the A-ASSOCIATE-AC and then say nothing.  Every
association is a full handshake, a peer's first contact, for dcxsec as for
``ssl``; dcxsec's SCP keeps each one's session in its cache, as it would for
that many peers.

The scenario runs twice, in two SCP processes: untraced, for RSS and malloc's
total, and under tracemalloc, for Python's share (tracemalloc's bookkeeping
would otherwise count as malloc's).  Per association, from the difference of
the two measurements of each run:
- RSS: everything, including pynetdicom's two threads per association.
- C heap: bytes malloc handed out that Python's allocators did not ask for
  (malloc's total minus the traces larger than pymalloc's 512-byte
  threshold): the TLS library's and the engine's share, the interpreter's
  per-thread state, and cffi buffers (``ffi.new`` calls calloc directly, so
  tracemalloc never sees them).
- Python heap: what tracemalloc traced.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SIZES
from contenders import DCXSEC, SSL, TCP, dcxsec_contexts, ssl_contexts
from dicom_wire import associate_rq, read_pdu, release_rq
from report import Target

HERE = Path(__file__).resolve().parent
A_ASSOCIATE_AC, A_RELEASE_RP = 0x02, 0x06
MEMORY_TARGETS = (Target(SSL, 1.0, at_most=True),)  # an idle association's C heap


class MemorySCP:
    """memory_scp.py in a child process, driven over its stdin and stdout."""

    def __init__(self, kind: str, pki_folder: Path, max_associations: int,
                 traced: bool) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "memory_scp.py"), kind, str(pki_folder),
             str(max_associations)] + (["--traced"] if traced else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = self._answer()["port"]

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"memory_scp.py ended (exit code {self.proc.wait(10)})")
        return json.loads(line)

    def measure(self, associations: int) -> dict:
        self.proc.stdin.write(f"measure {associations}\n")
        self.proc.stdin.flush()
        result = self._answer()
        assert result["associations"] == associations
        return result

    def stop(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)


def client_factory(kind: str, pki):
    """connect(port) -> a socket with a TLS session (or none) to the SCP."""
    if kind == DCXSEC:
        _, context = dcxsec_contexts(pki, first_contact=True)  # full handshakes, as ssl's
    elif kind == SSL:
        _, context = ssl_contexts(pki)
    else:
        return lambda port: socket.create_connection(("127.0.0.1", port))

    def connect(port: int) -> socket.socket:
        sock = context.wrap_socket(socket.socket())
        sock.connect(("127.0.0.1", port))
        return sock

    return connect


def associate(connect, port: int) -> socket.socket:
    sock = connect(port)
    sock.sendall(associate_rq(called="BENCH-SCP"))
    pdu_type, _ = read_pdu(sock)
    assert pdu_type == A_ASSOCIATE_AC
    return sock


def release(sock: socket.socket) -> None:
    sock.sendall(release_rq())
    assert read_pdu(sock)[0] == A_RELEASE_RP
    sock.close()


def delta(before: dict, after: dict) -> dict[str, int]:
    return {key: after[key] - before[key] for key in before if isinstance(before[key], int)}


def idle_run(kind: str, pki, count: int, traced: bool) -> dict[str, int]:
    """One SCP process: its measurements' difference between no association
    (after a warm-up) and ``count`` idle ones."""
    scp = MemorySCP(kind, pki.ca.cert_path.parent, count + 10, traced)
    connect = client_factory(kind, pki)
    clients: list[socket.socket] = []
    try:
        for _ in range(2):  # warm-up: lazy imports, first-use caches
            release(associate(connect, scp.port))
        before = scp.measure(0)
        clients = [associate(connect, scp.port) for _ in range(count)]
        after = scp.measure(count)
    finally:
        for sock in clients:
            sock.close()
        scp.stop()
    return delta(before, after)


@pytest.mark.parametrize("kind", [DCXSEC, SSL, TCP])
def test_idle_associations(kind, pki, report):
    count = SIZES.idle_associations
    plain = idle_run(kind, pki, count, traced=False)
    traced = idle_run(kind, pki, count, traced=True)
    each = {"rss": plain["rss"] / count,
            "c_heap": (plain["malloc"] - traced["python_in_malloc"]) / count,
            "python": traced["python"] / count, "threads": plain["threads"] / count}
    note = f"{count} idle, {each['threads']:.0f} threads each"
    for key, title, value, targets in (
            ("6-rss", f"6 SCP RSS per idle association ({count})", each["rss"], ()),
            ("6-c", "6 SCP C heap per idle association", each["c_heap"], MEMORY_TARGETS),
            ("6-py", "6 SCP Python heap per idle association", each["python"], ())):
        report.group(key, title, "KiB", targets=targets)
        report.add(key, kind, value / 1024, note=note if key == "6-rss" else "")
