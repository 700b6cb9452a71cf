"""The engine's acceptor behind dcxsec's servers: only authenticated peers
become associations, hostile connections are refused with accurate reasons,
and the gateway keeps serving while they are held open.

Real sockets on loopback, real handshakes, real pynetdicom associations with
its defaults (maximum_associations 10).  Hostile clients connect from other
loopback addresses (127.0.x.y), as an attack from many hosts would, so that
the per-address limit is not what keeps them out.
"""
from __future__ import annotations

import gc
import logging
import os
import socket
import ssl
import struct
import threading
import time
import warnings

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

import dcxsec
from conftest import config_for, requestor
from dcxsec import TLSContext

HANDSHAKE_TIMEOUT = 5.0  # SecurityConfig's default


def client_hello() -> bytes:
    """A real TLS ClientHello, as Python's ssl writes it."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


HELLO = client_hello()


def connect_from(source: str, port: int) -> socket.socket:
    """A TCP connection to the server from the loopback address ``source``."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def sources(count: int, per_address: int, subnet: int):
    """``count`` source addresses, ``per_address`` connections from each."""
    return [f"127.{subnet}.{i // per_address // 250}.{i // per_address % 250 + 1}"
            for i in range(count)]


class Trickle:
    """Clients that each send a ClientHello one byte a second, until the
    server closes them."""

    def __init__(self, socks: list[socket.socket], interval: float = 1.0) -> None:
        self.socks = socks
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sent, alive = 0, list(self.socks)
        while alive and not self.stop.is_set() and sent < len(HELLO):
            for sock in list(alive):
                try:
                    sock.send(HELLO[sent:sent + 1])
                except OSError:
                    alive.remove(sock)
            sent += 1
            self.stop.wait(self.interval)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


class Gateway:
    """An SCP started with dcxsec.start_server(block=False), counting the
    connections pynetdicom opened and the refusals handed to the hook."""

    def __init__(self, ctx: TLSContext, **limits) -> None:
        self.opened: list = []
        self.refusals: list[dcxsec.Refusal] = []
        self.ae = AE("GATEWAY")
        self.ae.add_supported_context(Verification)
        handlers = [(evt.EVT_CONN_OPEN, lambda event: self.opened.append(event.address))]
        self.server = dcxsec.start_server(self.ae, ("127.0.0.1", 0), ctx, block=False,
                                          evt_handlers=handlers,
                                          on_refusal=self.refusals.append, **limits)
        self.port = self.server.server_address[1]

    def refused(self, count: int, timeout: float = 15.0) -> list[dcxsec.Refusal]:
        deadline = time.monotonic() + timeout
        while len(self.refusals) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.refusals)

    def pending(self, count: int, timeout: float = 5.0) -> int:
        """The acceptor's pending handshakes, once there are ``count`` (or at the timeout)."""
        deadline = time.monotonic() + timeout
        while self.server.acceptor_stats()["pending"] < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.server.acceptor_stats()["pending"]

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def gateway(server_ctx):
    made = []

    def make(ctx: TLSContext = server_ctx, **limits) -> Gateway:
        made.append(Gateway(ctx, **limits))
        return made[-1]

    yield make
    for g in made:
        g.stop()


def echo(port: int, ctx: TLSContext, ae: AE | None = None) -> tuple[bool, float]:
    """A mutual-TLS association, a C-ECHO and a release: (succeeded, seconds)."""
    ae = ae or requestor()
    started = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY", tls_args=(ctx, None))
    try:
        ok = assoc.is_established and assoc.send_c_echo().Status == 0x0000
    finally:
        if assoc.is_established:
            assoc.release()
    return ok, time.monotonic() - started


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def settle(measure, target: int, timeout: float = 10.0) -> int:
    """``measure()`` once it is back at ``target`` or lower (or at the timeout)."""
    deadline = time.monotonic() + timeout
    value = measure()
    while value > target and time.monotonic() < deadline:
        time.sleep(0.1)
        value = measure()
    return value


def dcxsec_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("dcxsec")]


# ---- verified peers ---------------------------------------------------------


