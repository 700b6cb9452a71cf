"""Configuration mistakes give a clear error and lose nothing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dcxsec
from dcxsec import ConfigurationError, SecurityConfig, TLSContext, VerificationMethod
from conftest import config_for


def test_missing_private_key_file(pki, tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        TLSContext(SecurityConfig(certificate=pki.client.cert_path, private_key=tmp_path / "nope.key"))


def test_key_file_readable_by_others_is_refused(pki, tmp_path):
    key = tmp_path / "open.key"
    key.write_bytes(pki.client.key_path.read_bytes())
    key.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        TLSContext(SecurityConfig(certificate=pki.client.cert_path, private_key=key))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_file(pki, tmp_path):
    key = tmp_path / "locked.key"
    key.write_bytes(pki.client.key_path.read_bytes())
    key.chmod(0o000)
    with pytest.raises(ConfigurationError, match="permission denied"):
        TLSContext(SecurityConfig(certificate=pki.client.cert_path, private_key=key))


def test_key_of_another_certificate(pki):
    with pytest.raises(ConfigurationError, match="does not belong to certificate"):
        TLSContext(SecurityConfig(certificate=pki.client.cert_path, private_key=pki.server.key_path))


def test_encrypted_key_needs_the_right_password(pki):
    encrypted = pki.client.identity.key_pem(password=b"s3cret")
    cert = pki.client.cert_path.read_bytes()
    with pytest.raises(ConfigurationError, match="encrypted: give its password"):
        TLSContext(SecurityConfig(certificate=cert, private_key=encrypted))
    with pytest.raises(ConfigurationError, match="wrong password"):
        TLSContext(SecurityConfig(certificate=cert, private_key=encrypted, private_key_password="nope"))
    assert TLSContext(SecurityConfig(certificate=cert, private_key=encrypted,
                                     private_key_password="s3cret"))


def test_garbage_certificate(pki):
    with pytest.raises(ConfigurationError, match="not an X.509 certificate"):
        TLSContext(SecurityConfig(certificate=b"not a certificate", private_key=pki.client.key_path))


def test_der_identity_and_trust(pki):
    from cryptography.hazmat.primitives import serialization

    ident = pki.client.identity
    der_cert = ident.certificate.public_bytes(serialization.Encoding.DER)
    der_key = ident.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())
    der_ca = pki.ca.identity.certificate.public_bytes(serialization.Encoding.DER)
    assert TLSContext(SecurityConfig(certificate=der_cert, private_key=der_key, trusted_certificates=[der_ca]))


def test_thumbprint_method_needs_thumbprints(pki):
    with pytest.raises(ConfigurationError, match="at least one accepted thumbprint"):
        config_for(pki.client, VerificationMethod.THUMBPRINT)


def test_every_error_is_an_oserror():
    for name in ("TLSError", "ConfigurationError", "CertificateVerificationError",
                 "HandshakeTimeoutError", "NotTLSError"):
        assert issubclass(getattr(dcxsec, name), OSError)
        assert issubclass(getattr(dcxsec, name), dcxsec.TLSError)


def test_import_without_the_engine_says_so(tmp_path):
    package = Path(dcxsec.__file__).parent
    copy = tmp_path / "dcxsec"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("_tls*", "__pycache__"))
    # -S: no site-packages, so no installed copy of the engine can be found instead.
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import dcxsec"
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert "compiled TLS engine (dcxsec._tls) is missing or failed to build" in done.stderr
    assert "libssl-dev" in done.stderr
