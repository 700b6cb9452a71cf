"""TLSSocket: a TCP socket whose bytes go through dcxsec's C engine.

It subclasses ``ssl.SSLSocket`` because pynetdicom asks ``pending()`` only of
``ssl.SSLSocket`` instances, and decrypted plaintext waiting in the engine is
invisible to ``select()``.  Every I/O method of the base class is replaced, so
no byte ever leaves or arrives in the clear.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import ssl
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

from dcxsec import _keepgil, aetitle
from dcxsec._native import ffi, lib
from dcxsec._recvbuf import RecvBuffer
from dcxsec.certinfo import certificate_dict, subject_text
from dcxsec.engine import address, new_error, to_exception
from dcxsec.errors import CertificateVerificationError, HandshakeTimeoutError, TLSError
from dcxsec import pump as handshake_thread

if TYPE_CHECKING:
    from dcxsec.context import TLSContext

log = logging.getLogger("dcxsec")

_DIRECT_READ = 16384  # reads this large go straight into the caller's buffer
_PLAIN_QUIET = 16384  # decrypted bytes held for a quiet connection: one record
_PLAIN_BUSY = 262144  # ... and for one whose records queue up (16 records, 16 PDUs)
_CLOSE_NOTIFY_MS = 100
_RESET_ERRNOS = (errno.ENOTCONN, errno.ECONNRESET, errno.ECONNABORTED)  # the peer ended it
_VERSION_NAMES = {lib.DCX_TLS1_2: "TLSv1.2", lib.DCX_TLS1_3: "TLSv1.3"}
# Read buffers the engine overwrites: zeroing one first (ffi.new's default) costs
# 22 us per MiB for nothing.
_read_buffer = ffi.new_allocator(should_clear_after_alloc=False)


def _milliseconds(timeout: float | None) -> int:
    return -1 if timeout is None else max(0, int(timeout * 1000))


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
        self._timeout = timeout
        self._timeout_ms = _milliseconds(timeout)
        self._err = new_error()  # one per socket: calls into the engine hold self._lock
        self._ready = False  # handshaken, screened, open: the I/O fast path applies
        self._lock = threading.Lock()
        self._conn = None
        self._keep_ctx = None
        self._handshake_done = False
        self._failure: OSError | None = None
        self._early_failure: OSError | None = None
        self._pump = None  # the engine's handshake thread, while it holds this connection
        self._wrapped_at = time.monotonic()
        self._pid = os.getpid()  # the process whose connection this is (see _left_in_parent)
        self._inherited = False  # in a forked child: the connection is the parent's
        self._read_state = None  # the engine's flag: data it read waits for the next read
        # Decrypted plaintext, answered by a recv() written in C; it calls the
        # full recv() below only when nothing is buffered.
        self._rbuf = RecvBuffer(_PLAIN_QUIET, _refill_for(self))
        self.recv = self._rbuf.recv
        self._peer_der: bytes | None = None
        self._peer_address = None
        self._screened = False  # the A-ASSOCIATE-RQ has been checked against the AE bindings
        self._prefix = bytearray()  # plaintext read ahead for that check, served first
        _live_sockets.add(self)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Handshake flights and small PDUs must not wait for delayed ACKs.
            socket.socket.setsockopt(self, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if server_side:
            try:
                self._peer_address = socket.socket.getpeername(self)
            except OSError:
                pass
            self._start_accepted_handshake()
        return self

    # ---- handshake ------------------------------------------------------

    def connect(self, address: Any) -> None:
        """TCP connect, then the TLS handshake (requesting side)."""
        if self.server_side:
            raise ValueError("can't connect in server-side mode")
        if self._conn is not None:
            raise ValueError("attempt to connect already-connected TLSSocket")
        target = self._numeric_target(address) if self.do_handshake_on_connect else None
        self._peer_address = address
        if target is None:
            socket.socket.connect(self, address)
            if self.do_handshake_on_connect:
                self.do_handshake()
            return
        with self._lock:
            self._connect_and_handshake_locked(*target)

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

    def _connect_and_handshake_locked(self, host: str, port: int) -> None:
        """TCP connect and handshake in one engine call: the ClientHello leaves
        the moment the connection is up, without coming back for the GIL."""
        conn = self._engine_conn()
        handshake_timeout = self._context.handshake_timeout if self._timeout is None else self._timeout
        err, connected = new_error(), ffi.new("int *")
        rc = lib.dcx_conn_connect(conn, host.encode("ascii"), port, self._timeout_ms,
                                  _milliseconds(handshake_timeout), connected, err)
        if rc == lib.DCX_OK:
            self._handshake_finished()
        elif connected[0]:
            self._fail_handshake(to_exception(err, rc, during_handshake=True))
        else:
            self._conn = None  # not connected: a later connect() starts afresh, as ssl's does
            if rc == lib.DCX_E_TIMEOUT:
                raise TimeoutError("timed out")
            if err.sys_errno:
                raise OSError(err.sys_errno, os.strerror(err.sys_errno))
            raise to_exception(err, rc)

    def connect_ex(self, address: Any) -> int:
        try:
            self.connect(address)
        except OSError as exc:
            return exc.errno or -1
        return 0

    def do_handshake(self, block: bool = False) -> None:
        """Run the TLS handshake now, within its deadline."""
        with self._lock:
            self._handshake_locked()

    def _handshake_locked(self) -> None:
        self._refuse_if_inherited()
        if self._handshake_done:
            return
        if self._failure is not None:
            raise self._failure
        if self._early_failure is not None:  # found in the accept loop, reported here
            early, self._early_failure = self._early_failure, None
            self._fail_handshake(early)
        conn = self._engine_conn()
        timeout = self._context.handshake_timeout
        if not self.server_side and self._timeout is not None:
            timeout = self._timeout
        timeout_ms, err = _milliseconds(timeout), new_error()
        self._claim_from_pump()
        rc = lib.dcx_conn_handshake(conn, timeout_ms, err)
        if rc == lib.DCX_E_TIMEOUT and timeout_ms == 0:
            raise ssl.SSLWantReadError("The operation did not complete (the handshake waits for the peer)")
        if rc != lib.DCX_OK:
            self._fail_handshake(to_exception(err, rc, during_handshake=True))
        self._handshake_finished()

    def _engine_conn(self):
        """The engine's connection on this socket, made on first use; lock held."""
        if self._conn is None:
            if socket.socket.fileno(self) < 0:
                raise OSError(9, "the socket is closed")
            self._conn, self._keep_ctx = self._context._new_connection(
                socket.socket.fileno(self), self.server_side, self.server_hostname)
            self._read_state = lib.dcx_conn_read_state(self._conn)
            self._pid = os.getpid()  # the keys will be this process's
            socket.socket.setblocking(self, False)  # the engine waits with its own deadlines
        return self._conn

    def _handshake_finished(self) -> None:
        self._handshake_done = True
        self._screened = not self._context.ae_bindings
        self._ready = self._screened
        if self.server_side and log.isEnabledFor(logging.DEBUG):
            log.debug("TLS handshake with %s: %s %s", self._peer_text(), self.version(),
                      self.cipher()[0])

    def _start_accepted_handshake(self) -> None:
        """Acceptor, in the accept loop, which must never wait here.

        The engine's handshake thread takes the connection and answers the
        ClientHello the moment it arrives, while the association's threads
        start; the requestor's handshake is over before they read.  Where
        there is no such thread, a ClientHello that has already arrived is
        answered now.  A failure is kept and reported by the association's
        thread, as a late one would be.
        """
        with self._lock:
            try:
                conn = self._engine_conn()
            except OSError:
                return  # the association's thread meets it again and reports it
            self._pump = handshake_thread.hand_over(
                conn, _milliseconds(self._context.handshake_timeout))
            if self._pump is None:
                self._step_handshake_locked()

    def _step_handshake_locked(self) -> None:
        """One handshake step with what has arrived, never waiting; lock held."""
        err = new_error()
        rc = lib.dcx_conn_handshake(self._conn, 0, err)
        if rc == lib.DCX_OK:
            self._handshake_finished()
        elif rc != lib.DCX_E_TIMEOUT:
            self._early_failure = to_exception(err, rc, during_handshake=True)

    def _claim_from_pump(self) -> None:
        """Take the connection back from the handshake thread before using it."""
        pump, self._pump = self._pump, None
        if pump is not None and self._conn is not None:
            handshake_thread.claim(pump, self._conn)

    def _collect_from_pump(self) -> None:
        """The handshake thread is done: take the connection and its outcome."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._pump is not None and self._conn is not None:
                self._claim_from_pump()
                self._step_handshake_locked()
        finally:
            self._lock.release()

    def _fail_handshake(self, exc: OSError) -> None:
        """Record, log (accepting side), close, and raise a failed handshake."""
        self._failure = exc
        self._ready = False
        # A refusal is logged where it was decided: always on the accepting side,
        # and on the requesting side when it refused the acceptor's certificate.
        level = logging.WARNING if self.server_side or isinstance(
            exc, CertificateVerificationError) else logging.DEBUG
        log.log(level, "TLS handshake with %s failed: %s", self._peer_text(), exc)
        self._claim_from_pump()
        self._conn = None
        try:
            socket.socket.close(self)
        except OSError:
            pass
        raise exc

    def _peer_text(self) -> str:
        address = self._peer_address
        if isinstance(address, tuple) and len(address) >= 2:
            host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
            return f"{host}:{address[1]}"
        return str(address) if address else "unknown peer"

    def _check_silent_peer(self) -> None:
        """Give up on an accepted client that has not handshaken in time."""
        if time.monotonic() - self._wrapped_at <= self._context.handshake_timeout:
            return
        if not self._lock.acquire(blocking=False):
            return
        try:
            if not self._handshake_done and self._failure is None:
                try:
                    self._fail_handshake(HandshakeTimeoutError(
                        f"no TLS handshake within {self._context.handshake_timeout:g} s: "
                        "the client connected and sent nothing"))
                except OSError:
                    pass
        finally:
            self._lock.release()

    # ---- reading ----------------------------------------------------------

    def _io_error(self, err, rc: int, reading: bool) -> OSError:
        if rc == lib.DCX_E_TIMEOUT:
            if self._timeout == 0:
                return (ssl.SSLWantReadError if reading else ssl.SSLWantWriteError)(
                    "The operation did not complete")
            return TimeoutError("The read operation timed out" if reading
                                else "The write operation timed out")
        return to_exception(err, rc)

    def _ready_conn(self):
        """The live engine connection, after the handshake; lock held."""
        self._refuse_if_inherited()
        if not self._handshake_done:
            self._handshake_locked()
        conn = self._conn
        if conn is None:
            raise self._failure or OSError(9, "the TLS connection is closed")
        if not self._screened and self.server_side:
            self._screened = True
            self._screen_request_locked(conn)
        self._ready = self._screened and not self._prefix
        return conn

    # ---- after a fork -----------------------------------------------------------

    def _left_in_parent(self) -> None:
        """In a forked child: a connection stays the parent's.  Its I/O goes
        the slow way, to be refused there, its handshake is not the child's to
        finish, and no lock that a thread of the parent held at the fork is
        waited for.  A socket with no connection yet is the child's to use."""
        self._lock = threading.Lock()
        if self._conn is not None:
            self._inherited = True
            self._ready = False
            self._pump = None  # the parent's handshake thread, which the child does not have
            self._rbuf.discard()
            # Never freed here: SSL_free() may take the context's lock, which a
            # thread of the parent may have held at the fork.  The child's copy goes at exit.
            ffi.gc(self._conn, None)

    def _inherited_conn(self) -> bool:
        """Whether this process is a forked child of the one that made the connection."""
        return self._conn is not None and os.getpid() != self._pid

    def _inherited_error(self) -> TLSError:
        # Both processes would seal records under the same keys and sequence
        # numbers: AES-GCM nonces used twice.  Python's ssl lets a child go on.
        return TLSError(
            f"this TLS connection belongs to process {self._pid}, and process {os.getpid()}, "
            "forked from it, cannot use it (both would seal records under the same keys); "
            "wrap the socket in the process that uses it, after the fork", status="INHERITED")

    def _refuse_if_inherited(self) -> None:
        if self._inherited_conn():
            raise self._inherited_error()

    # ---- peer AE identity ------------------------------------------------------

    def _read_exactly_locked(self, conn, size: int) -> bytes:
        buf, err, data = _read_buffer("char[]", size), new_error(), bytearray()
        while len(data) < size:
            n = lib.dcx_conn_read(conn, buf, size - len(data), self._timeout_ms, err)
            if n == lib.DCX_EOF:
                break
            if n < 0:
                raise self._io_error(err, n, reading=True)
            data += ffi.buffer(buf, n)
        return bytes(data)

    def _screen_request_locked(self, conn) -> None:
        """Acceptor: read the A-ASSOCIATE-RQ whole and reject it unless its
        calling AE title is bound to the requestor's certificate."""
        header = self._read_exactly_locked(conn, 6)
        self._prefix += header
        if len(header) < 6 or header[0] != aetitle.A_ASSOCIATE_RQ:
            return  # not a request: the DICOM layer deals with it
        length = int.from_bytes(header[2:6], "big")
        if length > 1 << 20:
            return
        self._prefix += self._read_exactly_locked(conn, length)
        called, calling = aetitle.ae_titles(bytes(self._prefix))
        if self._peer_bound_to(calling):
            return
        self._prefix.clear()
        refusal = self._refuse_binding(f"calling AE title '{calling}' is not bound to",
                                       "A-ASSOCIATE-RJ sent (calling AE title not recognized)")
        lib.dcx_conn_write(conn, aetitle.reject_pdu(aetitle.CALLING_AE_NOT_RECOGNIZED), 10,
                           self._timeout_ms, new_error())
        lib.dcx_conn_shutdown(conn, _CLOSE_NOTIFY_MS, 0, new_error())
        raise refusal

    def _check_called_ae(self, data: Any) -> None:
        """Requestor: refuse to send an A-ASSOCIATE-RQ to an acceptor whose
        certificate is not bound to the called AE title."""
        self._screened = True
        head = bytes(memoryview(data)[:42])
        if not self._context.ae_bindings or not head or head[0] != aetitle.A_ASSOCIATE_RQ:
            return
        called, _ = aetitle.ae_titles(head)
        if not self._peer_bound_to(called):
            raise self._refuse_binding(f"called AE title '{called}' is not bound to",
                                       "association request not sent")
        self._ready = self._conn is not None

    def _peer_bound_to(self, ae_title: str) -> bool:
        return self._context.ae_bindings.allows(ae_title, self.peer_thumbprint or "",
                                                self.peer_thumbprint_sha256 or "")

    def _refuse_binding(self, what: str, outcome: str) -> CertificateVerificationError:
        """Log and record an AE title refusal; the caller raises it."""
        der = self._peer_der
        subject = subject_text(der) if der else "(no certificate)"
        exc = CertificateVerificationError(
            f"{what} the peer's certificate '{subject}' (thumbprint {self.peer_thumbprint}): "
            f"{outcome}; bind it in ae_bindings if this peer may use that AE title",
            rule="ae_title", subject=subject, thumbprint=self.peer_thumbprint or "")
        log.warning("association with %s refused: %s", self._peer_text(), exc)
        self._failure = exc
        self._ready = False
        return exc

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        """Up to ``buflen`` bytes of plaintext; ``b""`` when the peer closed.

        Bytes already decrypted are answered by the C ``recv`` that shadows
        this method on each socket; this one runs when none are buffered.
        """
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv() on TLSSocket")
        if buflen <= 0:
            return b""
        with self._lock:
            if self._rbuf.unread:
                return self._rbuf.take(buflen)
            conn = self._conn
            if conn is None or not self._ready:
                conn = self._ready_conn()
                if self._prefix:
                    return self._take_prefix(buflen)
            if buflen >= _DIRECT_READ:
                buf = _read_buffer("char[]", buflen)
                n = lib.dcx_conn_read(conn, buf, buflen, self._timeout_ms, self._err)
                if n > 0:
                    return ffi.unpack(buf, n)
            else:
                n = self._fill(conn)
                if n > 0:
                    return self._rbuf.take(buflen)
            if n == lib.DCX_EOF:
                return b""
            raise self._io_error(self._err, n, reading=True)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Read plaintext straight into ``buffer``; returns the count, 0 at EOF."""
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv_into() on TLSSocket")
        target = memoryview(buffer).cast("B")
        nbytes = len(target) if nbytes <= 0 else min(nbytes, len(target))
        if nbytes == 0:
            return 0
        with self._lock:
            if self._rbuf.unread:
                return self._rbuf.take_into(target[:nbytes])
            conn = self._conn
            if conn is None or not self._ready:
                conn = self._ready_conn()
                if self._prefix:
                    data = self._take_prefix(nbytes)
                    target[:len(data)] = data
                    return len(data)
            if nbytes >= _DIRECT_READ:  # bulk: records go straight into the caller's buffer
                n = lib.dcx_conn_read(conn, ffi.from_buffer(target), nbytes, self._timeout_ms,
                                      self._err)
            else:
                n = self._fill(conn)
                if n > 0:
                    return self._rbuf.take_into(target[:nbytes])
            if n == lib.DCX_EOF:
                return 0
            if n < 0:
                raise self._io_error(self._err, n, reading=True)
            return n

    def _fill(self, conn) -> int:
        """Decrypt the records at hand (at least one) into the receive buffer;
        lock held, buffer empty.  When more records wait than a quiet
        connection's buffer holds, it grows so one call takes them all and
        the small reads that follow stay in C."""
        rbuf = self._rbuf
        rbuf.discard()
        n = lib.dcx_conn_read(conn, ffi.from_buffer(rbuf.storage), rbuf.size, self._timeout_ms,
                              self._err)
        if n <= 0:
            rbuf.filled(0, True)  # nothing came: keep no buffer while waiting
            return n
        if n == rbuf.size < _PLAIN_BUSY and self._read_state.data_waiting:
            rbuf.filled(n, False)
            rbuf.resize(_PLAIN_BUSY)
            target, end = ffi.from_buffer(rbuf.storage), rbuf.end  # target holds it meanwhile
            n = lib.dcx_conn_read(conn, target + end, _PLAIN_BUSY - end, 0, self._err)
            n = max(n, 0)  # else nothing whole at hand: an EOF or error comes next call
        # Caught up: the buffer goes once read, so an idle association keeps none.
        rbuf.filled(n, not self._read_state.data_waiting)
        return rbuf.unread

    def _take_prefix(self, size: int) -> bytes:
        data = bytes(self._prefix[:size])
        del self._prefix[:size]
        self._ready = not self._prefix
        return data

    def read(self, len: int = 1024, buffer: Any = None) -> bytes | int:
        return self.recv(len) if buffer is None else self.recv_into(buffer, len)

    def pending(self) -> int:
        """Decrypted bytes waiting in the engine, which ``select()`` cannot see."""
        if self._inherited:
            return 1  # so that recv() is called, and says why the child cannot read
        if not self._handshake_done:
            pump, conn = self._pump, self._conn
            if pump is not None and conn is not None and handshake_thread.settled(pump, conn):
                self._collect_from_pump()
            if self._early_failure is not None:
                return 1  # so that the association's thread reads, and reports it
            if not self._handshake_done:
                if self.server_side and self._failure is None:
                    self._check_silent_peer()
                return 0
        conn = self._conn
        if conn is None:
            return 0
        # Read from the engine's own counters: no call into C, so no GIL hand-off
        # for pynetdicom, which asks this of every idle association 1000 times/s.
        return len(self._prefix) + self._rbuf.unread + self._read_state.data_waiting

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
        with self._lock:
            conn = self._conn
            if conn is None or not self._ready:
                conn = self._ready_conn()
                if not self._screened:
                    self._check_called_ae(data)
            n = lib.dcx_conn_write(conn, source, size, self._timeout_ms, self._err)
            if n < 0:
                raise self._io_error(self._err, n, reading=False)
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

    # Closing keeps the GIL wherever nothing waits (see _keepgil.c): pynetdicom
    # queues a release confirmation and then closes, and the thread woken by
    # the confirmation must not run before the state machine is idle.

    def _send_close_notify(self) -> None:
        conn = self._conn
        if (conn is None or not self._handshake_done
                or os.getpid() != self._pid or not self._lock.acquire(blocking=False)):
            return
        try:
            if _keepgil.close_notify_now(address(conn)) == lib.DCX_E_TIMEOUT:
                lib.dcx_conn_shutdown(conn, _CLOSE_NOTIFY_MS, 0, new_error())
        finally:
            self._lock.release()

    def shutdown(self, how: int) -> None:
        """Send close_notify, then shut the TCP connection down."""
        self._refuse_if_inherited()  # a shutdown(2) would end the parent's connection too
        self._send_close_notify()
        try:
            _keepgil.shutdown(self, how)
        except OSError as exc:
            # A peer that had closed answers close_notify (or had answered
            # earlier data) with a reset, which ends the connection first: it
            # is shut down.  Unlike ssl.SSLSocket this does not raise, since
            # pynetdicom then skips close() and leaves the socket to the collector.
            if not (self._handshake_done and exc.errno in _RESET_ERRNOS):
                raise

    def _real_close(self) -> None:
        if os.getpid() != self._pid:
            # A forked child's copy: the descriptor only.  The connection (its
            # keys, its locks as they were at the fork) is the parent's.
            self._conn = None
            self._ready = False
            fd = socket.socket.detach(self)
            if fd >= 0:
                os.close(fd)
            return
        self._claim_from_pump()  # before the descriptor goes: the thread polls it
        if self._conn is not None:
            if self._lock.locked():
                # Another thread is inside the engine: wake it before the fd goes.
                try:
                    socket.socket.shutdown(self, socket.SHUT_RDWR)
                except OSError:
                    pass
            else:
                self._send_close_notify()
            self._conn = None  # freed once the last thread using it lets go
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
        if self._inherited_conn():
            refusal = self._inherited_error()
            self.close()
            raise refusal
        self._claim_from_pump()
        self._conn = None
        self._ready = False
        if os.getpid() == self._pid and socket.socket.fileno(self) >= 0:
            # The engine made it non-blocking; a forked child's copy shares that flag.
            socket.socket.settimeout(self, self._timeout)
        return socket.socket.detach(self)

    def __del__(self) -> None:
        # A socket dropped unclosed: the handshake thread lets go of the
        # descriptor before it is closed (and its number handed out again).
        if getattr(self, "_pump", None) is not None:
            self._claim_from_pump()
        super().__del__()

    def unwrap(self) -> socket.socket:
        raise NotImplementedError("dcxsec does not hand a connection back to plaintext")

    def dup(self) -> socket.socket:
        raise NotImplementedError(f"Can't dup() {self.__class__.__name__} instances")

    def accept(self) -> tuple[socket.socket, Any]:
        raise NotImplementedError("accept() on a TLSSocket; wrap the accepted socket instead")

    # ---- timeouts -----------------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        self._timeout = None if value is None else float(value)
        self._timeout_ms = _milliseconds(self._timeout)
        if self._conn is None:  # before the engine owns the fd, connect() uses it
            socket.socket.settimeout(self, value)

    def gettimeout(self) -> float | None:
        return self._timeout

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
        conn = self._conn
        return bool(conn is not None and lib.dcx_conn_session_reused(conn))

    def version(self) -> str | None:
        """``"TLSv1.2"`` or ``"TLSv1.3"``; None before the handshake."""
        conn = self._conn
        if conn is None or not self._handshake_done:
            return None
        return _VERSION_NAMES.get(lib.dcx_conn_version(conn))

    def cipher(self) -> tuple[str, str, int] | None:
        """(cipher suite, protocol version, secret bits), as ``ssl`` gives it."""
        conn = self._conn
        if conn is None or not self._handshake_done:
            return None
        return (ffi.string(lib.dcx_conn_cipher(conn)).decode(), self.version() or "",
                lib.dcx_conn_cipher_bits(conn))

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

    def _peer_certificate_der(self) -> bytes | None:
        if not self._handshake_done:
            raise ValueError("handshake not done yet")
        if self._peer_der is None and self._conn is not None:
            size = lib.dcx_conn_peer_cert(self._conn, ffi.NULL, 0)
            if size:
                buf = ffi.new("unsigned char[]", size)
                lib.dcx_conn_peer_cert(self._conn, buf, size)
                self._peer_der = ffi.buffer(buf, size)[:]
        return self._peer_der

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate: DER bytes, or a dict shaped as ``ssl`` makes it."""
        der = self._peer_certificate_der()
        if der is None:
            return None
        return der if binary_form else certificate_dict(der)

    @property
    def peer_thumbprint(self) -> str | None:
        """SHA-1 of the peer's certificate, upper-case hex, as Windows shows it."""
        der = self._peer_certificate_der()
        return hashlib.sha1(der).hexdigest().upper() if der else None

    @property
    def peer_thumbprint_sha256(self) -> str | None:
        """SHA-256 of the peer's certificate, upper-case hex."""
        der = self._peer_certificate_der()
        return hashlib.sha256(der).hexdigest().upper() if der else None

    def __repr__(self) -> str:
        state = self.version() or ("failed" if self._failure else "no handshake yet")
        return f"<dcxsec.TLSSocket fd={self.fileno()} {state} peer={self._peer_text()}>"


_live_sockets: "weakref.WeakSet[TLSSocket]" = weakref.WeakSet()


def _leave_connections_to_the_parent() -> None:
    for sock in list(_live_sockets):
        sock._left_in_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_leave_connections_to_the_parent)


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
