"""Scenario 3: raw transport through a connected loopback pair, no DICOM stack.

(a) pynetdicom's pattern: the sender makes one ``send()`` per P-DATA-TF PDU of
16388 bytes (maximum PDU 16382), looping over the remainder as pynetdicom's
``AssociationSocket.send`` does; the receiver reads ``recv(6)`` for the header
and then ``recv(4096)`` until the PDU is whole, extending a bytearray, as
``DUL._read_pdu_data`` and ``AssociationSocket.recv`` do.
(b) bulk: ``sendall`` of 1 MiB chunks into ``recv_into`` a 1 MiB buffer.

dcxsec ``TLSSocket`` against ``ssl.SSLSocket`` (same certificates, mutual
TLS) and a plain socket; the ceiling is one core's AES-256-GCM throughput on
16 KiB blocks (a full TLS record) from ``openssl speed``, sampled once a
round beside them.

Each is measured twice.  With the sender a thread of the benchmark's own
process, both ends share one GIL and take turns on it.  With the sender in a
process of its own, as a modality is to a gateway, the receiver is measured
on its own.  The contenders take their rounds in turn (see interleave.py).
"""
from __future__ import annotations

import multiprocessing
import re
import shutil
import socket
import subprocess
import threading

import pytest

from conftest import SIZES
from contenders import DCXSEC, SSL, TCP, raw_pair, raw_server
from interleave import Contestant, best_rounds
from rawio import BULK_CHUNK, PDU, RECEIVERS, SENDERS, peer_sender
from report import Target

CEILING = "openssl speed"
KINDS = (DCXSEC, SSL, TCP)
_PEER_WAIT_S = 60
_CEILING_SAMPLE_S = 1


class ThreadSender:
    """The sender as a thread of this process, sharing its GIL."""

    label = "sender a thread alongside"

    def __init__(self, kind: str, pki, mode: str, amount: int) -> None:
        self.client, self.server = raw_pair(kind, pki)
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._send, args=(mode, amount), daemon=True)
        self.thread.start()

    def _send(self, mode: str, amount: int) -> None:
        self.started.wait()
        SENDERS[mode](self.client, amount)

    def start(self) -> None:
        self.started.set()

    def wait_done(self) -> None:
        self.thread.join()

    def close(self) -> None:
        self.client.close()


class ProcessSender:
    """The sender in a process of its own, as a modality is to a gateway."""

    label = "sender in its own process"

    def __init__(self, kind: str, pki, mode: str, amount: int) -> None:
        spawn = multiprocessing.get_context("spawn")  # no copy of this process's threads
        self.control, child_end = spawn.Pipe()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(_PEER_WAIT_S)
            self.peer = spawn.Process(target=peer_sender, daemon=True, args=(
                kind, pki, listener.getsockname(), mode, amount, child_end))
            self.peer.start()
            raw, _ = listener.accept()
        raw.settimeout(None)
        self.server = raw_server(kind, pki)(raw)
        if not self.control.poll(_PEER_WAIT_S) or self.control.recv() != "ready":
            raise RuntimeError(f"the {kind} sending peer did not connect")

    def start(self) -> None:
        self.control.send("go")

    def wait_done(self) -> None:
        if self.control.recv() != "done":
            raise RuntimeError("the sending peer did not finish")

    def close(self) -> None:
        self.control.send("close")
        self.peer.join(_PEER_WAIT_S)


SENDER_PLACES = {"thread": ThreadSender, "process": ProcessSender}


class Transfer:
    """A fresh pair; the receiver reads here when the clock starts."""

    def __init__(self, kind: str, pki, mode: str, amount: int, placement: str) -> None:
        self.mode, self.amount, self.received = mode, amount, 0
        self.sender = SENDER_PLACES[placement](kind, pki, mode, amount)
        self.server = self.sender.server

    def run(self) -> None:
        self.sender.start()
        self.received = RECEIVERS[self.mode](self.server, self.amount)
        self.sender.wait_done()

    def cipher(self) -> str:
        cipher = getattr(self.server, "cipher", lambda: None)()
        return cipher[0] if cipher else ""

    def close(self) -> None:
        self.sender.close()
        self.server.close()


