"""What an established connection knows of its peer and of itself: the
protocol, the cipher suite, whether the session was resumed, and the peer's
certificate.  A part of ``Connection``, which supplies ``conn``,
``handshake_done`` and ``_peer_der``."""
from __future__ import annotations

import hashlib
from typing import Any

from dcxsec._native import ffi, lib

_VERSION_NAMES = {lib.DCX_TLS1_2: "TLSv1.2", lib.DCX_TLS1_3: "TLSv1.3"}


class PeerInfo:
    conn: Any
    handshake_done: bool
    _peer_der: bytes | None

    def session_reused(self) -> bool:
        """Whether the handshake resumed an earlier session."""
        conn = self.conn
        return bool(conn is not None and lib.dcx_conn_session_reused(conn))

    def version(self) -> str | None:
        """``"TLSv1.2"`` or ``"TLSv1.3"``; None before the handshake."""
        conn = self.conn
        if conn is None or not self.handshake_done:
            return None
        return _VERSION_NAMES.get(lib.dcx_conn_version(conn))

    def cipher(self) -> tuple[str, str, int] | None:
        """(cipher suite, protocol version, secret bits), as ``ssl`` gives it."""
        conn = self.conn
        if conn is None or not self.handshake_done:
            return None
        return (ffi.string(lib.dcx_conn_cipher(conn)).decode(), self.version() or "",
                lib.dcx_conn_cipher_bits(conn))

    def peer_certificate_der(self) -> bytes | None:
        """The peer's certificate (DER), kept once read; ValueError before the handshake."""
        if not self.handshake_done:
            raise ValueError("handshake not done yet")
        if self._peer_der is None and self.conn is not None:
            size = lib.dcx_conn_peer_cert(self.conn, ffi.NULL, 0)
            if size:
                buf = ffi.new("unsigned char[]", size)
                lib.dcx_conn_peer_cert(self.conn, buf, size)
                self._peer_der = ffi.buffer(buf, size)[:]
        return self._peer_der

    def peer_thumbprint(self, algorithm: str) -> str | None:
        """The peer certificate's ``"sha1"`` or ``"sha256"`` digest, upper-case hex."""
        der = self.peer_certificate_der()
        return getattr(hashlib, algorithm)(der).hexdigest().upper() if der else None
