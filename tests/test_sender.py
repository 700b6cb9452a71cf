"""Writes behind the caller: a PDU-sized send() is queued for an engine thread
of the connection's own, which seals and sends it while the caller goes on
(``dcx_sender`` in ``csrc/dcxtls.h``).

Real handshakes on real sockets: what arrives is compared byte for byte, in
order with the small writes and the close_notify that go out at once, across
a KeyUpdate the peer asks for, and when the peer stops reading, resets, or
goes after an alert.
"""
from __future__ import annotations

import os
import select
import socket
import ssl
import struct
import threading
import time

import pytest

from dcxsec import TLSContext, TLSError
from dcxsec._native import lib
from conftest import config_for, exit_code_within, free_port, read_exactly
from test_records import OpenSSLTool, read_until

PDU = 16388  # a P-DATA-TF PDU at pynetdicom's default maximum length
QUEUE = 262144  # dcxsec.sender.QUEUE_BYTES


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


def fill_until_timeout(client) -> bytearray:
    """PDUs sent with a 0.3 s timeout to a peer that reads nothing, until a
    send() times out; what was taken (the last send may queue part of its PDU)."""
    client.settimeout(0.3)
    sent = bytearray()
    with pytest.raises(TimeoutError):
        while len(sent) < 2 * QUEUE:
            pdu = os.urandom(PDU)
            sent += pdu[:client.send(pdu)]
    return sent


def assert_cut_off_after_a_prefix(server, sent: bytes) -> None:
    """The peer reads the start of `sent` whole, then hears that a record was
    cut: data was lost, and no clean end came after the gap."""
    got = bytearray()
    with pytest.raises(TLSError, match="truncated"):
        while piece := server.recv(65536):
            got += piece
    assert len(got) < len(sent) and bytes(got) == bytes(sent[:len(got)])


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
    assert pair.client._sender is not None  # the PDUs went behind
    pair.client.close()
    thread.join(30)
    assert got.get("data") == expected
    assert got.get("after") == b""  # close_notify came behind every byte


def test_send_returns_before_the_socket_takes_the_pdus(server_ctx, client_ctx):
    """Eight PDUs with the peer reading nothing: a send that sealed and sent
    them itself would wait (here: time out), the queue takes them at once."""
    client, server = socketpair_tls(server_ctx, client_ctx)
    try:
        client.settimeout(0.5)
        pdus = [os.urandom(PDU) for _ in range(8)]
        for pdu in pdus:
            assert client.send(pdu) == PDU
        assert client._sender.pending > 64 * 1024  # most of it is still queued
        assert read_exactly(server, 8 * PDU) == b"".join(pdus)
        client.send(b"small")  # goes after the queue
        assert read_exactly(server, 5) == b"small"
    finally:
        client.close()
        server.close()


def test_a_peer_that_reads_nothing_times_the_sender_out(server_ctx, client_ctx):
    """With the queue full, send() waits for room as long as the socket's
    timeout and then says so; close() stops the sender while it waits on
    the socket.  The peer reads what left whole, then hears that the rest
    was cut off."""
    client, server = socketpair_tls(server_ctx, client_ctx)
    try:
        sent = fill_until_timeout(client)
        closing = threading.Thread(target=client.close)
        closing.start()
        closing.join(10)
        assert not closing.is_alive(), "close() waited on a sender blocked on a full socket"
        assert_cut_off_after_a_prefix(server, sent)
    finally:
        client.close()
        server.close()


