"""The seam to the C engine: status codes and engine errors as Python exceptions."""
from __future__ import annotations

import socket

from dcxsec import _keepgil
from dcxsec._native import ffi, lib
from dcxsec._without import WITHOUT
from dcxsec.errors import (
    CertificateVerificationError,
    ConfigurationError,
    HandshakeTimeoutError,
    NotTLSError,
    TLSError,
)

_STATUS_NAMES = {
    lib.DCX_E_TIMEOUT: "TIMEOUT",
    lib.DCX_E_SYSCALL: "SYSCALL",
    lib.DCX_E_CONFIG: "CONFIG",
    lib.DCX_E_VERIFY: "VERIFY",
    lib.DCX_E_NOT_TLS: "NOT_TLS",
    lib.DCX_E_PROTOCOL: "PROTOCOL",
    lib.DCX_E_PEER_ALERT: "PEER_ALERT",
    lib.DCX_E_TRUNCATED: "TRUNCATED",
    lib.DCX_E_CLOSED: "CLOSED",
    lib.DCX_E_NOMEM: "NOMEM",
    lib.DCX_E_UNSUPPORTED: "UNSUPPORTED",
}

_RULES = {
    lib.DCX_VR_NO_CERTIFICATE: "no_certificate",
    lib.DCX_VR_UNTRUSTED: "untrusted",
    lib.DCX_VR_EXPIRED: "expired",
    lib.DCX_VR_NOT_YET_VALID: "not_yet_valid",
    lib.DCX_VR_THUMBPRINT: "thumbprint",
    lib.DCX_VR_HOSTNAME: "hostname",
    lib.DCX_VR_REVOKED: "revoked",
    lib.DCX_VR_REVOCATION: "revocation",
    lib.DCX_VR_BAD_SIGNATURE: "bad_signature",
    lib.DCX_VR_PURPOSE: "purpose",
    lib.DCX_VR_OTHER: "other",
}


def address(cdata) -> int:
    """A C pointer as an integer, the form ``dcxsec._keepgil`` takes."""
    return int(ffi.cast("uintptr_t", cdata))


def _engine(name: str) -> int:
    return address(ffi.addressof(lib, name))


# The close path calls these without letting go of the GIL (see csrc/python/_keepgil.c).
_keepgil.bind(close_notify_now=_engine("dcx_conn_close_notify_now"),
              claim=_engine("dcx_pump_claim"), free=_engine("dcx_conn_free"))


class _LettingGo:
    """DCXSEC_WITHOUT=keepgil: _keepgil's calls, made through cffi's lib and
    the socket module instead, which let the GIL go around each."""

    @staticmethod
    def close_notify_now(conn: int) -> int:
        return lib.dcx_conn_close_notify_now(ffi.cast("dcx_conn *", conn), ffi.NULL)

    @staticmethod
    def shutdown(sock: socket.socket, how: int) -> None:
        socket.socket.shutdown(sock, how)

    @staticmethod
    def close(fd: int) -> None:
        socket.close(fd)

    @staticmethod
    def free(conn: int, pump: int) -> None:
        if pump:
            lib.dcx_pump_claim(ffi.cast("dcx_pump *", pump), ffi.cast("dcx_conn *", conn))
        lib.dcx_conn_free(ffi.cast("dcx_conn *", conn))


# What the socket, the connection and the pump call: _keepgil, or the same
# calls letting the GIL go (DCXSEC_WITHOUT=keepgil, see _without.py).
keepgil = _LettingGo if "keepgil" in WITHOUT else _keepgil


# dcx_error structs come from the engine's shelf and go back to it (see
# dcx_error_alloc): freed to malloc, one would stay in the per-thread cache
# of every association thread that ever let one go.
_error_allocator = ffi.new_allocator(alloc=ffi.addressof(lib, "dcx_error_alloc"),
                                     free=ffi.addressof(lib, "dcx_error_release"))


def new_error():
    """A fresh ``dcx_error`` for one call."""
    return _error_allocator("dcx_error *")


# Errors lent to reads and writes and given back after the call: an idle
# association holds none (each is 856 bytes), and a busy one does not pay
# calloc per call.  list.pop and list.append are atomic under the GIL.
_SPARE_ERRORS: list = []
_SPARE_LIMIT = 64


def borrow_error():
    """A ``dcx_error`` for one read or write; hand it back with return_error()."""
    try:
        return _SPARE_ERRORS.pop()
    except IndexError:
        return ffi.new("dcx_error *")


def return_error(err) -> None:
    if len(_SPARE_ERRORS) < _SPARE_LIMIT:
        _SPARE_ERRORS.append(err)


def _text(chars) -> str:
    return ffi.string(chars).decode("utf-8", "replace")


def to_exception(err, status: int, *, during_handshake: bool = False) -> OSError:
    """The Python exception for an engine failure."""
    message = _text(err.reason) or _STATUS_NAMES.get(status, str(status)).lower()
    if status == lib.DCX_E_TIMEOUT:
        if during_handshake:
            return HandshakeTimeoutError(message)
        return TimeoutError(message)
    if status == lib.DCX_E_SYSCALL:
        return OSError(err.sys_errno, message) if err.sys_errno else ConnectionError(message)
    if status == lib.DCX_E_CONFIG:
        return ConfigurationError(message)
    if status == lib.DCX_E_VERIFY:
        return CertificateVerificationError(
            message, _RULES.get(err.verify_reason, "other"), _text(err.subject),
            _text(err.thumbprint), _text(err.not_after))
    if status == lib.DCX_E_NOT_TLS:
        return NotTLSError(message)
    alert = err.alert if err.alert >= 0 else None
    return TLSError(message, _STATUS_NAMES.get(status, "PROTOCOL"), alert)


def backend() -> str:
    """The TLS library under the engine, e.g. ``"OpenSSL 3.0.19 27 Jan 2026"``."""
    return ffi.string(lib.dcx_backend()).decode()
