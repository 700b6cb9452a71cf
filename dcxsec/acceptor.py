"""The engine's acceptor (csrc/acceptor_posix.c) as a Python object.

One engine thread owns the listening socket: it accepts, handshakes and
verifies each connection in C, without the GIL, within the context's
``handshake_timeout`` counted from the accept.  Python takes only
connections whose handshake succeeded, as ready ``TLSSocket`` objects, and
the refusals of the rest.
"""
from __future__ import annotations

import os
import socket
import threading
import weakref
from typing import TYPE_CHECKING

from dcxsec._native import ffi, lib
from dcxsec.engine import new_error, to_exception
from dcxsec.pump import free_connection
from dcxsec.refusals import Refusal

if TYPE_CHECKING:
    from dcxsec.context import TLSContext
    from dcxsec.tlssocket import TLSSocket

DEFAULT_MAX_PENDING = 256  # handshakes running plus connections not yet taken, in all
# ... from one source address, once half of max_pending are taken: a burst from
# one busy host is served while there is room, and no address can hold more
# than its share of the other half.
DEFAULT_MAX_PENDING_PER_ADDRESS = 16
DEFAULT_BACKLOG = 1024  # listen()'s backlog; the OS caps it (Linux: net.core.somaxconn)


_RUNNING: "weakref.WeakSet[Acceptor]" = weakref.WeakSet()


def _text(chars) -> str:
    return ffi.string(chars).decode("utf-8", "replace")


class Acceptor:
    """The engine's acceptor on ``listener`` (a bound socket), for ``context``.

    The engine listens on a duplicate of ``listener``'s descriptor, which it
    closes when the acceptor is closed.  ``fileno()`` is readable while a
    connection or a refusal waits to be taken.
    """

    def __init__(self, context: "TLSContext", listener: socket.socket, *,
                 max_pending: int = DEFAULT_MAX_PENDING,
                 max_pending_per_address: int = DEFAULT_MAX_PENDING_PER_ADDRESS,
                 backlog: int = DEFAULT_BACKLOG, loads: "LoadTable | None" = None,
                 worker: int = 0) -> None:
        for name, value in (("max_pending", max_pending), ("backlog", backlog),
                            ("max_pending_per_address", max_pending_per_address)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.context = context
        limits = ffi.new("dcx_acceptor_limits *")
        limits.handshake_timeout_ms = max(1, int(context.handshake_timeout * 1000))
        limits.max_pending = max_pending
        limits.max_pending_per_address = max_pending_per_address
        limits.backlog = backlog
        if loads is not None:  # one of several workers: take connections in turn
            limits.loads, limits.worker = loads._table, worker
        self._loads = loads  # kept alive as long as the engine may count in it
        self._lock = threading.Lock()
        self._contexts = [context._ctx]  # every engine context connections may point into
        err = new_error()
        handle = lib.dcx_acceptor_new(context._ctx, listener.fileno(), limits, err)
        if handle == ffi.NULL:
            raise to_exception(err, err.status)
        self._handle = handle
        self._wakeup = int(lib.dcx_acceptor_wakeup(handle))
        self._dropped_seen = 0
        _RUNNING.add(self)

    def fileno(self) -> int:
        """The descriptor to wait on: readable while something waits to be taken."""
        return self._wakeup

    @property
    def closed(self) -> bool:
        return self._handle is None

    def take(self) -> "TLSSocket | None":
        """The next authenticated connection as a ready ``TLSSocket``, or None."""
        from dcxsec.tlssocket import TLSSocket

        with self._lock:
            if self._handle is None:
                return None
            self._follow_reload()
            got = ffi.new("dcx_accepted *")
            if not lib.dcx_acceptor_take(self._handle, got):
                return None
            keep = tuple(self._contexts)
        conn = ffi.gc(got.conn, free_connection)
        try:
            return TLSSocket._adopt(int(got.fd), int(got.family), self.context, conn, keep,
                                    (_text(got.host), int(got.port)))
        except BaseException:
            socket.close(int(got.fd))
            raise

    def refusals(self) -> list[Refusal]:
        """The refusals recorded since the last call, oldest first."""
        found: list[Refusal] = []
        with self._lock:
            if self._handle is None:
                return found
            item = ffi.new("dcx_refusal *")
            while lib.dcx_acceptor_take_refusal(self._handle, item):
                found.append(Refusal(
                    address=_text(item.host), port=int(item.port), stage=_text(item.stage),
                    reason=_text(item.reason), subject=_text(item.subject) or None,
                    thumbprint=_text(item.thumbprint) or None, time=float(item.time),
                    kind=_text(item.kind)))
        return found

    def stats(self) -> dict[str, int]:
        """``pending`` handshakes, ``ready`` connections not yet taken,
        ``refused`` in all, and ``refusals_dropped`` (not kept: none taken)."""
        with self._lock:
            if self._handle is None:
                return {"pending": 0, "ready": 0, "refused": 0, "refusals_dropped": 0}
            out = ffi.new("dcx_acceptor_stats *")
            lib.dcx_acceptor_stats_get(self._handle, out)
        return {"pending": out.pending, "ready": out.ready, "refused": out.refused,
                "refusals_dropped": out.refusals_dropped}

    def newly_dropped(self) -> int:
        """Refusals dropped since the last call."""
        dropped = self.stats()["refusals_dropped"]
        fresh, self._dropped_seen = dropped - self._dropped_seen, dropped
        return max(0, fresh)

    def follow_reload(self) -> None:
        """After ``ctx.reload_identity()``: connections accepted from now on
        use the new identity and trust; the old ones live on for those that hold them."""
        with self._lock:
            if self._handle is not None:
                self._follow_reload()

    def _follow_reload(self) -> None:
        # Lock held.
        current = self.context._ctx
        if current is not self._contexts[-1]:
            self._contexts.append(current)
            lib.dcx_acceptor_set_ctx(self._handle, current)

    def close(self) -> None:
        """Stop accepting: the engine closes its listening descriptor and
        frees every connection not taken.  Calling it again does nothing."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            lib.dcx_acceptor_free(handle)

    def __del__(self) -> None:
        if getattr(self, "_handle", None) is not None:
            self.close()


class LoadTable:
    """How many connections each of ``workers`` processes holds, in memory
    they share: made before ``fork()``, and given to each worker's acceptor
    (``Acceptor(..., loads=table, worker=n)``).  An acceptor then takes a connection only
    while its worker holds no more than any other (or once the connection
    has waited 100 ms), so that a few long associations spread over the
    workers; with SO_REUSEPORT the kernel may give them all to one.
    """

    def __init__(self, workers: int) -> None:
        err = new_error()
        table = lib.dcx_load_table_new(workers, err)
        if table == ffi.NULL:
            raise to_exception(err, err.status)
        self._table = table  # shared with the forked workers for their lifetime

    def held(self, worker: int) -> int:
        """Connections the worker holds: handshakes, and associations not yet ended."""
        return int(lib.dcx_load_table_count(self._table, worker))

    def release(self, worker: int) -> None:
        """A connection the worker's acceptor handed over has ended."""
        lib.dcx_load_table_release(self._table, worker)

    def retire(self, worker: int) -> None:
        """The worker has ended: no connection waits for its turn."""
        lib.dcx_load_table_retire(self._table, worker)


def _forget_after_fork() -> None:
    # A forked child has no acceptor thread to stop (freeing would wait for
    # it for ever): its copies are dropped unfreed, the parent's acceptors go on.
    for acceptor in list(_RUNNING):
        acceptor._handle = None
        acceptor._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
