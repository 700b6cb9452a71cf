"""One engine TLS connection over one socket, from dcx_conn_new to its free.

``Connection`` makes the engine's connection, runs the handshake (handing an
accepted one to the engine's handshake thread and claiming it back), reads
and writes records and maps their errors, sends close_notify and lets the
engine's state go, and tells the peer's certificate, the version and the
cipher.  ``TLSSocket`` is the ``ssl.SSLSocket`` face over it.
"""
from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

from dcxsec import peerend
from dcxsec import pump as handshake_thread
from dcxsec._native import ffi, lib
from dcxsec.engine import address, borrow_error, new_error, return_error, to_exception
from dcxsec.engine import keepgil as _keepgil
from dcxsec._without import WITHOUT
from dcxsec.errors import CertificateVerificationError, HandshakeTimeoutError, NotTLSError, TLSError
from dcxsec.forking import OwningProcess
from dcxsec.peerinfo import PeerInfo

if TYPE_CHECKING:
    from dcxsec.context import TLSContext
    from dcxsec._recvbuf import RecvBuffer

log = logging.getLogger("dcxsec")

PLAIN_QUIET = 16384  # decrypted bytes held for a quiet connection: one record
# DCXSEC_WITHOUT=readahead (see _without.py): the buffer takes no more than the first record.
_READAHEAD = "readahead" not in WITHOUT
PLAIN_BUSY = 262144  # ... and for one whose records queue up (16 records, 16 PDUs)
CLOSE_NOTIFY_MS = 100
_STALL_SLICE = 1 << 20  # a write without a socket timeout must make this much progress per deadline
# SO_LINGER on, zero seconds: close() resets the connection.
_RESET_ON_CLOSE = struct.pack("hh" if os.name == "nt" else "ii", 1, 0)
# Read buffers the engine overwrites: zeroing one first (ffi.new's default) costs
# 22 us per MiB for nothing.
read_buffer = ffi.new_allocator(should_clear_after_alloc=False)
EngineConn = Any  # a cffi "dcx_conn *", freed by the collector (ffi.gc)


def milliseconds(timeout: float | None) -> int:
    """A socket timeout as the engine's deadline: -1 waits for ever."""
    return -1 if timeout is None else max(0, int(timeout * 1000))