def test_a_send_waiting_for_room_takes_it_when_the_peer_stops_reading(server_ctx, client_ctx):
    """The peer takes the records 4 KiB at a time, pausing after each, while
    more than half the queue stays full (no wake-up at half a queue then):
    the send waiting for room (no timeout) returns once room for its PDU is
    there, the socket having stayed full a moment, instead of waiting for ever."""
    client, server = socketpair_tls(server_ctx, client_ctx)
    sent: list[bytes] = []
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            pdu = os.urandom(PDU)
            assert client.send(pdu) == PDU
            sent.append(pdu)

    writer = threading.Thread(target=write, daemon=True)
    # More than this pending (queued plus sealed) is more than half a queue
    # queued: what is sealed and unsent is at most a 64 KiB slice as records.
    over_half = QUEUE // 2 + 66 * 1024
    try:
        writer.start()
        count, deadline = -1, time.monotonic() + 10
        while count != len(sent):  # until a send waits: the queue is full
            assert time.monotonic() < deadline and writer.is_alive()
            count = len(sent)
            time.sleep(0.5)
        stop.set()
        taken = 0
        while writer.is_alive() and client._sender.pending > over_half:
            if select.select([server.fileno()], [], [], 1)[0]:  # the engine's fd: non-blocking
                taken += len(os.read(server.fileno(), 4096))  # the records, as they are
            writer.join(0.1)
        assert not writer.is_alive(), (
            f"send() kept waiting, its PDU not queued after the peer took {taken} bytes")
        assert len(sent) == count + 1
    finally:
        stop.set()
        client.settimeout(0.2)  # the queue cannot leave: the close resets at once
        client.close()
        server.close()


def test_close_sends_the_queue_then_close_notify(server_ctx, client_ctx):
    client, server = socketpair_tls(server_ctx, client_ctx)
    try:
        data = os.urandom(6 * PDU)
        got: dict = {}
        thread = reader(server, len(data), got)
        send_pdus(client, data)
        client.close()  # at once: most of the PDUs are still queued
        thread.join(10)
        assert got.get("data") == data
        assert got.get("after") == b""
    finally:
        server.close()


