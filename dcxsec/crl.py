"""Certificate revocation lists: reading them, and keeping them in a folder store.

As Windows keeps CRLs beside the CA certificates, a folder store keeps them in
its CA logical store, named by the SHA-1 of the CRL's DER:

    <scope root>/CA/<SHA-1 OF THE DER>.crl    one CRL, PEM
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from dcxsec.verify import normalize_thumbprint

CRL_LOGICAL_STORE = "CA"
_PEM_MARKER = b"-----BEGIN X509 CRL-----"


def is_crl(data: bytes) -> bool:
    """Whether ``data`` is a CRL (PEM "X509 CRL" or DER) rather than a certificate."""
    if _PEM_MARKER in data:
        return True
    if b"-----BEGIN" in data:
        return False
    try:
        x509.load_der_x509_crl(data)
    except ValueError:
        return False
    return True


def load_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    """Every CRL in ``data``: one DER, or one or more PEM "X509 CRL" blocks."""
    if b"-----BEGIN" in data:
        blocks = [_PEM_MARKER + part.split(b"-----END X509 CRL-----")[0] + b"-----END X509 CRL-----\n"
                  for part in data.split(_PEM_MARKER)[1:]]
        if not blocks:
            raise ValueError("not a CRL: PEM data without a 'BEGIN X509 CRL' block")
        try:
            return [x509.load_pem_x509_crl(block) for block in blocks]
        except ValueError:
            raise ValueError("not a CRL: a PEM 'BEGIN X509 CRL' block is damaged") from None
    try:
        return [x509.load_der_x509_crl(data)]
    except ValueError:
        raise ValueError("not a CRL: expected DER or PEM ('BEGIN X509 CRL')") from None


def crl_thumbprint(crl: x509.CertificateRevocationList, algorithm: str = "sha1") -> str:
    """The SHA-1 (or SHA-256) of the CRL's DER in upper-case hex: its name in a store."""
    algo = hashes.SHA256() if algorithm.lower().replace("-", "") == "sha256" else hashes.SHA1()
    digest = hashes.Hash(algo)
    digest.update(crl.public_bytes(serialization.Encoding.DER))
    return digest.finalize().hex().upper()


@dataclass(frozen=True)
class StoredCRL:
    """One CRL in a folder store, with what ``dcxsec cert list`` shows of it."""

    path: Path
    crl: x509.CertificateRevocationList

    @property
    def thumbprint(self) -> str:
        return crl_thumbprint(self.crl)

    @property
    def issuer(self) -> str:
        return self.crl.issuer.rfc4514_string()

    @property
    def this_update(self) -> dt.datetime:
        return self.crl.last_update_utc

    @property
    def next_update(self) -> dt.datetime | None:
        return self.crl.next_update_utc

    def expired(self, now: dt.datetime | None = None) -> bool:
        """Whether its next update has passed (it no longer tells what is revoked now)."""
        now = now or dt.datetime.now(dt.timezone.utc)
        return self.next_update is not None and self.next_update < now

    def pem(self) -> bytes:
        return self.crl.public_bytes(serialization.Encoding.PEM)

    def describe(self) -> str:
        until = f"{self.next_update:%Y-%m-%d %H:%M}" if self.next_update else "(no next update)"
        return (f"CRL from {self.issuer} (thumbprint {self.thumbprint}, "
                f"this update {self.this_update:%Y-%m-%d %H:%M}, next update {until})")


class FolderCRLs:
    """The CRLs of one folder store scope, in its CA folder."""

    def __init__(self, root: Path) -> None:
        self.folder = root / CRL_LOGICAL_STORE

    def entries(self) -> list[StoredCRL]:
        """Every CRL stored, oldest issuer name first; unreadable files are skipped."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.glob("*.crl")):
            try:
                found += [StoredCRL(path, crl) for crl in load_crls(path.read_bytes())]
            except (OSError, ValueError):
                continue  # not ours to judge here; `dcxsec cert list` shows what it can read
        return found

    def add(self, crl: x509.CertificateRevocationList) -> Path:
        """Store one CRL as ``CA/<SHA-1>.crl``; returns its file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{crl_thumbprint(crl)}.crl"
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path

    def find(self, thumb: str) -> StoredCRL | None:
        """The CRL with this SHA-1 or SHA-256 thumbprint, or None."""
        wanted = normalize_thumbprint(thumb)
        for entry in self.entries():
            if wanted in (entry.thumbprint, crl_thumbprint(entry.crl, "sha256")):
                return entry
        return None

    def remove(self, entry: StoredCRL) -> None:
        entry.path.unlink()
