"""What arrives on the TLS port that is not TLS, and a TLS client at a plain port."""
from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

import dicom_wire
from conftest import free_port, requestor, wait_for_log
from dcxsec import NotTLSError


def client_hello() -> bytes:
    """The first flight of a real TLS client."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="scp.example")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


BAD_INPUTS = {
    "plain-dicom": (lambda: dicom_wire.associate_rq(), "plain DICOM A-ASSOCIATE-RQ PDU on the TLS port"),
    "http": (lambda: b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n", "an HTTP request on the TLS port"),
    # The third byte is kept off 0x01: with the first byte's high bit set, that
    # would be an SSLv2-format ClientHello (the case below), 1 run in 256.
    "random": (lambda: b"\xfe" + os.urandom(1) + b"\x00" + os.urandom(198),
               "data that is not TLS (first bytes: fe"),
    "sslv2-hello": (lambda: bytes([0x80, 0x2e, 0x01, 0x00, 0x02]) + bytes(43),
                    "an SSLv2-format ClientHello (obsolete and refused)"),
    "half-handshake": (lambda: client_hello()[:40],
                       "closed the connection after a partial ClientHello (40 of the "),
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_is_refused_with_a_reason_and_service_goes_on(pki, scp_factory, server_ctx,
                                                                client_ctx, caplog, kind):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    make, words = BAD_INPUTS[kind]
    scp = scp_factory(server_ctx)
    with socket.create_connection(("127.0.0.1", scp.port)) as raw:
        raw.settimeout(10)
        raw.sendall(make())
        if kind == "half-handshake":
            raw.shutdown(socket.SHUT_WR)
        try:
            while raw.recv(4096):  # the server closes; an alert may come first
                pass
        except ConnectionResetError:  # closed with our unread bytes still queued
            pass
    messages = wait_for_log(caplog, words)
    assert any(words in m and "127.0.0.1:" in m for m in messages), messages
    assoc = requestor().associate("127.0.0.1", scp.port, tls_args=(client_ctx, None))
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()


@pytest.mark.parametrize("kind", ["plain-dicom", "http"])
def test_bad_input_waiting_at_accept_is_reported_by_the_first_read(server_ctx, kind):
    make, words = BAD_INPUTS[kind]
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        with socket.create_connection(lst.getsockname()) as raw_client:
            raw_client.sendall(make())
            raw, _ = lst.accept()
            select.select([raw], [], [], 10)
            server = server_ctx.wrap_socket(raw, server_side=True)  # the accept loop: no error here
            try:
                # pending() turns 1 (the engine's handshake thread met the input), so
                # that the association's reactor, which polls it, reads ...
                deadline = time.monotonic() + 5
                while server.pending() == 0 and time.monotonic() < deadline:
                    time.sleep(0.001)
                assert server.pending() == 1
                with pytest.raises(NotTLSError, match=words.split(" on the")[0]):
                    server.recv(6)  # ... and meets the reason there
            finally:
                server.close()


@pytest.fixture
def plain_scp():
    ae = AE("PLAIN-SCP")
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    yield port
    server.shutdown()


def test_tls_client_at_a_plain_dicom_port_says_so(client_ctx, plain_scp):
    sock = client_ctx.wrap_socket(socket.socket())
    with pytest.raises(NotTLSError, match="not speaking TLS"):
        sock.connect(("127.0.0.1", plain_scp))
    sock.close()


def test_pynetdicom_requestor_at_a_plain_port_fails_cleanly(client_ctx, plain_scp, caplog):
    caplog.set_level(logging.ERROR)
    assoc = requestor().associate("127.0.0.1", plain_scp, tls_args=(client_ctx, None))
    assert not assoc.is_established
    assert any("not speaking TLS" in r.getMessage() for r in caplog.records)
