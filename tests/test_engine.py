"""The engine over real loopback sockets: handshake, records, EOF, buffering."""
from __future__ import annotations

import array
import gc
import hashlib
import os
import select
import socket
import ssl
import struct
import threading
import time

import pytest

import dcxsec
from dcxsec import ConfigurationError, TLSContext, TLSError, _recvbuf
from dcxsec.connection import PLAIN_BUSY
from conftest import config_for, exit_code_within, listener, read_exactly


def test_handshake_negotiates_tls13_and_reports_the_peer(pki, pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    assert pair.server_error is None and pair.client_error is None
    assert isinstance(pair.client, ssl.SSLSocket) and isinstance(pair.client, dcxsec.TLSSocket)
    assert pair.client.version() == pair.server.version() == "TLSv1.3"
    name, version, bits = pair.client.cipher()
    assert name.startswith("TLS_") and version == "TLSv1.3" and bits >= 128
    assert pair.client.peer_thumbprint == pki.server.thumbprint
    assert pair.server.peer_thumbprint == pki.client.thumbprint
    assert pair.server.peer_thumbprint_sha256 == pki.client.thumbprint256
    der = pair.client.getpeercert(binary_form=True)
    assert hashlib.sha1(der).hexdigest().upper() == pki.server.thumbprint
    info = pair.client.getpeercert()
    assert ("commonName", "dcxsec-scp") in [rdn[0] for rdn in info["subject"]]
    assert ("DNS", "localhost") in info["subjectAltName"]


def test_tls12_when_one_side_caps_it(pki, pair_factory, server_ctx):
    client = TLSContext(config_for(pki.client, trusted=[pki.ca.cert_path],
                                   maximum_version=ssl.TLSVersion.TLSv1_2))
    pair = pair_factory(server_ctx, client)
    assert pair.client.version() == pair.server.version() == "TLSv1.2"
    assert "GCM" in pair.client.cipher()[0] or "CHACHA" in pair.client.cipher()[0]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_versions_below_tls12_are_refused(pki, version):
    with pytest.raises(ConfigurationError, match="RFC 8996"):
        config_for(pki.client, minimum_version=version)


def test_no_version_in_common_is_named(pki, pair_factory):
    server = TLSContext(config_for(pki.server, trusted=[pki.ca.cert_path],
                                   minimum_version=ssl.TLSVersion.TLSv1_3))
    client = TLSContext(config_for(pki.client, trusted=[pki.ca.cert_path],
                                   maximum_version=ssl.TLSVersion.TLSv1_2))
    pair = pair_factory(server, client)
    assert isinstance(pair.server_error, TLSError)
    assert "no TLS version in common" in str(pair.server_error)
    assert isinstance(pair.client_error, TLSError)
    assert "protocol version" in str(pair.client_error)


def _pump(sock, data: bytes) -> None:
    view = memoryview(data)
    for offset in range(0, len(view), 1 << 20):
        sock.sendall(view[offset:offset + (1 << 20)])


def _drain(sock, size: int) -> str:
    digest, buf, got = hashlib.sha256(), bytearray(1 << 18), 0
    while got < size:
        n = sock.recv_into(buf)
        assert n > 0, f"EOF after {got} of {size} bytes"
        digest.update(memoryview(buf)[:n])
        got += n
    return digest.hexdigest()


def test_50_mb_each_way_arrives_intact(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    up, down = os.urandom(50 << 20), os.urandom(50 << 20)
    results = {}
    writer = threading.Thread(target=_pump, args=(pair.client, up))
    writer.start()
    results["up"] = _drain(pair.server, len(up))
    writer.join()
    writer = threading.Thread(target=_pump, args=(pair.server, down))
    writer.start()
    results["down"] = _drain(pair.client, len(down))
    writer.join()
    assert results == {"up": hashlib.sha256(up).hexdigest(), "down": hashlib.sha256(down).hexdigest()}


def test_send_returns_the_bytes_sent_for_any_buffer(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    words = array.array("H", range(1000))  # 2000 bytes in 1000 items
    assert pair.client.send(memoryview(words)) == 2000
    assert pair.client.send(b"") == 0
    assert pair.client.sendall(bytearray(b"tail")) is None
    assert _drain(pair.server, 2004) == hashlib.sha256(words.tobytes() + b"tail").hexdigest()


def test_plaintext_waiting_in_the_engine_is_reported_by_pending(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    pair.client.sendall(b"PDU-ONE:" + b"PDU-TWO!")  # one TLS record
    assert pair.server.recv(8) == b"PDU-ONE:"
    readable, _, _ = select.select([pair.server], [], [], 0)
    assert readable == []  # the kernel has nothing more ...
    assert pair.server.pending() == 8  # ... but the engine does
    assert pair.server.recv(100) == b"PDU-TWO!"
    assert pair.server.pending() == 0


def test_a_connection_that_has_caught_up_keeps_no_receive_buffer(pair_factory, server_ctx,
                                                                  client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    pair.client.sendall(b"C-ECHO-RQ")
    assert pair.server.recv(4) == b"C-EC"
    assert pair.server._rbuf.held  # the rest is still to be read
    assert pair.server.recv(100) == b"HO-RQ"
    assert not pair.server._rbuf.held  # an idle association holds no 16 KiB buffer
    pair.client.sendall(b"again")
    assert pair.server.recv(100) == b"again"


def _send_records_and_wait(pair, pdus: list[bytes]) -> None:
    for pdu in pdus:
        pair.client.sendall(pdu)
    time.sleep(0.2)  # the records sit in the server's socket


def test_a_busy_connections_storage_serves_the_next_one(pair_factory, server_ctx, client_ctx):
    # Storage goes onto a shelf for the whole process when a connection catches
    # up, and the next busy fill takes it from there: no fresh pages each time.
    pdus = [bytes([i]) * 5000 for i in range(40)]  # 200 KB waiting: the storage grows
    first, second = pair_factory(server_ctx, client_ctx), pair_factory(server_ctx, client_ctx)
    gc.collect()  # sockets of earlier tests give their storage back now, not mid-test
    _send_records_and_wait(first, pdus)
    assert read_exactly(first.server, 200_000, 4096) == b"".join(pdus)
    assert first.server._rbuf.size == PLAIN_BUSY
    assert not first.server._rbuf.held
    kept = _recvbuf.shelved().count(PLAIN_BUSY)
    assert kept >= 1
    _send_records_and_wait(second, pdus)
    assert second.server.recv(1) == bytes([0])
    assert second.server._rbuf.size == PLAIN_BUSY
    assert _recvbuf.shelved().count(PLAIN_BUSY) == kept - 1  # taken, not made
    assert read_exactly(second.server, 199_999, 4096) == b"".join(pdus)[1:]
    assert _recvbuf.shelved().count(PLAIN_BUSY) == kept


def test_reused_storage_serves_only_its_new_connections_bytes(pair_factory, server_ctx,
                                                              client_ctx):
    pairs = [pair_factory(server_ctx, client_ctx) for _ in range(6)]
    failures: list[BaseException] = []

    def turns(pair, index: int) -> None:
        try:
            for turn in range(3):
                data = os.urandom(60_000 + 997 * index + turn)
                pair.client.sendall(data)
                assert read_exactly(pair.server, len(data), 4096) == data
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    # Six readers at once: storage goes to the shelf and comes back in any order.
    readers = [threading.Thread(target=turns, args=(pair, i)) for i, pair in enumerate(pairs)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(30)
    assert not failures and not any(reader.is_alive() for reader in readers)
    # Three connections dropped with decrypted bytes unread: their storage,
    # stale bytes and all, goes onto the shelf ...
    for pair in pairs[::2]:
        pair.client.sendall(b"never read " * 3000)
        time.sleep(0.05)
        assert pair.server.recv(1) == b"n"
        pair.server.close()
        pair.server = None
    gc.collect()
    # ... and the next busy connections take it, reading only their own bytes.
    for pair in pairs[1::2]:
        data = os.urandom(50_000)
        pair.client.sendall(data)
        time.sleep(0.1)
        shelved = _recvbuf.shelved().count(PLAIN_BUSY)
        assert shelved >= 1
        head = pair.server.recv(6)
        assert pair.server._rbuf.size == PLAIN_BUSY
        assert _recvbuf.shelved().count(PLAIN_BUSY) == shelved - 1
        assert head + read_exactly(pair.server, len(data) - 6, 4096) == data


def test_a_closed_socket_reads_nothing_it_had_decrypted(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    pair.client.sendall(b"A-ASSOCIATE-RQ and more")
    assert pair.server.recv(1) == b"A"
    assert pair.server.pending() > 0  # the rest is decrypted, ready for the next recv
    pair.server.close()
    with pytest.raises(OSError):
        pair.server.recv(100)
    assert pair.server.pending() == 0


def test_tcp_nodelay_is_set_on_every_wrapped_socket(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    for sock in (pair.client, pair.server):
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_close_notify_reads_as_eof(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    pair.client.sendall(b"bye")
    pair.client.shutdown(socket.SHUT_RDWR)
    assert pair.server.recv(10) == b"bye"
    assert pair.server.recv(10) == b""


def test_shutdown_after_the_peer_closed_lets_close_run(pair_factory, server_ctx, client_ctx):
    """A peer that reset the connection (or answers close_notify with a reset)
    leaves the TCP shutdown no connection: that must not raise, or pynetdicom
    (which calls shutdown() and then close()) leaves the socket to the collector."""
    pair = pair_factory(server_ctx, client_ctx)
    # The peer ends the connection with a reset, so that it is gone for certain.
    pair.server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    pair.server.close()
    assert select.select([pair.client], [], [], 10)[0]  # the reset has arrived
    pair.client.shutdown(socket.SHUT_RDWR)
    pair.client.close()
    assert pair.client.fileno() == -1


def test_shutdown_of_a_socket_never_connected_still_raises(client_ctx):
    sock = client_ctx.wrap_socket(socket.socket())
    try:
        with pytest.raises(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()


def test_tcp_close_at_a_record_boundary_reads_as_eof(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    pair.client.sendall(b"last")
    socket.socket.shutdown(pair.client, socket.SHUT_RDWR)  # no close_notify, as many peers do
    assert pair.server.recv(10) == b"last"
    assert pair.server.recv(10) == b""


def test_truncated_record_is_an_error(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    # Half of an application-data record, written under the engine's feet.
    os.write(pair.client.fileno(), b"\x17\x03\x03\x00\x40" + b"\x00" * 20)
    socket.socket.shutdown(pair.client, socket.SHUT_RDWR)
    with pytest.raises(TLSError, match="truncated"):
        pair.server.recv(10)


def test_read_timeout_raises_timeout_error(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    pair.server.settimeout(0.2)
    with pytest.raises(TimeoutError):
        pair.server.recv(10)
    pair.client.sendall(b"still alive")
    assert pair.server.recv(100) == b"still alive"


def test_non_blocking_read_raises_want_read(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    pair.client.setblocking(False)
    with pytest.raises(ssl.SSLWantReadError):
        pair.client.recv(10)


def test_accepting_side_needs_an_identity(pki, pair_factory, client_ctx):
    anonymous = TLSContext(dcxsec.SecurityConfig(verification_method=dcxsec.VerificationMethod.NONE))
    pair = pair_factory(anonymous, client_ctx)
    assert isinstance(pair.server_error, ConfigurationError)
    assert "needs its own certificate" in str(pair.server_error)


def test_datagram_calls_never_send_plaintext(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    with pytest.raises(ValueError):
        pair.client.sendto(b"x", ("127.0.0.1", 9))
    with pytest.raises(NotImplementedError):
        pair.client.unwrap()


def test_makefile_reads_and_writes_through_tls(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    with pair.client.makefile("wb") as out:
        out.write(b"line one\nline two\n")
    with pair.server.makefile("rb") as incoming:
        assert incoming.readline() == b"line one\n"
        assert incoming.readline() == b"line two\n"


def test_small_then_large_reads_see_each_byte_once(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    data = os.urandom(200_000)
    writer = threading.Thread(target=pair.client.sendall, args=(data,))
    writer.start()
    got, turn = bytearray(), 0
    while len(got) < len(data):  # small reads leave a record half taken, large ones follow
        piece = pair.server.recv(100 if turn % 3 == 0 else 65536)
        assert piece
        got += piece
        turn += 1
    writer.join()
    assert bytes(got) == data


def test_records_already_received_are_all_buffered_by_one_read(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    pdus = [bytes([i]) * (5000 + i) for i in range(40)]  # one record each, 200 KB in all
    for pdu in pdus:
        pair.client.sendall(pdu)
    time.sleep(0.2)  # the records sit in the server's socket
    first = pair.server.recv(1)
    # A busy connection's buffer grows in the same call until every record at
    # hand is plaintext: the small reads that follow never call in again.
    assert pair.server.pending() == sum(map(len, pdus)) - 1
    got = bytearray(first)
    while len(got) < sum(map(len, pdus)):
        got += pair.server.recv(6 if len(got) % 2 else 4096)
    assert bytes(got) == b"".join(pdus)
    assert pair.server.pending() == 0


def test_records_before_a_truncation_arrive_before_the_error(pair_factory, server_ctx, client_ctx):
    pair = pair_factory(server_ctx, client_ctx)
    pair.client.sendall(b"whole record")
    os.write(pair.client.fileno(), b"\x17\x03\x03\x00\x40" + b"\x00" * 20)
    socket.socket.shutdown(pair.client, socket.SHUT_RDWR)
    time.sleep(0.2)
    assert pair.server.recv(100) == b"whole record"
    with pytest.raises(TLSError, match="truncated"):
        pair.server.recv(10)


def _accept_when_readable(lst: socket.socket) -> socket.socket:
    """Accept, then wait until the peer's first bytes are in the socket."""
    raw, _ = lst.accept()
    select.select([raw], [], [], 10)
    return raw


def test_acceptor_answers_a_waiting_client_hello_in_wrap_socket(server_ctx, client_ctx):
    lst = listener()
    client = client_ctx.wrap_socket(socket.socket(), do_handshake_on_connect=False)
    client.settimeout(10)
    client.connect(lst.getsockname())
    done = threading.Thread(target=client.do_handshake)
    done.start()
    raw = _accept_when_readable(lst)
    server = server_ctx.wrap_socket(raw, server_side=True)  # and nothing more on this side
    # The requestor finishes while the acceptor's own code has not read from its
    # socket: ServerHello .. Finished came without the association's thread.
    done.join(5)
    try:
        assert not done.is_alive()
        assert client.version() == "TLSv1.3"
        client.sendall(b"A-ASSOCIATE-RQ")
        assert server.recv(100) == b"A-ASSOCIATE-RQ"
    finally:
        client.close()
        server.close()
        lst.close()


def test_acceptor_finishes_a_later_client_hello_without_the_association_thread(
        server_ctx, client_ctx):
    lst = listener()
    raw_client = socket.create_connection(lst.getsockname())
    raw, _ = lst.accept()
    server = server_ctx.wrap_socket(raw, server_side=True)  # before any ClientHello
    # The ClientHello comes after the accept loop moved on; nothing calls the
    # server socket, yet the requestor's handshake completes.
    client = client_ctx.wrap_socket(raw_client, do_handshake_on_connect=False)
    client.settimeout(10)
    try:
        client.do_handshake()
        assert client.version() == "TLSv1.3"
        client.sendall(b"A-ASSOCIATE-RQ")
        assert server.recv(100) == b"A-ASSOCIATE-RQ"
        assert server.version() == "TLSv1.3"
    finally:
        client.close()
        server.close()
        lst.close()


def test_closing_an_accepted_socket_mid_handshake_lets_its_peer_go(server_ctx):
    lst = listener()
    silent = socket.create_connection(lst.getsockname())
    raw, _ = lst.accept()
    server = server_ctx.wrap_socket(raw, server_side=True)
    try:
        server.close()  # held by the handshake thread: the connection must still close
        silent.settimeout(5)
        assert silent.recv(10) == b""
    finally:
        silent.close()
        lst.close()


def test_acceptor_leaves_a_silent_client_to_the_association_thread(server_ctx):
    lst = listener()
    silent = socket.create_connection(lst.getsockname())
    raw, _ = lst.accept()
    started = time.monotonic()
    server = server_ctx.wrap_socket(raw, server_side=True)  # must not wait for the client
    try:
        assert time.monotonic() - started < 0.5
        assert server.pending() == 0 and server.version() is None
    finally:
        server.close()
        silent.close()
        lst.close()


def _serve_one_handshake(server_ctx, lst: socket.socket) -> threading.Thread:
    def serve() -> None:
        raw, _ = lst.accept()
        with server_ctx.wrap_socket(raw, server_side=True) as server:
            server.sendall(server.recv(100))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"),
                                          (socket.AF_INET, "localhost"),
                                          (socket.AF_INET6, "::1")])
def test_connect_handshakes_to_numeric_and_named_addresses(server_ctx, client_ctx, family, host):
    try:
        lst = socket.socket(family)
        lst.bind((host, 0))
    except OSError as exc:
        pytest.skip(f"no {host} on this machine: {exc}")
    lst.listen()
    serving = _serve_one_handshake(server_ctx, lst)
    client = client_ctx.wrap_socket(socket.socket(family))
    try:
        client.settimeout(10)
        client.connect((host, lst.getsockname()[1]))
        assert client.version() == "TLSv1.3"
        client.sendall(b"echo")
        assert client.recv(100) == b"echo"
        assert client.getpeername()[1] == lst.getsockname()[1]
    finally:
        client.close()
        serving.join(5)
        lst.close()


def test_connect_refused_is_connection_refused_error(client_ctx):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))  # bound, never listening: the connection is refused
    client = client_ctx.wrap_socket(socket.socket())
    try:
        client.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            client.connect(port.getsockname())
        assert client.connect_ex(port.getsockname()) != 0
    finally:
        client.close()
        port.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_forked_child_accepts_even_if_the_handshake_thread_was_being_started(server_ctx,
                                                                              client_ctx):
    from dcxsec import pump

    lst = listener()
    pump._lock.acquire()  # as when another thread starts the pump at the moment of fork()
    try:
        pid = os.fork()
        if pid == 0:  # the child: accept and handshake once, report by exit status
            code = 1
            try:
                raw, _ = lst.accept()
                with server_ctx.wrap_socket(raw, server_side=True) as server:
                    server.sendall(server.recv(100))
                code = 0
            finally:
                os._exit(code)
    finally:
        pump._lock.release()
    client = client_ctx.wrap_socket(socket.socket())
    try:
        client.settimeout(10)
        client.connect(lst.getsockname())
        client.sendall(b"echo")
        assert client.recv(100) == b"echo"
    finally:
        client.close()
        lst.close()
        assert exit_code_within(pid, 10) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_forked_child_neither_finishes_nor_uses_an_accepted_connection(server_ctx,
                                                                         client_ctx):
    """Forked after the engine's handshake thread finished an accepted
    connection, before Python collected it: the child's pending() answers 1
    without touching it, its send, recv and detach are refused, and the
    parent's connection goes on both ways."""
    a, b = socket.socketpair()
    server = server_ctx.wrap_socket(a, server_side=True)
    client = client_ctx.wrap_socket(b)
    try:
        client.do_handshake()
        time.sleep(0.2)  # the handshake thread reads the client's Finished meanwhile
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                results = [server.pending()]
                for call in (lambda: server.send(b"child"), lambda: server.recv(5),
                             server.detach):
                    try:
                        call()
                        results.append("not refused")
                    except TLSError as exc:
                        results.append(exc.status)
                os.write(2, f"child: {results}\n".encode())
                code = 0 if results == [1, "INHERITED", "INHERITED", "INHERITED"] else 1
            finally:
                os._exit(code)
        assert exit_code_within(pid, 10) == 0
        server.sendall(b"parent")
        assert client.recv(6) == b"parent"
        client.sendall(b"back")
        assert server.recv(4) == b"back"
    finally:
        client.close()
        server.close()
