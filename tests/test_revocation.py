"""Revocation on real handshakes: CRLs from crl_files and from the store, both roles."""
from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import config_for, requestor, wait_for_log
from dcxsec import (
    CertificateVerificationError,
    CertStore,
    ConfigurationError,
    SecurityConfig,
    TLSContext,
    TLSError,
    VerificationMethod,
)
from dcxsec import pki as certs
from dcxsec.store import CertificateStore
from test_verification import assert_ok, client_failure

TRUST_CHAIN, THUMBPRINT, NONE = (VerificationMethod.TRUST_CHAIN, VerificationMethod.THUMBPRINT,
                                 VerificationMethod.NONE)
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
REVOKED_ON = NOW - dt.timedelta(days=2, hours=3)
CA_NAME = "CN=dcxsec Test CA"


@dataclass(frozen=True)
class CRLs:
    """Revoked identities from the test CA and CRL files about them."""

    revoked_client: object  # pki_fixtures.Issued
    revoked_server: object
    current: Path           # the CA's current CRL (PEM), revoking both
    current_der: Path       # the same, DER
    expired: Path           # an expired CRL of the CA, revoking both
    bundle: Path            # another CA's CRL, then the current one, in one PEM file
    intermediate: Path      # the intermediate's current CRL, revoking nothing
    intermediate_revoked: Path  # the CA's current CRL, revoking the intermediate


def pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def crls(pki, tmp_path_factory) -> CRLs:
    folder = tmp_path_factory.mktemp("crl")
    server_names = {"dns_names": ["localhost"], "ip_addresses": ["127.0.0.1"]}
    ca = pki.ca.identity

    def keep(name: str, identity):
        from pki_fixtures import Issued

        return Issued(identity, *identity.write(folder, name))

    bad_client = keep("revoked_client", certs.issue(ca, "dcxsec-revoked-scu"))
    bad_server = keep("revoked_server", certs.issue(ca, "dcxsec-revoked-scp", **server_names))
    revoked = [bad_client.identity, bad_server.identity]
    current = certs.make_crl(ca, revoked, revoked_on=REVOKED_ON,
                             reason=x509.ReasonFlags.key_compromise)
    expired = certs.make_crl(ca, revoked, this_update=NOW - dt.timedelta(days=10),
                             next_update=NOW - dt.timedelta(days=3), revoked_on=REVOKED_ON)
    paths = {}
    for name, data in {
        "current.crl": pem(current),
        "current.der": current.public_bytes(serialization.Encoding.DER),
        "expired.crl": pem(expired),
        "bundle.crl": pem(certs.make_crl(pki.other_ca.identity, [])) + pem(current),
        "intermediate.crl": pem(certs.make_crl(pki.intermediate.identity, [])),
        "intermediate_revoked.crl": pem(certs.make_crl(ca, [pki.intermediate.identity])),
    }.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return CRLs(bad_client, bad_server, paths["current.crl"], paths["current.der"],
                paths["expired.crl"], paths["bundle.crl"], paths["intermediate.crl"],
                paths["intermediate_revoked.crl"])


def verifier(issued, ca, **kw) -> TLSContext:
    """A TRUST_CHAIN context trusting the test CA."""
    return TLSContext(config_for(issued, TRUST_CHAIN, [ca.cert_path], **kw))


def peer(issued) -> TLSContext:
    """A context that presents ``issued`` and checks nothing itself."""
    return TLSContext(config_for(issued, NONE))


def assert_revoked(exc, issued) -> None:
    assert isinstance(exc, CertificateVerificationError), exc
    assert exc.rule == "revoked" and exc.thumbprint == issued.thumbprint
    text = str(exc)
    assert f"certificate '{issued.identity.certificate.subject.rfc4514_string()}' " \
           f"(thumbprint {issued.thumbprint})" in text
    assert f"revoked on {REVOKED_ON:%Y-%m-%d %H:%M:%S} UTC by '{CA_NAME}'" in text


# ---- a dcxsec acceptor and requestor, CRLs from crl_files -------------------------

@pytest.mark.parametrize("which", ["current", "current_der", "bundle"])
def test_acceptor_refuses_a_revoked_client(pki, crls, pair_factory, caplog, which):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    server = verifier(pki.server, pki.ca, crl_files=[getattr(crls, which)])
    pair = pair_factory(server, peer(crls.revoked_client))
    assert_revoked(pair.server_error, crls.revoked_client)
    assert "keyCompromise" in str(pair.server_error)
    failure = client_failure(pair)
    assert isinstance(failure, TLSError) and "certificate revoked" in str(failure)
    logged = wait_for_log(caplog, "revoked on")
    assert any(crls.revoked_client.thumbprint in m and "revoked on" in m for m in logged), logged
    assert_ok(pair_factory(server, peer(pki.client)))  # the same CRL lets others in


def test_requestor_refuses_a_revoked_server(pki, crls, pair_factory):
    client = verifier(pki.client, pki.ca, crl_files=[crls.current], check_revocation=True)
    pair = pair_factory(peer(crls.revoked_server), client)
    assert_revoked(pair.client_error, crls.revoked_server)
    assert isinstance(pair.server_error, TLSError) and "revoked" in str(pair.server_error)


