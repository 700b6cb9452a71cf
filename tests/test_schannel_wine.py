"""The SChannel backend, proven under Wine: one conformance suite, two builds.

tests/conformance/ (driver.c and the cases_*.c files beside it) is built
natively against the OpenSSL backend and with mingw-w64 against the SChannel
backend.  The Linux peers (the project's own OpenSSL-backed server, i.e. the
native driver in ``serve`` mode, and ``openssl s_server``) run on 127.0.0.1;
the SChannel build runs under Wine as their client.  Wine 8.0 has no SChannel server role, so the server cases must
come back SKIPPED with that reason there, and PASS natively.  The system
certificate store cases (csrc/dcxstore.h) run on Cert:\\CurrentUser under
Wine and come back SKIPPED natively, where there is no system store.
"""
from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import needs_tools
from dcxsec import pki

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT / "tests" / "conformance"

pytestmark = needs_tools("wine", "x86_64-w64-mingw32-gcc", "gcc", "make", "openssl",
                         install="wine wine64 gcc-mingw-w64-x86-64 make openssl")

CLIENT_CASES = [
    "client.handshake_dcxsec_server",
    "client.handshake_in_steps",
    "client.connect_in_engine",
    "client.close_notify_behind_full_socket",
    "client.reads_records_at_hand",
    "client.upload_50MB_sha256",
    "client.download_50MB_sha256",
    "client.none_accepts",
    "client.trust_chain_accepts",
    "client.trust_chain_accepts_ip_address",
    "client.trust_chain_refuses_wrong_ip_address",
    "client.trust_chain_refuses_unknown_ca",
    "client.trust_chain_refuses_hostname",
    "client.trust_chain_refuses_expired",
    "client.thumbprint_accepts_sha1",
    "client.thumbprint_accepts_sha256",
    "client.thumbprint_refuses",
    "client.refused_without_client_cert",
    "client.no_common_version",
    "client.identity_from_der",
    "client.peer_not_tls",
    "client.handshake_timeout",
    # revocation: CRLs given (PEM and DER), check_revocation on and off
    "client.revocation_refuses_revoked_server",
    "client.revocation_accepts_current_crl",
    "client.revocation_required_without_crl",
    "client.revocation_not_required_without_crl",
    "client.revocation_refuses_expired_crl",
    "client.revocation_ignores_forged_crl",
]
EC_CASE = "client.identity_ec_p256"  # Wine's NCrypt cannot import EC keys: skipped there
STORE_CASES = ["client.identity_from_my_store", "client.unknown_thumbprint_in_my_store"]
# dcxstore.h on Cert:\CurrentUser under Wine; no system store natively
SYSTEM_STORE_CASES = [
    "store.wrong_pfx_password",
    "store.import_pfx_into_my",
    "store.enumerate_my_with_keys",
    "store.export_der_matches_file",
    "store.add_to_root_and_ca",
    "store.remove_from_root_and_ca",
    "store.remove_identity_with_key",
    "client.identity_chosen_from_my",
    "client.revocation_crl_in_ca_store",  # a CRL in Cert:\\CurrentUser\\CA counts
]
NO_SYSTEM_STORE = "no system certificate store on this platform"
# a dead connection repeats why it died, to every later call
REPEAT_RECORD_CASE = "client.failure_repeats_after_bad_record"
REPEAT_HANDSHAKE_CASE = "client.failure_repeats_after_refusal"
SERVER_CASES = [
    "server.mutual_tls",
    "server.refuses_missing_client_cert",
    "server.refuses_untrusted_client",
    "server.thumbprint_accepts",
    "server.thumbprint_refuses",
]
WINE_SERVER_SKIP = "AcceptSecurityContext unsupported under Wine"
PFX_PASSWORD = "dcxsec-conformance"


def _pfx_identity(ca: pki.Identity, common_name: str) -> pki.Identity:
    """An RSA client identity that Wine 8.0 can take from a PKCS#12 file.

    Wine's PKCS#12 import copies each RSA component into the key blob at its
    full length (256 bytes for d, 128 for p, q, dP, dQ and qInv) and stops at
    the first shorter one, leaving the rest of the blob unset.  A key with
    such a component (about one in 20, most often d) then fails at random in
    SChannel with SEC_E_INTERNAL_ERROR.  Windows has no such limit, and the engine's own DER
    and PEM key import takes these keys under Wine, so only the keys that go
    through Wine's PFXImportCertStore are drawn again.
    """
    while True:
        identity = pki.issue(ca, common_name, key_kind="rsa2048", server=False)
        n = identity.private_key.private_numbers()
        if n.d.bit_length() > 2040 and all(v.bit_length() > 1016
                                             for v in (n.p, n.q, n.dmp1, n.dmq1, n.iqmp)):
            return identity


