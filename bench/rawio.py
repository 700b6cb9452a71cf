"""Scenario 3's two ends: pynetdicom's socket pattern and bulk I/O, and a
sending peer that runs in a process of its own.

Kept apart from the test module so that the peer process imports only this
and ``contenders``, not pytest or pynetdicom.
"""
from __future__ import annotations

import os
import struct
from typing import Callable

from contenders import BenchPKI, raw_client

MAX_PDU = 16382
PDU = struct.pack(">BBI", 0x04, 0, MAX_PDU) + os.urandom(MAX_PDU)
BULK_CHUNK = 1024 * 1024


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


SENDERS: dict[str, Callable] = {"pattern": send_pdus, "bulk": send_bulk}
RECEIVERS: dict[str, Callable] = {"pattern": read_pdus, "bulk": read_bulk}


def peer_sender(kind: str, pki: BenchPKI, address: tuple, mode: str, amount: int,
                control) -> None:
    """The requesting side in a process of its own: connect, say "ready",
    send ``amount`` on "go", say "done", close on "close"."""
    sock = raw_client(kind, pki)(address)
    try:
        control.send("ready")
        if control.recv() == "go":
            SENDERS[mode](sock, amount)
            control.send("done")
            control.recv()
    finally:
        sock.close()
