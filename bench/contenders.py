"""The transports under comparison, built from one benchmark PKI.

Every contender offers the same two things pynetdicom needs: a server-side
context for ``start_server(ssl_context=...)`` and the requestor's
``tls_args``.  The raw-socket scenarios use the same contexts directly.
"""
from __future__ import annotations

import os
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dcxsec import SecurityConfig, TLSContext, VerificationMethod
from dcxsec import pki as certs

DCXSEC, SSL, TCP, TCP_NODELAY = "dcxsec", "ssl", "tcp", "tcp+nodelay"
SSL_NODELAY = "ssl+nodelay"
PYNETDICOM_CONTENDERS = (DCXSEC, SSL, SSL_NODELAY, TCP, TCP_NODELAY)

# The ablation (BENCH_ABLATE=1): dcxsec with all of its speed mechanisms, and
# without each one (DCXSEC_WITHOUT, dcxsec/_without.py), in processes started
# with that switch.  BENCH_ABLATE may instead name the variants to run,
# comma-separated: "limited-api" among them is no mechanism but the build,
# _recvbuf and _keepgil on the full API without it (full_api.py, peers.py).
MECHANISMS = ("keepgil", "recvbuf", "shelf", "readahead")
LIMITED_API = "limited-api"
WITHOUT_PREFIX = "dcxsec-without-"


def ablation_variants(selection: str) -> dict[str, str]:
    """dcxsec, and dcxsec without each name of ``selection`` ("1": every mechanism)."""
    names = MECHANISMS if selection.strip() in ("", "0", "1") else [
        word.strip() for word in selection.split(",") if word.strip()]
    unknown = sorted(set(names) - {*MECHANISMS, LIMITED_API})
    if unknown:
        raise ValueError(f"BENCH_ABLATE names {', '.join(unknown)}: not one of "
                         f"{', '.join([*MECHANISMS, LIMITED_API])}")
    return {DCXSEC: "", **{WITHOUT_PREFIX + m: m for m in names}}


ABLATION_VARIANTS = ablation_variants(os.environ.get("BENCH_ABLATE", ""))


@dataclass(frozen=True)
class Identity:
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class BenchPKI:
    """A CA with one server and one client identity, all of one key kind."""

    key_kind: str
    ca: Identity
    server: Identity
    client: Identity


def pki_in(folder: Path) -> BenchPKI:
    """The PKI make_pki() wrote into ``folder``, for a process of its own."""
    def identity(name: str) -> Identity:
        return Identity(folder / f"{name}.pem", folder / f"{name}.key")

    return BenchPKI("", identity("ca"), identity("server"), identity("client"))


def pki_folder(pki: BenchPKI) -> Path:
    return pki.ca.cert_path.parent


def make_pki(folder: Path, key_kind: str) -> BenchPKI:
    """A fresh CA, server and client certificate, every key of ``key_kind``."""
    folder.mkdir(parents=True, exist_ok=True)

    def keep(name: str, identity: certs.Identity) -> Identity:
        return Identity(*identity.write(folder, name))

    ca = certs.new_ca(f"dcxsec Bench CA {key_kind}", key_kind=key_kind)
    server = certs.issue(ca, "bench-scp", key_kind=key_kind, dns_names=["localhost"],
                         ip_addresses=["127.0.0.1"])
    client = certs.issue(ca, "bench-scu", key_kind=key_kind)
    return BenchPKI(key_kind, keep("ca", ca), keep("server", server), keep("client", client))


class NoDelay:
    """What a gateway can do without TLS: switch Nagle's algorithm off.

    pynetdicom hands every socket to ``wrap_socket`` on both sides; this one
    only sets TCP_NODELAY and gives the same socket back.
    """

    def wrap_socket(self, sock: socket.socket, server_side: bool = False,
                    server_hostname: str | None = None, **_: Any) -> socket.socket:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


