"""Writes through the engine, in the caller's thread: what arrives is
compared byte for byte, in order with the small writes and the close_notify
behind them, when the peer is slow, resets, or goes after an alert; a
forked child is refused its parent's connection; detach() hands the
descriptor over.  Real handshakes on real sockets.
"""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from dcxsec import TLSError
from conftest import exit_code_within, read_exactly

PDU = 16388  # a P-DATA-TF PDU at pynetdicom's default maximum length


def send_pdus(sock, data: bytes) -> None:
    """``data`` as PDU-sized send()s, as pynetdicom sends a dataset."""
    for at in range(0, len(data), PDU):
        sock.send(data[at:at + PDU])


class SlowReader:
    """Reads 4 KiB every 5 ms (about 1 MB/s, slower than a queue drains in
    a close_notify's time) until the end, and says how it ended."""

    def __init__(self, sock) -> None:
        self.got = bytearray()
        self.ending: list = []
        self.thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self.thread.start()

    def _run(self, sock) -> None:
        try:
            while piece := sock.recv(4096):
                self.got.extend(piece)
                time.sleep(0.005)
            self.ending.append("close_notify")
        except OSError as exc:
            self.ending.append(repr(exc))


def socketpair_tls(server_ctx, client_ctx) -> tuple:
    """(requestor, acceptor) over a socketpair, whose buffers are small and
    exact: with the acceptor not reading, the socket soon takes no more."""
    a, b = socket.socketpair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    server = server_ctx.wrap_socket(a, server_side=True)
    client = client_ctx.wrap_socket(b)
    client.do_handshake()
    client.send(b"hello")  # the acceptor's first write carries its ticket: then it may queue too
    assert server.recv(5) == b"hello"
    return client, server