def test_a_reset_peer_fails_the_sender_with_the_socket_error(pair_factory, server_ctx,
                                                             client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    client, server = pair.client, pair.server
    client.send(os.urandom(PDU))
    assert len(read_exactly(server, PDU)) == PDU
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()  # close_notify, then a TCP reset
    with pytest.raises(OSError) as failure:
        for _ in range(200):  # the sender meets the reset within a few PDUs
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


@pytest.mark.parametrize("queued", [True, False], ids=["sender", "callers-thread"])
def test_the_peers_alert_is_reported_after_a_send_met_a_broken_pipe(server_ctx, client_ctx,
                                                                     queued):
    """A record altered on the way: the acceptor sends bad_record_mac and
    goes.  The requestor's writes then fail on the socket, but its next read
    still takes the alert that came before, and says what the peer said."""
    near, far = socket.socketpair()
    to_server, server_end = socket.socketpair()
    relay_through(far, to_server, flip_at=300000)
    server = server_ctx.wrap_socket(server_end, server_side=True)
    client = client_ctx.wrap_socket(near)
    client.settimeout(10)
    client._behind = queued
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
        assert (client._sender is not None) == queued
        serving.join(10)
        assert "bad record mac" in str(seen["server"])
        with pytest.raises(TLSError, match="alert 'bad record MAC'"):
            client.recv(100)
        with pytest.raises(OSError):  # and writing stays failed
            client.send(os.urandom(PDU))
    finally:
        client.close()
        server.close()


def test_echo_through_both_senders_while_each_side_reads(pair_factory, server_ctx, client_ctx):
    """Each side's sender writes while that side's own thread reads: the
    acceptor echoes every PDU as it arrives."""
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
    assert pair.client._sender is not None and pair.server._sender is not None


def test_tls12_writes_in_the_callers_thread(pki, pair_factory, server_ctx):
    """OpenSSL keeps TLS 1.2's records, and must not be written in one thread
    while it is read in another: no sender, and the PDUs arrive all the same."""
    client_ctx = TLSContext(config_for(pki.client, trusted=[pki.ca.cert_path],
                                       maximum_version=ssl.TLSVersion.TLSv1_2))
    pair = pair_factory(server_ctx, client_ctx)
    data = os.urandom(20 * PDU)
    got: dict = {}
    thread = reader(pair.server, len(data), got)
    send_pdus(pair.client, data)
    assert pair.client.version() == "TLSv1.2"
    assert pair.client._sender is None and lib.dcx_conn_duplex(pair.client._conn) == -1
    pair.client.close()
    thread.join(10)
    assert got.get("data") == data


def test_the_sender_answers_a_key_update_that_s_server_asks_for(pki, client_ctx, tmp_path):
    port = free_port()
    tool = OpenSSLTool(["s_server", "-accept", f"127.0.0.1:{port}", "-tls1_3",
                        "-cert", str(pki.server.cert_path), "-key", str(pki.server.key_path)],
                       tmp_path / "messages")
    client = None
    try:
        tool.wait_for(b"ACCEPT")
        client = client_ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
        tool.type("first")
        read_until(client, b"first\n")
        text = os.urandom(PDU // 2).hex().encode()  # s_server prints what it reads
        client.send(b"one:" + text)
        assert client._sender is not None
        tool.wait_for(text[-64:])
        tool.type("K")  # a KeyUpdate that asks for ours
        tool.type("second")
        read_until(client, b"second\n")
        client.send(b"two:" + text[::-1])  # behind our KeyUpdate, sealed by the sender
        tool.wait_for(text[::-1][-64:])
        assert tool.key_updates_received() == 1
    finally:
        tool.stop()
        if client is not None:
            client.close()


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


def test_close_from_another_thread_sends_the_queue_first(server_ctx, client_ctx):
    """A thread waits in recv(), holding the socket's lock, when another
    closes it with PDUs still queued: they leave before the connection is shut."""
    client, server = socketpair_tls(server_ctx, client_ctx)
    try:
        waiting = threading.Thread(target=lambda: pytest.raises(OSError, client.recv, 100),
                                   daemon=True)
        data = os.urandom(8 * PDU)
        send_pdus(client, data)
        waiting.start()
        time.sleep(0.1)  # recv() is waiting; the acceptor has read nothing yet
        closing = threading.Thread(target=client.close, daemon=True)
        closing.start()
        assert read_exactly(server, len(data)) == data
        closing.join(10)
        waiting.join(10)
    finally:
        server.close()


def test_a_reset_while_the_sender_writes_reaches_the_reader_as_a_reset(pair_factory, server_ctx,
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
        for _ in range(100):  # each partly queued while the sender meets the reset
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
    """Forked while the parent's sender runs and another of its threads waits
    in recv() holding the socket's lock: the child's send, recv and shutdown
    are refused at once with the reason, and the parent's connection goes
    on, both ways, untouched."""
    pair = pair_factory(server_ctx, client_ctx)
    first = os.urandom(4 * PDU)
    send_pdus(pair.client, first)
    assert pair.client._sender is not None
    got: dict = {}
    waiting = reader(pair.client, 5, got, then_end=False)  # holds the lock in recv()
    deadline = time.monotonic() + 10
    while not pair.client._lock.locked():
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


def test_detach_sends_the_queue_then_hands_the_descriptor_over(pair_factory, server_ctx,
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


def test_detach_when_the_queue_cannot_leave_resets_and_says_so(server_ctx, client_ctx):
    """The peer reads nothing: detach() cannot hand over a stream with a gap
    in it, so it closes the connection and raises; the peer reads what left
    whole, then learns that the rest was cut off."""
    client, server = socketpair_tls(server_ctx, client_ctx)
    try:
        sent = fill_until_timeout(client)
        with pytest.raises(TLSError, match="did not all leave .*no descriptor is handed over"):
            client.detach()
        assert client.fileno() == -1
        assert_cut_off_after_a_prefix(server, sent)
    finally:
        client.close()
        server.close()


def test_two_closers_at_once_still_send_the_queue_first(server_ctx, client_ctx):
    """shutdown() in one thread and close() in another, with PDUs queued and
    a slow reader: the second waits for the first, and the peer reads every
    byte before close_notify, never a clean end after a gap."""
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