class NoDelaySSL(NoDelay):
    """Python's ``ssl`` as pynetdicom documents it, with Nagle's algorithm off on
    both sides first: what dcxsec does by itself, so that its gain over
    ``ssl`` can be told apart from Nagle's share of it."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    def wrap_socket(self, sock: socket.socket, server_side: bool = False,
                    server_hostname: str | None = None, **kw: Any) -> ssl.SSLSocket:
        return self.context.wrap_socket(super().wrap_socket(sock), server_side=server_side,
                                        server_hostname=server_hostname, **kw)


# ---- dcxsec -------------------------------------------------------------------

def dcxsec_config(pki: BenchPKI, identity: Identity, **kw: Any) -> SecurityConfig:
    """Mutual TLS, peer checked against the benchmark CA only (TRUST_CHAIN)."""
    return SecurityConfig(certificate=identity.cert_path, private_key=identity.key_path,
                          verification_method=VerificationMethod.TRUST_CHAIN,
                          trusted_certificates=[pki.ca.cert_path], use_system_trust=False, **kw)


def dcxsec_contexts(pki: BenchPKI, first_contact: bool = False, **kw: Any
                    ) -> tuple[TLSContext, TLSContext]:
    """(server, client) dcxsec contexts; ``kw`` goes to both configurations.

    ``first_contact``: the client keeps no sessions, so each of its
    connections is a full handshake, as with a peer seen for the first time
    (and as with ``ssl``, which resumes only when given ``session=``); the
    server keeps its defaults, tickets and session cache included.
    """
    client_kw = dict(kw, session_cache=False) if first_contact else kw
    return (TLSContext(dcxsec_config(pki, pki.server, **kw)),
            TLSContext(dcxsec_config(pki, pki.client, **client_kw)))


# ---- Python's ssl, as pynetdicom's documentation sets it up --------------------

def ssl_contexts(pki: BenchPKI, maximum_version: ssl.TLSVersion | None = None
                 ) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for mutual TLS with the same certificates as dcxsec."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_cert_chain(certfile=pki.server.cert_path, keyfile=pki.server.key_path)
    server.load_verify_locations(cafile=pki.ca.cert_path)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.ca.cert_path)
    client.check_hostname = False
    client.load_cert_chain(certfile=pki.client.cert_path, keyfile=pki.client.key_path)
    if maximum_version is not None:
        server.maximum_version = client.maximum_version = maximum_version
    return server, client


@dataclass(frozen=True)
class Contender:
    """One way of carrying DICOM through pynetdicom."""

    name: str
    server_context: Any  # for AE.start_server(ssl_context=...)
    client_context: Any  # first half of AE.associate(tls_args=...)

    @property
    def tls_args(self) -> tuple[Any, None] | None:
        return None if self.client_context is None else (self.client_context, None)


def pynetdicom_contender(name: str, pki: BenchPKI) -> Contender:
    if name == DCXSEC:
        return Contender(name, *dcxsec_contexts(pki))
    if name == SSL:
        return Contender(name, *ssl_contexts(pki))
    if name == SSL_NODELAY:
        return Contender(name, *map(NoDelaySSL, ssl_contexts(pki)))
    if name == TCP:
        return Contender(name, None, None)
    if name == TCP_NODELAY:
        return Contender(name, NoDelay(), NoDelay())
    raise ValueError(name)


# ---- connected pairs for the raw-socket scenarios -----------------------------

def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def connected_pair(wrap_server: Callable[[socket.socket], socket.socket],
                   connect_client: Callable[[tuple], socket.socket]
                   ) -> tuple[socket.socket, socket.socket]:
    """(client, server) after the TLS handshake, if any, has finished on both sides."""
    with _listener() as lsock:
        box: dict[str, Any] = {}

        def accept() -> None:
            raw, _ = lsock.accept()
            try:
                box["server"] = wrap_server(raw)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                box["error"] = exc

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        client = connect_client(lsock.getsockname())
        thread.join(30)
    if "error" in box:
        client.close()
        raise box["error"]
    return client, box["server"]


def raw_server(kind: str, pki: BenchPKI) -> Callable[[socket.socket], socket.socket]:
    """How the accepting side of ``kind`` wraps an accepted socket, handshake done."""
    if kind == DCXSEC:
        server_ctx, _ = dcxsec_contexts(pki)

        def wrap(raw: socket.socket) -> socket.socket:
            sock = server_ctx.wrap_socket(raw, server_side=True)
            sock.do_handshake()
            return sock
        return wrap
    if kind == SSL:
        server_ssl, _ = ssl_contexts(pki)
        return lambda raw: server_ssl.wrap_socket(raw, server_side=True)
    if kind == TCP:
        return lambda raw: raw
    raise ValueError(kind)


def raw_client(kind: str, pki: BenchPKI) -> Callable[[tuple], socket.socket]:
    """How the requesting side of ``kind`` connects, handshake done."""
    if kind in (DCXSEC, SSL):
        _, client_ctx = dcxsec_contexts(pki) if kind == DCXSEC else ssl_contexts(pki)

        def connect(address: tuple) -> socket.socket:
            sock = client_ctx.wrap_socket(socket.socket())
            sock.connect(address)
            return sock
        return connect
    if kind == TCP:
        return socket.create_connection
    raise ValueError(kind)


def raw_pair(kind: str, pki: BenchPKI) -> tuple[socket.socket, socket.socket]:
    """A connected (client, server) pair: dcxsec TLSSocket, ssl.SSLSocket or socket."""
    return connected_pair(raw_server(kind, pki), raw_client(kind, pki))
