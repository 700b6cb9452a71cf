"""pynetdicom over dcxsec on both sides: C-ECHO, C-STORE, and the transport traps."""
from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread

import dicom_wire
from conftest import config_for, requestor, wait_for_log
from dcxsec import TLSContext, VerificationMethod

TRUST_CHAIN, THUMBPRINT, NONE = (VerificationMethod.TRUST_CHAIN, VerificationMethod.THUMBPRINT,
                                 VerificationMethod.NONE)


def contexts(pki, method, **kw) -> tuple[TLSContext, TLSContext]:
    """(acceptor, requestor) contexts that trust each other under ``method``."""
    if method == THUMBPRINT:
        return (TLSContext(config_for(pki.server, method, accepted_thumbprints=[pki.client.thumbprint], **kw)),
                TLSContext(config_for(pki.client, method, accepted_thumbprints=[pki.server.thumbprint], **kw)))
    trusted = [pki.ca.cert_path]
    return (TLSContext(config_for(pki.server, method, trusted, **kw)),
            TLSContext(config_for(pki.client, method, trusted, **kw)))


def dataset_bytes(path) -> bytes:
    """A DICOM file's dataset: what follows the preamble and the file meta group."""
    data = Path(path).read_bytes()
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    (group_length,) = struct.unpack_from("<I", data, 140)  # (0002,0000) UL, explicit VR
    return data[144 + group_length:]


@pytest.mark.parametrize("method", [TRUST_CHAIN, THUMBPRINT, NONE], ids=lambda m: m.name)
def test_echo_and_store_in_every_method(pki, scp_factory, dicom_file, method):
    server, client = contexts(pki, method)
    scp = scp_factory(server)
    source = dicom_file(512 * 1024)
    assoc = requestor().associate("127.0.0.1", scp.port, ae_title="DCXSEC-SCP", tls_args=(client, None))
    assert assoc.is_established
    assert assoc.dul.socket.socket.version() in ("TLSv1.2", "TLSv1.3")
    assert assoc.send_c_echo().Status == 0x0000
    assert assoc.send_c_store(source).Status == 0x0000
    assoc.release()
    assert [dataset_bytes(source)] == [dataset_bytes(p) for p in scp.received]
    expected = pki.client.thumbprint if method != NONE else pki.client.thumbprint
    assert scp.peer_thumbprints == [expected, expected]


@pytest.mark.parametrize("method", [TRUST_CHAIN, THUMBPRINT, NONE], ids=lambda m: m.name)
@pytest.mark.parametrize("max_pdu", [16382, 0])
def test_store_50_mb(pki, scp_factory, dicom_file, method, max_pdu):
    server, client = contexts(pki, method)
    scp = scp_factory(server, maximum_pdu_size=max_pdu)
    source = dicom_file(50 * 1024 * 1024)
    ae = requestor(maximum_pdu_size=max_pdu)
    assoc = ae.associate("127.0.0.1", scp.port, tls_args=(client, None), max_pdu=max_pdu)
    assert assoc.is_established
    assert assoc.send_c_store(source).Status == 0x0000
    assoc.release()
    assert len(scp.received) == 1
    assert dataset_bytes(scp.received[0]) == dataset_bytes(source)
    assert dcmread(scp.received[0], force=True).SOPInstanceUID == dcmread(source).SOPInstanceUID


def test_two_pdus_in_one_record_are_both_handled_at_once(pki, scp_factory, client_ctx):
    server, _ = contexts(pki, TRUST_CHAIN)
    scp = scp_factory(server, network_timeout=60, acse_timeout=60)
    sock = client_ctx.wrap_socket(socket.socket())
    sock.settimeout(10)
    sock.connect(("127.0.0.1", scp.port))
    sock.sendall(dicom_wire.associate_rq(called="DCXSEC-SCP"))
    assert dicom_wire.read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC
    # C-ECHO-RQ and A-RELEASE-RQ leave in one TLS record; the SCP must not sit on the
    # second one (it would, until its network timeout, if it could not see it).
    sock.sendall(dicom_wire.echo_rq() + dicom_wire.release_rq())
    assert dicom_wire.read_pdu(sock)[0] == 0x04  # P-DATA-TF: C-ECHO-RSP
    assert dicom_wire.read_pdu(sock)[0] == 0x06  # A-RELEASE-RP, within the 10 s read timeout
    sock.close()


