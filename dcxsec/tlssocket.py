"""TLSSocket: a TCP socket whose bytes go through dcxsec's C engine.

It subclasses ``ssl.SSLSocket`` because pynetdicom asks ``pending()`` only of
``ssl.SSLSocket`` instances, and decrypted plaintext waiting in the engine is
invisible to ``select()``.  Every I/O method of the base class is replaced, so
no byte ever leaves or arrives in the clear.  The engine's connection itself
(handshake, records, close_notify) is a ``dcxsec.connection.Connection``.
"""
from __future__ import annotations

import errno
import socket
import ssl
import weakref
from typing import TYPE_CHECKING, Any, Callable

from dcxsec import forking, peerend, screening
from dcxsec._native import ffi
from dcxsec._recvbuf import RecvBuffer, use_shelf
from dcxsec._without import WITHOUT
from dcxsec.certinfo import certificate_dict
from dcxsec.connection import PLAIN_QUIET, Connection, EngineConn, read_buffer
from dcxsec.engine import keepgil as _keepgil

if TYPE_CHECKING:
    from dcxsec.context import TLSContext

_DIRECT_READ = 16384  # reads this large go straight into the caller's buffer
# DCXSEC_WITHOUT=recvbuf (see _without.py): recv() in Python, reading through the engine.
_RECVBUF = "recvbuf" not in WITHOUT
use_shelf("shelf" not in WITHOUT)
_RESET_ERRNOS = (errno.ENOTCONN, errno.ECONNRESET, errno.ECONNABORTED)  # the peer ended it


