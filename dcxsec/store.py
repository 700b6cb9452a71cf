"""Certificate stores: the local AE's identity (My), trusted roots (Root), intermediates (CA).

On Linux and macOS a store is a folder per scope with one folder per logical
store, named as on Windows; certificates are files named by SHA-1 thumbprint:

    <scope root>/My/<THUMBPRINT>.pem    certificate, then its intermediates
    <scope root>/My/<THUMBPRINT>.key    its private key, mode 0600
    <scope root>/Root/<THUMBPRINT>.pem  a trusted root
    <scope root>/CA/<THUMBPRINT>.pem    an intermediate CA
    <scope root>/CA/<SHA-1>.crl         a CRL, beside the CAs as on Windows (dcxsec.crl)

The roots can be moved with DCXSEC_CURRENT_USER_STORE and
DCXSEC_LOCAL_COMPUTER_STORE.

On Windows the same API works on the system stores (Cert:\\CurrentUser\\My,
...) through the engine's Crypt32 functions (dcxsec.winstore).  Either way a
store is a source of certificates; which one is the local identity, and why
another cannot be, is decided here once for both.
"""
from __future__ import annotations

import datetime as dt
import enum
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from dcxsec.crl import CRL_LOGICAL_STORE, FolderCRLs, StoredCRL
from dcxsec.errors import ConfigurationError
from dcxsec.pki import load_certificates, thumbprint, write_private
from dcxsec.verify import normalize_thumbprint

LOGICAL_STORES = ("My", "Root", "CA")


class CertStore(enum.IntEnum):
    """The certificate store scope, named as in the IDCXSEC interface."""

    CURRENT_USER = 0
    LOCAL_COMPUTER = 1

    @classmethod
    def default(cls) -> "CertStore":
        """The store an account uses when none is chosen.

        A service account (root; LocalSystem on Windows) uses LOCAL_COMPUTER,
        anyone else CURRENT_USER.
        """
        if sys.platform == "win32":
            # LocalSystem's user name is the machine account, "<COMPUTERNAME>$".
            return cls.LOCAL_COMPUTER if os.environ.get("USERNAME", "").endswith("$") else cls.CURRENT_USER
        return cls.LOCAL_COMPUTER if os.geteuid() == 0 else cls.CURRENT_USER

    def root(self) -> Path:
        """The folder that holds this scope's My, Root and CA."""
        if self == CertStore.CURRENT_USER:
            override = os.environ.get("DCXSEC_CURRENT_USER_STORE")
            if override:
                return Path(override)
            data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
            return Path(data_home) / "dcxsec" / "store"
        return Path(os.environ.get("DCXSEC_LOCAL_COMPUTER_STORE") or "/etc/dcxsec/store")


@dataclass(frozen=True)
class StoredCertificate:
    """One certificate in a store, with what ``dcxsec cert list`` shows of it.

    ``path`` is its file in a folder store; in a Windows system store it is
    None, the private key stays with Windows and ``key_attached`` says
    whether there is one.
    """

    store: CertStore
    logical: str
    path: Path | None
    certificate: x509.Certificate
    key_attached: bool = False

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.certificate)

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        return self.certificate.issuer.rfc4514_string()

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def key_path(self) -> Path | None:
        """The private key's file, or None when the key stays in a system store."""
        return None if self.path is None else self.path.with_suffix(".key")

    @property
    def has_key(self) -> bool:
        if self.logical != "My":
            return False
        return self.key_attached if self.path is None else self.key_path.exists()

    def chain_pem(self) -> bytes:
        """The certificate (and, in a folder store, the intermediates stored with it) in PEM."""
        if self.path is None:
            return self.certificate.public_bytes(serialization.Encoding.PEM)
        return self.path.read_bytes()

    def unusable_because(self, now: dt.datetime | None = None) -> str | None:
        """Why this cannot be the local AE's identity, or None if it can."""
        now = now or dt.datetime.now(dt.timezone.utc)
        if not self.has_key:
            return "no private key"
        if self.certificate.not_valid_after_utc < now:
            return f"expired on {self.not_after:%Y-%m-%d}"
        if self.certificate.not_valid_before_utc > now:
            return f"not valid before {self.certificate.not_valid_before_utc:%Y-%m-%d}"
        try:
            if self.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return "a CA certificate, not an AE identity"
        except x509.ExtensionNotFound:
            pass
        try:
            usages = self.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return None
        if not {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} & set(usages):
            return "not for TLS (extended key usage has neither serverAuth nor clientAuth)"
        return None

    def describe(self) -> str:
        return f"{self.subject} (thumbprint {self.thumbprint}, expires {self.not_after:%Y-%m-%d})"