def reader(sock, size: int, into: dict, then_end: bool = True) -> threading.Thread:
    def run() -> None:
        try:
            into["data"] = read_exactly(sock, size)
            if then_end:
                into["after"] = sock.recv(1)  # b"" at close_notify
        except OSError as exc:
            into["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_pdus_and_small_writes_arrive_in_order(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    pieces = [os.urandom(PDU if i % 4 else 7 + i) for i in range(400)]  # PDUs between small ones
    expected = b"".join(pieces)
    got: dict = {}
    thread = reader(pair.server, len(expected), got)
    for piece in pieces:
        assert pair.client.send(piece) == len(piece)
    pair.client.close()
    thread.join(30)
    assert got.get("data") == expected
    assert got.get("after") == b""  # close_notify came behind every byte


def test_close_notify_comes_behind_every_byte(server_ctx, client_ctx):
    client, server = socketpair_tls(server_ctx, client_ctx)
    try:
        data = os.urandom(6 * PDU)
        got: dict = {}
        thread = reader(server, len(data), got)
        send_pdus(client, data)
        client.close()
        thread.join(10)
        assert got.get("data") == data
        assert got.get("after") == b""
    finally:
        server.close()


def test_a_reset_peer_fails_sends_with_the_socket_error(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    client, server = pair.client, pair.server
    client.send(os.urandom(PDU))
    assert len(read_exactly(server, PDU)) == PDU
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()  # close_notify, then a TCP reset
    with pytest.raises(OSError) as failure:
        for _ in range(200):  # the reset comes back within a few PDUs
            client.send(os.urandom(PDU))
    assert "sending" in str(failure.value) or isinstance(failure.value, ConnectionError)
    with pytest.raises(OSError):  # and it stays failed
        client.send(os.urandom(PDU))
    client.close()


def relay_through(near_end: socket.socket, far_end: socket.socket, flip_at: int) -> None:
    """Carries bytes both ways between near_end and far_end (each one end of
    a socketpair), the byte at ``flip_at`` of what near_end receives altered.
    Once far_end's peer has closed and all it sent has been passed on,
    near_end is closed with what it received unread, as a host that has gone
    would be: the writes of near_end's peer fail."""
    gone = threading.Event()

    def forward() -> None:
        done = 0
        try:
            while data := near_end.recv(65536):
                if done <= flip_at < done + len(data):
                    data = bytearray(data)
                    data[flip_at - done] ^= 0x40
                done += len(data)
                far_end.sendall(data)
        except OSError:
            pass
        gone.set()

    def back() -> None:
        try:
            while data := far_end.recv(65536):
                near_end.sendall(data)
        except OSError:
            pass
        gone.wait(10)
        near_end.close()

    for run in (forward, back):
        threading.Thread(target=run, daemon=True).start()


def test_the_peers_alert_is_reported_after_a_send_met_a_broken_pipe(server_ctx, client_ctx):
    """A record altered on the way: the acceptor sends bad_record_mac and
    goes.  The requestor's writes then fail on the socket, but its next read
    still takes the alert that came before, and says what the peer said."""
    near, far = socket.socketpair()
    to_server, server_end = socket.socketpair()
    relay_through(far, to_server, flip_at=300000)
    server = server_ctx.wrap_socket(server_end, server_side=True)
    client = client_ctx.wrap_socket(near)
    client.settimeout(10)
    try:
        client.do_handshake()
        client.send(b"hello")
        assert server.recv(5) == b"hello"
        server.send(b"hi")
        assert client.recv(2) == b"hi"
        seen: dict = {}

        def serve() -> None:
            try:
                while server.recv(65536):
                    pass
            except OSError as exc:
                seen["server"] = exc
            server.close()
        serving = threading.Thread(target=serve, daemon=True)
        serving.start()
        with pytest.raises(OSError, match="sending"):
            for _ in range(200):
                client.send(os.urandom(PDU))
        serving.join(10)
        assert "bad record mac" in str(seen["server"])
        with pytest.raises(TLSError, match="alert 'bad record MAC'"):
            client.recv(100)
        with pytest.raises(OSError):  # and writing stays failed
            client.send(os.urandom(PDU))
    finally:
        client.close()
        server.close()


def test_echo_with_pdus_in_flight_both_ways(pair_factory, server_ctx, client_ctx):
    """The acceptor echoes every PDU as it arrives, with a few in flight
    each way."""
    pair = pair_factory(server_ctx, client_ctx)
    pdus = [os.urandom(PDU) for _ in range(300)]

    def echo() -> None:
        for _ in pdus:
            pair.server.send(read_exactly(pair.server, PDU))

    echoing = threading.Thread(target=echo, daemon=True)
    echoing.start()
    back = bytearray()
    for i, pdu in enumerate(pdus):
        pair.client.send(pdu)
        if i >= 4:  # a few PDUs in flight each way
            back += read_exactly(pair.client, PDU)
    back += read_exactly(pair.client, len(pdus) * PDU - len(back))
    echoing.join(30)
    assert bytes(back) == b"".join(pdus)


def test_close_waits_for_a_slow_reader_then_sends_close_notify(server_ctx, client_ctx):
    client, server = socketpair_tls(server_ctx, client_ctx)
    data = os.urandom(12 * PDU)
    slow = SlowReader(server)
    send_pdus(client, data)
    client.close()
    slow.thread.join(30)
    assert bytes(slow.got) == data
    assert slow.ending == ["close_notify"]
    server.close()


def test_a_reset_while_writing_reaches_the_reader_as_a_reset(pair_factory, server_ctx,
                                                             client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    client, server = pair.client, pair.server
    client.send(os.urandom(PDU))
    read_exactly(server, PDU)
    outcome: list = []

    def wait_for_reply() -> None:
        try:
            outcome.append(client.recv(100))
        except OSError as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=wait_for_reply, daemon=True)
    waiting.start()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    socket.socket.close(server)  # a TCP reset, no close_notify
    with pytest.raises(OSError) as failure:
        for _ in range(100):  # until the reset comes back
            client.sendall(os.urandom(100000))
    waiting.join(10)
    assert not isinstance(failure.value, TimeoutError)
    assert len(outcome) == 1 and isinstance(outcome[0], (OSError, bytes))
    assert not isinstance(outcome[0], TimeoutError)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_forked_child_closing_the_socket_leaves_the_parents_stream_alone(pair_factory,
                                                                          server_ctx,
                                                                          client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    first = os.urandom(4 * PDU)
    send_pdus(pair.client, first)
    pid = os.fork()
    if pid == 0:  # the child: close its copy, and go
        try:
            pair.client.close()
        finally:
            os._exit(0)
    assert exit_code_within(pid, 10) is not None, "the child hung closing its copy"
    second = os.urandom(4 * PDU)
    send_pdus(pair.client, second)
    assert read_exactly(pair.server, len(first) + len(second)) == first + second


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_forked_child_is_refused_the_parents_connection(pair_factory, server_ctx, client_ctx):
    """Forked while one of the parent's threads waits in recv() holding the
    socket's lock (and the engine connection's): the child's send, recv and shutdown
    are refused at once with the reason, and the parent's connection goes
    on, both ways, untouched."""
    pair = pair_factory(server_ctx, client_ctx)
    first = os.urandom(4 * PDU)
    send_pdus(pair.client, first)
    got: dict = {}
    waiting = reader(pair.client, 5, got, then_end=False)  # holds the lock in recv()
    deadline = time.monotonic() + 10
    while not pair.client._connection.lock.locked():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            outcomes = []
            for call in (lambda: pair.client.send(os.urandom(PDU)),
                         lambda: pair.client.send(b"small"),
                         lambda: pair.client.recv(6),
                         lambda: pair.client.shutdown(socket.SHUT_RDWR)):
                try:
                    call()
                    outcomes.append("not refused")
                except TLSError as exc:
                    outcomes.append(exc.status if "forked from it" in str(exc) else str(exc))
            pair.client.close()
            os.write(2, f"child: {outcomes}\n".encode())
            status = 0 if outcomes == ["INHERITED"] * 4 else 1
        finally:
            os._exit(status)
    assert exit_code_within(pid, 10) == 0, "the child's I/O was not refused, or it hung"
    pair.server.sendall(b"hello")
    waiting.join(10)
    assert got.get("data") == b"hello"
    second = os.urandom(4 * PDU)
    send_pdus(pair.client, second)
    assert read_exactly(pair.server, len(first) + len(second)) == first + second


def test_detach_hands_the_descriptor_over_in_the_sockets_blocking_mode(pair_factory, server_ctx,
                                                                       client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    data = os.urandom(6 * PDU)
    got: dict = {}
    thread = reader(pair.server, len(data), got, then_end=False)
    send_pdus(pair.client, data)
    fd = pair.client.detach()
    thread.join(10)
    assert got.get("data") == data
    assert os.get_blocking(fd)  # as the socket's timeout (None) says, not the engine's mode
    os.close(fd)


def test_two_closers_at_once_end_with_one_close_notify(server_ctx, client_ctx):
    """shutdown() in one thread and close() in another, with a slow reader:
    the peer reads every byte, then close_notify."""
    client, server = socketpair_tls(server_ctx, client_ctx)
    data = os.urandom(12 * PDU)
    slow = SlowReader(server)
    send_pdus(client, data)
    closers = [threading.Thread(target=client.shutdown, args=(socket.SHUT_RDWR,)),
               threading.Thread(target=client.close)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(30)
    slow.thread.join(30)
    assert bytes(slow.got) == data
    assert slow.ending == ["close_notify"]
    server.close()