class TLSSocket(ssl.SSLSocket):
    """A TLS connection over a TCP socket, made by ``TLSContext.wrap_socket``.

    Offers what pynetdicom and ``socketserver`` call, plus ``recv_into``,
    ``sendall``, ``version()``, ``cipher()``, ``getpeercert()`` and the peer's
    thumbprints.  One thread at a time does I/O on it; ``close()`` and
    ``shutdown()`` may come from any thread.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("TLSSocket has no public constructor: use TLSContext.wrap_socket()")

    @classmethod
    def _create(cls, sock: socket.socket, context: "TLSContext", *, server_side: bool,
                server_hostname: str | None, do_handshake_on_connect: bool) -> "TLSSocket":
        if sock.type != socket.SOCK_STREAM:
            raise NotImplementedError("only stream sockets can carry TLS")
        if server_side and server_hostname:
            raise ValueError("server_hostname can only be given on the requesting side")
        timeout = sock.gettimeout()
        self = cls.__new__(cls)
        socket.socket.__init__(self, sock.family, sock.type, sock.proto, sock.detach())
        socket.socket.settimeout(self, timeout)
        self._context = context
        self._sslobj = None  # inherited code must see an "unwrapped" socket, never plaintext
        self._session = None
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.do_handshake_on_connect = do_handshake_on_connect
        self.suppress_ragged_eofs = True
        self._connection = Connection(self, context, server_side=server_side,
                                      server_hostname=server_hostname, timeout=timeout)
        self._ready = False  # handshaken, screened, open: the I/O fast path applies
        # Decrypted plaintext, answered by a recv() written in C; it calls the
        # full recv() below only when nothing is buffered.
        self._rbuf = RecvBuffer(PLAIN_QUIET, _refill_for(self))
        if _RECVBUF:
            self.recv = self._rbuf.recv
        self._screened = False  # the A-ASSOCIATE-RQ has been checked against the AE bindings
        self._prefix = bytearray()  # plaintext read ahead for that check, served first
        forking.watch(self)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Handshake flights and small PDUs must not wait for delayed ACKs.
            socket.socket.setsockopt(self, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if server_side:
            try:
                self._connection.peer_address = socket.socket.getpeername(self)
            except OSError:
                pass
            self._connection.start_accepted_handshake()
        return self

    # ---- handshake ------------------------------------------------------

    def connect(self, address: Any) -> None:
        """TCP connect, then the TLS handshake (requesting side)."""
        if self.server_side:
            raise ValueError("can't connect in server-side mode")
        connection = self._connection
        if connection.conn is not None:
            raise ValueError("attempt to connect already-connected TLSSocket")
        target = self._numeric_target(address) if self.do_handshake_on_connect else None
        connection.peer_address = address
        if target is None:
            socket.socket.connect(self, address)
            if self.do_handshake_on_connect:
                self.do_handshake()
            return
        with connection.lock:
            connection.connect(*target)

    def _numeric_target(self, address: Any) -> tuple[str, int] | None:
        """(numeric host, port) the engine can connect to itself, or None for
        addresses left to Python's connect (scoped IPv6, other families)."""
        if self.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
            return None
        if len(address) > 2 and any(address[2:]):
            return None  # flow info or scope id: Python's connect knows them
        host, port = address[0], address[1]
        try:
            socket.inet_pton(self.family, host)
        except (OSError, TypeError):
            # A name: resolved here as Python's connect would, first address first.
            infos = socket.getaddrinfo(host, port, self.family, socket.SOCK_STREAM)
            host = infos[0][4][0]
            if self.family == socket.AF_INET6 and any(infos[0][4][2:]):
                return None
        return host, int(port)

    def connect_ex(self, address: Any) -> int:
        try:
            self.connect(address)
        except OSError as exc:
            return exc.errno or -1
        return 0

    def do_handshake(self, block: bool = False) -> None:
        """Run the TLS handshake now, within its deadline."""
        with self._connection.lock:
            self._connection.handshake()

    def _ready_conn(self) -> EngineConn:
        """The live engine connection, handshaken and screened; lock held."""
        connection = self._connection
        conn = connection.established()
        if not self._screened:
            # The bindings in force when the handshake ended decide whether
            # this association's request is screened at all.
            if not connection.bindings_in_force:
                self._screened = True
            elif self.server_side:
                self._screened = True
                screening.screen_request(connection, conn, self._prefix)
        self._ready = self._screened and not self._prefix
        return conn

    def _left_in_parent(self) -> None:
        """In a forked child (see dcxsec.forking): a connection stays the
        parent's; its I/O goes the slow way, to be refused there."""
        if self._connection.left_in_parent():
            self._ready = False
            self._rbuf.discard()

    # ---- reading ----------------------------------------------------------

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        """Up to ``buflen`` bytes of plaintext; ``b""`` when the peer closed.

        Bytes already decrypted are answered by the C ``recv`` that shadows
        this method on each socket; this one runs when none are buffered.
        Read by pynetdicom, a connection refused or lost reads as closed once
        it has been logged (see ``_read_ended``).
        """
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv() on TLSSocket")
        if buflen <= 0:
            return b""
        try:
            data = self._recv(buflen)
        except OSError as exc:
            self._read_ended(exc)
            return b""
        if not data:
            self._read_ended(None)
        return data

    def _recv(self, buflen: int) -> bytes:
        connection = self._connection
        with connection.lock:
            if self._rbuf.unread:
                return self._rbuf.take(buflen)
            conn = connection.conn
            if conn is None or not self._ready:
                conn = self._ready_conn()
                if self._prefix:
                    return self._take_prefix(buflen)
            if buflen >= _DIRECT_READ or not _RECVBUF:
                buf = read_buffer("char[]", buflen)
                n = connection.read(conn, buf, buflen)
                return ffi.unpack(buf, n) if n else b""
            if connection.fill(conn, self._rbuf):
                return self._rbuf.take(buflen)
            return b""

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Read plaintext straight into ``buffer``; returns the count, 0 at EOF."""
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv_into() on TLSSocket")
        target = memoryview(buffer).cast("B")
        nbytes = len(target) if nbytes <= 0 else min(nbytes, len(target))
        if nbytes == 0:
            return 0
        try:
            count = self._recv_into(target, nbytes)
        except OSError as exc:
            self._read_ended(exc)
            return 0
        if not count:
            self._read_ended(None)
        return count

    def _recv_into(self, target: memoryview, nbytes: int) -> int:
        connection = self._connection
        with connection.lock:
            if self._rbuf.unread:
                return self._rbuf.take_into(target[:nbytes])
            conn = connection.conn
            if conn is None or not self._ready:
                conn = self._ready_conn()
                if self._prefix:
                    data = self._take_prefix(nbytes)
                    target[:len(data)] = data
                    return len(data)
            if nbytes >= _DIRECT_READ or not _RECVBUF:  # bulk: straight into the caller's buffer
                return connection.read(conn, ffi.from_buffer(target), nbytes)
            if connection.fill(conn, self._rbuf):
                return self._rbuf.take_into(target[:nbytes])
            return 0

    def _read_ended(self, exc: OSError | None) -> None:
        """A read met the end of the connection: ``exc``, or a close (None).
        Read by pynetdicom, it is answered as a closed connection once it has
        been said in one line (dcxsec.peerend); elsewhere ``exc`` is raised."""
        if not peerend.read_ended(self._connection, exc) and exc is not None:
            raise exc

    def _take_prefix(self, size: int) -> bytes:
        data = bytes(self._prefix[:size])
        del self._prefix[:size]
        self._ready = not self._prefix
        return data

    def read(self, len: int = 1024, buffer: Any = None) -> bytes | int:
        return self.recv(len) if buffer is None else self.recv_into(buffer, len)

    def pending(self) -> int:
        """Decrypted bytes waiting in the engine, which ``select()`` cannot see."""
        connection = self._connection
        if connection.inherited:
            return 1  # so that recv() is called, and says why the child cannot read
        if not connection.handshake_done:
            connection.poll_handshake()
            if connection.early_failure is not None:
                return 1  # so that the association's thread reads, and reports it
            if not connection.handshake_done:
                return 0
        if connection.conn is None:
            return 0
        # Read from the engine's own counters: no call into C, so no GIL hand-off
        # for pynetdicom, which asks this of every idle association 1000 times/s.
        return len(self._prefix) + self._rbuf.unread + connection.read_state.data_waiting

    # ---- writing ----------------------------------------------------------

    def send(self, data: Any, flags: int = 0) -> int:
        """Send all of ``data`` and return its length; a PDU leaves in as few
        records, and system calls, as possible.

        pynetdicom calls this once per PDU, so the whole write is done here,
        in one Python frame.
        """
        if flags:
            raise ValueError("non-zero flags not allowed in calls to send() on TLSSocket")
        source = ffi.from_buffer(data)
        size = len(source)
        if size == 0:
            return 0
        connection = self._connection
        with connection.lock:
            conn = connection.conn
            if conn is None or not self._ready:
                conn = self._ready_conn()
                if not self._screened:
                    self._screened = True
                    screening.check_called_ae(connection, data)
                    self._ready = connection.conn is not None
            try:
                connection.write(conn, source, size, peerend.write_timeout_ms(connection))
            except OSError as exc:
                peerend.write_failed(connection, exc)
                raise
        return size

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of ``data``."""
        if flags:
            raise ValueError("non-zero flags not allowed in calls to sendall() on TLSSocket")
        size = len(memoryview(data).cast("B"))
        sent = self.send(data)
        if sent < size:
            raise TimeoutError(f"The write operation timed out after {sent} of {size} bytes")

    def write(self, data: Any) -> int:
        return self.send(data)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        return self._sendfile_use_send(file, offset, count)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("datagram and ancillary-data calls are not allowed on a TLSSocket")

    sendto = sendmsg = recvfrom = recvfrom_into = recvmsg = recvmsg_into = _refuse

    # ---- closing ----------------------------------------------------------

    def shutdown(self, how: int) -> None:
        """Send close_notify, then shut the TCP connection down."""
        connection = self._connection
        connection.refuse_if_inherited()  # a shutdown(2) would end the parent's connection too
        connection.send_close_notify()
        try:
            _keepgil.shutdown(self, how)  # keeps the GIL: see csrc/python/_keepgil.c
        except OSError as exc:
            # A peer that had closed answers close_notify (or had answered
            # earlier data) with a reset, which ends the connection first: it
            # is shut down.  Unlike ssl.SSLSocket this does not raise, since
            # pynetdicom then skips close() and leaves the socket to the collector.
            if not (connection.handshake_done and exc.errno in _RESET_ERRNOS):
                raise

    def _real_close(self) -> None:
        connection = self._connection
        if not connection.owner.is_current():
            # A forked child's copy: the descriptor only.  The connection (its
            # keys, its locks as they were at the fork) is the parent's.
            connection.forget()
            self._ready = False
            forking.close_descriptor_only(self)
            return
        connection.close()
        self._ready = False
        self._rbuf.discard()  # nothing is read from a closed socket
        fd = socket.socket.detach(self)
        if fd >= 0:
            _keepgil.close(fd)

    def detach(self) -> int:
        """The descriptor, no longer this socket's, blocking or not as the
        socket's timeout says; the TLS connection ends there, without
        close_notify.  In a forked child, only the child's descriptor is
        closed, and TLSError says that the connection is the parent's."""
        connection = self._connection
        if connection.is_inherited():
            refusal = connection.inherited_error()
            self.close()
            raise refusal
        connection.detach()
        self._ready = False
        if connection.owner.is_current() and socket.socket.fileno(self) >= 0:
            # The engine made it non-blocking; a forked child's copy shares that flag.
            socket.socket.settimeout(self, connection.timeout)
        return socket.socket.detach(self)

    def __del__(self) -> None:
        # A socket dropped unclosed: the handshake thread lets go of the
        # descriptor before it is closed (and its number handed out again).
        connection = getattr(self, "_connection", None)
        if connection is not None and connection.pump is not None:
            connection.claim_from_pump()
        super().__del__()

    def unwrap(self) -> socket.socket:
        raise NotImplementedError("dcxsec does not hand a connection back to plaintext")

    def dup(self) -> socket.socket:
        raise NotImplementedError(f"Can't dup() {self.__class__.__name__} instances")

    def accept(self) -> tuple[socket.socket, Any]:
        raise NotImplementedError("accept() on a TLSSocket; wrap the accepted socket instead")

    # ---- timeouts -----------------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        connection = self._connection
        connection.set_timeout(None if value is None else float(value))
        if connection.conn is None:  # before the engine owns the fd, connect() uses it
            socket.socket.settimeout(self, value)

    def gettimeout(self) -> float | None:
        return self._connection.timeout

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    # ---- what was negotiated ------------------------------------------------

    @property
    def context(self) -> "TLSContext":
        return self._context

    @context.setter
    def context(self, ctx: "TLSContext") -> None:
        raise AttributeError("the context of a TLSSocket cannot be changed")

    @property
    def session(self) -> None:
        return None

    @property
    def session_reused(self) -> bool:
        return self._connection.session_reused()

    def version(self) -> str | None:
        """``"TLSv1.2"`` or ``"TLSv1.3"``; None before the handshake."""
        return self._connection.version()

    def cipher(self) -> tuple[str, str, int] | None:
        """(cipher suite, protocol version, secret bits), as ``ssl`` gives it."""
        return self._connection.cipher()

    def shared_ciphers(self) -> None:
        return None

    def compression(self) -> None:
        return None

    def selected_alpn_protocol(self) -> None:
        return None

    def selected_npn_protocol(self) -> None:
        return None

    def get_channel_binding(self, cb_type: str = "tls-unique") -> None:
        raise ValueError("channel binding is not supported by dcxsec")

    def verify_client_post_handshake(self) -> None:
        raise NotImplementedError("post-handshake authentication is not supported by dcxsec")

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate: DER bytes, or a dict shaped as ``ssl`` makes it."""
        der = self._connection.peer_certificate_der()
        if der is None:
            return None
        return der if binary_form else certificate_dict(der)

    @property
    def peer_thumbprint(self) -> str | None:
        """SHA-1 of the peer's certificate, upper-case hex, as Windows shows it."""
        return self._connection.peer_thumbprint("sha1")

    @property
    def peer_thumbprint_sha256(self) -> str | None:
        """SHA-256 of the peer's certificate, upper-case hex."""
        return self._connection.peer_thumbprint("sha256")

    def __repr__(self) -> str:
        connection = self._connection
        state = connection.version() or ("failed" if connection.failure else "no handshake yet")
        return f"<dcxsec.TLSSocket fd={self.fileno()} {state} peer={connection.peer_text()}>"


def _refill_for(sock: TLSSocket) -> Callable[..., bytes]:
    """The full ``recv`` of ``sock``, for its receive buffer to call when empty.
    Holds the socket weakly: the buffer is the socket's own attribute."""
    ref = weakref.ref(sock)

    def refill(*args: Any) -> bytes:
        owner = ref()
        if owner is None:
            raise OSError(9, "the TLS socket is gone")
        return TLSSocket.recv(owner, *args)

    return refill