class CertificateSource(Protocol):
    """Where a store's certificates live: folders, or the Windows system stores."""

    def location(self, logical: str | None = None) -> str:
        """Where a logical store (or the whole scope) is, for messages."""

    def entries(self, logical: str) -> list[StoredCertificate]:
        """Every certificate of a logical store."""

    def add(self, logical: str, certificates: list[x509.Certificate], key_pem: bytes | None) -> Path | str:
        """Store a certificate (with its chain, and its key in My); returns where."""

    def remove(self, entry: StoredCertificate) -> None:
        """Delete a certificate, and its key."""


class FolderSource:
    """The folder store of one scope (Linux, macOS): see the module's documentation."""

    def __init__(self, scope: CertStore) -> None:
        self.scope = scope
        self.root = scope.root()

    def location(self, logical: str | None = None) -> str:
        return str(self.root / logical if logical else self.root)

    def entries(self, logical: str) -> list[StoredCertificate]:
        folder = self.root / logical
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.glob("*.pem")):
            try:
                cert = load_certificates(path.read_bytes())[0]
            except (OSError, ValueError):
                continue  # not ours to judge here; `dcxsec cert list` shows only certificates
            found.append(StoredCertificate(self.scope, logical, path, cert))
        return found

    def add(self, logical: str, certificates: list[x509.Certificate], key_pem: bytes | None) -> Path:
        folder = self.root / logical
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{thumbprint(certificates[0])}.pem"
        path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
        if key_pem is not None:
            write_private(path.with_suffix(".key"), key_pem)
        return path

    def remove(self, entry: StoredCertificate) -> None:
        entry.path.unlink()
        if entry.logical == "My" and entry.key_path.exists():
            entry.key_path.unlink()


def _platform_source(scope: CertStore) -> CertificateSource:
    if sys.platform == "win32":
        from dcxsec.winstore import SystemStoreSource

        return SystemStoreSource(scope)
    return FolderSource(scope)


