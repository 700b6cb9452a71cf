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


FOREIGN_GID = 4242  # a group this process is not in (checked below)


def key_copy(pki, tmp_path, mode: int, gid: int) -> Path:
    """The client's key in a file of its own with this mode and group."""
    key = tmp_path / f"key-{mode:o}-{gid}.key"
    key.write_bytes(pki.client.key_path.read_bytes())
    os.chown(key, -1, gid)
    key.chmod(mode)
    return key


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another group needs root")
@pytest.mark.parametrize("mode", [0o640, 0o440], ids=oct)
def test_key_readable_by_our_own_group_is_accepted(pki, tmp_path, pair_factory, server_ctx, mode):
    """A Kubernetes secret mounted 0640 with fsGroup, or a service group's key."""
    key = key_copy(pki, tmp_path, mode, os.getegid())
    ctx = TLSContext(SecurityConfig(certificate=pki.client.cert_path, private_key=key,
                                    trusted_certificates=[pki.ca.cert_path], use_system_trust=False))
    pair = pair_factory(server_ctx, ctx)
    assert pair.client_error is None and pair.server_error is None
    assert pair.server.peer_thumbprint == pki.client.thumbprint  # the key did its work


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another group needs root")
def test_key_readable_by_another_group_is_refused(pki, tmp_path):
    assert FOREIGN_GID != os.getegid() and FOREIGN_GID not in os.getgroups()
    key = key_copy(pki, tmp_path, 0o640, FOREIGN_GID)
    with pytest.raises(ConfigurationError) as raised:
        TLSContext(SecurityConfig(certificate=pki.client.cert_path, private_key=key))
    message = str(raised.value)
    assert f"readable by group {FOREIGN_GID} (mode 0640), which this process is not in" in message
    assert f"chmod 600 '{key}'" in message and "chgrp" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another group needs root")
def test_key_readable_by_a_supplementary_group_is_accepted(pki, tmp_path):
    """A process whose supplementary groups hold the key's group (as fsGroup gives a pod)."""
    key = key_copy(pki, tmp_path, 0o640, FOREIGN_GID + 1)
    build = (f"from dcxsec import SecurityConfig, TLSContext; TLSContext(SecurityConfig("
             f"certificate={str(pki.client.cert_path)!r}, private_key={str(key)!r}, "
             f"use_system_trust=False)); print('built')")
    run = lambda groups: subprocess.run(  # noqa: E731
        [sys.executable, "-c", build], capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: os.setgroups(groups))
    done = run([FOREIGN_GID + 1])
    assert done.returncode == 0 and done.stdout.strip() == "built", done.stderr
    done = run([])
    assert done.returncode != 0 and "which this process is not in" in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another group needs root")
@pytest.mark.parametrize("mode, words", [(0o660, "writable by its group"),
                                         (0o620, "writable by its group"),
                                         (0o604, "by other accounts"),
                                         (0o602, "by other accounts")], ids=str)
def test_key_open_to_writers_or_others_is_refused_even_in_our_group(pki, tmp_path, mode, words):
    key = key_copy(pki, tmp_path, mode, os.getegid())
    with pytest.raises(ConfigurationError, match=f"{words} \\(mode {mode:04o}\\).*chmod 600"):
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
