"""Options a platform's backend cannot honour, refused when a TLSContext is built.

A security option that is accepted and then not applied is worse than an
error: whoever set it believes it holds.  Each rule here names the option and
the platform, and says what to do instead.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from dcxsec.config import SecurityConfig
from dcxsec.errors import ConfigurationError
from dcxsec.verify import VerificationMethod

_TLS13 = 0x0304
# OpenSSL looks certificates up in a folder by subject hash: 1a2b3c4d.0, ...
_HASHED_NAME = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")


def platform_label(platform: str = sys.platform) -> str:
    """The platform and its TLS backend, for messages."""
    if platform == "win32":
        return "Windows (SChannel)"
    return {"darwin": "macOS", "linux": "Linux"}.get(platform, platform) + " (OpenSSL)"


def check_supported(config: SecurityConfig, platform: str = sys.platform,
                    max_supported: int = _TLS13) -> None:
    """Raise ConfigurationError for the first option of ``config`` that the
    backend of ``platform`` (negotiating at most ``max_supported``) would not honour."""
    where = platform_label(platform)
    if config.check_hostname and config.verification_method != VerificationMethod.TRUST_CHAIN:
        # Both backends check the name while they check the chain, and only then.
        raise ConfigurationError(
            f"check_hostname=True is not honoured with {config.verification_method.name} "
            f"verification on {where}: the host name is checked only with TRUST_CHAIN; use "
            f"TRUST_CHAIN, or pin the certificate (THUMBPRINT) without check_hostname")
    low, _ = config.version_range()
    if low > max_supported:
        raise ConfigurationError(
            f"minimum_version={config.minimum_version.name} cannot be honoured on {where}: it "
            f"negotiates at most TLS 1.2 (TLS 1.3 needs Windows 11 or Server 2022); use TLSv1_2")
    if platform == "win32":
        _check_schannel(config, where)
    else:
        _check_openssl(config, where)


def _check_schannel(config: SecurityConfig, where: str) -> None:
    if config.private_key_password is not None and config.private_key is not None:
        # schannel_identity.c reads plain PKCS#8/PKCS#1/SEC1 only; it cannot decrypt a key.
        raise ConfigurationError(
            f"private_key_password cannot be honoured on {where}: SChannel cannot decrypt a "
            f"private key file; import the certificate and key as PKCS#12 into the My store "
            f"(dcxsec cert import FILE.pfx) and use certificate_thumbprint")
    if not config.use_store_trust and config.use_system_trust:
        # The store's Root and CA are the system stores, which Windows' chain engine trusts.
        raise ConfigurationError(
            f"use_store_trust=False cannot be honoured on {where} while use_system_trust=True: "
            f"the store's Root is the system's own; set use_system_trust=False as well and give "
            f"the roots in trusted_certificates")


def _check_openssl(config: SecurityConfig, where: str) -> None:
    if config.trusted_folder:
        folder = Path(config.trusted_folder)
        if not folder.is_dir():
            # OpenSSL takes any path as a lookup folder and never says it is not there.
            raise ConfigurationError(f"trusted_folder '{folder}' does not exist or is not a folder: "
                                     f"give the folder that holds the trusted certificates")
        names = [entry.name for entry in os.scandir(folder) if entry.is_file()]
        if names and not any(_HASHED_NAME.match(name) for name in names):
            raise ConfigurationError(
                f"trusted_folder '{folder}' cannot be honoured on {where}: OpenSSL finds "
                f"certificates in a folder only by their hashed names (like 1a2b3c4d.0), and it "
                f"has none; run: openssl rehash '{folder}' (or list the files in trusted_certificates)")
