"""Writes behind the caller: a connection's own engine thread seals and sends
what ``send()`` queued, so the thread that holds the GIL only copies the PDU.

Without it, each PDU's ``send()`` lets the GIL go while it encrypts, and waits
to get it back from whichever thread took it (the one reading the other end,
in a gateway that relays): one hand-off per PDU.  See ``dcx_sender`` in
``csrc/dcxtls.h``.
"""
from __future__ import annotations

from typing import Any

from dcxsec import _keepgil
from dcxsec._native import ffi, lib
from dcxsec.engine import address

QUEUE_BYTES = 262144  # sixteen PDUs of 16 KiB: the writer's thread runs ahead by that much


class Sender:
    """One connection's sender thread and its queue.

    It keeps the engine connection alive: the thread writes to it until
    ``stop()``, which the socket calls before its descriptor is closed.
    """

    __slots__ = ("_ptr", "_conn")

    def __init__(self, ptr: Any, conn: Any) -> None:
        self._ptr = ptr
        self._conn = conn

    @classmethod
    def start(cls, conn: Any, err: Any) -> "Sender | None":
        """A running sender for ``conn``, or None when the engine has none to give."""
        ptr = lib.dcx_sender_new(conn, QUEUE_BYTES, err)
        return None if ptr == ffi.NULL else cls(ptr, conn)

    def queue(self, data: Any, timeout_ms: int, err: Any) -> int:
        """Queue ``data``; the bytes queued, or a negative engine status (``err``)."""
        return _keepgil.sender_queue(address(self._ptr), data, timeout_ms, address(err))

    def flush(self, timeout_ms: int, err: Any) -> int:
        """Wait, without the GIL, until everything queued has been sent."""
        return lib.dcx_sender_flush(self._ptr, timeout_ms, err)

    @property
    def pending(self) -> int:
        """Bytes queued and not yet sent."""
        return _keepgil.sender_pending(address(self._ptr))

    def stop(self) -> None:
        """End the thread now; what was not sent is dropped."""
        if self._ptr is not None:
            _keepgil.sender_stop(address(self._ptr))

    def __del__(self) -> None:
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr is not None:
            _keepgil.sender_free(address(ptr))
