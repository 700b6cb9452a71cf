"""Records after the handshake, sealed and opened by OpenSSL's record layer:
key updates from OpenSSL's own peers in each TLS 1.3 cipher suite, altered
and forged records, records TLS forbids, and TLS 1.2 through the engine's
receive buffer.

The peers are ``openssl s_client`` / ``s_server`` (their ``K`` and ``k``
commands send a KeyUpdate, with or without asking for ours), Python's
``ssl`` as pynetdicom sets it up, and dcxsec itself, through a relay that
can alter or add bytes on the way.  A refused record is reported with
what it most likely means, and the peer is told with an alert.
"""
from __future__ import annotations

import os
import select
import socket
import ssl
import struct
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest

from dcxsec import TLSContext, TLSError, TLSSocket
from dcxsec._native import ffi, lib
from conftest import config_for, free_port, listener, needs_tools

pytestmark = needs_tools("openssl", install="openssl")

SUITES = ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"]
NOT_SEALED_FOR_US = "was not sealed for this connection"
NOT_PROTECTED = "not protected by the connection's keys"
# One application-data record whose tag cannot verify under any key.
FORGED_RECORD = b"\x17\x03\x03\x00\x20" + bytes(32)


class Relay:
    """A TCP relay between one client and ``target`` that can alter the next
    chunk going either way, or add bytes of its own."""

    def __init__(self, target: tuple[str, int]):
        self.listener = listener()
        self.address = self.listener.getsockname()
        self.target = target
        self.edit: dict[str, Callable[[bytes], bytes]] = {}  # "to_server" / "to_client"
        self._lock = threading.Lock()
        self._ends: dict[str, socket.socket] = {}
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(self.target)
        self._ends = {"to_server": server, "to_client": client}
        self._ready.set()
        source = {client: "to_server", server: "to_client"}
        try:
            while True:
                readable, _, _ = select.select(list(source), [], [], 10)
                for sock in readable:
                    data = sock.recv(65536)
                    direction = source[sock]
                    if not data:
                        return
                    with self._lock:
                        edit = self.edit.pop(direction, None)
                        self._ends[direction].sendall(edit(data) if edit else data)
        except OSError:
            return  # one end reset the connection: the test sees it from its side
        finally:
            for end in (client, server):
                end.close()

    def send(self, direction: str, data: bytes) -> None:
        """Bytes of the relay's own, to the server or the client."""
        self._ready.wait(10)
        with self._lock:
            self._ends[direction].sendall(data)

    def close(self) -> None:
        self.listener.close()


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def read_until(sock, marker: bytes, limit: float = 10) -> bytes:
    got, deadline = bytearray(), time.monotonic() + limit
    while marker not in got:
        assert time.monotonic() < deadline, f"no {marker!r} in {bytes(got[-200:])!r}"
        piece = sock.recv(65536)
        assert piece, f"EOF before {marker!r}"
        got += piece
    return bytes(got)