def test_start_server_serves_verified_peers(gateway, client_ctx):
    g = gateway()
    for _ in range(3):
        ok, _ = echo(g.port, client_ctx)
        assert ok
    assert len(g.opened) == 3
    assert g.refusals == []
    assert isinstance(g.server, dcxsec.ThreadedAssociationServer)


def test_make_server_with_dcxsec_server_class(server_ctx, client_ctx, pki):
    seen = []

    def on_echo(event) -> int:
        sock = event.assoc.dul.socket.socket
        seen.append((type(sock), sock.version(), sock.peer_thumbprint))
        return 0x0000

    ae = AE("GATEWAY")
    ae.add_supported_context(Verification)
    server = ae.make_server(("127.0.0.1", 0), ssl_context=server_ctx,
                            evt_handlers=[(evt.EVT_C_ECHO, on_echo)],
                            server_class=dcxsec.ThreadedAssociationServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for _ in range(2):
            ok, _ = echo(server.server_address[1], client_ctx)
            assert ok
    finally:
        server.shutdown()
        thread.join(5)
    assert not thread.is_alive()
    assert len(seen) == 2
    for kind, version, thumbprint in seen:
        assert kind is dcxsec.TLSSocket
        assert version in ("TLSv1.2", "TLSv1.3")
        assert thumbprint == pki.client.thumbprint
    with pytest.raises(OSError):  # the listening socket is closed
        socket.create_connection(server.server_address, timeout=2)


def test_server_needs_a_dcxsec_context_with_an_identity(pki):
    ae = AE("GATEWAY")
    ae.add_supported_context(Verification)
    no_identity = TLSContext(dcxsec.SecurityConfig(trusted_certificates=[pki.ca.cert_path],
                                                   use_system_trust=False))
    with pytest.raises(dcxsec.ConfigurationError, match="no identity"):
        dcxsec.start_server(ae, ("127.0.0.1", 0), no_identity, block=False)
    with pytest.raises(dcxsec.ConfigurationError, match="dcxsec.TLSContext"):
        dcxsec.start_server(ae, ("127.0.0.1", 0), ssl.create_default_context(), block=False)


# ---- hostile connections held open ------------------------------------------


def test_hostile_connections_never_become_associations(gateway, client_ctx, caplog):
    caplog.set_level(logging.WARNING)
    g = gateway()
    ok, _ = echo(g.port, client_ctx)  # warm: the levels below include a served association
    assert ok
    threads_before, fds_before = os_threads(), open_descriptors()

    silent = [connect_from(s, g.port) for s in sources(50, 10, 1)]
    half = [connect_from(s, g.port) for s in sources(50, 10, 2)]
    for sock in half:
        sock.sendall(HELLO[:len(HELLO) // 2])
    slow = [connect_from(s, g.port) for s in sources(50, 10, 3)]
    trickle = Trickle(slow)
    names = {id(sock): sock.getsockname() for sock in silent + half + slow}
    try:
        assert g.pending(150) == 150
        # maximum_associations is 10: twelve in a row prove no hostile one holds a place.
        for _ in range(12):
            ok, seconds = echo(g.port, client_ctx)
            assert ok
            assert seconds < 4.0  # at once, not after the hostile ones' 5 s deadline
        assert g.server.acceptor_stats()["pending"] > 0  # they were still held open meanwhile
        assert len(g.opened) == 13  # only the real ones fired EVT_CONN_OPEN

        refusals = g.refused(150)
    finally:
        trickle.close()
        for sock in silent + half + slow:
            sock.close()
    assert len(refusals) == 150
    by_peer = {(r.address, r.port): r for r in refusals}
    assert len(by_peer) == 150  # once per refused connection
    for group, kind, words in ((silent, "nothing sent", "the client connected and sent nothing"),
                               (half, "partial ClientHello",
                                f"the client sent a partial ClientHello ({len(HELLO) // 2} of the "
                                f"{len(HELLO)} bytes its record announced), then nothing for"),
                               (slow, "too slow", "the client was too slow, its ClientHello was "
                                                  "still arriving")):
        for sock in group:
            address, port = names[id(sock)]
            refusal = by_peer[(address, port)]
            assert refusal.kind == kind, refusal
            assert words in refusal.reason
            assert refusal.stage == "handshake"
            assert refusal.address == address
    assert len(g.opened) == 13
    assert not g.server.active_associations

    # The log stays readable: a few lines, then one summary that counts all 150.
    g.server.refusals.interval = 0.0
    g.server.service_actions()
    lines = [r.getMessage() for r in dcxsec_records(caplog)]
    assert len(lines) <= 12
    summary = [line for line in lines if line.startswith("refused 150 connections")]
    assert summary and "50 nothing sent" in summary[0] and "50 too slow" in summary[0]
    assert "50 partial ClientHello" in summary[0]
    assert not any(r.exc_info for r in caplog.records)

    # Everything the hostile ones held is let go.
    assert settle(os_threads, threads_before) <= threads_before
    assert settle(open_descriptors, fds_before) <= fds_before


# ---- every reason, once per refused connection -------------------------------


def test_each_refusal_reason_is_accurate_and_reaches_the_hook(gateway, pki, caplog):
    caplog.set_level(logging.DEBUG)
    g = gateway()
    silent = connect_from("127.0.4.1", g.port)
    half = connect_from("127.0.4.2", g.port)
    half.sendall(HELLO[:100])
    slow = connect_from("127.0.4.3", g.port)
    trickle = Trickle([slow])
    whole = connect_from("127.0.4.5", g.port)
    whole.sendall(HELLO)  # answered, then silence
    for source, how in (("127.0.4.6", "closed"), ("127.0.4.7", "reset")):
        cut = connect_from(source, g.port)
        cut.sendall(HELLO[:100])
        time.sleep(0.2)
        if how == "reset":
            cut.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        cut.close()
    http = connect_from("127.0.4.4", g.port)
    http.sendall(b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n")
    plain = AE("PLAIN")
    plain.add_requested_context(Verification)
    assert not plain.associate("127.0.0.1", g.port, ae_title="GATEWAY").is_established
    untrusted = TLSContext(config_for(pki.untrusted, trusted=[pki.ca.cert_path]))
    ok, _ = echo(g.port, untrusted)
    assert not ok
    anonymous = TLSContext(dcxsec.SecurityConfig(trusted_certificates=[pki.ca.cert_path],
                                                 use_system_trust=False))
    ok, _ = echo(g.port, anonymous)
    assert not ok
    try:
        refusals = g.refused(10)
    finally:
        trickle.close()
        for sock in (silent, half, slow, whole, http):
            sock.close()
    assert len(refusals) == 10
    by_kind = {r.kind: r for r in refusals}
    assert len(by_kind) == 10, [r.kind for r in refusals]
    assert by_kind["nothing sent"].address == "127.0.4.1"
    assert (f"sent a partial ClientHello (100 of the {len(HELLO)} bytes its record announced), "
            "then nothing for") in by_kind["partial ClientHello"].reason
    assert by_kind["too slow"].address == "127.0.4.3"
    stopped = by_kind["stopped answering"]
    assert stopped.address == "127.0.4.5"
    assert f"the client stopped answering ({len(HELLO)} bytes received from it" in stopped.reason
    assert by_kind["partial ClientHello, then closed"].reason == (
        "the client closed the connection after a partial ClientHello "
        f"(100 of the {len(HELLO)} bytes its record announced)")
    assert by_kind["partial ClientHello, then reset"].reason == (
        "the client reset the connection after a partial ClientHello "
        f"(100 of the {len(HELLO)} bytes its record announced)")
    assert by_kind["not TLS (an HTTP request)"].address == "127.0.4.4"
    dicom = by_kind["not TLS (a plain DICOM A-ASSOCIATE-RQ PDU)"]
    assert dicom.stage == "handshake" and "not speaking TLS" in dicom.reason
    bad = by_kind["verification failed (untrusted)"]
    assert bad.stage == "verification"
    assert bad.subject == "CN=dcxsec-untrusted"
    assert bad.thumbprint == pki.untrusted.thumbprint
    assert "is not trusted" in bad.reason
    none = by_kind["verification failed (no certificate)"]
    assert none.stage == "verification" and none.subject is None and none.thumbprint is None
    assert "presented no certificate" in none.reason
    assert g.opened == []

    # One WARNING line each, with the peer's address and the same reason.
    lines = [r for r in dcxsec_records(caplog) if r.name == "dcxsec.server"]
    assert len(lines) == 10
    for refusal in refusals:
        matching = [r for r in lines if refusal.peer() in r.getMessage()]
        assert len(matching) == 1 and refusal.reason in matching[0].getMessage()
        assert matching[0].levelno == logging.WARNING
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("dcxsec"))


# ---- limits ---------------------------------------------------------------------


def test_per_address_limit_refuses_new_connections_only(gateway, client_ctx):
    g = gateway()
    ae = requestor()
    admitted = ae.associate("127.0.0.1", g.port, ae_title="GATEWAY", tls_args=(client_ctx, None))
    assert admitted.is_established
    # While there is room, a burst from one busy host is served whole.
    burst = [connect_from("127.0.5.1", g.port) for _ in range(32)]
    assert g.pending(32) == 32
    # Once half of max_pending (256) are taken, that host is over its share ...
    crowd = [connect_from(s, g.port) for s in sources(96, 8, 6)]
    assert g.pending(128) == 128
    assert g.refusals == []
    over = connect_from("127.0.5.1", g.port)
    over_port = over.getsockname()[1]
    try:
        refusals = g.refused(1, timeout=4.0)
        assert len(refusals) == 1
        refusal = refusals[0]
        assert refusal.stage == "limit" and refusal.kind == "over a limit (per address)"
        assert refusal.port == over_port
        assert refusal.reason.startswith(
            "over a limit: 32 pending handshakes from 127.0.5.1 while 128 are pending in all")
        over.settimeout(4)
        assert over.recv(1) == b""  # closed at once
        # ... while other addresses, and the admitted association, go on.
        assert admitted.send_c_echo().Status == 0x0000
        ok, _ = echo(g.port, client_ctx)
        assert ok
        assert g.server.acceptor_stats()["pending"] == 128
        assert len(g.refusals) == 1
    finally:
        admitted.release()
        for sock in burst + crowd + [over]:
            sock.close()


def test_total_limit_refuses_new_connections_only(gateway, client_ctx):
    g = gateway()
    ae = requestor()
    admitted = ae.associate("127.0.0.1", g.port, ae_title="GATEWAY", tls_args=(client_ctx, None))
    assert admitted.is_established
    held = [connect_from(s, g.port) for s in sources(256, 16, 6)]
    over = connect_from("127.0.7.1", g.port)
    try:
        refusals = g.refused(1, timeout=4.0)
        assert [r.kind for r in refusals] == ["over a limit (in all)"]
        assert refusals[0].reason.startswith("over a limit: 256 pending handshakes in all")
        assert refusals[0].address == "127.0.7.1"
        assert over.recv(1) == b""
        assert admitted.send_c_echo().Status == 0x0000
    finally:
        admitted.release()
        for sock in held + [over]:
            sock.close()
    # Those closed by their clients are refused now, not at their deadline.
    refusals = g.refused(257, timeout=10.0)
    assert len(refusals) == 257
    assert {r.kind for r in refusals[1:]} == {"closed before sending anything"}
    ok, _ = echo(g.port, client_ctx)
    assert ok


# ---- AE-title bindings, and stopping ------------------------------------------


def test_binding_refusal_reaches_the_hook(gateway, pki, client_ctx, caplog):
    caplog.set_level(logging.DEBUG)
    bound_elsewhere = TLSContext(config_for(pki.server, trusted=[pki.ca.cert_path],
                                            ae_bindings={"CT01": [pki.client.thumbprint]}))
    g = gateway(bound_elsewhere)
    ok, _ = echo(g.port, client_ctx)  # calling AE title DCXSEC-SCU, not bound to the client
    assert not ok
    ok, _ = echo(g.port, client_ctx, requestor(ae_title="CT01"))
    assert ok
    refusals = g.refused(1)
    assert len(refusals) == 1
    refusal = refusals[0]
    assert refusal.stage == "binding"
    assert "calling AE title 'DCXSEC-SCU' is not bound" in refusal.reason
    assert refusal.subject == "CN=dcxsec-scu" and refusal.thumbprint == pki.client.thumbprint
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def test_stopping_frees_every_pending_handshake(gateway, client_ctx):
    g = gateway()
    fds_before = open_descriptors()
    silent = [connect_from("127.0.8.1", g.port) for _ in range(10)]
    try:
        assert g.pending(10) == 10
        g.server.shutdown()
        for sock in silent:
            sock.settimeout(2.0)  # closed by the stop, long before the 5 s deadline
            assert sock.recv(1) == b""
    finally:
        for sock in silent:
            sock.close()
    assert settle(open_descriptors, fds_before) <= fds_before
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", g.port), timeout=2)


def test_blocking_start_server_and_ipv6(server_ctx, client_ctx):
    from conftest import free_port

    ae = AE("GATEWAY")
    ae.add_supported_context(Verification)
    port = free_port()
    thread = threading.Thread(target=dcxsec.start_server,
                              args=(ae, ("127.0.0.1", port), server_ctx), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not ae._servers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert type(ae._servers[0]) is dcxsec.AssociationServer
    ok, _ = echo(port, client_ctx)
    assert ok
    ae.shutdown()
    thread.join(5)
    assert not thread.is_alive()

    if not socket.has_ipv6:
        return
    try:
        server = dcxsec.start_server(ae, ("::1", 0), server_ctx, block=False)
    except OSError as exc:  # no IPv6 loopback here
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        scu = requestor()
        assoc = scu.associate("::1", server.server_address[1], ae_title="GATEWAY",
                              tls_args=(client_ctx, None))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
    finally:
        server.shutdown()


# ---- a bounded flood of mixed hostile connections ------------------------------


def tls10_hello() -> bytes:
    """A TLS 1.0 ClientHello (refused: TLS 1.2 is the floor)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def flood_payloads() -> dict[str, tuple[bytes, str | None]]:
    """What each kind of hostile client sends, and the kind of refusal it earns."""
    return {
        "tls1.0": (tls10_hello(), "no TLS version in common"),
        **_FLOOD,
    }


_FLOOD = {
    "http": (b"GET /index.html HTTP/1.1\r\nHost: pacs\r\n\r\n", "not TLS (an HTTP request)"),
    "dicom": (bytes([1, 0, 0, 0, 0, 0x44]) + bytes(0x44),
              "not TLS (a plain DICOM A-ASSOCIATE-RQ PDU)"),
    "random": (b"\xde\xad" + bytes(range(60)), "not TLS (other data)"),
    "sslv2": (bytes([0x80, 0x2e, 0x01, 0x03, 0x01]) + bytes(0x2b),
              "not TLS (an SSLv2-format ClientHello (obsolete and refused))"),
    "oversized": (b"\x16\x03\x01\xff\xff" + bytes(64), None),
    "reset": (HELLO[:100], "partial ClientHello, then reset"),
    "silent": (b"", "nothing sent"),
    "partial": (HELLO[:120], "partial ClientHello"),
}


def test_gateway_keeps_serving_through_a_mixed_flood(gateway, client_ctx):
    payloads = flood_payloads()
    g = gateway()
    ok, _ = echo(g.port, client_ctx)
    assert ok
    threads_before, fds_before = os_threads(), open_descriptors()
    per_kind = 30
    held, sent = [], []

    def flood() -> None:
        for i in range(per_kind):
            for n, (name, (payload, _)) in enumerate(payloads.items()):
                sock = connect_from(f"127.9.{i}.{n + 1}", g.port)
                sent.append(name)
                if payload:
                    sock.sendall(payload)
                if name == "reset":
                    time.sleep(0.01)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
                else:
                    held.append(sock)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    results = []
    try:
        while flooder.is_alive() or len(results) < 5:
            results.append(echo(g.port, client_ctx))
        flooder.join()
        total = per_kind * len(payloads)
        refusals = g.refused(total, timeout=20)
    finally:
        for sock in held:
            sock.close()
    assert all(ok for ok, _ in results), results
    assert max(seconds for _, seconds in results) < 4.0
    assert len(g.opened) == 1 + len(results)  # not one hostile connection among them
    assert len(refusals) == total
    kinds = {}
    for refusal in refusals:
        kinds[refusal.kind] = kinds.get(refusal.kind, 0) + 1
    for name, (_, kind) in payloads.items():
        if kind is not None:
            assert kinds.get(kind) == per_kind, (name, kinds)
    oversized = [r for r in refusals if r.kind.startswith("TLS handshake failed")]
    assert len(oversized) == per_kind, kinds
    assert settle(os_threads, threads_before) <= threads_before
    assert settle(open_descriptors, fds_before) <= fds_before


def test_a_failing_hook_is_logged_once_and_serving_goes_on(server_ctx, client_ctx, caplog):
    calls = []

    def broken(refusal: dcxsec.Refusal) -> None:
        calls.append(refusal)
        raise RuntimeError("audit store unreachable")

    ae = AE("GATEWAY")
    ae.add_supported_context(Verification)
    server = dcxsec.start_server(ae, ("127.0.0.1", 0), server_ctx, block=False,
                                 on_refusal=broken)
    try:
        for _ in range(3):
            with connect_from("127.0.10.1", server.server_address[1]) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                sock.settimeout(4)
                assert sock.recv(1) == b""
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(calls) == 3
        ok, _ = echo(server.server_address[1], client_ctx)
        assert ok
    finally:
        server.shutdown()
    failures = [r for r in caplog.records if "on_refusal hook failed" in r.getMessage()]
    assert len(failures) == 1 and not failures[0].exc_info
    assert "audit store unreachable" in failures[0].getMessage()


def test_reloaded_identity_serves_later_connections(pki, client_ctx):
    ctx = TLSContext(config_for(pki.server, trusted=[pki.ca.cert_path]))
    ae = AE("GATEWAY")
    ae.add_supported_context(Verification)
    server = dcxsec.start_server(ae, ("127.0.0.1", 0), ctx, block=False)
    try:
        assert echo(server.server_address[1], client_ctx)[0]
        old = ctx._ctx
        ctx.reload_identity()
        assert ctx._ctx is not old
        deadline = time.monotonic() + 5  # taken up within serve_forever's poll_interval
        while server.acceptor._contexts[-1] is not ctx._ctx and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(2):
            assert echo(server.server_address[1], client_ctx)[0]
        assert server.acceptor._contexts[-1] is ctx._ctx  # later handshakes use the new one
    finally:
        server.shutdown()


# ---- no leak: a second flood leaves the heap where the first left it ------------


def malloc_in_use() -> int:
    """Bytes malloc has handed out (glibc's mallinfo2, every arena)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def hostile_flood(g: Gateway, per_kind: int, subnet: int) -> None:
    """Every kind of hostile client ``per_kind`` times; returns once every refusal is in."""
    payloads = flood_payloads()
    held = []
    for i in range(per_kind):
        for n, (name, (payload, _)) in enumerate(payloads.items()):
            sock = connect_from(f"127.{subnet}.{i}.{n + 1}", g.port)
            if payload:
                sock.sendall(payload)
            if name == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            else:
                held.append(sock)
    total = per_kind * len(payloads)
    assert len(g.refused(total, timeout=20)) == total
    g.refusals.clear()  # the test's own record, not the server's
    for sock in held:
        sock.close()


def test_a_second_flood_does_not_grow_the_heap(gateway, monkeypatch):
    # pytest keeps every log record it captures: quiet, so the heap shows the server alone
    monkeypatch.setattr(logging.getLogger("dcxsec"), "level", logging.ERROR)
    g = gateway()
    threads_before, fds_before = os_threads(), open_descriptors()
    hostile_flood(g, 20, subnet=21)  # warms every cache and pool
    settle(os_threads, threads_before)
    gc.collect()
    after_first = malloc_in_use()
    hostile_flood(g, 20, subnet=22)
    assert settle(os_threads, threads_before) <= threads_before
    assert settle(open_descriptors, fds_before) <= fds_before
    gc.collect()
    grown = malloc_in_use() - after_first
    # 180 refused connections: a leak of 512 bytes each would be 90 KiB
    assert grown < 48 * 1024, f"the heap grew by {grown} bytes over the second flood"