def test_pynetdicom_scp_refuses_a_revoked_requestor(pki, crls, scp_factory, caplog):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    scp = scp_factory(verifier(pki.server, pki.ca, crl_files=[crls.current], check_revocation=True))
    refused = requestor().associate("127.0.0.1", scp.port, ae_title="DCXSEC-SCP",
                                    tls_args=(peer(crls.revoked_client), None))
    assert not refused.is_established
    logged = wait_for_log(caplog, crls.revoked_client.thumbprint)
    assert any(crls.revoked_client.thumbprint in m and f"revoked on {REVOKED_ON:%Y-%m-%d}" in m
               for m in logged), logged
    assert scp.peer_thumbprints == []
    good = requestor().associate("127.0.0.1", scp.port, ae_title="DCXSEC-SCP",
                                 tls_args=(peer(pki.client), None))
    assert good.is_established and good.send_c_echo().Status == 0x0000
    good.release()
    assert scp.peer_thumbprints == [pki.client.thumbprint]


def test_pynetdicom_requestor_refuses_a_revoked_scp(pki, crls, scp_factory, caplog):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    scp = scp_factory(peer(crls.revoked_server))
    client = verifier(pki.client, pki.ca, crl_files=[crls.current_der])
    assoc = requestor().associate("127.0.0.1", scp.port, ae_title="DCXSEC-SCP", tls_args=(client, None))
    assert not assoc.is_established
    logged = wait_for_log(caplog, crls.revoked_server.thumbprint)
    assert any(crls.revoked_server.thumbprint in m and "revoked on" in m for m in logged), logged


def test_current_crl_accepts_a_peer_it_does_not_revoke(pki, crls, scp_factory):
    scp = scp_factory(verifier(pki.server, pki.ca, crl_files=[crls.current], check_revocation=True))
    client = verifier(pki.client, pki.ca, crl_files=[crls.current], check_revocation=True)
    assoc = requestor().associate("127.0.0.1", scp.port, ae_title="DCXSEC-SCP", tls_args=(client, None))
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()
    assert scp.peer_thumbprints == [pki.client.thumbprint]


