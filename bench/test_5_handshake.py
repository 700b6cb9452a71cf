"""Scenario 5: handshake cost, full against resumed, ECDSA P-256 against RSA-2048.

Each connection: TCP connect, mutual-TLS handshake, the server sends one byte
(which carries TLS 1.3 session tickets to the client before it), the client
reads it, both close.  The server handshakes in a thread, the client in the
benchmark's thread, so both ends' work is on the clock.  dcxsec, ``ssl`` and
plain TCP take their rounds in turn (see interleave.py).

"Resumed" offers the previous connection's session to the next one wherever
the API has a way: ``session=`` for ``ssl``; for dcxsec the same (its
``TLSSocket.session``), and anything its context keeps by itself for a repeat
peer.  "Full" is a peer's first contact: dcxsec's client keeps no sessions
(it would otherwise resume by itself), and both servers keep their defaults,
so both still issue tickets that their clients then ignore.  The share of
handshakes that really resumed is reported next to the rate.
"""
from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass

import pytest

from conftest import SIZES
from contenders import DCXSEC, SSL, TCP, dcxsec_contexts, ssl_contexts
from interleave import Contestant, best_rounds
from report import Target

KINDS = (DCXSEC, SSL, TCP)


@dataclass(frozen=True)
class Variant:
    key: str
    title: str
    rsa: bool = False
    resume: bool = False
    tls12: bool = False


VARIANTS = [
    Variant("full13", "5 full handshake, TLS 1.3, ECDSA P-256"),
    Variant("full13rsa", "5 full handshake, TLS 1.3, RSA-2048", rsa=True),
    Variant("full12", "5 full handshake, TLS 1.2, ECDSA P-256", tls12=True),
    Variant("resumed13", "5 resumed handshake, TLS 1.3 ticket", resume=True),
    Variant("resumed12", "5 resumed handshake, TLS 1.2 session", resume=True, tls12=True),
]


class Acceptor:
    """Accepts ``count`` connections in a thread: handshake, one byte, close."""

    def __init__(self, wrap, count: int) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.address = self.listener.getsockname()
        self.wrap, self.count = wrap, count
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for _ in range(self.count):
            raw, _ = self.listener.accept()
            try:
                sock = self.wrap(raw)
                sock.sendall(b"x")
                sock.close()
            except OSError as exc:
                self.errors.append(exc)
                raw.close()

    def finish(self) -> None:
        self.thread.join(60)
        self.listener.close()
        assert not self.errors, self.errors[:3]


def transports(kind: str, pki, variant: Variant):
    """(wrap on the server, connect on the client) for one contender."""
    if kind == DCXSEC:
        kw = {"maximum_version": ssl.TLSVersion.TLSv1_2} if variant.tls12 else {}
        server_ctx, client_ctx = dcxsec_contexts(pki, first_contact=not variant.resume, **kw)

        def wrap(raw):
            sock = server_ctx.wrap_socket(raw, server_side=True)
            sock.do_handshake()
            return sock

        def connect(address, session):
            sock = client_ctx.wrap_socket(socket.socket(), session=session)
            sock.connect(address)
            return sock
    elif kind == SSL:
        server_ctx, client_ctx = ssl_contexts(
            pki, ssl.TLSVersion.TLSv1_2 if variant.tls12 else None)

        def wrap(raw):
            return server_ctx.wrap_socket(raw, server_side=True)

        def connect(address, session):
            sock = client_ctx.wrap_socket(socket.socket(), session=session)
            sock.connect(address)
            return sock
    else:
        def wrap(raw):
            return raw

        def connect(address, session):
            return socket.create_connection(address)
    return wrap, connect


class Connections:
    """One contender's rounds of ``count`` connections to a fresh acceptor.

    Contexts and the acceptor are made untimed, in ``prepare``; each round
    records (how many resumed, protocol version).  The first connection of a
    round has nothing to resume; the other ``count - 1`` could.
    """

    def __init__(self, kind: str, pki, variant: Variant, count: int) -> None:
        self.kind, self.pki, self.variant, self.count = kind, pki, variant, count
        self.outcomes: list[tuple[int, str]] = []
        self.connect = self.acceptor = None

    def prepare(self) -> None:
        wrap, self.connect = transports(self.kind, self.pki, self.variant)
        self.acceptor = Acceptor(wrap, self.count)

    def run(self) -> None:
        session, resumed, version = None, 0, ""
        for _ in range(self.count):
            sock = self.connect(self.acceptor.address, session if self.variant.resume else None)
            assert sock.recv(1) == b"x"
            resumed += bool(getattr(sock, "session_reused", False))
            version = getattr(sock, "version", lambda: "")() or version
            session = getattr(sock, "session", None)
            sock.close()
        self.acceptor.finish()
        self.outcomes.append((resumed, version))


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.key for v in VARIANTS])
def test_handshakes_per_second(benchmark, variant, pki, pki_rsa, report):
    keys = pki_rsa if variant.rsa else pki
    count = SIZES.handshakes
    for kind in KINDS:  # warm-up
        warm_up = Connections(kind, keys, variant, 5)
        warm_up.prepare()
        warm_up.run()
    rounds = {kind: Connections(kind, keys, variant, count) for kind in KINDS}
    best = best_rounds(benchmark, [Contestant(kind, r.run, prepare=r.prepare)
                                   for kind, r in rounds.items()], DCXSEC, SIZES.handshake_rounds)

    key = f"5-{variant.key}"
    report.group(key, variant.title, "conn/s")
    report.add(key, TCP, count / best[TCP], note="TCP connect, 1 byte, close")
    share_key = f"{key}-share"
    if variant.resume:
        report.group(share_key, variant.title.replace("5 resumed handshake", "5 sessions resumed"),
                     "%", targets=(Target(None, 100.0),))
    for kind in (DCXSEC, SSL):
        outcomes = rounds[kind].outcomes
        resumed = sum(r for r, _ in outcomes)
        total = (count - 1) * len(outcomes)  # connections that had a session to resume
        report.add(key, kind, count / best[kind],
                   note=f"{outcomes[-1][1]}, resumed {resumed}/{total}")
        if variant.resume:
            report.add(share_key, kind, 100.0 * resumed / total, note=f"{resumed} of {total}")
