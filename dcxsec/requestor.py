"""A pynetdicom requestor association whose responses cannot be lost.

pynetdicom's ``send_c_store`` (and every ``send_*``) pauses the association's
reactor thread before sending: it clears ``_reactor_checkpoint`` and waits
for ``_is_paused``.  The reactor sets ``_is_paused = True`` before
``checkpoint.wait()`` and back to False after it, so just after ``wait()``
returns the flag still reads True.  A request sent in that window is
answered while the reactor runs on, and when the answer is quick (a fast
peer on a busy machine) the reactor takes it off the queue, logs "Received
unexpected C-STORE service message" and drops it: the request then waits
for the whole DIMSE timeout and fails (pynetdicom issue 435).

``steady(assoc)`` gives the association a checkpoint whose ``clear()``
returns only once the reactor is parked in ``wait()``, which makes the
``_is_paused`` test that follows it true for the right reason.
"""
from __future__ import annotations

import threading
from typing import Any

_PARK_POLL = 0.05  # seconds between checks that the reactor thread still runs


class ReactorCheckpoint:
    """``threading.Event``'s interface, as pynetdicom's reactor uses it; see
    the module's docstring for what ``clear()`` adds."""

    def __init__(self, reactor: threading.Thread) -> None:
        self._reactor = reactor
        self._cond = threading.Condition()
        self._flag = True
        self._parked = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        """Pause the reactor: return once it waits on this checkpoint (or has ended)."""
        with self._cond:
            self._flag = False
            if threading.current_thread() is self._reactor:
                return  # a handler in the reactor's own thread: it is not looping meanwhile
            while not self._parked and self._reactor.is_alive():
                self._cond.wait(_PARK_POLL)

    def wait(self, timeout: float | None = None) -> bool:
        """The reactor's side: parked here until ``set()``."""
        with self._cond:
            self._parked = True
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._flag, timeout)
            finally:
                self._parked = False


def steady(assoc: Any) -> Any:
    """``assoc`` (an established requestor association) with the race-free
    checkpoint; returns it.  An association that did not establish is left as it is."""
    if getattr(assoc, "is_established", False) and assoc.is_alive():
        assoc._reactor_checkpoint = ReactorCheckpoint(assoc)  # the reactor reads it each turn
    return assoc
