"""pynetdicom servers whose connections are accepted by the engine.

``ThreadedAssociationServer`` and ``AssociationServer`` are pynetdicom's
own server classes with socketserver's accept replaced by the engine's
acceptor (dcxsec.acceptor): the engine accepts, handshakes and verifies
every connection in C, within ``handshake_timeout`` counted from the
accept, and hands over only authenticated ones.  A connection that sends
nothing, too little, too slowly, or not TLS, or whose certificate is
refused, never becomes an association: it fires no ``EVT_CONN_OPEN`` and
takes no place among ``maximum_associations``.  Each refusal is logged on
``dcxsec.server`` (summarised under a flood) and handed to ``on_refusal``.

Use them through pynetdicom's extension point::

    server = ae.make_server(("0.0.0.0", 2762), ssl_context=ctx,
                            server_class=dcxsec.ThreadedAssociationServer)

or with ``dcxsec.start_server(ae, address, ctx)``, which mirrors
``AE.start_server``.
"""
from __future__ import annotations

import errno
import socketserver
import sys
import threading
import time
from datetime import datetime
from typing import Any, Callable

from pynetdicom import transport
from pynetdicom.utils import make_target

from dcxsec.acceptor import (
    DEFAULT_BACKLOG,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_PENDING_PER_ADDRESS,
    Acceptor,
    LoadTable,
)
from dcxsec.context import TLSContext
from dcxsec.contexts import SupportedContexts
from dcxsec.errors import ConfigurationError
from dcxsec.refusals import Refusal, RefusalHook, RefusalReporter

__all__ = ["AssociationServer", "ThreadedAssociationServer", "start_server"]


def check_server_context(ctx: Any) -> TLSContext:
    """``ctx`` as an accepting context: a dcxsec ``TLSContext`` with an identity."""
    if not isinstance(ctx, TLSContext):
        raise ConfigurationError(
            f"the server needs a dcxsec.TLSContext as its ssl_context, not {type(ctx).__name__}: "
            "build one with dcxsec.TLSContext(dcxsec.SecurityConfig(...))")
    config = ctx.config
    # Windows keeps the identity in its own store; the engine refuses there anyway.
    if (sys.platform != "win32" and config.certificate is None
            and config.certificate_thumbprint is None):
        chain, _ = config.identity_bytes()
        if chain is None:
            raise ConfigurationError(
                "the server's TLS context has no identity: no certificate was given and the "
                f"{config.cert_store.name} store's My holds none; set certificate and private_key, "
                "or certificate_thumbprint, in its SecurityConfig")
    return ctx


