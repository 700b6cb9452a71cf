"""Faults with real processes: a peer killed (``kill -9``) in the middle of a
C-STORE, and a peer that stops reading.

The other side must end the association within its timeout, with one line
that says what happened, and free what the association held.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from pynetdicom import evt

from conftest import config_for, requestor, wait_until
from dcxsec import TLSContext
from pki_fixtures import make_ct_dataset

TESTS = Path(__file__).resolve().parent

# An SCP in a process of its own, on dcxsec, that reads slowly (5 ms per
# P-DATA-TF PDU) so that a C-STORE lasts long enough to be cut; it says
# "port N" when it listens and "receiving" at its first P-DATA-TF.
SCP_SCRIPT = textwrap.dedent("""
    import sys, time
    from pynetdicom import AE, evt
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.sop_class import CTImageStorage, Verification
    from dcxsec import SecurityConfig, TLSContext
    cert, key, ca = sys.argv[1:4]
    ctx = TLSContext(SecurityConfig(certificate=cert, private_key=key, trusted_certificates=[ca],
                                    use_system_trust=False))
    seen = []
    def on_pdu(event):
        if isinstance(event.pdu, P_DATA_TF):
            if not seen:
                print("receiving", flush=True)
            seen.append(1)
            time.sleep(0.005)
    ae = AE("FAULT-SCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=ctx,
                             evt_handlers=[(evt.EVT_PDU_RECV, on_pdu),
                                           (evt.EVT_C_STORE, lambda event: 0x0000)])
    print("port", server.server_address[1], flush=True)
    time.sleep(120)
""")

# An SCU in a process of its own, on dcxsec: associates, says "storing",
# and stores a CT dataset of the given size.
SCU_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[6])
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage
    from pydicom.uid import ExplicitVRLittleEndian
    from dcxsec import SecurityConfig, TLSContext
    from pki_fixtures import make_ct_dataset
    cert, key, ca, port, size = sys.argv[1:6]
    ctx = TLSContext(SecurityConfig(certificate=cert, private_key=key, trusted_certificates=[ca],
                                    use_system_trust=False))
    ds = make_ct_dataset(int(size))
    ae = AE("FAULT-SCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", int(port), tls_args=(ctx, None))
    assert assoc.is_established
    print("storing", flush=True)
    assoc.send_c_store(ds)
""")


def spawn(tmp_path: Path, name: str, script: str, *args: object) -> subprocess.Popen:
    path = tmp_path / f"{name}.py"
    path.write_text(script)
    return subprocess.Popen([sys.executable, str(path), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def read_line(proc: subprocess.Popen, timeout: float = 20) -> str:
    """The process's next line of output, within ``timeout``."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert got and got[0], f"no line from the process within {timeout} s"
    return got[0].strip()


def finish(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def lost_lines(caplog, port: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dcxsec"
            and r.levelno == logging.WARNING and f":{port} lost" in r.getMessage()]


def no_tracebacks(caplog) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.exc_text] == []


@pytest.fixture
def scp_process(pki, tmp_path):
    proc = spawn(tmp_path, "scp", SCP_SCRIPT, pki.server.cert_path, pki.server.key_path,
                 pki.ca.cert_path)
    try:
        words = read_line(proc).split()
        assert words[0] == "port"
        proc.port = int(words[1])
        yield proc
    finally:
        finish(proc)


def store_in_thread(assoc, size: int) -> tuple[threading.Thread, list]:
    result: list = []
    ds = make_ct_dataset(size)
    thread = threading.Thread(target=lambda: result.append(assoc.send_c_store(ds)), daemon=True)
    thread.start()
    return thread, result


def test_scp_killed_mid_store_fails_the_store_with_a_reason(pki, scp_process, caplog):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    client = TLSContext(config_for(pki.client, trusted=[pki.ca.cert_path]))
    scu = requestor(network_timeout=10, dimse_timeout=10)
    assoc = scu.associate("127.0.0.1", scp_process.port, tls_args=(client, None))
    assert assoc.is_established
    thread, result = store_in_thread(assoc, 32 << 20)
    assert read_line(scp_process) == "receiving"
    scp_process.send_signal(signal.SIGKILL)
    thread.join(20)  # well within the SCU's 10 s timeouts, plus slack for a loaded machine
    assert not thread.is_alive(), "the C-STORE did not end after the SCP was killed"
    assert "Status" not in result[0]  # no status: the store failed
    assert wait_until(lambda: assoc.is_aborted, 5)  # set by the association's own thread
    lines = lost_lines(caplog, scp_process.port)
    assert len(lines) == 1, lines
    assert "reset" in lines[0] or "closed" in lines[0] or "broken pipe" in lines[0].lower(), lines


def test_scu_killed_mid_store_frees_the_association_and_is_logged(pki, scp_factory, tmp_path,
                                                                   caplog):
    caplog.set_level(logging.DEBUG)
    server = TLSContext(config_for(pki.server, trusted=[pki.ca.cert_path]))
    scp = scp_factory(server)  # pynetdicom's defaults
    pdata: list[int] = []

    def slowly(event):
        if event.pdu.__class__.__name__ == "P_DATA_TF":
            pdata.append(1)
            time.sleep(0.005)

    scp.server.bind(evt.EVT_PDU_RECV, slowly)
    proc = spawn(tmp_path, "scu", SCU_SCRIPT, pki.client.cert_path, pki.client.key_path,
                 pki.ca.cert_path, scp.port, 32 << 20, TESTS)
    try:
        assert read_line(proc) == "storing"
        assert wait_until(lambda: len(pdata) >= 20, 20), "the C-STORE did not start"
        assert len(scp.server.active_associations) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: not scp.server.active_associations, 10), \
            "the SCP kept the association of a killed SCU"
    finally:
        finish(proc)
    assert not scp.received  # the store was cut short
    lines = [m for m in (r.getMessage() for r in caplog.records if r.name == "dcxsec"
                         and r.levelno >= logging.WARNING)]
    assert len(lines) == 1, lines
    assert " lost without A-RELEASE or A-ABORT: " in lines[0] and "127.0.0.1:" in lines[0], lines
    no_tracebacks(caplog)


def test_a_peer_that_stops_reading_times_the_writer_out(pki, scp_process, caplog):
    """The SCP process is stopped (SIGSTOP) mid-store: its socket buffers
    fill, and the SCU's write ends at its network_timeout with the reason."""
    caplog.set_level(logging.WARNING, logger="dcxsec")
    client = TLSContext(config_for(pki.client, trusted=[pki.ca.cert_path]))
    scu = requestor(network_timeout=3, dimse_timeout=30)
    assoc = scu.associate("127.0.0.1", scp_process.port, tls_args=(client, None))
    assert assoc.is_established
    thread, result = store_in_thread(assoc, 64 << 20)
    assert read_line(scp_process) == "receiving"
    os.kill(scp_process.pid, signal.SIGSTOP)
    try:
        thread.join(25)  # 3 s after the buffers filled; dimse_timeout (30 s) must not be what ends it
        assert not thread.is_alive(), "the write to a peer that stopped reading never timed out"
    finally:
        os.kill(scp_process.pid, signal.SIGCONT)
    assert "Status" not in result[0]
    assert wait_until(lambda: assoc.is_aborted, 5)  # set by the association's own thread
    lines = lost_lines(caplog, scp_process.port)
    assert len(lines) == 1, lines
    assert "in 3 s (the association's network_timeout)" in lines[0], lines
    assert "stopped reading" in lines[0], lines
