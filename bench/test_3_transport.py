"""Scenario 3: raw transport through a connected loopback pair, no DICOM stack.

(a) pynetdicom's pattern: the sender makes one ``send()`` per P-DATA-TF PDU of
16388 bytes (maximum PDU 16382), looping over the remainder as pynetdicom's
``AssociationSocket.send`` does; the receiver reads ``recv(6)`` for the header
and then ``recv(4096)`` until the PDU is whole, extending a bytearray, as
``DUL._read_pdu_data`` and ``AssociationSocket.recv`` do.
(b) bulk: ``sendall`` of 1 MiB chunks into ``recv_into`` a 1 MiB buffer.

dcxsec ``TLSSocket`` against ``ssl.SSLSocket`` (same certificates, mutual
TLS) and a plain socket; the ceiling is one core's AES-256-GCM throughput on
16 KiB blocks (a full TLS record) from ``openssl speed``.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import threading

import pytest

from conftest import SIZES
from contenders import DCXSEC, SSL, TCP, raw_pair
from report import Target

MAX_PDU = 16382
PDU = struct.pack(">BBI", 0x04, 0, MAX_PDU) + os.urandom(MAX_PDU)
BULK_CHUNK = 1024 * 1024
CEILING = "openssl speed"
KINDS = (DCXSEC, SSL, TCP)


def send_pdus(sock, count: int) -> None:
    """pynetdicom's AssociationSocket.send, once per PDU."""
    for _ in range(count):
        total_sent = 0
        while total_sent < len(PDU):
            total_sent += sock.send(PDU[total_sent:])


def recv_exactly(sock, nr_bytes: int) -> bytearray:
    """pynetdicom's AssociationSocket.recv: at most 4096 bytes per call."""
    bytestream = bytearray()
    nr_read = 0
    while nr_read < nr_bytes:
        bufsize = min(4096, nr_bytes - nr_read)
        bytes_read = sock.recv(bufsize)
        if not bytes_read:
            raise ConnectionError(f"peer closed after {nr_read} of {nr_bytes} bytes")
        bytestream.extend(bytes_read)
        nr_read += len(bytes_read)
    return bytestream


def read_pdus(sock, count: int) -> int:
    """pynetdicom's DUL._read_pdu_data, ``count`` times; returns bytes read."""
    total = 0
    for _ in range(count):
        bytestream = bytearray()
        bytestream.extend(recv_exactly(sock, 6))
        _, _, length = struct.unpack(">BBL", bytestream)
        bytestream += recv_exactly(sock, length)
        total += len(bytestream)
    return total


def send_bulk(sock, total: int) -> None:
    chunk = memoryview(os.urandom(BULK_CHUNK))
    for _ in range(total // BULK_CHUNK):
        sock.sendall(chunk)


def read_bulk(sock, total: int) -> int:
    buffer = bytearray(BULK_CHUNK)
    view, done = memoryview(buffer), 0
    while done < total:
        n = sock.recv_into(view)
        if n == 0:
            raise ConnectionError(f"peer closed after {done} of {total} bytes")
        done += n
    return done


class Transfer:
    """A fresh pair with a sender thread that starts when the clock does."""

    def __init__(self, kind: str, pki, sender, receiver, amount: int) -> None:
        self.client, self.server = raw_pair(kind, pki)
        self.receiver, self.amount, self.go = receiver, amount, threading.Event()
        self.received = 0
        self.thread = threading.Thread(target=self._send, args=(sender,), daemon=True)
        self.thread.start()

    def _send(self, sender) -> None:
        self.go.wait()
        sender(self.client, self.amount)

    def run(self) -> None:
        self.go.set()
        self.received = self.receiver(self.server, self.amount)
        self.thread.join()

    def cipher(self) -> str:
        cipher = getattr(self.server, "cipher", lambda: None)()
        return cipher[0] if cipher else ""

    def close(self) -> None:
        self.client.close()
        self.server.close()


def measure(benchmark, kind: str, pki, sender, receiver, amount: int, expected: int
            ) -> tuple[float, str]:
    """MB/s of one transfer (best round), and the negotiated cipher."""
    transfers: list[Transfer] = []

    def setup():
        if transfers:
            transfers[-1].close()
        transfers.append(Transfer(kind, pki, sender, receiver, amount))
        return (transfers[-1],), {}

    benchmark.pedantic(Transfer.run, setup=setup, rounds=SIZES.raw_rounds, iterations=1)
    last = transfers[-1]
    cipher = last.cipher()
    last.close()
    assert last.received == expected
    return expected / benchmark.stats.stats.min / 1e6, cipher


@pytest.fixture(scope="module")
def ceiling(report) -> float:
    """One core's AES-256-GCM throughput on 16 KiB blocks, MB/s."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed")
    out = subprocess.run(["openssl", "speed", "-elapsed", "-seconds", "3", "-bytes", "16384",
                          "-evp", "aes-256-gcm"], capture_output=True, text=True, timeout=120).stdout
    match = re.search(r"^AES-256-GCM\s+([\d.]+)k\s*$", out, re.MULTILINE)
    assert match, out
    return float(match.group(1)) * 1000 / 1e6  # openssl prints 1000s of bytes per second


def group_with_ceiling(report, key: str, title: str, targets, ceiling: float) -> None:
    if key not in report.groups:
        report.group(key, title, "MB/s", ref=CEILING, targets=targets)
        report.add(key, CEILING, ceiling, note="1 core, AES-256-GCM, 16 KiB records")


@pytest.mark.parametrize("kind", KINDS)
def test_pynetdicom_read_pattern(benchmark, kind, pki, report, ceiling):
    count = SIZES.raw_bytes // len(PDU)
    rate, cipher = measure(benchmark, kind, pki, send_pdus, read_pdus, count, count * len(PDU))
    group_with_ceiling(report, "3-pattern", "3 raw, pynetdicom pattern (recv 6 + 4096s)",
                       (Target(SSL, 1.5),), ceiling)
    report.add("3-pattern", kind, rate, note=cipher)


@pytest.mark.parametrize("kind", KINDS)
def test_bulk(benchmark, kind, pki, report, ceiling):
    amount = SIZES.raw_bytes // BULK_CHUNK * BULK_CHUNK
    rate, cipher = measure(benchmark, kind, pki, send_bulk, read_bulk, amount, amount)
    group_with_ceiling(report, "3-bulk", "3 raw, bulk (sendall 1 MiB / recv_into)",
                       (Target(SSL, 1.0), Target("ref", 0.5)), ceiling)
    report.add("3-bulk", kind, rate, note=cipher)
