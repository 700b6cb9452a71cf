"""DCMTK, a foreign DICOM TLS implementation, on either side of dcxsec."""
from __future__ import annotations

import logging
import socket
import subprocess
import time

import pytest

from conftest import needs_tools, config_for, free_port, requestor, wait_for_log
from dcxsec import TLSContext, VerificationMethod
from test_pynetdicom import dataset_bytes
from test_revocation import REVOKED_ON, crls  # noqa: F401 - crls is a fixture

pytestmark = needs_tools("echoscu", "storescu", "storescp", install="dcmtk")


def tls_args(issued, ca) -> list[str]:
    return ["+tls", str(issued.key_path), str(issued.cert_path), "+cf", str(ca.cert_path)]


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def test_echoscu_tls_to_a_dcxsec_scp(pki, scp_factory, server_ctx):
    scp = scp_factory(server_ctx)
    done = run(["echoscu", *tls_args(pki.client, pki.ca), "-aec", "DCXSEC-SCP",
                "127.0.0.1", str(scp.port)])
    assert done.returncode == 0, done.stderr
    assert scp.peer_thumbprints == [pki.client.thumbprint]


def test_storescu_tls_files_arrive_byte_identical(pki, scp_factory, server_ctx, dicom_file):
    scp = scp_factory(server_ctx)
    sources = [dicom_file(512 * 1024), dicom_file(8 * 1024 * 1024)]
    done = run(["storescu", *tls_args(pki.client, pki.ca), "-aec", "DCXSEC-SCP",
                "127.0.0.1", str(scp.port), *map(str, sources)])
    assert done.returncode == 0, done.stderr
    assert sorted(dataset_bytes(p) for p in scp.received) == sorted(dataset_bytes(s) for s in sources)


def test_storescu_pinned_by_thumbprint(pki, scp_factory, dicom_file):
    server = TLSContext(config_for(pki.server, VerificationMethod.THUMBPRINT,
                                   accepted_thumbprints=[pki.client.thumbprint256]))
    scp = scp_factory(server)
    source = dicom_file(64 * 1024)
    done = run(["storescu", *tls_args(pki.client, pki.ca), "127.0.0.1", str(scp.port), str(source)])
    assert done.returncode == 0, done.stderr
    assert [dataset_bytes(p) for p in scp.received] == [dataset_bytes(source)]


def test_echoscu_with_an_untrusted_certificate_is_refused_and_logged(pki, scp_factory, server_ctx, caplog):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    scp = scp_factory(server_ctx)
    done = run(["echoscu", *tls_args(pki.untrusted, pki.ca), "127.0.0.1", str(scp.port)])
    assert done.returncode != 0
    messages = wait_for_log(caplog, pki.untrusted.thumbprint)
    assert any(pki.untrusted.thumbprint in m and "not trusted" in m for m in messages), messages
    assert scp.peer_thumbprints == []


@pytest.fixture
def storescp_factory(pki, tmp_path):
    """start(issued) -> (port, output folder) of a DCMTK storescp +tls presenting ``issued``."""
    procs = []

    def start(issued):
        port, out = free_port(), tmp_path / f"storescp{len(procs)}"
        out.mkdir()
        procs.append(subprocess.Popen(["storescp", *tls_args(issued, pki.ca), "-od", str(out),
                                       "-aet", "STORESCP", str(port)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        return port, out

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def storescp(pki, storescp_factory):
    return storescp_factory(pki.server)


def test_pynetdicom_scu_on_dcxsec_to_storescp_tls(client_ctx, storescp, dicom_file):
    port, out = storescp
    sources = [dicom_file(512 * 1024), dicom_file(20 * 1024 * 1024)]
    assoc = requestor().associate("127.0.0.1", port, ae_title="STORESCP", tls_args=(client_ctx, None))
    assert assoc.is_established
    assert assoc.dul.socket.socket.peer_thumbprint is not None
    assert [assoc.send_c_store(s).Status for s in sources] == [0, 0]
    assoc.release()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(list(out.iterdir())) < 2:
        time.sleep(0.05)
    received = sorted(dataset_bytes(p) for p in out.iterdir())
    assert received == sorted(dataset_bytes(s) for s in sources)


@pytest.mark.parametrize("tool", ["echoscu", "storescu"])
def test_dcmtk_with_a_revoked_certificate_is_refused_and_logged(pki, crls, scp_factory, caplog,
                                                                dicom_file, tool):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    scp = scp_factory(TLSContext(config_for(pki.server, trusted=[pki.ca.cert_path],
                                            crl_files=[crls.current], check_revocation=True)))
    files = [str(dicom_file(16 * 1024))] if tool == "storescu" else []
    done = run([tool, *tls_args(crls.revoked_client, pki.ca), "-aec", "DCXSEC-SCP",
                "127.0.0.1", str(scp.port), *files])
    assert done.returncode != 0
    messages = wait_for_log(caplog, crls.revoked_client.thumbprint)
    assert any(crls.revoked_client.thumbprint in m and
               f"revoked on {REVOKED_ON:%Y-%m-%d %H:%M:%S} UTC" in m for m in messages), messages
    assert scp.peer_thumbprints == [] and scp.received == []


def test_dcxsec_scu_refuses_a_storescp_with_a_revoked_certificate(pki, crls, storescp_factory, caplog):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    port, out = storescp_factory(crls.revoked_server)
    client = TLSContext(config_for(pki.client, trusted=[pki.ca.cert_path], crl_files=[crls.current]))
    assoc = requestor().associate("127.0.0.1", port, ae_title="STORESCP", tls_args=(client, None))
    assert not assoc.is_established
    messages = wait_for_log(caplog, crls.revoked_server.thumbprint)
    assert any(crls.revoked_server.thumbprint in m and "refused by TRUST_CHAIN: revoked on" in m
               for m in messages), messages
