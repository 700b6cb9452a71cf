"""The Windows system certificate stores as a source for ``dcxsec.store.CertificateStore``.

Cert:\\CurrentUser\\My, Root and CA (and LocalMachine's) are read and changed
by the engine's Crypt32 functions (csrc/dcxstore.h, csrc/store_crypt32.c).
This module only moves bytes across: which certificate is the local identity,
and why another cannot be, is decided in ``dcxsec.store`` for every platform.
Private keys never come out: a certificate goes into My with its key as a
PKCS#12 made in memory for the import, and the key stays with Windows.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import warnings

from cryptography import utils as crypto_utils
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from dcxsec._native import ffi, lib
from dcxsec.engine import new_error, to_exception
from dcxsec.store import CertStore, StoredCertificate

_SCOPE_LABELS = {CertStore.CURRENT_USER: "CurrentUser", CertStore.LOCAL_COMPUTER: "LocalMachine"}
_log = logging.getLogger("dcxsec")
_reported: set[str] = set()  # thumbprints already warned about: once per process, not per listing


def _parse(der: bytes, where: str) -> x509.Certificate | None:
    """The certificate, or None (and one warning naming it) when it cannot be read.

    What cryptography reads today only with a deprecation warning (a negative
    serial number, say, as in some of Wine's roots) is skipped as well: a
    later release refuses it, and the store must not change meaning with it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", crypto_utils.CryptographyDeprecationWarning)
            return x509.load_der_x509_certificate(der)
    except (ValueError, crypto_utils.CryptographyDeprecationWarning) as exc:
        thumbprint = hashlib.sha1(der).hexdigest().upper()
        if thumbprint not in _reported:
            _reported.add(thumbprint)
            _log.warning("%s: skipped the certificate with thumbprint %s: it cannot be read (%s); "
                         "remove it from the store if it is not needed", where, thumbprint, exc)
        return None


def _check(rc: int, err) -> None:
    if rc < 0:
        raise to_exception(err, rc)


def _blob(data: bytes, keep: list):
    """A dcx_blob over ``data``; ``keep`` holds the buffer while C reads it."""
    buf = ffi.from_buffer(data)
    keep.append(buf)
    blob = ffi.new("dcx_blob *")
    blob.data, blob.len = buf, len(data)
    return blob[0]


def _pkcs12_for_import(certificates: list[x509.Certificate], key_pem: bytes, password: bytes) -> bytes:
    """Key, certificate and chain as PKCS#12 that every supported Windows reads
    (TripleDES-SHA1; the file never leaves memory)."""
    key = serialization.load_pem_private_key(key_pem, None)
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(2048)
                  .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                  .hmac_hash(hashes.SHA1())
                  .build(password))
    return pkcs12.serialize_key_and_certificates(None, key, certificates[0], certificates[1:] or None,
                                                 encryption)


class SystemStoreSource:
    """One scope of the Windows system stores, through the engine."""

    def __init__(self, scope: CertStore) -> None:
        self.scope = CertStore(scope)

    def location(self, logical: str | None = None) -> str:
        where = f"Cert:\\{_SCOPE_LABELS[self.scope]}"
        return f"{where}\\{logical}" if logical else where

    def entries(self, logical: str) -> list[StoredCertificate]:
        err = new_error()
        listing = lib.dcx_store_list_open(int(self.scope), logical.encode(), err)
        if listing == ffi.NULL:
            raise to_exception(err, err.status)
        found = []
        try:
            for i in range(lib.dcx_store_list_count(listing)):
                entry = lib.dcx_store_list_get(listing, i)
                cert = _parse(bytes(ffi.buffer(entry.der, entry.der_len)), self.location(logical))
                if cert is None:
                    continue  # as the folder store: only certificates it can read
                found.append(StoredCertificate(self.scope, logical, None, cert, bool(entry.has_key)))
        finally:
            lib.dcx_store_list_free(listing)
        return found

    def add(self, logical: str, certificates: list[x509.Certificate], key_pem: bytes | None) -> str:
        err, keep = new_error(), []
        if key_pem is not None:  # into My with the key; its chain goes into CA
            password = secrets.token_urlsafe(24).encode()
            pfx = _pkcs12_for_import(certificates, key_pem, password)
            _check(lib.dcx_store_import_pfx(int(self.scope), _blob(pfx, keep), password, 0,
                                            ffi.NULL, err), err)
            return self.location(logical)
        leaf, *chain = certificates
        der = leaf.public_bytes(serialization.Encoding.DER)
        _check(lib.dcx_store_add(int(self.scope), logical.encode(), _blob(der, keep), ffi.NULL, err), err)
        for cert in chain:  # intermediates may complete chains, and are not trusted
            der = cert.public_bytes(serialization.Encoding.DER)
            _check(lib.dcx_store_add(int(self.scope), b"CA", _blob(der, keep), ffi.NULL, err), err)
        return self.location(logical)

    def remove(self, entry: StoredCertificate) -> None:
        err = new_error()
        sha1 = bytes.fromhex(entry.thumbprint)
        _check(lib.dcx_store_remove(int(self.scope), entry.logical.encode(), sha1, 1, err), err)
