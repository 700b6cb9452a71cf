"""TLSContext: one engine context for both roles, handed to pynetdicom."""
from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence, Union

from dcxsec._native import ffi, lib
from dcxsec.aetitle import AEBindings
from dcxsec.config import SecurityConfig
from dcxsec.engine import new_error, to_exception
from dcxsec.pump import free_connection
from dcxsec.support import check_supported
from dcxsec.verify import VerificationMethod, normalize_thumbprints

if TYPE_CHECKING:
    from dcxsec.tlssocket import TLSSocket


def _thumbprint_table(thumbprints: tuple[str, ...]):
    """The C layout of accepted thumbprints: 32-byte slots and their lengths."""
    digests = b"".join(bytes.fromhex(t).ljust(32, b"\0") for t in thumbprints)
    lengths = bytes(len(t) // 2 for t in thumbprints)
    return digests, lengths


class TLSContext:
    """The secure transport of an AE, for requesting and accepting alike.

    Give it to pynetdicom as ``ae.associate(..., tls_args=(ctx, None))`` or
    ``ae.start_server(..., ssl_context=ctx)``.  Building it loads and checks
    the identity and trust once; every association shares it.  An option
    this platform's backend cannot honour is refused then, with a
    ``ConfigurationError`` that names it.

    Without a configuration it uses ``SecurityConfig()``'s defaults: the
    identity from the default certificate store (if its My has one), and the
    peer checked by TRUST_CHAIN against the system's roots and the store's
    Root.  Accepting any peer (``VerificationMethod.NONE``) is never a
    default: ask for it in a SecurityConfig.
    """

    def __init__(self, config: SecurityConfig | None = None) -> None:
        self._config = config if config is not None else SecurityConfig()
        self._ctx = self._build(self._config)
        self._bindings = AEBindings(self._config.ae_bindings)

    @staticmethod
    def _build(config: SecurityConfig):
        check_supported(config, sys.platform, lib.dcx_max_supported_version())
        cfg = ffi.new("dcx_config *")
        keep = []  # cffi buffers that must outlive dcx_ctx_new

        def blob(target, data: bytes | bytearray | None) -> None:
            if data:
                buf = ffi.from_buffer(data)
                keep.append(buf)
                target.data, target.len = buf, len(data)

        def blob_array(items: list[bytes]):
            array = ffi.new("dcx_blob[]", max(1, len(items)))
            keep.append(array)
            for i, data in enumerate(items):
                blob(array[i], data)
            return array, len(items)

        cfg.cert_store = int(config.cert_store)
        if sys.platform == "win32" and config.certificate is None:
            # Windows: the identity stays in the system store's My, chosen as on
            # every platform (by thumbprint, or the only usable one); the engine
            # opens it by its SHA-1 with its key.
            entry = config.store().local_identity(config.certificate_thumbprint)
            if entry is not None:
                keep.append(ffi.new("unsigned char[]", bytes.fromhex(entry.thumbprint)))
                cfg.identity_thumbprint = keep[-1]
            chain, key_bytes = None, None
        else:
            chain, key_bytes = config.identity_bytes()
        key = bytearray(key_bytes or b"")
        try:
            blob(cfg.certificate_chain, chain)
            blob(cfg.private_key, key)
            if config.private_key_password is not None:
                password = config.private_key_password
                password = password.encode() if isinstance(password, str) else bytes(password)
                keep.append(ffi.new("char[]", password))
                cfg.private_key_password = keep[-1]
            cfg.trusted, cfg.trusted_count = blob_array(config.trusted_bytes())
            cfg.intermediates, cfg.intermediate_count = blob_array(config.intermediate_bytes())
            cfg.crls, cfg.crl_count = blob_array(config.crl_bytes())
            if config.trusted_folder:
                keep.append(ffi.new("char[]", str(config.trusted_folder).encode()))
                cfg.trusted_dir = keep[-1]
            cfg.use_system_trust = bool(config.use_system_trust)
            cfg.verify = int(config.verification_method)
            digests, lengths = _thumbprint_table(tuple(config.accepted_thumbprints))
            keep += [ffi.from_buffer(digests), ffi.from_buffer(lengths)]
            cfg.thumbprints, cfg.thumbprint_lens = keep[-2], keep[-1]
            cfg.thumbprint_count = len(lengths)
            cfg.min_version, cfg.max_version = config.version_range()
            cfg.check_hostname = bool(config.check_hostname)
            cfg.session_cache = bool(config.session_cache)
            cfg.check_revocation = bool(config.check_revocation)
            err = new_error()
            ctx = lib.dcx_ctx_new(cfg, err)
            if ctx == ffi.NULL:
                raise to_exception(err, err.status)
            return ffi.gc(ctx, lib.dcx_ctx_free)
        finally:
            key[:] = bytes(len(key))  # do not leave the key lying in memory

    def reload_identity(self) -> None:
        """Load the identity and trust again (a renewed certificate, a new root).

        Associations that start afterwards use the new ones; running ones keep
        what they handshook with.  On failure the old context stays in service.
        """
        self._ctx = self._build(self._config)

    @property
    def config(self) -> SecurityConfig:
        """The configuration this context was built from."""
        return self._config

    @property
    def verification_method(self) -> VerificationMethod:
        return self._config.verification_method

    @property
    def handshake_timeout(self) -> float:
        return self._config.handshake_timeout

    @property
    def accepted_thumbprints(self) -> tuple[str, ...]:
        """The thumbprints THUMBPRINT accepts; assigning applies to new associations."""
        return tuple(self._config.accepted_thumbprints)

    @accepted_thumbprints.setter
    def accepted_thumbprints(self, thumbprints: Iterable[str]) -> None:
        normalized = normalize_thumbprints(thumbprints)
        digests, lengths = _thumbprint_table(normalized)
        err = new_error()
        rc = lib.dcx_ctx_set_thumbprints(self._ctx, ffi.from_buffer(digests),
                                         ffi.from_buffer(lengths), len(lengths), err)
        if rc != lib.DCX_OK:
            raise to_exception(err, rc)
        self._config.accepted_thumbprints = normalized

    @property
    def ae_bindings(self) -> AEBindings:
        """The AE title -> certificate bindings in force (empty: not checked)."""
        return self._bindings

    @ae_bindings.setter
    def ae_bindings(self, mapping: Mapping[str, Union[str, Sequence[str]]] | None) -> None:
        self._bindings = AEBindings(mapping)
        self._config.ae_bindings = mapping

    def wrap_socket(self, sock: socket.socket, server_side: bool = False,
                    do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
                    server_hostname: str | None = None, session: object = None) -> "TLSSocket":
        """Wrap a TCP socket, as ``ssl.SSLContext.wrap_socket`` does.

        The requesting side handshakes in ``connect()``.  The accepting side
        never waits here (this runs in pynetdicom's accept loop): it hands the
        connection to the engine's handshake thread, which answers the
        ClientHello as it arrives (where there is no such thread, one that has
        already arrived is answered here); the association's own thread
        finishes the handshake on first use, within the configured
        ``handshake_timeout``.
        """
        from dcxsec.tlssocket import TLSSocket

        return TLSSocket._create(sock, self, server_side=server_side,
                                 server_hostname=server_hostname,
                                 do_handshake_on_connect=do_handshake_on_connect)

    def _new_connection(self, fd: int, server_side: bool, server_hostname: str | None):
        """A C connection on ``fd``; raises the engine's error."""
        err = new_error()
        name = ffi.new("char[]", server_hostname.encode("idna")) if server_hostname else ffi.NULL
        conn = lib.dcx_conn_new(self._ctx, fd, bool(server_side), name, err)
        if conn == ffi.NULL:
            raise to_exception(err, err.status)
        # The connection points into the context: keep the context alive with it.
        return ffi.gc(conn, free_connection), self._ctx