class OpenSSLTool:
    """``openssl s_client`` or ``s_server`` with its console on pipes, and the
    protocol messages it sees and sends in a file of their own."""

    def __init__(self, args: list[str], messages: Path):
        self.messages = messages
        self.proc = subprocess.Popen(["openssl", *args, "-msg", "-msgfile", str(messages)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.output = bytearray()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            self.output += chunk

    def type(self, line: str) -> None:
        """A console line: data, or K / k (KeyUpdate, asking for ours / not)."""
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        time.sleep(0.2)  # the tool reads its console and the socket by turns

    def wait_for(self, text: bytes, limit: float = 10) -> None:
        deadline = time.monotonic() + limit
        while text not in self.output:
            assert self.proc.poll() is None or text in self.output, bytes(self.output[-2000:])
            assert time.monotonic() < deadline, bytes(self.output[-2000:])
            time.sleep(0.05)

    def key_updates_received(self) -> int:
        lines = self.messages.read_text(errors="replace").splitlines()
        return sum(1 for line in lines if line.startswith("<<<") and "KeyUpdate" in line)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.mark.parametrize("suite", SUITES)
def test_key_updates_from_s_client_each_suite(pki, server_ctx, suite, tmp_path):
    """s_client -> relay -> dcxsec acceptor: data both ways across KeyUpdates."""
    lst = listener()
    relay = Relay(lst.getsockname())
    tool = OpenSSLTool(["s_client", "-connect", "%s:%d" % relay.address, "-tls1_3",
                        "-ciphersuites", suite, "-cert", str(pki.client.cert_path),
                        "-key", str(pki.client.key_path), "-CAfile", str(pki.ca.cert_path)],
                       tmp_path / "messages")
    try:
        raw, _ = lst.accept()
        server = server_ctx.wrap_socket(raw, server_side=True)
        server.do_handshake()
        assert server.cipher()[0] == suite
        tool.type("hello")
        read_until(server, b"hello\n")
        tool.type("K")  # a KeyUpdate that asks for ours
        tool.type("after")
        read_until(server, b"after\n")
        reply = b"reply:" + os.urandom(30000).hex().encode() + b":end"  # several records
        server.sendall(reply)  # behind our KeyUpdate, on our next keys
        tool.wait_for(reply)
        assert tool.key_updates_received() == 1  # ours, which it asked for
        tool.type("k")  # a KeyUpdate that does not
        tool.type("last")
        read_until(server, b"last\n")
        server.sendall(b"still-in-step")
        tool.wait_for(b"still-in-step")
        assert tool.key_updates_received() == 1  # none was asked for
        relay.send("to_server", FORGED_RECORD)
        with pytest.raises(TLSError, match=NOT_SEALED_FOR_US):
            server.recv(100)
    finally:
        tool.stop()
        relay.close()
        lst.close()


@pytest.mark.parametrize("suite", SUITES)
def test_key_updates_from_s_server_each_suite(pki, client_ctx, suite, tmp_path):
    """dcxsec requestor -> relay -> s_server, which sends two session tickets
    before its first data: the data behind them is read at once."""
    port = free_port()
    tool = OpenSSLTool(["s_server", "-accept", f"127.0.0.1:{port}", "-tls1_3", "-ciphersuites",
                        suite, "-cert", str(pki.server.cert_path), "-key", str(pki.server.key_path)],
                       tmp_path / "messages")
    relay = None
    try:
        tool.wait_for(b"ACCEPT")
        relay = Relay(("127.0.0.1", port))
        client = client_ctx.wrap_socket(socket.socket())
        client.connect(relay.address)
        assert client.cipher()[0] == suite
        tool.type("first")
        read_until(client, b"first\n")
        tool.type("K")
        tool.type("second")
        read_until(client, b"second\n")
        client.sendall(b"answer-one")  # behind our KeyUpdate
        tool.wait_for(b"answer-one")
        assert tool.key_updates_received() == 1
        tool.type("k")
        tool.type("third")
        read_until(client, b"third\n")
        client.sendall(b"answer-two")
        tool.wait_for(b"answer-two")
        assert tool.key_updates_received() == 1
        relay.send("to_client", FORGED_RECORD)
        with pytest.raises(TLSError, match=NOT_SEALED_FOR_US):
            client.recv(100)
    finally:
        tool.stop()
        if relay:
            relay.close()


@contextmanager
def _pair_through_relay(server_ctx, client_ctx) -> Iterator[tuple[Relay, TLSSocket, TLSSocket]]:
    """(relay, requestor, acceptor), handshaken through a relay; all closed after."""
    lst = listener()
    relay = Relay(lst.getsockname())
    accepted: dict = {}

    def accept() -> None:
        raw, _ = lst.accept()
        accepted["server"] = server_ctx.wrap_socket(raw, server_side=True)
        accepted["server"].do_handshake()

    thread = threading.Thread(target=accept)
    thread.start()
    client = client_ctx.wrap_socket(socket.socket())
    client.connect(relay.address)
    thread.join(10)
    try:
        yield relay, client, accepted["server"]
    finally:
        for sock in (client, accepted["server"], lst):
            sock.close()
        relay.close()


@pytest.mark.parametrize("direction", ["to_server", "to_client"])
def test_an_altered_record_is_refused_and_the_peer_told(server_ctx, client_ctx, direction):
    with _pair_through_relay(server_ctx, client_ctx) as (relay, client, server):
        writer, reader = (client, server) if direction == "to_server" else (server, client)
        writer.settimeout(10)
        reader.settimeout(10)
        writer.sendall(b"intact")  # the requestor reads behind the ticket
        assert read_until(reader, b"intact") == b"intact"
        relay.edit[direction] = flip_last_byte  # the record's tag
        writer.sendall(b"x" * 100)
        with pytest.raises(TLSError, match="bad record mac") as refused:
            reader.recv(100)
        assert NOT_SEALED_FOR_US in str(refused.value)
        with pytest.raises(TLSError, match="(?i)bad record mac") as told:
            writer.recv(100)
        assert told.value.status == "PEER_ALERT" and told.value.alert == 20


@pytest.mark.parametrize("record, reason", [
    (b"\x15\x03\x03\x00\x02\x02\x28", NOT_PROTECTED),  # forged by anyone
    (b"\x16\x03\x03\x00\x04\x01\x00\x00\x00", NOT_PROTECTED),
    (b"\x17\x03\x03\x48\x01" + bytes(64), "larger than TLS allows"),
    (b"\x17\x03\x03\x00\x05" + bytes(5), NOT_SEALED_FOR_US),
], ids=["plaintext-alert", "plaintext-handshake", "oversized", "too-short-for-a-tag"])
def test_records_tls_forbids_after_the_handshake(pair_factory, server_ctx, client_ctx, record,
                                                 reason):
    pair = pair_factory(server_ctx, client_ctx)
    os.write(pair.client.fileno(), record)  # under the engine's feet
    with pytest.raises(TLSError) as refused:
        pair.server.recv(10)
    assert reason in str(refused.value)
    with pytest.raises(TLSError) as again:  # the connection stays failed, for the same reason
        pair.server.recv(10)
    assert reason in str(again.value)


def test_tls12_records_arrive_whole_through_the_receive_buffer(pki, pair_factory, server_ctx):
    client = TLSContext(config_for(pki.client, trusted=[pki.ca.cert_path],
                                   maximum_version=ssl.TLSVersion.TLSv1_2))
    pair = pair_factory(server_ctx, client)
    assert pair.server.version() == "TLSv1.2"
    data = os.urandom(3_000_000)
    writer = threading.Thread(target=pair.client.sendall, args=(data,))
    writer.start()
    got = bytearray()
    while len(got) < len(data):
        got += pair.server.recv(6 if len(got) % 3 else 100_000)
    writer.join()
    assert bytes(got) == data
    pair.server.sendall(b"back")
    assert pair.client.recv(10) == b"back"


def test_a_forged_record_before_the_first_reply_is_refused_and_the_peer_told(server_ctx,
                                                                            client_ctx):
    """A record forged into the stream before the acceptor has written
    anything (behind the handshake and its tickets) is refused, and the
    alert that says so reaches the acceptor intact."""
    with _pair_through_relay(server_ctx, client_ctx) as (relay, client, server):
        client.settimeout(10)
        server.settimeout(10)
        client.sendall(b"A-ASSOCIATE-RQ")
        read_until(server, b"A-ASSOCIATE-RQ")
        relay.send("to_client", FORGED_RECORD)  # before the acceptor's first write
        with pytest.raises(TLSError, match="(?i)bad record mac"):
            client.recv(100)
        with pytest.raises(TLSError) as told:  # the alert opens: it is the peer's
            server.recv(100)
        assert told.value.status == "PEER_ALERT" and told.value.alert == 20


def test_a_reset_after_data_is_reported_after_the_data(pki, server_ctx):
    lst = listener()
    requestor = _python_ssl(pki, False).wrap_socket(socket.create_connection(lst.getsockname()),
                                                     do_handshake_on_connect=False)
    raw, _ = lst.accept()
    thread = threading.Thread(target=requestor.do_handshake)
    thread.start()
    acceptor = server_ctx.wrap_socket(raw, server_side=True)
    acceptor.do_handshake()
    thread.join(10)
    try:
        requestor.sendall(b"last words")
        time.sleep(0.2)
        requestor.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        requestor.close()  # no close_notify: a TCP reset behind the record
        time.sleep(0.2)
        assert acceptor.recv(100) == b"last words"
        with pytest.raises(ConnectionResetError):
            acceptor.recv(100)
        with pytest.raises(ConnectionResetError):  # and it stays so
            acceptor.recv(100)
    finally:
        acceptor.close()
        lst.close()


def _python_ssl(pki, server_side: bool) -> ssl.SSLContext:
    """Python's ssl, set up as pynetdicom documents it."""
    if server_side:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(pki.server.cert_path, pki.server.key_path)
        ctx.load_verify_locations(pki.ca.cert_path)
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca.cert_path))
        ctx.check_hostname = False
        ctx.load_cert_chain(pki.client.cert_path, pki.client.key_path)
    return ctx


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_close_notify_behind_a_full_socket_is_finished_by_a_later_shutdown(
        pki, server_ctx, version):
    """The GIL-held close_notify gives up at once on a socket that takes no
    byte; a shutdown with no time left queues the record, after which no data
    may be written; a later shutdown sends the rest, after every byte, and the
    peer (its socket still open, so no TCP EOF) reads a clean end."""
    client_ctx = TLSContext(config_for(pki.client, trusted=[pki.ca.cert_path],
                                       maximum_version=version))
    a, b = socket.socketpair()  # AF_UNIX: no tail of a TCP segment takes a last small record
    server = server_ctx.wrap_socket(a, server_side=True)
    client = client_ctx.wrap_socket(b)
    try:
        client.do_handshake()
        client.send(b"hello")
        assert server.recv(5) == b"hello"
        sent = 0
        # The server reads nothing yet, so the socket fills up here.
        while select.select([], [client], [], 0)[1]:
            sent += client.send(b"x" * 2048)
        # A send buffer smaller than what the socket holds takes nothing more.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        conn = client._connection.conn
        assert lib.dcx_conn_close_notify_now(conn, ffi.NULL) == lib.DCX_E_TIMEOUT
        assert lib.dcx_conn_shutdown(conn, 0, 0, ffi.NULL) == lib.DCX_E_TIMEOUT
        with pytest.raises(OSError):
            client.send(b"after close_notify")

        got = bytearray()
        ending: list = []

        def drain() -> None:
            try:
                while data := server.recv(65536):
                    got.extend(data)
                ending.append("close_notify")
            except OSError as exc:
                ending.append(repr(exc))

        reading = threading.Thread(target=drain)
        reading.start()
        assert lib.dcx_conn_shutdown(conn, 10000, 0, ffi.NULL) == lib.DCX_OK
        reading.join(10)
        assert ending == ["close_notify"]
        assert len(got) == sent
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize("dcxsec_side", ["acceptor", "requestor"])
def test_python_ssl_peer_both_ways(pki, server_ctx, client_ctx, dcxsec_side):
    """4 MB each way against Python's ssl, whose acceptor sends two tickets
    before any data; the reader takes them in 6-byte and 64 KiB reads."""
    lst = listener()
    accepted: dict = {}

    def accept() -> None:
        raw, _ = lst.accept()
        if dcxsec_side == "acceptor":
            accepted["sock"] = server_ctx.wrap_socket(raw, server_side=True)
        else:
            accepted["sock"] = _python_ssl(pki, True).wrap_socket(raw, server_side=True)
        accepted["sock"].do_handshake()

    thread = threading.Thread(target=accept)
    thread.start()
    if dcxsec_side == "acceptor":
        requestor = _python_ssl(pki, False).wrap_socket(socket.socket())
    else:
        requestor = client_ctx.wrap_socket(socket.socket())
    requestor.connect(lst.getsockname())
    thread.join(10)
    acceptor = accepted["sock"]
    try:
        assert requestor.version() == acceptor.version() == "TLSv1.3"
        for writer, reader in ((acceptor, requestor), (requestor, acceptor)):
            data = os.urandom(4_000_000)
            sending = threading.Thread(target=writer.sendall, args=(data,))
            sending.start()
            got = bytearray()
            while len(got) < len(data):
                piece = reader.recv(6 if len(got) % 5 == 0 else 65536)
                assert piece
                got += piece
            sending.join(10)
            assert bytes(got) == data
    finally:
        for sock in (requestor, acceptor, lst):
            sock.close()
