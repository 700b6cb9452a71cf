"""The exceptions dcxsec raises: one base, ``TLSError``, under ``ssl.SSLError``.

Every one is an ``OSError``, because pynetdicom and ``socketserver`` tolerate
nothing else from a socket.
"""
from __future__ import annotations

import ssl


class TLSError(ssl.SSLError):
    """A TLS failure: the handshake, a record, or the configuration.

    ``str(error)`` is the whole reason for a person.  ``status`` is the engine's
    status name (``"PROTOCOL"``, ``"PEER_ALERT"``, ...) and ``alert`` the TLS
    alert number received from the peer, or ``None``.
    """

    def __init__(self, message: str, status: str = "PROTOCOL", alert: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.alert = alert

    def __str__(self) -> str:
        return self.message


class ConfigurationError(TLSError, ValueError):
    """The security configuration cannot be used (certificate, key, versions)."""

    def __init__(self, message: str):
        super().__init__(message, status="CONFIG")


class CertificateVerificationError(TLSError, ssl.SSLCertVerificationError):
    """The peer's certificate was refused by the verification method.

    ``rule`` names the rule that refused it (``"untrusted"``, ``"expired"``,
    ``"not_yet_valid"``, ``"thumbprint"``, ``"no_certificate"``, ``"hostname"``,
    ``"revoked"`` (a CRL revokes a certificate of the chain), ``"revocation"``
    (revocation cannot be checked: no current CRL), ...); ``subject``,
    ``thumbprint`` and ``not_after`` describe the peer's certificate.
    """

    def __init__(self, message: str, rule: str, subject: str = "", thumbprint: str = "",
                 not_after: str = ""):
        super().__init__(message, status="VERIFY")
        self.rule = rule
        self.subject = subject
        self.thumbprint = thumbprint
        self.not_after = not_after
        self.verify_message = message


class HandshakeTimeoutError(TLSError, TimeoutError):
    """The TLS handshake did not finish before its deadline."""

    def __init__(self, message: str):
        super().__init__(message, status="TIMEOUT")


class NotTLSError(TLSError):
    """The peer is not speaking TLS (a plain DICOM port, HTTP, random bytes)."""

    def __init__(self, message: str):
        super().__init__(message, status="NOT_TLS")
