"""The engine's handshake thread, shared by every accepting TLSContext.

Accepted connections are handed to it in the accept loop; it answers each
ClientHello the moment it arrives, in C, without the GIL, while pynetdicom
starts the association's threads.  The association's thread claims the
connection back on first use and finishes whatever is left with its own
deadline, exactly as it would have without the pump.
"""
from __future__ import annotations

import os
import threading

from dcxsec._native import ffi, lib
from dcxsec.engine import address, new_error
from dcxsec.engine import keepgil as _keepgil

_lock = threading.Lock()
_pump = None        # the running pump, made on first use
_unavailable = False  # the platform has none: accepted handshakes run on first use


def handshake_pump():
    """The process's pump, started on first use; None where the platform has none."""
    global _pump, _unavailable
    if _pump is not None or _unavailable:
        return _pump
    with _lock:
        if _pump is None and not _unavailable:
            pump = lib.dcx_pump_new(new_error())
            if pump == ffi.NULL:
                _unavailable = True
            else:
                _pump = pump  # lives as long as the process: connections refer to it
    return _pump


def hand_over(conn, timeout_ms: int):
    """Give an accepted connection's handshake to the pump for at most
    ``timeout_ms``; the pump, or None if there is none to take it."""
    pump = handshake_pump()
    if pump is None or lib.dcx_pump_add(pump, conn, timeout_ms, new_error()) != lib.DCX_OK:
        return None
    return pump


def settled(pump, conn) -> bool:
    """Whether the pump is done with ``conn`` (a pump of the parent, after a fork, is)."""
    return pump is not _pump or bool(lib.dcx_pump_settled(pump, conn))


def claim(pump, conn) -> None:
    """Take ``conn`` back from ``pump`` before using, closing or freeing it."""
    if pump is _pump and pump is not None:
        lib.dcx_pump_claim(pump, conn)


def free_connection(conn) -> None:
    """Destructor of every engine connection: the pump lets go of it first.

    Both calls keep the GIL: this runs as pynetdicom closes a released
    association, where giving the GIL up costs the requestor 10 ms."""
    _keepgil.free(address(conn), address(_pump) if _pump is not None else 0)


def _forget_after_fork() -> None:
    # The child has no handshake thread (and the parent's lock may have been
    # held when it forked): it starts its own, under a new lock, when it accepts.
    global _pump, _lock
    _pump = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
