"""``dcxsec echo``, run as an operator runs it: a separate process, real peers.

The peers are a pynetdicom SCP on dcxsec in this process and DCMTK's
storescp +tls.  Exit statuses and ``--json`` are read as a script reads them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import needs_tools
from test_dcmtk import storescp_factory  # noqa: F401 - a fixture


def dcxsec_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcxsec", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


def tls(issued, ca) -> list[str]:
    return ["--cert", str(issued.cert_path), "--key", str(issued.key_path), "--trust",
            str(ca.cert_path)]


def test_echo_prints_the_connection_and_succeeds(pki, scp_factory, server_ctx):
    scp = scp_factory(server_ctx)
    done = dcxsec_cli("echo", "127.0.0.1", str(scp.port), "--aec", "DCXSEC-SCP",
                      *tls(pki.client, pki.ca))
    assert done.returncode == 0, done.stderr
    assert "TLSv1.3" in done.stdout
    assert "CN=dcxsec-scp" in done.stdout
    assert pki.server.thumbprint in done.stdout and pki.server.thumbprint256 in done.stdout
    assert "success" in done.stdout
    assert scp.peer_thumbprints == [pki.client.thumbprint]


def test_echo_json_with_repeat(pki, scp_factory, server_ctx):
    scp = scp_factory(server_ctx)
    done = dcxsec_cli("echo", "127.0.0.1", str(scp.port), "--repeat", "3", "--json",
                      *tls(pki.client, pki.ca))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["statuses"] == ["0x0000"] * 3
    assert len(result["echo_ms"]) == 3
    assert result["min_ms"] <= result["median_ms"] <= result["max_ms"]
    assert result["peer"]["thumbprint_sha1"] == pki.server.thumbprint
    assert result["protocol"] == "TLSv1.3" and result["cipher"]


def test_echo_pinned_by_thumbprint_and_refused_by_thumbprint(pki, scp_factory, server_ctx):
    scp = scp_factory(server_ctx)
    pinned = ["--cert", str(pki.client.cert_path), "--key", str(pki.client.key_path)]
    done = dcxsec_cli("echo", "127.0.0.1", str(scp.port), *pinned,
                      "--accept", pki.server.thumbprint256)
    assert done.returncode == 0, done.stderr
    done = dcxsec_cli("echo", "127.0.0.1", str(scp.port), *pinned, "--verify", "thumbprint",
                      "--accept", pki.other_ca.thumbprint)
    assert done.returncode == 1
    assert "thumbprint" in done.stderr and pki.server.thumbprint in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_echo_refuses_a_server_from_an_unknown_ca(pki, scp_factory, server_ctx):
    scp = scp_factory(server_ctx)
    done = dcxsec_cli("echo", "127.0.0.1", str(scp.port), *tls(pki.client, pki.other_ca))
    assert done.returncode == 1
    assert "dcxsec Test CA" in done.stderr and "unknown" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_echo_reads_a_toml_configuration(pki, scp_factory, server_ctx, tmp_path):
    scp = scp_factory(server_ctx)
    config = tmp_path / "dcxsec.toml"
    config.write_text(f'cert = "{pki.client.cert_path}"\nkey = "{pki.client.key_path}"\n'
                      f'verify = "chain"\ntrust = ["{pki.ca.cert_path}"]\nmin-tls = "1.3"\n')
    done = dcxsec_cli("echo", "127.0.0.1", str(scp.port), "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["protocol"] == "TLSv1.3"


def test_echo_configuration_errors_exit_2(pki, tmp_path):
    done = dcxsec_cli("echo", "127.0.0.1", "1", *tls(pki.client, pki.ca), "--verify", "chain",
                      "--accept", pki.server.thumbprint)
    assert done.returncode == 2 and "thumbprint" in done.stderr, done.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('cert = "x.pem"\ncolour = "blue"\n')
    done = dcxsec_cli("echo", "127.0.0.1", "1", "--config", str(bad))
    assert done.returncode == 2 and "unknown setting 'colour'" in done.stderr, done.stderr
    done = dcxsec_cli("echo", "127.0.0.1", "1", "--plain", "--verify", "none")
    assert done.returncode == 2 and "--plain" in done.stderr, done.stderr


def test_echo_plain_on_a_tls_port_fails_clearly_and_says_plain(pki, scp_factory, server_ctx):
    scp = scp_factory(server_ctx)
    done = dcxsec_cli("echo", "127.0.0.1", str(scp.port), "--plain", "--timeout", "10")
    assert done.returncode == 1
    assert "NOT encrypted" in done.stderr
    assert "failed" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_echo_plain_to_a_plain_scp(scp_factory):
    scp = scp_factory(None)
    done = dcxsec_cli("echo", "127.0.0.1", str(scp.port), "--plain", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["tls"] is False and "protocol" not in result
    assert "NOT encrypted" in done.stderr


@needs_tools("storescp", install="dcmtk")
def test_echo_against_dcmtk_storescp_tls(pki, storescp_factory):  # noqa: F811
    port, _ = storescp_factory(pki.server)
    done = dcxsec_cli("echo", "127.0.0.1", str(port), *tls(pki.client, pki.ca), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["peer"]["thumbprint_sha1"] == pki.server.thumbprint
    refused = dcxsec_cli("echo", "127.0.0.1", str(port), "--cert", str(pki.client.cert_path),
                         "--key", str(pki.client.key_path), "--accept", pki.client.thumbprint)
    assert refused.returncode == 1 and pki.server.thumbprint in refused.stderr, refused.stderr


@pytest.mark.parametrize("option", ["--version"])
def test_version_option(option):
    done = dcxsec_cli(option)
    assert done.returncode == 0 and done.stdout.startswith("dcxsec ")