class _AcceptorMixin:
    """What the two server classes add to pynetdicom's: the acceptor in place
    of socketserver's accept, and the refusals' log and hook."""

    def __init__(self, ae: Any, address: Any, ae_title: str, contexts: list,
                 ssl_context: TLSContext | None = None,
                 evt_handlers: list | None = None,
                 request_handler: Callable[..., socketserver.BaseRequestHandler] | None = None,
                 *, max_pending: int = DEFAULT_MAX_PENDING,
                 max_pending_per_address: int = DEFAULT_MAX_PENDING_PER_ADDRESS,
                 backlog: int = DEFAULT_BACKLOG,
                 on_refusal: RefusalHook | None = None) -> None:
        check_server_context(ssl_context)
        self._limits = {"max_pending": max_pending, "backlog": backlog,
                        "max_pending_per_address": max_pending_per_address}
        self.refusals = RefusalReporter(on_refusal)
        self.acceptor: Acceptor | None = None
        self._balance: tuple[LoadTable, int] | None = None
        super().__init__(ae, address, ae_title, contexts, ssl_context,  # type: ignore[call-arg]
                         evt_handlers, request_handler)

    @property
    def on_refusal(self) -> RefusalHook | None:
        """Called with every ``dcxsec.Refusal``: in the server's thread, or for an
        AE-title binding refusal in the association's."""
        return self.refusals.hook

    @on_refusal.setter
    def on_refusal(self, hook: RefusalHook | None) -> None:
        self.refusals.hook = hook

    @property
    def contexts(self) -> list:
        """The supported presentation contexts, each association's copy made
        without ``deepcopy``'s cost (dcxsec.contexts)."""
        return self._contexts

    @contexts.setter
    def contexts(self, contexts: list) -> None:
        self._contexts = SupportedContexts(contexts)

    def server_activate(self) -> None:
        """The engine listens and accepts, instead of socketserver."""
        loads, worker = self._balance or (None, 0)
        self.acceptor = Acceptor(self.ssl_context, self.socket, loads=loads, worker=worker,
                                 **self._limits)

    def balance(self, loads: LoadTable, worker: int) -> None:
        """Serve as ``worker`` of several processes sharing one listening
        socket: connections go to whichever holds the fewest (``LoadTable``).
        Before the server is activated."""
        if self.acceptor is not None:
            raise RuntimeError("balance() must come before the server is activated")
        self._balance = (loads, worker)

    def fileno(self) -> int:
        """The acceptor's wake-up descriptor: ``serve_forever`` wakes for
        authenticated connections (and refusals to report) only."""
        return self.acceptor.fileno() if self.acceptor is not None else -1

    def get_request(self) -> tuple[Any, tuple[str, int]]:
        """The next authenticated connection, a ``TLSSocket`` whose handshake
        is done; OSError (which socketserver passes over) when only
        refusals were waiting."""
        self.report_refusals()
        sock = self.acceptor.take() if self.acceptor is not None else None
        if sock is None:
            raise OSError(errno.EAGAIN, "no authenticated connection waits")
        sock._connection.on_binding_refusal = self._binding_refusal_reporter(sock)
        if self._balance is not None:
            loads, worker = self._balance
            sock._connection.on_closed = lambda: loads.release(worker)
        return sock, sock._connection.peer_address

    def report_refusals(self) -> None:
        """Log the refusals the acceptor recorded and hand them to the hook."""
        if self.acceptor is None:
            return
        for refusal in self.acceptor.refusals():
            self.refusals.report(refusal)
        dropped = self.acceptor.newly_dropped()
        if dropped:
            self.refusals.dropped(dropped)

    def _binding_refusal_reporter(self, sock: Any) -> Callable[[str, str, str], None]:
        host, port = sock._connection.peer_address[:2]

        def report(reason: str, subject: str, thumbprint: str) -> None:
            # dcxsec.screening has logged it; the hook and the counts see it too.
            self.refusals.report(Refusal(
                address=host, port=port, stage="binding", reason=reason,
                subject=subject or None, thumbprint=thumbprint or None,
                time=time.time(), kind="AE title not bound"), log_it=False)

        return report

    def service_actions(self) -> None:
        """Every ``poll_interval``: a reloaded identity taken up, refusals
        reported, and a summary line when a flood's interval ends."""
        super().service_actions()  # type: ignore[misc]
        if self.acceptor is not None:
            self.acceptor.follow_reload()  # a reloaded identity applies within poll_interval
        self.report_refusals()
        self.refusals.flush()

    def acceptor_stats(self) -> dict[str, int]:
        """The acceptor's counts: ``pending`` handshakes, ``ready``
        connections, ``refused`` in all, ``refusals_dropped``."""
        return self.acceptor.stats() if self.acceptor is not None else {}

    def server_close(self) -> None:
        """Stop the acceptor (its listening descriptor and every pending
        handshake go), then close the socket as pynetdicom does."""
        acceptor, self.acceptor = self.acceptor, None
        if acceptor is not None:
            acceptor.close()
        super().server_close()  # type: ignore[misc]

    def shutdown(self) -> None:
        """Stop serving and close, as pynetdicom's ``shutdown`` does; the
        server need not have been started by ``AE.start_server``."""
        socketserver.BaseServer.shutdown(self)  # type: ignore[arg-type]
        self.server_close()
        if self in self.ae._servers:
            self.ae._servers.remove(self)


class AssociationServer(_AcceptorMixin, transport.AssociationServer):
    """pynetdicom's ``AssociationServer`` on the engine's acceptor.

    Takes pynetdicom's arguments, plus ``max_pending`` (handshakes running
    and connections not yet taken, in all; default 256),
    ``max_pending_per_address`` (the same from one source address, once half
    of ``max_pending`` are taken; 16),
    ``backlog`` (of ``listen()``; 1024, capped by the OS) and ``on_refusal``
    (called with each ``dcxsec.Refusal``).  ``ssl_context`` must be a
    ``dcxsec.TLSContext`` with an identity.
    """


class ThreadedAssociationServer(_AcceptorMixin, transport.ThreadedAssociationServer):
    """pynetdicom's ``ThreadedAssociationServer`` on the engine's acceptor;
    the arguments are those of ``dcxsec.AssociationServer``."""


def start_server(ae: Any, address: Any, ctx: TLSContext, *, block: bool = True,
                 evt_handlers: list | None = None, ae_title: str | None = None,
                 contexts: list | None = None, max_pending: int = DEFAULT_MAX_PENDING,
                 max_pending_per_address: int = DEFAULT_MAX_PENDING_PER_ADDRESS,
                 backlog: int = DEFAULT_BACKLOG,
                 on_refusal: RefusalHook | None = None) -> ThreadedAssociationServer | None:
    """Start ``ae`` as an association acceptor on the engine's acceptor, as
    ``AE.start_server(address, block, ctx, evt_handlers, ae_title, contexts)``
    does.  ``block=True`` serves until interrupted and returns None;
    ``block=False`` returns the running ``ThreadedAssociationServer`` (stop it
    with ``shutdown()``).  The limits and ``on_refusal`` are those of
    ``dcxsec.AssociationServer``.
    """
    limits = {"max_pending": max_pending, "max_pending_per_address": max_pending_per_address,
              "backlog": backlog, "on_refusal": on_refusal}
    server_class = AssociationServer if block else ThreadedAssociationServer
    server = ae.make_server(address, ae_title=ae_title, contexts=contexts, ssl_context=ctx,
                            evt_handlers=evt_handlers, server_class=server_class, **limits)
    ae._servers.append(server)
    if block:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            server.shutdown()
        return None
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(target=make_target(server.serve_forever),
                              name=f"AcceptorServer@{stamp}", daemon=True)
    thread.start()
    return server
