"""dcxsec: secure DICOM networking (DICOM TLS) for Python.

A TLS engine in C (OpenSSL 3 on Linux and macOS, SChannel on Windows) behind
``TLSContext.wrap_socket()``, which pynetdicom uses as its transport on both
sides of an association.
"""
import logging

from dcxsec import _native  # noqa: F401 - first, to say plainly when the engine is missing
from dcxsec import pki
from dcxsec.config import SecurityConfig
from dcxsec.context import TLSContext
from dcxsec.engine import backend
from dcxsec.errors import (
    CertificateVerificationError,
    ConfigurationError,
    HandshakeTimeoutError,
    NotTLSError,
    TLSError,
)
from dcxsec.refusals import Refusal
from dcxsec.store import CertificateStore, CertStore
from dcxsec.tlssocket import TLSSocket
from dcxsec.verify import VerificationMethod, normalize_thumbprint

__version__ = "0.1.0"

_SERVER_NAMES = ("AssociationServer", "ThreadedAssociationServer", "start_server")


def __getattr__(name: str):
    # The servers import pynetdicom, which `import dcxsec` (and the dcxsec
    # command) need not pay for.
    if name in _SERVER_NAMES:
        from dcxsec import server

        return getattr(server, name)
    raise AttributeError(f"module 'dcxsec' has no attribute {name!r}")


# A library leaves logging to its application: without a handler of its own,
# dcxsec's warnings would go to stderr through logging's last resort.
logging.getLogger("dcxsec").addHandler(logging.NullHandler())

__all__ = [
    "AssociationServer",
    "CertStore",
    "CertificateStore",
    "CertificateVerificationError",
    "ConfigurationError",
    "HandshakeTimeoutError",
    "NotTLSError",
    "Refusal",
    "SecurityConfig",
    "TLSContext",
    "TLSError",
    "TLSSocket",
    "ThreadedAssociationServer",
    "VerificationMethod",
    "backend",
    "normalize_thumbprint",
    "pki",
    "start_server",
]
