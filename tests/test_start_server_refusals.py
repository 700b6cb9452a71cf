"""pynetdicom's own ``ae.start_server(ssl_context=ctx)`` with bad peers.

There, every accepted socket becomes an association before its handshake.
A refused handshake must end that association and free its place in
``maximum_associations`` (pynetdicom's default, 10) at once, not after
pynetdicom's 30 s ``acse_timeout``; and it must cost one WARNING line on
the ``dcxsec`` logger with the peer's address and an accurate reason, and
no traceback anywhere.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

import pytest

import dicom_wire
from conftest import config_for, requestor, wait_until
from dcxsec import TLSContext

HANDSHAKE_TIMEOUT = 2.0
# Long enough for any refusal below, far below pynetdicom's 30 s acse_timeout.
PROMPT = HANDSHAKE_TIMEOUT + 3.0


def client_hello() -> bytes:
    """A real TLS ClientHello, as Python's ssl writes it."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    obj = ctx.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.fixture
def scp(pki, scp_factory, caplog):
    caplog.set_level(logging.DEBUG)
    ctx = TLSContext(config_for(pki.server, trusted=[pki.ca.cert_path],
                                handshake_timeout=HANDSHAKE_TIMEOUT))
    return scp_factory(ctx)  # pynetdicom's defaults: maximum_associations 10


def refusals(caplog, port: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "dcxsec" and r.levelno == logging.WARNING and f":{port}" in r.getMessage()]


def no_tracebacks(caplog) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.exc_text] == []


def silent(sock: socket.socket) -> None:
    pass


def half_hello(sock: socket.socket) -> None:
    sock.sendall(client_hello()[:40])


def whole_hello_then_silence(sock: socket.socket) -> None:
    sock.sendall(client_hello())  # answered by the server, then never continued


def trickle(sock: socket.socket) -> None:
    for byte in client_hello()[:20]:  # bytes keep coming, each long before the deadline
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        time.sleep(0.3)


def plain_dicom(sock: socket.socket) -> None:
    sock.sendall(dicom_wire.associate_rq())


def http(sock: socket.socket) -> None:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n")


def close_at_once(sock: socket.socket) -> None:
    sock.close()


def half_hello_then_close(sock: socket.socket) -> None:
    sock.sendall(client_hello()[:40])
    time.sleep(0.2)
    sock.close()


CASES = [
    (silent, "no TLS handshake within 2.0 s: the client connected and sent nothing"),
    (half_hello, "the client sent a partial ClientHello (40 of the "),
    (whole_hello_then_silence, "no TLS handshake within 2.0 s: the client stopped answering ("),
    (trickle, "the client was too slow, its ClientHello was still arriving"),
    (plain_dicom, "a plain DICOM A-ASSOCIATE-RQ PDU on the TLS port"),
    (http, "an HTTP request on the TLS port"),
    (close_at_once, "the client closed the connection before sending anything"),
    (half_hello_then_close, "the client closed the connection after a partial ClientHello (40 of the "),
]


@pytest.mark.parametrize("behave, reason", CASES, ids=[c[0].__name__ for c in CASES])
def test_refused_peer_frees_its_association_at_once_and_logs_one_line(scp, caplog, behave, reason):
    sock = socket.create_connection(("127.0.0.1", scp.port))
    peer_port = sock.getsockname()[1]
    worker = threading.Thread(target=behave, args=(sock,))
    started = time.monotonic()
    worker.start()
    assert wait_until(lambda: refusals(caplog, peer_port), PROMPT), "no refusal logged"
    refused_at = time.monotonic()
    # The slot goes with the refusal: within a second, not at acse_timeout.
    assert wait_until(lambda: not scp.server.active_associations, 1.0), \
        f"association still active {time.monotonic() - refused_at:.1f} s after the refusal"
    worker.join(10)
    sock.close()
    assert time.monotonic() - started < PROMPT
    lines = refusals(caplog, peer_port)
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{peer_port}" in lines[0] and reason in lines[0], lines[0]
    no_tracebacks(caplog)


def test_plain_clients_do_not_lock_out_a_real_association(pki, scp, caplog):
    """Ten plain-DICOM and HTTP peers, as many as pynetdicom's default limit:
    each is refused at once, and a real association then gets a place."""
    client = TLSContext(config_for(pki.client, trusted=[pki.ca.cert_path]))
    for round_ in range(3):
        peers = [socket.create_connection(("127.0.0.1", scp.port)) for _ in range(10)]
        for i, sock in enumerate(peers):
            (plain_dicom if i % 2 else http)(sock)
        assert wait_until(lambda: not scp.server.active_associations, PROMPT)
        assoc = requestor().associate("127.0.0.1", scp.port, tls_args=(client, None))
        assert assoc.is_established, f"round {round_}: a real requestor was refused"
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        for sock in peers:
            sock.close()
    no_tracebacks(caplog)


def test_peer_that_closes_after_the_handshake_frees_its_association(pki, scp, caplog):
    """A TLS peer that handshakes and leaves without a request: no refusal,
    and the acceptor that waited for its request goes at once."""
    client = TLSContext(config_for(pki.client, trusted=[pki.ca.cert_path]))
    sock = client.wrap_socket(socket.socket())
    sock.connect(("127.0.0.1", scp.port))
    assert wait_until(lambda: scp.server.active_associations, 2.0)
    sock.close()
    assert wait_until(lambda: not scp.server.active_associations, 1.0)
    no_tracebacks(caplog)


def test_ae_title_refusal_frees_its_association_without_a_traceback(pki, scp_factory, caplog):
    caplog.set_level(logging.DEBUG)
    server = TLSContext(config_for(pki.server, trusted=[pki.ca.cert_path],
                                   ae_bindings={"SOMEONE-ELSE": [pki.client.thumbprint]}))
    scp = scp_factory(server)
    client = TLSContext(config_for(pki.client, trusted=[pki.ca.cert_path]))
    assoc = requestor().associate("127.0.0.1", scp.port, tls_args=(client, None))
    assert assoc.is_rejected
    assert wait_until(lambda: not scp.server.active_associations, 1.0)
    lines = [r.getMessage() for r in caplog.records
             if r.name == "dcxsec" and r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "calling AE title 'DCXSEC-SCU' is not bound" in lines[0], lines
    no_tracebacks(caplog)