class Rounds:
    """One contender's rounds: a fresh transfer before each, every one checked."""

    def __init__(self, kind: str, pki, mode: str, amount: int, placement: str,
                 expected: int) -> None:
        self.args = (kind, pki, mode, amount, placement)
        self.expected = expected
        self.transfer: Transfer | None = None

    def prepare(self) -> None:
        self.finish()
        self.transfer = Transfer(*self.args)

    def run(self) -> None:
        self.transfer.run()

    def finish(self) -> str:
        """Check the round just run, close its pair, and give its cipher."""
        done, self.transfer = self.transfer, None
        if done is None:
            return ""
        received, cipher = done.received, done.cipher()
        done.close()
        assert received == self.expected, f"{self.args[0]}: {received} of {self.expected} bytes"
        return cipher


class Ceiling:
    """One core's AES-256-GCM throughput on 16 KiB blocks, MB/s, from
    ``openssl speed``.  It is sampled once a round, in turn with the
    contenders, so it meets the same phases of the machine as they do; the
    best sample is the ceiling, as each contender's best round is its value."""

    def __init__(self) -> None:
        self.best = 0.0

    def sample(self) -> None:
        out = subprocess.run(["openssl", "speed", "-elapsed", "-seconds", str(_CEILING_SAMPLE_S),
                              "-bytes", "16384", "-evp", "aes-256-gcm"],
                             capture_output=True, text=True, timeout=120).stdout
        match = re.search(r"^AES-256-GCM\s+([\d.]+)k\s*$", out, re.MULTILINE)
        assert match, out
        self.best = max(self.best, float(match.group(1)) * 1000 / 1e6)  # in 1000s of bytes/s


def measure(benchmark, pki, mode: str, amount: int, expected: int, placement: str,
            ceiling: Ceiling) -> dict[str, tuple[float, str]]:
    """MB/s of each contender (best round) and its negotiated cipher; ``amount``
    is what the sender is given (PDUs or bytes), ``expected`` the bytes.  The
    ceiling takes a sample in each round."""
    rounds = {kind: Rounds(kind, pki, mode, amount, placement, expected) for kind in KINDS}
    contestants = [Contestant(kind, r.run, prepare=r.prepare) for kind, r in rounds.items()]
    best = best_rounds(benchmark, contestants + [Contestant(CEILING, ceiling.sample)], DCXSEC,
                       SIZES.raw_rounds)
    return {kind: (expected / best[kind] / 1e6, r.finish()) for kind, r in rounds.items()}


@pytest.fixture
def ceiling() -> Ceiling:
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed")
    return Ceiling()


def report_rows(report, key: str, title: str, targets, ceiling: Ceiling, results) -> None:
    report.group(key, title, "MB/s", ref=CEILING, targets=targets)
    report.add(key, CEILING, ceiling.best,
               note=f"1 core, AES-256-GCM, 16 KiB records; best of {SIZES.raw_rounds} samples")
    for kind, (rate, cipher) in results.items():
        report.add(key, kind, rate, note=cipher)


@pytest.mark.parametrize("placement", list(SENDER_PLACES))
def test_pynetdicom_read_pattern(benchmark, placement, pki, report, ceiling):
    count = SIZES.raw_bytes // len(PDU)
    results = measure(benchmark, pki, "pattern", count, count * len(PDU), placement, ceiling)
    report_rows(report, f"3-pattern-{placement}",
                f"3 raw, pynetdicom pattern (recv 6 + 4096s), {SENDER_PLACES[placement].label}",
                (Target(SSL, 1.5),), ceiling, results)


@pytest.mark.parametrize("placement", list(SENDER_PLACES))
def test_bulk(benchmark, placement, pki, report, ceiling):
    amount = SIZES.raw_bytes // BULK_CHUNK * BULK_CHUNK
    results = measure(benchmark, pki, "bulk", amount, amount, placement, ceiling)
    report_rows(report, f"3-bulk-{placement}",
                f"3 raw, bulk (sendall 1 MiB / recv_into), {SENDER_PLACES[placement].label}",
                (Target(SSL, 1.0), Target("ref", 0.5)), ceiling, results)