class CertificateStore:
    """The certificate store of one scope: its folders on Linux and macOS, the
    system stores on Windows (or any ``source`` given)."""

    def __init__(self, scope: CertStore | None = None, source: CertificateSource | None = None) -> None:
        self.scope = CertStore.default() if scope is None else CertStore(scope)
        self.source = source if source is not None else _platform_source(self.scope)

    def location(self, logical: str | None = None) -> str:
        """Where the scope, or one logical store, is: a folder or Cert:\\<scope>\\<store>."""
        return self.source.location(_checked(logical) if logical else None)

    def certificates(self, logical: str) -> Iterator[StoredCertificate]:
        """Every certificate in one logical store, in the store's order."""
        yield from self.source.entries(_checked(logical))

    def find(self, logical: str, thumb: str) -> StoredCertificate:
        """The certificate with this SHA-1 or SHA-256 thumbprint."""
        wanted = normalize_thumbprint(thumb)
        for entry in self.certificates(logical):
            if wanted in (entry.thumbprint, thumbprint(entry.certificate, "sha256")):
                return entry
        raise ConfigurationError(
            f"no certificate with thumbprint {wanted} in {self.scope.name}\\{logical} ({self.location(logical)})")

    def identity(self, thumb: str | None = None) -> StoredCertificate:
        """The local AE's identity in My: by thumbprint, or the only usable one."""
        if thumb:
            entry = self.find("My", thumb)
            reason = entry.unusable_because()
            if reason:
                raise ConfigurationError(f"certificate {entry.describe()} in {self.scope.name}\\My "
                                         f"cannot be the local identity: {reason}")
            return entry
        entries = list(self.certificates("My"))
        usable = [e for e in entries if e.unusable_because() is None]
        if len(usable) == 1:
            return usable[0]
        listing = "".join(f"\n  {e.describe()}{'' if e in usable else ' - ' + e.unusable_because()}"
                          for e in entries) or " (none)"
        problem = "several usable identities" if usable else "no usable identity"
        raise ConfigurationError(
            f"{self.scope.name}\\My ({self.location('My')}) has {problem}; choose one with "
            f"certificate_thumbprint=... (or `dcxsec cert new` / `dcxsec cert import`). "
            f"Candidates:{listing}")

    def local_identity(self, thumb: str | None = None) -> StoredCertificate | None:
        """The identity a context uses: as ``identity()``, but None when My is
        empty and no thumbprint is asked for (a requestor may go without)."""
        if thumb is None and all(_is_ca(e.certificate) for e in self.certificates("My")):
            return None  # none, or only CAs kept to issue with: not AE identities
        return self.identity(thumb)

    def pem_bundle(self, logical: str) -> list[bytes]:
        """Every certificate of a logical store as PEM bytes (for the engine)."""
        return [entry.certificate.public_bytes(serialization.Encoding.PEM)
                for entry in self.certificates(logical)]

    def _crl_folder(self) -> FolderCRLs:
        if not isinstance(self.source, FolderSource):
            raise ValueError("CRLs in the Windows system stores are Windows' own: import one with "
                             "`certutil -addstore CA FILE.crl` (the engine reads the CA store's "
                             "CRLs itself), or give it in crl_files")
        return FolderCRLs(self.source.root)

    def crls(self) -> list[StoredCRL]:
        """The CRLs kept in CA (none listed for a Windows system store: the engine reads its CA itself)."""
        return self._crl_folder().entries() if isinstance(self.source, FolderSource) else []

    def crl_pem_bundle(self) -> list[bytes]:
        """Every stored CRL as PEM bytes (for the engine)."""
        return [entry.pem() for entry in self.crls()]

    def add_crl(self, crl: x509.CertificateRevocationList) -> Path:
        """Store a CRL in CA; returns its file."""
        return self._crl_folder().add(crl)

    def remove_crl(self, thumb: str) -> StoredCRL:
        """Delete the CRL with this thumbprint; returns what was removed."""
        folder = self._crl_folder()
        entry = folder.find(thumb)
        if entry is None:
            raise ConfigurationError(f"no CRL with thumbprint {thumb} in {self.scope.name}\\"
                                     f"{CRL_LOGICAL_STORE} ({self.location(CRL_LOGICAL_STORE)})")
        folder.remove(entry)
        return entry

    def add(self, logical: str, certificates: list[x509.Certificate],
            key_pem: bytes | None = None) -> Path | str:
        """Store a certificate (with its chain, and its key in My); returns where it went:
        its file, or its system store."""
        if key_pem is not None and _checked(logical) != "My":
            raise ValueError("private keys belong in My")
        return self.source.add(_checked(logical), certificates, key_pem)

    def remove(self, logical: str, thumb: str) -> StoredCertificate:
        """Delete a certificate (and its key); returns what was removed."""
        entry = self.find(logical, thumb)
        self.source.remove(entry)
        return entry


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _checked(logical: str) -> str:
    if logical not in LOGICAL_STORES:
        raise ValueError(f"unknown logical store {logical!r}: use one of {', '.join(LOGICAL_STORES)}")
    return logical
