"""No option is accepted and then ignored: what a platform's backend cannot honour
is refused when the TLSContext is built, naming the option and the platform."""
from __future__ import annotations

import ssl
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization

from conftest import config_for, needs_tools
from dcxsec import (
    CertificateVerificationError,
    ConfigurationError,
    SecurityConfig,
    TLSContext,
    VerificationMethod,
)
from dcxsec import pki as pki_module
from dcxsec.support import check_supported, platform_label

TRUST_CHAIN, THUMBPRINT, NONE = (VerificationMethod.TRUST_CHAIN, VerificationMethod.THUMBPRINT,
                                 VerificationMethod.NONE)
HERE = platform_label()


def test_context_without_configuration_checks_the_peer(pki, pair_factory):
    """TLSContext() verifies by TRUST_CHAIN, as SecurityConfig() does: a server the
    system and the (empty) store do not trust is refused, never accepted blindly."""
    plain = TLSContext()
    assert plain.verification_method == TRUST_CHAIN
    pair = pair_factory(TLSContext(config_for(pki.server, NONE)), plain)
    assert isinstance(pair.client_error, CertificateVerificationError)
    assert pair.client_error.rule == "untrusted"


@pytest.mark.parametrize("method", [NONE, THUMBPRINT], ids=lambda m: m.name)
def test_check_hostname_without_trust_chain_is_refused(pki, method):
    """Both backends check the host name with the chain only: elsewhere it would be ignored."""
    with pytest.raises(ConfigurationError) as raised:
        TLSContext(config_for(pki.client, method, check_hostname=True,
                              accepted_thumbprints=[pki.server.thumbprint]))
    message = str(raised.value)
    assert f"check_hostname=True is not honoured with {method.name} verification on {HERE}" in message
    assert TLSContext(config_for(pki.client, method, accepted_thumbprints=[pki.server.thumbprint]))


def test_trusted_folder_that_is_not_there_is_refused(pki, tmp_path):
    with pytest.raises(ConfigurationError, match=f"trusted_folder '{tmp_path / 'nowhere'}' does not exist"):
        TLSContext(config_for(pki.client, trusted_folder=str(tmp_path / "nowhere")))


@needs_tools("openssl", install="openssl")
def test_trusted_folder_needs_openssl_hashed_names(pki, tmp_path, pair_factory):
    """A folder of plain PEM files (what SChannel reads) would trust nothing on OpenSSL;
    once rehashed, its root is trusted."""
    folder = tmp_path / "roots"
    folder.mkdir()
    (folder / "ca.pem").write_bytes(pki.ca.cert_path.read_bytes())
    with pytest.raises(ConfigurationError) as raised:
        TLSContext(config_for(pki.client, trusted_folder=str(folder)))
    message = str(raised.value)
    assert f"trusted_folder '{folder}' cannot be honoured on {HERE}" in message
    assert f"openssl rehash '{folder}'" in message
    subprocess.run(["openssl", "rehash", str(folder)], check=True, capture_output=True, timeout=60)
    client = TLSContext(config_for(pki.client, trusted_folder=str(folder)))
    pair = pair_factory(TLSContext(config_for(pki.server, NONE)), client)
    assert pair.client_error is None, pair.client_error


def test_minimum_version_above_the_platform_is_refused(pki):
    """SChannel before Windows 11 / Server 2022 has no TLS 1.3: minimum_version=TLSv1_3
    would otherwise fail with the engine's status, not as a configuration error."""
    config = config_for(pki.client, minimum_version=ssl.TLSVersion.TLSv1_3)
    with pytest.raises(ConfigurationError, match=r"minimum_version=TLSv1_3 cannot be honoured on "
                                                 r"Windows \(SChannel\)"):
        check_supported(config, "win32", max_supported=0x0303)
    check_supported(config, "win32", max_supported=0x0304)
    assert TLSContext(config)  # OpenSSL 3 has TLS 1.3 here


def test_encrypted_key_file_is_refused_for_schannel(pki):
    """schannel_identity.c cannot decrypt a key file; OpenSSL can, and does."""
    encrypted = pki.client.identity.key_pem(password=b"s3cret")
    config = SecurityConfig(certificate=pki.client.cert_path.read_bytes(), private_key=encrypted,
                            private_key_password="s3cret", use_system_trust=False)
    with pytest.raises(ConfigurationError, match=r"private_key_password cannot be honoured on "
                                                 r"Windows \(SChannel\).*PKCS#12"):
        check_supported(config, "win32")
    assert TLSContext(config)


def test_store_trust_off_with_system_trust_on_is_refused_for_windows(pki):
    """On Windows the store's Root is the system's, so system trust keeps trusting it."""
    config = config_for(pki.client, use_store_trust=False)
    config.use_system_trust = True
    with pytest.raises(ConfigurationError, match=r"use_store_trust=False cannot be honoured on "
                                                 r"Windows \(SChannel\) while use_system_trust=True"):
        check_supported(config, "win32")
    check_supported(config, "linux")  # here the folder store's Root is not the system's
    config.use_system_trust = False
    check_supported(config, "win32")



@pytest.mark.parametrize("platform", ["win32", "linux", "darwin"])
def test_crl_files_and_check_revocation_are_honoured_on_every_platform(pki, tmp_path, monkeypatch,
                                                                       platform):
    """SChannel applies crl_files with the meaning OpenSSL gives them (proven
    under Wine by test_schannel_wine.py), so Windows takes them too."""
    crl = tmp_path / "ca.crl"
    crl.write_bytes(pki_module.make_crl(pki.ca.identity).public_bytes(serialization.Encoding.PEM))
    monkeypatch.setattr("sys.platform", platform)
    config = config_for(pki.client, TRUST_CHAIN, [pki.ca.cert_path], crl_files=[crl],
                        check_revocation=True)
    check_supported(config, platform)
    assert config.crl_bytes()[0] == crl.read_bytes()
