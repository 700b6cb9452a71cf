"""How the end of a connection reaches pynetdicom's association.

pynetdicom's ``ae.start_server(ssl_context=ctx)`` makes an association for
every accepted socket before its TLS handshake.  Its acceptor thread waits
for the A-ASSOCIATE-RQ for ``acse_timeout`` (30 s), and when the connection
closes first its state machine (AA-5) ends only the reading thread: the
acceptor keeps its thread, and its place in ``maximum_associations``, until
that wait runs out.  A connection refused by dcxsec, or closed by its peer
before a request, ends that wait here: the acceptor wakes as it would at the
timeout, and goes.

pynetdicom logs an exception from a read with its traceback, and ends the
association on one from a write without a word.  Here each end is said once,
in one line (a peer lost mid-association, on either side), and the read
answers it as a closed connection.  A write where neither the socket nor
anything else sets a deadline takes the association's ``network_timeout``.

Everything here runs in the thread that uses the socket, which for
pynetdicom is the association's DUL thread; in any other thread it does
nothing.
"""
from __future__ import annotations

import logging
import ssl
import threading
import weakref
from typing import Any

log = logging.getLogger("dcxsec")

# DUL states (PS3.8 9.2) from the request to an established association: a
# connection lost in one of them is lost mid-association.  From Sta7 on a
# release is under way, and a peer may close as soon as it has sent its part.
_MID_ASSOCIATION = {"Sta3", "Sta4", "Sta5", "Sta6"}
_released: "weakref.WeakSet[Any]" = weakref.WeakSet()  # DULs whose acceptor was woken


def _reading_dul() -> Any:
    """The pynetdicom DUL whose thread this is, or None."""
    thread = threading.current_thread()
    if hasattr(thread, "to_user_queue") and hasattr(thread, "state_machine"):
        return thread
    return None


def dul_state() -> str | None:
    """The state of the reading DUL ("Sta6" ...), or None outside one."""
    dul = _reading_dul()
    if dul is None:
        return None
    return getattr(dul.state_machine, "current_state", None)


def release_waiting_acceptor() -> None:
    """The connection has ended before any A-ASSOCIATE-RQ: the acceptor that
    waits for one stops waiting now, through pynetdicom's own timeout path."""
    dul = _reading_dul()
    if dul is None or dul in _released or dul_state() not in ("Sta1", "Sta2"):
        return
    assoc = getattr(dul, "assoc", None)
    requestor = getattr(assoc, "requestor", None)
    if (assoc is None or not getattr(assoc, "is_acceptor", False)
            or getattr(requestor, "primitive", True) is not None):
        return
    _released.add(dul)
    dul.to_user_queue.put(None)  # what receive_pdu() returns when its wait times out


def _tell(connection: Any, what: str, failed: bool) -> bool:
    """Say once how the connection ended: lost mid-association (a WARNING),
    or, before any request, in an error (a WARNING) and the waiting acceptor
    goes.  Returns False outside a DUL thread, where nothing is said."""
    state = dul_state()
    if state is None:
        return False
    if connection.end_told:
        return True
    connection.end_told = True
    peer = connection.peer_text()
    if state in _MID_ASSOCIATION:
        log.warning("association with %s lost without A-RELEASE or A-ABORT: %s", peer, what)
    elif state in ("Sta1", "Sta2"):
        if failed:
            log.warning("connection with %s ended before an association request: %s", peer, what)
        release_waiting_acceptor()
    else:
        log.debug("connection with %s ended after the association: %s", peer, what)
    return True


def read_ended(connection: Any, exc: OSError | None) -> bool:
    """A read met the end of ``connection``: ``exc``, or the peer's close
    (None).  Returns True when the reader is pynetdicom's DUL and the end has
    been said, so that the read answers it as a closed connection, which
    pynetdicom handles without a traceback; False when ``exc`` is to be raised.
    """
    if exc is not None and exc is connection.failure:
        # Refused (handshake or AE title), and logged where that was decided.
        if not connection.server_side or dul_state() is None:
            return False
        connection.end_told = True
        release_waiting_acceptor()
        return True
    if isinstance(exc, (TimeoutError, ssl.SSLWantReadError)):
        return False
    what = "the peer closed the connection" if exc is None else _reason(exc)
    return _tell(connection, what, exc is not None)


def write_failed(connection: Any, exc: OSError) -> None:
    """A write to ``connection`` failed: said once if pynetdicom was writing
    (it ends the association on any error from a write, without a word)."""
    if not isinstance(exc, ssl.SSLWantWriteError) and exc is not connection.failure:
        _tell(connection, _reason(exc), True)


def _reason(exc: OSError) -> str:
    """An error's text for a log line, without Python's "[Errno N] " in front."""
    if exc.errno is not None and isinstance(exc.strerror, str):
        return exc.strerror
    return str(exc)


def write_timeout_ms(connection: Any) -> int:
    """The deadline of a write: the socket's timeout, or, where it has none
    and pynetdicom writes, the association's ``network_timeout``, so that a
    peer that stopped reading cannot hold the association for ever."""
    if connection.timeout_ms >= 0:
        return connection.timeout_ms
    dul = _reading_dul()
    timeout = getattr(getattr(dul, "assoc", None), "network_timeout", None)
    return -1 if timeout is None else max(1, int(timeout * 1000))
