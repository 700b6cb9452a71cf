"""The certificate workflow a hospital runs: a CSR for the enterprise CA, the
issued certificate paired with its key on import, ``show``, ``--json``, and
a test CA beside AE identities in one store."""
from __future__ import annotations

import datetime as dt
import json
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from dcxsec import CertificateStore, CertStore, SecurityConfig, TLSContext, pki as certs
from dcxsec.cli import main


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty current-user store of this test's own."""
    monkeypatch.setenv("DCXSEC_CURRENT_USER_STORE", str(tmp_path / "store"))
    return CertificateStore(CertStore.CURRENT_USER)


def sign(csr: x509.CertificateSigningRequest, ca: certs.Identity) -> x509.Certificate:
    """What the enterprise CA does with a request."""
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(csr.subject)
               .issuer_name(ca.certificate.subject).public_key(csr.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=1))
               .not_valid_after(now + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    for ext in csr.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(ca.private_key, hashes.SHA256())


def test_request_then_import_pairs_the_certificate_with_its_key(store, tmp_path, capsys):
    csr_path = tmp_path / "ct01.csr"
    assert main(["cert", "request", "CT01", "--dns", "ct01.hospital.example", "--ip", "10.0.0.5",
                 "--out", str(csr_path), "--store", "current-user"]) == 0
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.subject.rfc4514_string() == "CN=CT01"
    waiting = list((tmp_path / "store" / "Requests").glob("*.key"))
    assert len(waiting) == 1 and oct(os.stat(waiting[0]).st_mode & 0o777) == "0o600"

    ca = certs.new_ca("Hospital CA")
    issued = tmp_path / "ct01.pem"
    issued.write_bytes(certs.Identity(sign(csr, ca), ca.private_key).cert_pem())
    capsys.readouterr()
    assert main(["cert", "import", str(issued), "--store", "current-user"]) == 0
    assert "with the key of its request" in capsys.readouterr().out
    assert not waiting[0].exists()
    identity = store.identity()
    assert identity.subject == "CN=CT01" and identity.has_key
    # and it serves: a context built from the store alone has that identity
    TLSContext(SecurityConfig(cert_store=CertStore.CURRENT_USER))


def test_show_and_list_as_json(store, capsys):
    assert main(["cert", "--store", "current-user", "new", "PACS", "--dns", "pacs"]) == 0
    entry = store.identity()
    capsys.readouterr()
    assert main(["cert", "show", entry.thumbprint, "--json", "--store", "current-user"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["subject"] == "CN=PACS" and info["thumbprint_sha1"] == entry.thumbprint
    assert len(info["thumbprint_sha256"]) == 64 and info["key"] == "EC secp256r1"
    assert "digital_signature" in info["key_usage"] and info["subject_alt_names"] == ["DNS:pacs"]
    assert info["usable_as_identity"] is True and info["chain"] == ["CN=PACS"]
    assert main(["cert", "list", "--json", "--store", "current-user"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [c["thumbprint_sha1"] for c in listed["certificates"]] == [entry.thumbprint]
    assert main(["cert", "show", entry.thumbprint, "--store", "current-user"]) == 0
    assert "CN=PACS" in capsys.readouterr().out


def test_a_test_ca_beside_an_ae_identity_is_not_a_second_identity(store, capsys):
    assert main(["cert", "--store", "current-user", "new", "Test CA", "--ca"]) == 0
    ca_thumb = next(iter(store.certificates("My"))).thumbprint
    # only the CA in My: a requestor goes without an identity, it does not fail
    assert SecurityConfig(cert_store=CertStore.CURRENT_USER).identity_bytes() == (None, None)
    assert main(["cert", "new", "CT02", "--issuer", ca_thumb, "--store", "current-user"]) == 0
    identity = store.identity()  # not "several usable identities"
    assert identity.subject == "CN=CT02"
    capsys.readouterr()
    assert main(["cert", "show", ca_thumb, "--json", "--store", "current-user"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["usable_as_identity"] is False
    assert "CA certificate" in info["not_usable_because"]
    assert main(["cert", "show", identity.thumbprint, "--json", "--store", "current-user"]) == 0
    assert json.loads(capsys.readouterr().out)["chain"] == ["CN=CT02", "CN=Test CA"]


def test_show_of_an_unknown_thumbprint_fails_plainly(store, capsys):
    assert main(["cert", "show", "00" * 20, "--store", "current-user"]) == 1
    assert "no certificate with thumbprint" in capsys.readouterr().err