def test_silent_clients_do_not_delay_a_real_association(pki, scp_factory, caplog):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    server, client = contexts(pki, TRUST_CHAIN, handshake_timeout=2.0)
    scp = scp_factory(server, maximum_associations=32)  # each silent client holds a slot
    silent = [socket.create_connection(("127.0.0.1", scp.port)) for _ in range(20)]
    try:
        # The requestor gives up after its own 2 s handshake deadline if the acceptor
        # is stuck handshaking with the silent ones in its accept loop.
        assoc = requestor(connection_timeout=2).associate("127.0.0.1", scp.port, tls_args=(client, None))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        for sock in silent:  # each is dropped once its own deadline passes
            sock.settimeout(30)
            assert sock.recv(10) == b""
    finally:
        for sock in silent:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum("sent nothing" in r.getMessage() for r in caplog.records) < 20:
        time.sleep(0.05)
    assert sum("sent nothing" in r.getMessage() for r in caplog.records) == 20


def test_many_requestors_at_once_all_associate(pki, scp_factory, caplog):
    """Sixteen requestors at once, with full and resumed handshakes and a
    plain-TCP peer among them: every association succeeds, the bad peer is
    named, and no handshake is lost between the threads that share it."""
    caplog.set_level(logging.WARNING, logger="dcxsec")
    server, client = contexts(pki, TRUST_CHAIN)
    scp = scp_factory(server, maximum_associations=32)
    outcomes: list[bool] = []

    def associate_three_times() -> None:
        for _ in range(3):
            assoc = requestor().associate("127.0.0.1", scp.port, tls_args=(client, None))
            outcomes.append(assoc.is_established and assoc.send_c_echo().Status == 0x0000)
            if assoc.is_established:
                assoc.release()

    threads = [threading.Thread(target=associate_three_times) for _ in range(16)]
    for thread in threads:
        thread.start()
    with socket.create_connection(("127.0.0.1", scp.port)) as plain:
        plain.sendall(dicom_wire.associate_rq())
        plain.settimeout(10)
        with pytest.raises(ConnectionResetError):  # it could not read an alert: it is reset
            while plain.recv(4096):
                pass
    for thread in threads:
        thread.join(60)
    assert outcomes == [True] * 48
    assert any("plain DICOM" in r.getMessage() for r in caplog.records)


def test_tcp_nodelay_on_both_sides_of_an_association(pki, scp_factory):
    server, client = contexts(pki, TRUST_CHAIN)
    scp = scp_factory(server)
    seen = []
    from pynetdicom import evt

    def on_echo(event):
        sock = event.assoc.dul.socket.socket
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return 0

    scp.server.bind(evt.EVT_C_ECHO, on_echo)
    assoc = requestor().associate("127.0.0.1", scp.port, tls_args=(client, None))
    seen.append(assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert len(seen) == 2 and all(seen)


def test_release_leaves_the_requestor_idle_when_it_wakes(pki, scp_factory, monkeypatch):
    """pynetdicom queues the A-RELEASE confirmation and then closes the socket.
    Closing keeps the GIL, so the woken requestor finds its state machine idle
    (Sta1) instead of sleeping 10 ms in Association.kill(); with a close that
    gives the GIL up, about half of all releases find it still in Sta7."""
    from pynetdicom.association import Association

    server, client = contexts(pki, TRUST_CHAIN)
    scp = scp_factory(server)
    found = []
    kill = Association.kill

    def watched_kill(self):
        if self.is_requestor and threading.current_thread() is threading.main_thread():
            found.append(self.dul.state_machine.current_state)
        kill(self)

    monkeypatch.setattr(Association, "kill", watched_kill)
    ae = requestor()
    for _ in range(20):
        assoc = ae.associate("127.0.0.1", scp.port, tls_args=(client, None))
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        assert assoc.is_released
    assert len(found) == 20
    # The OS may still preempt the closing thread for a whole switch interval.
    assert found.count("Sta1") >= 18, found


def test_refused_requestor_is_logged_and_the_server_goes_on(pki, scp_factory, caplog):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    server, client = contexts(pki, TRUST_CHAIN)
    scp = scp_factory(server)
    intruder = TLSContext(config_for(pki.untrusted, TRUST_CHAIN, [pki.ca.cert_path]))
    assoc = requestor().associate("127.0.0.1", scp.port, tls_args=(intruder, None))
    assert not assoc.is_established
    messages = wait_for_log(caplog, pki.untrusted.thumbprint)
    assert any("127.0.0.1:" in m and pki.untrusted.thumbprint in m and "not trusted" in m
               for m in messages), messages
    assoc = requestor().associate("127.0.0.1", scp.port, tls_args=(client, None))
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()