class Connection(PeerInfo):
    """The engine's connection on a socket, made on first use.

    Calls into the engine hold ``lock``; ``conn`` is None until the first
    use and again once the connection failed, closed or was detached.
    Methods that take ``conn`` use the caller's reference, which keeps the
    engine's state alive through the call should another thread close the
    socket meanwhile.
    """

    def __init__(self, sock: socket.socket, context: "TLSContext", *, server_side: bool,
                 server_hostname: str | None, timeout: float | None) -> None:
        # Weakly: the socket holds this connection, and a socket dropped
        # unclosed must still go (and close its descriptor) at once.
        self._socket = weakref.ref(sock)
        self.context = context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.timeout = timeout
        self.timeout_ms = milliseconds(timeout)
        self.lock = threading.Lock()
        self.conn: EngineConn = None
        self._keep_ctx = None
        self.read_state = None  # the engine's flag: data it read waits for the next read
        self.handshake_done = False
        self.first_data_by: float | None = None  # a read finished the handshake: data due by then
        self.bindings_in_force = False  # AE-title bindings were set when the handshake ended
        self.failure: OSError | None = None
        self.early_failure: OSError | None = None  # found in the accept loop, reported later
        self.pump = None  # the engine's handshake thread, while it holds this connection
        self.owner = OwningProcess()
        self.inherited = False  # in a forked child: the connection is the parent's
        self.peer_address: Any = None
        self.end_told = False  # the connection's end has been logged (dcxsec.peerend)
        # The server's report of an AE-title binding refusal (dcxsec.server), if any.
        self.on_binding_refusal: Callable[[str, str, str], None] | None = None
        # Called once when the connection closes (a server's load count, dcxsec.server).
        self.on_closed: Callable[[], None] | None = None
        self._peer_der: bytes | None = None
        self._wrapped_at = time.monotonic()

    def set_timeout(self, timeout: float | None) -> None:
        """The deadline of every later read and write."""
        self.timeout = timeout
        self.timeout_ms = milliseconds(timeout)

    def open(self) -> EngineConn:
        """The engine's connection on the socket, made on first use; lock held."""
        if self.conn is None:
            sock = self._socket()
            if sock is None or socket.socket.fileno(sock) < 0:
                raise OSError(9, "the socket is closed")
            self.conn, self._keep_ctx = self.context._new_connection(
                socket.socket.fileno(sock), self.server_side, self.server_hostname)
            self.read_state = lib.dcx_conn_read_state(self.conn)
            self.owner.adopt()
            socket.socket.setblocking(sock, False)  # the engine waits with its own deadlines
        return self.conn

    def adopt(self, conn: EngineConn, keep_ctx: Any, peer_address: Any) -> None:
        """Take over an engine connection that the engine's acceptor has
        handshaken and verified on this socket."""
        self.conn, self._keep_ctx = conn, keep_ctx
        self.read_state = lib.dcx_conn_read_state(conn)
        self.owner.adopt()
        self.peer_address = peer_address
        sock = self._socket()
        if sock is not None:
            socket.socket.setblocking(sock, False)  # the engine waits with its own deadlines
        self._handshake_finished()

    # ---- handshake ------------------------------------------------------

    def connect(self, host: str, port: int) -> None:
        """TCP connect and handshake in one engine call: the ClientHello leaves
        the moment the connection is up, without coming back for the GIL."""
        conn = self.open()
        handshake_timeout = self.context.handshake_timeout if self.timeout is None else self.timeout
        err, connected = new_error(), ffi.new("int *")
        rc = lib.dcx_conn_connect(conn, host.encode("ascii"), port, self.timeout_ms,
                                  milliseconds(handshake_timeout), connected, err)
        if rc == lib.DCX_OK:
            self._handshake_finished()
        elif connected[0]:
            self._fail(to_exception(err, rc, during_handshake=True))
        else:
            self.conn = None  # not connected: a later connect() starts afresh, as ssl's does
            if rc == lib.DCX_E_TIMEOUT:
                raise TimeoutError("timed out")
            if err.sys_errno:
                raise OSError(err.sys_errno, os.strerror(err.sys_errno))
            raise to_exception(err, rc)

    def handshake(self) -> None:
        """Run the handshake now, within its deadline; lock held."""
        self.refuse_if_inherited()
        if self.handshake_done:
            return
        if self.failure is not None:
            raise self.failure
        if self.early_failure is not None:
            early, self.early_failure = self.early_failure, None
            self._fail(early)
        conn = self.open()
        timeout = self.context.handshake_timeout
        if self.server_side:  # counted from the accept: a trickle of bytes does not extend it
            timeout = max(0.001, timeout - (time.monotonic() - self._wrapped_at))
        elif self.timeout is not None:
            timeout = self.timeout
        timeout_ms, err = milliseconds(timeout), new_error()
        self.claim_from_pump()
        rc = lib.dcx_conn_handshake(conn, timeout_ms, err)
        if rc == lib.DCX_E_TIMEOUT and timeout_ms == 0:
            raise ssl.SSLWantReadError("The operation did not complete (the handshake waits for the peer)")
        if rc != lib.DCX_OK:
            self._fail(to_exception(err, rc, during_handshake=True))
        self._handshake_finished()

    def established(self) -> EngineConn:
        """The live engine connection, handshaken first if need be; lock held."""
        self.refuse_if_inherited()
        if not self.handshake_done:
            self.handshake()
            if self.timeout is None:  # woken by the handshake's last flight (pynetdicom's
                # select()), a read without a timeout would wait for ever for data
                self.first_data_by = time.monotonic() + self.context.handshake_timeout
        conn = self.conn
        if conn is None:
            raise self.failure or OSError(9, "the TLS connection is closed")
        return conn

    def _handshake_finished(self) -> None:
        self.handshake_done = True
        self.bindings_in_force = bool(self.context.ae_bindings)
        if self.server_side and log.isEnabledFor(logging.DEBUG):
            log.debug("TLS handshake with %s: %s %s", self.peer_text(), self.version(),
                      self.cipher()[0])

    def start_accepted_handshake(self) -> None:
        """Acceptor, in the accept loop, which must never wait here.

        The engine's handshake thread takes the connection and answers the
        ClientHello the moment it arrives, while the association's threads
        start; the requestor's handshake is over before they read.  Where
        there is no such thread, a ClientHello that has already arrived is
        answered now.  A failure is kept and reported by the association's
        thread, as a late one would be.
        """
        with self.lock:
            try:
                conn = self.open()
            except OSError:
                return  # the association's thread meets it again and reports it
            self.pump = handshake_thread.hand_over(
                conn, milliseconds(self.context.handshake_timeout))
            if self.pump is None:
                self._step_handshake()

    def _step_handshake(self) -> None:
        """One handshake step with what has arrived, never waiting; lock held."""
        err = new_error()
        rc = lib.dcx_conn_handshake(self.conn, 0, err)
        if rc == lib.DCX_OK:
            self._handshake_finished()
        elif rc != lib.DCX_E_TIMEOUT:
            self.early_failure = to_exception(err, rc, during_handshake=True)

    def claim_from_pump(self) -> None:
        """Take the connection back from the handshake thread before using it."""
        pump, self.pump = self.pump, None
        if pump is not None and self.conn is not None:
            handshake_thread.claim(pump, self.conn)

    def poll_handshake(self) -> None:
        """Before the handshake is done, without waiting: take the handshake
        thread's outcome if it has one, and give up on a silent requestor."""
        pump, conn = self.pump, self.conn
        if pump is not None and conn is not None and handshake_thread.settled(pump, conn):
            self._collect_from_pump()
        if (not self.handshake_done and self.early_failure is None and self.server_side
                and self.failure is None):
            self._check_deadline()

    def _collect_from_pump(self) -> None:
        """The handshake thread is done: take the connection and its outcome."""
        if not self.lock.acquire(blocking=False):
            return
        try:
            if self.pump is not None and self.conn is not None:
                self.claim_from_pump()
                self._step_handshake()
        finally:
            self.lock.release()

    def _check_deadline(self) -> None:
        """Give up on an accepted client that has not handshaken in time: the
        engine finishes with what is left of the deadline and says why (nothing
        sent, a partial ClientHello, too slow, not TLS)."""
        left = self.context.handshake_timeout - (time.monotonic() - self._wrapped_at)
        if left > 0 or not self.lock.acquire(blocking=False):
            return
        try:
            if not self.handshake_done and self.failure is None and self.conn is not None:
                self.claim_from_pump()
                err = new_error()
                rc = lib.dcx_conn_handshake(self.conn, 1, err)
                if rc == lib.DCX_OK:
                    self._handshake_finished()
                else:
                    try:
                        self._fail(to_exception(err, rc, during_handshake=True))
                    except OSError:
                        pass  # recorded: the reader meets it as the end of the connection
        finally:
            self.lock.release()

    def _fail(self, exc: OSError) -> None:
        """Record, log (accepting side), close, and raise a failed handshake."""
        self.failure = exc
        # A refusal is logged where it was decided: always on the accepting side,
        # and on the requesting side when it refused the acceptor's certificate.
        level = logging.WARNING if self.server_side or isinstance(
            exc, CertificateVerificationError) else logging.DEBUG
        log.log(level, "TLS handshake with %s failed: %s", self.peer_text(), exc)
        self.claim_from_pump()
        self.conn = None
        sock = self._socket()
        if sock is not None:
            try:
                if self.server_side and isinstance(exc, NotTLSError):
                    # It cannot read an alert: a reset tells a plain client at once.
                    socket.socket.setsockopt(sock, socket.SOL_SOCKET, socket.SO_LINGER,
                                             _RESET_ON_CLOSE)
                socket.socket.close(sock)
            except OSError:
                pass
        if self.server_side:
            peerend.release_waiting_acceptor()
        raise exc

    def peer_text(self) -> str:
        """The peer's address for log lines: "host:port", "[v6]:port"."""
        address = self.peer_address
        if isinstance(address, tuple) and len(address) >= 2:
            host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
            return f"{host}:{address[1]}"
        return str(address) if address else "unknown peer"

    # ---- records --------------------------------------------------------

    def read_ms(self) -> int:
        """A read's deadline: the socket's, or what is left for the first data."""
        due = self.first_data_by
        return self.timeout_ms if due is None else max(0, int((due - time.monotonic()) * 1000))

    def io_error(self, err: Any, rc: int, reading: bool) -> OSError:
        """The exception for a failed read or write, as ``ssl`` raises it."""
        if rc == lib.DCX_E_TIMEOUT and reading and self.first_data_by is not None:
            self.first_data_by = None
            exc = HandshakeTimeoutError(f"the {'client' if self.server_side else 'server'} finished the "
                                        f"TLS handshake but sent nothing within "
                                        f"{self.context.handshake_timeout:g} s")
            if self.server_side:
                log.warning("TLS connection with %s closed: %s", self.peer_text(), exc)
            return exc
        if rc == lib.DCX_E_TIMEOUT:
            if self.timeout == 0:
                return (ssl.SSLWantReadError if reading else ssl.SSLWantWriteError)(
                    "The operation did not complete")
            return TimeoutError("The read operation timed out" if reading
                                else "The write operation timed out")
        return to_exception(err, rc)

    def read(self, conn: EngineConn, target: Any, size: int) -> int:
        """Plaintext into ``target`` (a cffi pointer); the count, 0 at EOF; lock held."""
        err = borrow_error()
        n = lib.dcx_conn_read(conn, target, size, self.read_ms(), err)
        if n < 0 and n != lib.DCX_EOF:
            raise self.io_error(err, n, reading=True)
        self.first_data_by = None
        return_error(err)
        return max(n, 0)

    def read_exactly(self, conn: EngineConn, size: int) -> bytes:
        """``size`` bytes of plaintext, fewer only at EOF; lock held."""
        buf, err, data = read_buffer("char[]", size), new_error(), bytearray()
        while len(data) < size:
            n = lib.dcx_conn_read(conn, buf, size - len(data), self.read_ms(), err)
            if n == lib.DCX_EOF:
                break
            if n < 0:
                raise self.io_error(err, n, reading=True)
            self.first_data_by = None
            data += ffi.buffer(buf, n)
        return bytes(data)

    def fill(self, conn: EngineConn, rbuf: "RecvBuffer") -> int:
        """Decrypt the records at hand (at least one) into the empty receive
        buffer; its unread count, 0 at EOF; lock held.  When more records wait
        than a quiet connection's buffer holds, it grows so one call takes
        them all and the small reads that follow stay in C."""
        rbuf.discard()
        err = borrow_error()
        n = lib.dcx_conn_read(conn, ffi.from_buffer(rbuf.storage), rbuf.size, self.read_ms(),
                              err)
        if n <= 0:
            rbuf.filled(0, True)  # nothing came: keep no buffer while waiting
            if n != lib.DCX_EOF:
                raise self.io_error(err, n, reading=True)
        self.first_data_by = None
        if n <= 0:
            return_error(err)
            return 0
        if n == rbuf.size < PLAIN_BUSY and self.read_state.data_waiting and _READAHEAD:
            rbuf.filled(n, False)
            rbuf.resize(PLAIN_BUSY)
            target, end = ffi.from_buffer(rbuf.storage), rbuf.end  # target holds it meanwhile
            n = lib.dcx_conn_read(conn, target + end, PLAIN_BUSY - end, 0, err)
            n = max(n, 0)  # else nothing whole at hand: an EOF or error comes next call
        return_error(err)
        # Caught up: the buffer goes once read, so an idle association keeps none.
        rbuf.filled(n, not self.read_state.data_waiting)
        return rbuf.unread

    def write(self, conn: EngineConn, source: Any, size: int, stall_ms: int | None = None) -> int:
        """All of ``source`` (a cffi pointer), in as few records as it takes;
        lock held.  Within the socket's timeout, or, given ``stall_ms``, as
        long as the peer takes each MiB within that: a large PDU on a slow
        link is not cut short, a peer that stopped reading is."""
        if stall_ms is None or stall_ms == self.timeout_ms:
            return self._write(conn, source, size, self.timeout_ms)
        for offset in range(0, size, _STALL_SLICE):
            self._write(conn, source + offset, min(_STALL_SLICE, size - offset), stall_ms)
        return size

    def _write(self, conn: EngineConn, source: Any, size: int, timeout_ms: int) -> int:
        err = borrow_error()
        self.first_data_by = None  # the caller writes first: its reads keep the socket's timeout
        n = lib.dcx_conn_write(conn, source, size, timeout_ms, err)
        if n < 0:
            if n == lib.DCX_E_TIMEOUT and timeout_ms != self.timeout_ms:
                raise TimeoutError(f"the write timed out: the peer took in less than 1 MiB in "
                                   f"{timeout_ms / 1000:g} s (the association's network_timeout); "
                                   "it has stopped reading")
            raise self.io_error(err, n, reading=False)
        return_error(err)
        return n

    def send_last(self, conn: EngineConn, data: bytes) -> None:
        """``data`` and close_notify, whatever becomes of them: the last
        words on an association refused after the handshake; lock held."""
        lib.dcx_conn_write(conn, data, len(data), self.timeout_ms, new_error())
        lib.dcx_conn_shutdown(conn, CLOSE_NOTIFY_MS, 0, new_error())

    # ---- closing --------------------------------------------------------

    # Closing keeps the GIL wherever nothing waits (see csrc/python/_keepgil.c):
    # pynetdicom queues a release confirmation and then closes, and the thread
    # woken by the confirmation must not run before the state machine is idle.

    def send_close_notify(self) -> None:
        """close_notify, if the handshake is done and no other thread is inside."""
        conn = self.conn
        if (conn is None or not self.handshake_done
                or not self.owner.is_current() or not self.lock.acquire(blocking=False)):
            return
        try:
            if _keepgil.close_notify_now(address(conn)) == lib.DCX_E_TIMEOUT:
                lib.dcx_conn_shutdown(conn, CLOSE_NOTIFY_MS, 0, new_error())
        finally:
            self.lock.release()

    def close(self) -> None:
        """The socket closes: close_notify, or, when another thread is inside
        the engine, wake it before the descriptor goes; then let go."""
        self.claim_from_pump()  # before the descriptor goes: the thread polls it
        closed, self.on_closed = self.on_closed, None
        if closed is not None:
            closed()
        if self.conn is None:
            return
        if self.lock.locked():
            sock = self._socket()
            try:
                if sock is not None:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
        else:
            self.send_close_notify()
        self.forget()

    def detach(self) -> None:
        """The descriptor leaves the connection, without close_notify."""
        self.claim_from_pump()
        self.forget()

    def forget(self) -> None:
        """Drop the engine's connection: freed once the last thread using it lets go."""
        self.conn = None

    # ---- after a fork -----------------------------------------------------

    def left_in_parent(self) -> bool:
        """In a forked child: whether there was a connection, now the parent's.
        No lock a thread of the parent held at the fork is waited for."""
        self.lock = threading.Lock()
        if self.conn is None:
            return False
        self.inherited = True
        self.pump = None  # the parent's handshake thread, which the child does not have
        # Never freed here: SSL_free() may take the context's lock, which a
        # thread of the parent may have held at the fork.  The child's copy goes at exit.
        ffi.gc(self.conn, None)
        return True

    def is_inherited(self) -> bool:
        """Whether this process is a forked child of the one that made the connection."""
        return self.conn is not None and not self.owner.is_current()

    def inherited_error(self) -> TLSError:
        """Why a forked child cannot use the parent's connection."""
        return self.owner.refusal()

    def refuse_if_inherited(self) -> None:
        """Raise ``inherited_error()`` in a forked child of the connection's maker."""
        if self.is_inherited():
            raise self.owner.refusal()

    # ---- what was negotiated ------------------------------------------------
