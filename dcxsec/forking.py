"""A TLS connection after fork(): it stays the parent's.

Parent and child would seal records under the same keys and sequence numbers
(AES-GCM nonces used twice), so a forked child may not read, write, shut down
or finish the handshake of a connection it inherited: each is refused with
``TLSError(status="INHERITED")``, which Python's ``ssl`` does not do.  The
child may close or detach its copy of the descriptor, which leaves the
parent's connection as it was, and it never frees the engine's state, whose
locks a thread of the parent may have held at the fork.  A socket wrapped but
not yet connected is the child's to use.
"""
from __future__ import annotations

import os
import socket
import weakref
from typing import Protocol

from dcxsec.errors import TLSError


class LeftInParent(Protocol):
    """What the fork hook calls on every live TLS socket, in the child."""

    def _left_in_parent(self) -> None: ...


class OwningProcess:
    """The process whose connection it is: the one that made its keys."""

    __slots__ = ("pid",)

    def __init__(self) -> None:
        self.pid = os.getpid()

    def adopt(self) -> None:
        """The engine's connection is made now: its keys are this process's."""
        self.pid = os.getpid()

    def is_current(self) -> bool:
        """Whether this process is the owner (not a child forked from it)."""
        return os.getpid() == self.pid

    def refusal(self) -> TLSError:
        """The error a forked child gets for using the owner's connection."""
        return TLSError(
            f"this TLS connection belongs to process {self.pid}, and process {os.getpid()}, "
            "forked from it, cannot use it (both would seal records under the same keys); "
            "wrap the socket in the process that uses it, after the fork", status="INHERITED")


def close_descriptor_only(sock: socket.socket) -> None:
    """A forked child's close: its copy of the descriptor, nothing of the connection."""
    fd = socket.socket.detach(sock)
    if fd >= 0:
        os.close(fd)


_live_sockets: "weakref.WeakSet[LeftInParent]" = weakref.WeakSet()


def watch(sock: LeftInParent) -> None:
    """Have ``sock`` told, in a forked child, that its connection is the parent's."""
    _live_sockets.add(sock)


def _leave_connections_to_the_parent() -> None:
    for sock in list(_live_sockets):
        sock._left_in_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_leave_connections_to_the_parent)