def test_expired_crl_is_refused_when_revocation_is_required(pki, crls, pair_factory):
    server = verifier(pki.server, pki.ca, crl_files=[crls.expired], check_revocation=True)
    pair = pair_factory(server, peer(pki.client))
    exc = pair.server_error
    assert isinstance(exc, CertificateVerificationError) and exc.rule == "revocation"
    next_update = (NOW - dt.timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S")
    assert f"the CRL from '{CA_NAME}' expired on {next_update} UTC" in str(exc)
    assert "dcxsec cert import" in str(exc) and pki.client.thumbprint in str(exc)


def test_expired_crl_still_revokes_without_check_revocation(pki, crls, pair_factory):
    """check_revocation off: no current CRL is no reason to refuse, but a
    certificate that a CRL at hand revokes is never accepted."""
    server = verifier(pki.server, pki.ca, crl_files=[crls.expired])
    assert_ok(pair_factory(server, peer(pki.client)))
    assert_revoked(pair_factory(server, peer(crls.revoked_client)).server_error, crls.revoked_client)


def test_missing_crl_is_refused_when_revocation_is_required(pki, pair_factory):
    server = verifier(pki.server, pki.ca, check_revocation=True)
    exc = pair_factory(server, peer(pki.client)).server_error
    assert isinstance(exc, CertificateVerificationError) and exc.rule == "revocation"
    assert f"no current CRL from '{CA_NAME}'" in str(exc) and "dcxsec cert import" in str(exc)
    assert_ok(pair_factory(verifier(pki.server, pki.ca), peer(pki.client)))  # not required: fine


def test_required_revocation_covers_the_whole_chain(pki, crls, pair_factory):
    def client(files):
        return verifier(pki.client, pki.ca, crl_files=files, check_revocation=True)

    server = peer(pki.leaf_via_intermediate)
    exc = pair_factory(server, client([crls.current])).client_error
    assert exc.rule == "revocation"
    assert "no current CRL from 'CN=dcxsec Test Intermediate'" in str(exc)
    assert_ok(pair_factory(server, client([crls.current, crls.intermediate])))


def test_a_revoked_intermediate_refuses_its_leaves(pki, crls, pair_factory):
    client = verifier(pki.client, pki.ca, crl_files=[crls.intermediate_revoked])
    exc = pair_factory(peer(pki.leaf_via_intermediate), client).client_error
    assert isinstance(exc, CertificateVerificationError) and exc.rule == "revoked"
    assert (f"its CA certificate 'CN=dcxsec Test Intermediate' (thumbprint "
            f"{pki.intermediate.thumbprint}) was revoked on") in str(exc)


# ---- configuration ------------------------------------------------------------------

@pytest.mark.parametrize("method, setting", [
    (NONE, {"check_revocation": True}),
    (THUMBPRINT, {"check_revocation": True}),
    (THUMBPRINT, {"crl_files": ["x.crl"]}),
    (NONE, {"crl_files": ["x.crl"]}),
])
def test_revocation_that_cannot_be_honoured_is_refused(pki, method, setting):
    with pytest.raises(ConfigurationError, match="cannot be (honoured|applied) with .*use TRUST_CHAIN"):
        SecurityConfig(verification_method=method, accepted_thumbprints=[pki.client.thumbprint],
                       **setting)


def test_a_file_that_is_not_a_crl_is_refused(pki):
    config = config_for(pki.server, TRUST_CHAIN, [pki.ca.cert_path], crl_files=[pki.ca.cert_path])
    with pytest.raises(ConfigurationError, match=f"CRL file '{pki.ca.cert_path}' cannot be used: not a CRL"):
        TLSContext(config)


# ---- CRLs from the certificate store ------------------------------------------------

def cert_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "dcxsec.cli", "cert", "--store", "current-user", *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert not check or done.returncode == 0, done.stderr
    return done


@pytest.fixture
def store(tmp_path, monkeypatch) -> CertificateStore:
    monkeypatch.setenv("DCXSEC_CURRENT_USER_STORE", str(tmp_path / "store"))
    return CertificateStore(CertStore.CURRENT_USER)


def store_verifier(pki, **kw) -> TLSContext:
    return TLSContext(SecurityConfig(certificate=pki.server.cert_path, private_key=pki.server.key_path,
                                     cert_store=CertStore.CURRENT_USER, use_system_trust=False, **kw))


def test_crls_imported_into_the_store_are_applied(pki, crls, store, pair_factory):
    cert_cli("trust", str(pki.ca.cert_path))
    assert_ok(pair_factory(store_verifier(pki), peer(crls.revoked_client)))
    imported = cert_cli("import", str(crls.current_der)).stdout
    assert "imported CRL" in imported and f"{CA_NAME} (2 revoked) into CURRENT_USER\\CA" in imported
    assert [p.suffix for p in (store.source.root / "CA").iterdir()] == [".crl"]
    assert_revoked(pair_factory(store_verifier(pki), peer(crls.revoked_client)).server_error,
                   crls.revoked_client)
    listing = cert_cli("list").stdout
    crl_rows = listing.split("Certificate revocation lists:")[1]
    assert CA_NAME in crl_rows and "NextUpdate" in crl_rows
    thumb = store.crls()[0].thumbprint
    assert thumb in crl_rows and thumb not in listing.split("Certificate revocation lists:")[0]
    cert_cli("remove", thumb)
    assert store.crls() == []
    assert_ok(pair_factory(store_verifier(pki), peer(crls.revoked_client)))


def test_store_crls_serve_required_revocation(pki, crls, store, pair_factory):
    cert_cli("trust", str(pki.ca.cert_path))
    cert_cli("import", str(crls.expired))
    exc = pair_factory(store_verifier(pki, check_revocation=True), peer(pki.client)).server_error
    assert exc.rule == "revocation" and "expired on" in str(exc)
    assert "EXPIRED" in cert_cli("list", "CA").stdout
    cert_cli("import", str(crls.bundle))  # several CRLs in one PEM file: each stored
    assert len(store.crls()) == 3
    assert_ok(pair_factory(store_verifier(pki, check_revocation=True), peer(pki.client)))
    ignored = store_verifier(pki, check_revocation=True, use_store_trust=False,
                             trusted_certificates=[pki.ca.cert_path])
    assert pair_factory(ignored, peer(pki.client)).server_error.rule == "revocation"


def test_cli_issues_crls_from_a_test_ca(store, pair_factory):
    ca = cert_cli("new", "Site CA", "--ca").stdout.split()[1]
    scu = cert_cli("new", "DCXSEC-SCU", "--issuer", ca).stdout.split()[1]
    scp = cert_cli("new", "DCXSEC-SCP", "--issuer", ca, "--ip", "127.0.0.1").stdout.split()[1]
    cert_cli("crl", ca, "--revoke", scu)
    cert_cli("crl", ca, "--revoke", "1234AB")  # carries the first revocation over
    newest = max(store.crls(), key=lambda c: c.crl.extensions.get_extension_for_class(
        x509.CRLNumber).value.crl_number)
    assert {e.serial_number for e in newest.crl} == {
        store.find("My", scu).certificate.serial_number, 0x1234AB}
    server = TLSContext(SecurityConfig(certificate_thumbprint=scp, cert_store=CertStore.CURRENT_USER,
                                       use_system_trust=False, check_revocation=True))
    client = TLSContext(SecurityConfig(certificate_thumbprint=scu, cert_store=CertStore.CURRENT_USER,
                                       verification_method=NONE))
    assert pair_factory(server, client).server_error.rule == "revoked"
    refused = cert_cli("import", str(store.crls()[0].path), "--to", "Root", check=False)
    assert refused.returncode != 0 and "CRLs go into CA" in refused.stderr
