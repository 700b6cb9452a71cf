"""SecurityConfig: the local identity, the trust, and how the peer is verified."""
from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from dcxsec.errors import ConfigurationError
from dcxsec.verify import VerificationMethod, normalize_thumbprints

Source = Union[str, "os.PathLike[str]", bytes]
"""A certificate or key: a file path, or the PEM/DER bytes themselves."""

_VERSION_FLOOR = ssl.TLSVersion.TLSv1_2


@dataclass
class SecurityConfig:
    """Everything that decides how dcxsec secures an association.

    ``certificate`` and ``private_key`` are the local AE's identity (PEM or DER,
    as a path or bytes; the certificate file may carry the intermediates after
    the leaf).  ``verification_method`` decides how the peer is checked:
    TRUST_CHAIN against the system trust store plus ``trusted_certificates``;
    THUMBPRINT against ``accepted_thumbprints``.  Versions are
    ``ssl.TLSVersion`` values; TLS 1.2 is the floor (DICOM PS3.15 B.12).
    """

    certificate: Source | None = None
    private_key: Source | None = None
    private_key_password: str | bytes | None = None
    verification_method: VerificationMethod = VerificationMethod.TRUST_CHAIN
    trusted_certificates: Sequence[Source] = ()
    accepted_thumbprints: Sequence[str] = ()
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED
    use_system_trust: bool = True
    check_hostname: bool = False
    handshake_timeout: float = 5.0
    session_cache: bool = True
    trusted_folder: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.verification_method = VerificationMethod(self.verification_method)
        self.accepted_thumbprints = normalize_thumbprints(self.accepted_thumbprints)
        self.minimum_version = ssl.TLSVersion(self.minimum_version)
        self.maximum_version = ssl.TLSVersion(self.maximum_version)
        if isinstance(self.trusted_certificates, (str, bytes, os.PathLike)):
            self.trusted_certificates = [self.trusted_certificates]
        if self.handshake_timeout is None or self.handshake_timeout <= 0:
            raise ConfigurationError("handshake_timeout must be a positive number of seconds")
        if self.private_key is not None and self.certificate is None:
            raise ConfigurationError("a private key was given without its certificate")
        if self.certificate is not None and self.private_key is None:
            raise ConfigurationError("a certificate was given without its private key")
        if self.verification_method == VerificationMethod.THUMBPRINT and not self.accepted_thumbprints:
            raise ConfigurationError(
                "THUMBPRINT verification needs at least one accepted thumbprint")
        self.version_range()  # fail early on an impossible range

    def version_range(self) -> tuple[int, int]:
        """The (lowest, highest) protocol versions as wire numbers, 0 = platform's newest."""
        low, high = self.minimum_version, self.maximum_version
        if low == ssl.TLSVersion.MINIMUM_SUPPORTED:
            low = _VERSION_FLOOR
        if low < _VERSION_FLOOR:
            raise ConfigurationError(
                f"minimum_version {low.name} is not allowed: TLS 1.0 and 1.1 are forbidden "
                "(RFC 8996, DICOM PS3.15 B.12); use TLSv1_2 or TLSv1_3")
        high_value = 0 if high == ssl.TLSVersion.MAXIMUM_SUPPORTED else int(high)
        if high_value and high_value < int(low):
            raise ConfigurationError(
                f"maximum_version {high.name} is below minimum_version {low.name}")
        return int(low), high_value

    def certificate_bytes(self) -> bytes | None:
        """The local certificate chain's bytes, or None."""
        return None if self.certificate is None else read_source(self.certificate, "certificate")

    def private_key_bytes(self) -> bytes | None:
        """The private key's bytes, refusing a key file that others can read."""
        return None if self.private_key is None else read_private_key(self.private_key)

    def trusted_bytes(self) -> list[bytes]:
        """Each trusted certificate (or bundle) as bytes."""
        return [read_source(s, "trusted certificate") for s in self.trusted_certificates]


def read_source(source: Source, what: str) -> bytes:
    """The bytes of a certificate given as bytes or as a path."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"{what} file '{path}' does not exist") from None
    except PermissionError:
        raise ConfigurationError(
            f"{what} file '{path}' cannot be read by this account (permission denied)") from None
    except OSError as exc:
        raise ConfigurationError(f"{what} file '{path}' cannot be read: {exc.strerror}") from None


def read_private_key(source: Source) -> bytes:
    """The private key's bytes; a key file open to group or others is refused."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigurationError(f"private key file '{path}' does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"private key file '{path}' cannot be read: {exc.strerror}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"private key file '{path}' is readable by other accounts (mode "
            f"{stat.S_IMODE(mode):04o}); make it private with: chmod 600 '{path}'")
    return read_source(path, "private key")