def _short_component_identity(ca: pki.Identity, common_name: str) -> pki.Identity:
    """An RSA client identity whose private exponent d is a byte shorter than
    the modulus (about one key in 25), which the engine's own key import (PEM
    and DER cases) must place at its full length, as Wine's PKCS#12 import
    does not."""
    while True:
        identity = pki.issue(ca, common_name, key_kind="rsa2048", server=False)
        if identity.private_key.private_numbers().d.bit_length() <= 2040:
            return identity


def _write_pki(d: Path) -> None:
    """Certificates for every case.  Wine's SChannel takes RSA client keys only."""
    ca = pki.new_ca("dcxsec conformance CA", key_kind="rsa2048")
    other_ca = pki.new_ca("some other CA", key_kind="rsa2048")
    server = pki.issue(ca, "localhost", key_kind="rsa2048", dns_names=["localhost"],
                       ip_addresses=["127.0.0.1"])
    now = dt.datetime.now(dt.timezone.utc)
    expired = pki.issue(ca, "localhost", key_kind="rsa2048", dns_names=["localhost"],
                        not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    client = _short_component_identity(ca, "conformance client")
    store_client = _pfx_identity(ca, "conformance store client")
    store_second = _pfx_identity(ca, "conformance second store client")
    store_ca = pki.new_ca("conformance store CA", key_kind="rsa2048")
    ec_client = pki.issue(ca, "conformance EC client", key_kind="ec256", server=False)
    ec_client.write(d, "ecclient")
    (d / "ca.pem").write_bytes(ca.cert_pem())
    (d / "other_ca.pem").write_bytes(other_ca.cert_pem())
    server.write(d, "server")
    expired.write(d, "expired")
    client.write(d, "client")
    (d / "client.der").write_bytes(client.certificate.public_bytes(serialization.Encoding.DER))
    (d / "client.key.der").write_bytes(client.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (d / "store_client.pfx").write_bytes(store_client.to_pkcs12(PFX_PASSWORD.encode(), "dcxsec test"))
    (d / "store_second.pfx").write_bytes(store_second.to_pkcs12(PFX_PASSWORD.encode(), "dcxsec second"))
    (d / "store_second.der").write_bytes(store_second.certificate.public_bytes(serialization.Encoding.DER))
    (d / "store_ca.der").write_bytes(store_ca.certificate.public_bytes(serialization.Encoding.DER))
    (d / "pfx.password").write_text(PFX_PASSWORD + "\n")
    for name, ident in (("server", server), ("client", client), ("store_client", store_client),
                        ("store_second", store_second), ("store_ca", store_ca), ("ecclient", ec_client)):
        (d / f"{name}.sha1").write_text(ident.thumbprint("sha1") + "\n")
        (d / f"{name}.sha256").write_text(ident.thumbprint("sha256") + "\n")
    (d / "other.sha1").write_text(secrets.token_hex(20).upper() + "\n")
    _write_crls(d, ca, server, expired)


def _write_crls(d: Path, ca: pki.Identity, server: pki.Identity, other: pki.Identity) -> None:
    """CRLs of the conformance CA: one revoking the server's certificate (PEM,
    and DER for the CA store), a current one that does not (DER; it revokes
    another), an expired one, one in the CA's name signed by another key; the
    revocation's day and the CA's name."""
    now = dt.datetime.now(dt.timezone.utc)
    revoked_on = (now - dt.timedelta(days=3)).replace(microsecond=0)
    revoking = pki.make_crl(ca, [server], revoked_on=revoked_on, number=1,
                            reason=x509.ReasonFlags.key_compromise)
    current = pki.make_crl(ca, [other], number=2)
    expired = pki.make_crl(ca, [], this_update=now - dt.timedelta(days=10),
                           next_update=now - dt.timedelta(days=1), number=3)
    (d / "server_revoked.crl").write_bytes(revoking.public_bytes(serialization.Encoding.PEM))
    (d / "server_revoked.der").write_bytes(revoking.public_bytes(serialization.Encoding.DER))
    (d / "current.crl.der").write_bytes(current.public_bytes(serialization.Encoding.DER))
    (d / "expired.crl").write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    # the CA's name, another key: a CRL that cannot be used
    forger = pki.new_ca(ca.certificate.subject.rfc4514_string().removeprefix("CN="), key_kind="rsa2048")
    assert forger.certificate.subject == ca.certificate.subject
    (d / "forged.crl").write_bytes(pki.make_crl(forger, [server]).public_bytes(serialization.Encoding.PEM))
    (d / "server_revoked.date").write_text(f"{revoked_on:%Y-%m-%d}\n")
    (d / "ca.name").write_text(ca.certificate.subject.rfc4514_string() + "\n")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer on port {port} exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def _s_server(d: Path, name: str, *extra: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(d / f"{name}.pem"),
         "-key", str(d / f"{name}.key"), "-rev", "-quiet", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_listening(port, proc)
    return proc, port


class _AlteredRecordPeer(threading.Thread):
    """A TLS 1.2 server that, after each handshake, sends one application data
    record with its last byte flipped, then waits for the client to hang up."""

    def __init__(self, d: Path) -> None:
        super().__init__(daemon=True)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(d / "server.pem", d / "server.key")
        self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed: the module is done
            with conn:
                try:
                    self._serve(conn)
                except (OSError, ssl.SSLError):
                    pass

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ctx.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                conn.sendall(outgoing.read())
                data = conn.recv(65536)
                if not data:
                    return
                incoming.write(data)
        conn.sendall(outgoing.read())
        tls.write(b"this record is altered on its way")
        record = bytearray(outgoing.read())
        record[-1] ^= 0x01  # the MAC no longer matches
        conn.sendall(bytes(record))
        while conn.recv(65536):
            pass

    def close(self) -> None:
        self.listener.close()


def _parse(output: str) -> tuple[dict[str, tuple[str, str]], str]:
    results, closing = {}, ""
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASS", "FAIL", "SKIPPED"):
            name, _, message = rest.partition(": ")
            results[name] = (word, message)
        elif line.endswith(" skipped") and " passed, " in line:
            closing = line
    return results, closing


@pytest.fixture(scope="module")
def conformance(tmp_path_factory):
    """Build both drivers, start the Linux peers, run the suite with both."""
    d = tmp_path_factory.mktemp("conformance")
    build = subprocess.run(["make", "-s", "-C", str(CONFORMANCE), f"OUT={d}"],
                           capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stdout + build.stderr
    _write_pki(d)

    procs: list[subprocess.Popen] = []
    altered = _AlteredRecordPeer(d)
    altered.start()
    wine_env = dict(os.environ, WINEPREFIX=str(d / "wineprefix"), WINEDEBUG="-all",
                    WINEDLLOVERRIDES="mscoree,mshtml=")  # no Mono/Gecko prompts on first start
    try:
        serve = subprocess.Popen([str(d / "driver-openssl"), "serve", str(d)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(serve)
        first = serve.stdout.readline().split()
        assert first[:1] == ["PORT"], f"the dcxsec server did not start: {serve.stderr.read()}"
        dcx_port = int(first[1])
        s_server, sserver_port = _s_server(d, "server")
        procs.append(s_server)
        expired, expired_port = _s_server(d, "expired")
        procs.append(expired)
        tls13, tls13_port = _s_server(d, "server", "-tls1_3")
        procs.append(tls13)
        ports = [str(dcx_port), str(sserver_port), str(expired_port), str(tls13_port),
                 str(altered.port)]

        native = subprocess.run([str(d / "driver-openssl"), "suite", str(d), *ports],
                                capture_output=True, text=True, timeout=120)

        exe = str(d / "driver-schannel.exe")
        runs = {"native": native}
        # Windows 7 gets SCHANNEL_CRED, Windows 10 (1809+) SCH_CREDENTIALS: prove both
        for version in ("win7", "win10"):
            # each run starts with this identity in My (the store cases remove it)
            imported = subprocess.run(["wine", exe, "import-pfx", "Z:" + str(d / "store_client.pfx"),
                                       PFX_PASSWORD], capture_output=True, text=True, env=wine_env,
                                      timeout=120)
            assert imported.returncode == 0, imported.stdout + imported.stderr
            subprocess.run(["wine", "reg", "add", r"HKCU\Software\Wine", "/v", "Version", "/d",
                            version, "/f"], capture_output=True, env=wine_env, timeout=60, check=True)
            runs[version] = subprocess.run(["wine", exe, "suite", "Z:" + str(d), *ports],
                                           capture_output=True, text=True, env=wine_env, timeout=180)
    finally:
        altered.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["wineserver", "-k"], env=wine_env, capture_output=True, timeout=30)
    return runs


def _outcome(run: subprocess.CompletedProcess, case: str) -> tuple[str, str]:
    results, _ = _parse(run.stdout)
    assert case in results, f"case {case} did not report:\n{run.stdout}\n{run.stderr}"
    return results[case]


@pytest.mark.parametrize("case", CLIENT_CASES + [EC_CASE, REPEAT_RECORD_CASE] + SERVER_CASES)
def test_openssl_build(conformance, case):
    outcome, message = _outcome(conformance["native"], case)
    assert outcome == "PASS", message


@pytest.mark.parametrize("case", STORE_CASES)
def test_openssl_build_has_no_system_store(conformance, case):
    outcome, message = _outcome(conformance["native"], case)
    assert (outcome, "no system certificate store" in message) == ("SKIPPED", True), message


@pytest.mark.parametrize("case", SYSTEM_STORE_CASES)
def test_openssl_build_skips_the_system_store_api(conformance, case):
    outcome, message = _outcome(conformance["native"], case)
    assert (outcome, NO_SYSTEM_STORE in message) == ("SKIPPED", True), message


def test_openssl_build_repeats_a_refused_handshake(conformance):
    outcome, message = _outcome(conformance["native"], REPEAT_HANDSHAKE_CASE)
    assert outcome == "PASS", message


WINE_RUNS = {"win7": "SCHANNEL_CRED", "win10": "SCH_CREDENTIALS"}


@pytest.mark.parametrize("windows", WINE_RUNS)
def test_schannel_credential_structure(conformance, windows):
    backend = conformance[windows].stdout.splitlines()[0]
    assert backend.startswith("backend: SChannel") and f"({WINE_RUNS[windows]}," in backend, backend


@pytest.mark.parametrize("windows", WINE_RUNS)
@pytest.mark.parametrize("case", CLIENT_CASES + STORE_CASES + SYSTEM_STORE_CASES +
                         [REPEAT_RECORD_CASE, REPEAT_HANDSHAKE_CASE])
def test_schannel_client_under_wine(conformance, windows, case):
    outcome, message = _outcome(conformance[windows], case)
    assert outcome == "PASS", message


@pytest.mark.parametrize("windows", WINE_RUNS)
def test_schannel_ec_identity_under_wine(conformance, windows):
    outcome, message = _outcome(conformance[windows], EC_CASE)
    assert outcome == "SKIPPED" and "NTE_NOT_SUPPORTED" in message, (outcome, message)


@pytest.mark.parametrize("windows", WINE_RUNS)
@pytest.mark.parametrize("case", SERVER_CASES)
def test_schannel_server_is_skipped_under_wine(conformance, windows, case):
    outcome, message = _outcome(conformance[windows], case)
    assert outcome == "SKIPPED" and WINE_SERVER_SKIP in message, (outcome, message)


@pytest.mark.parametrize("build", ["native", *WINE_RUNS])
def test_suite_reports_every_case(conformance, build):
    run = conformance[build]
    results, closing = _parse(run.stdout)
    counts = [sum(1 for outcome, _ in results.values() if outcome == word)
              for word in ("PASS", "FAIL", "SKIPPED")]
    assert len(results) == len(CLIENT_CASES + [EC_CASE] + STORE_CASES + SYSTEM_STORE_CASES +
                               [REPEAT_RECORD_CASE, REPEAT_HANDSHAKE_CASE] + SERVER_CASES), run.stdout
    assert closing == "{} passed, {} failed, {} skipped".format(*counts), run.stdout
    assert (run.returncode == 0) == (counts[1] == 0), run.stdout + run.stderr
