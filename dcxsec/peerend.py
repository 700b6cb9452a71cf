"""How the end of an accepted connection reaches pynetdicom's association.

pynetdicom's ``ae.start_server(ssl_context=ctx)`` makes an association for
every accepted socket before its TLS handshake.  Its acceptor thread waits
for the A-ASSOCIATE-RQ for ``acse_timeout`` (30 s), and when the connection
closes first its state machine (AA-5) ends only the reading thread: the
acceptor keeps its thread, and its place in ``maximum_associations``, until
that wait runs out.  A connection refused by dcxsec, or closed by its peer
before a request, ends that wait here: the acceptor wakes as it would at the
timeout, and goes.

Everything here runs in the thread that reads the socket, which for
pynetdicom is the association's DUL thread; in any other thread it does
nothing.
"""
from __future__ import annotations

import logging
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


def connection_ended(peer: str, what: str, failed: bool) -> bool:
    """The accepted connection ended (``what`` says how; ``failed``: by an
    error, not a close).  Lost mid-association, one line says so; before any
    request, the waiting acceptor goes.  Returns False outside a DUL thread,
    where the caller reports the end as it would have."""
    state = dul_state()
    if state is None:
        return False
    if state in _MID_ASSOCIATION:
        log.warning("association with %s lost: %s, without A-RELEASE or A-ABORT", peer, what)
    elif state in ("Sta1", "Sta2"):
        if failed:
            log.warning("connection with %s ended before an association request: %s", peer, what)
        release_waiting_acceptor()
    else:
        log.debug("connection with %s ended after the association: %s", peer, what)
    return True
