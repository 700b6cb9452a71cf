"""Certificates for DICOM AEs: test CAs, issued and self-signed AE certificates.

Built on ``cryptography``; used by the test suite, the demo, and ``dcxsec cert new``.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]

_KEY_KINDS = {
    "rsa2048": lambda: rsa.generate_private_key(65537, 2048),
    "rsa3072": lambda: rsa.generate_private_key(65537, 3072),
    "ec256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec384": lambda: ec.generate_private_key(ec.SECP384R1()),
}


def thumbprint(cert: x509.Certificate, algorithm: str = "sha1") -> str:
    """The certificate's thumbprint in upper-case hex, as Windows shows it."""
    algorithms = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}
    try:
        algo = algorithms[algorithm.lower().replace("-", "")]()
    except KeyError:
        raise ValueError(f"unsupported thumbprint algorithm {algorithm!r}: use 'sha1' or 'sha256'") from None
    return cert.fingerprint(algo).hex().upper()


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file that is 0600 from its first byte."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass(frozen=True)
class Identity:
    """A certificate with its private key and the intermediates that issued it."""

    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    def cert_pem(self) -> bytes:
        """The certificate, then its intermediates, in PEM."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM)
                        for c in (self.certificate, *self.chain))

    def key_pem(self, password: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted when a password is given."""
        encryption = (serialization.BestAvailableEncryption(password) if password
                      else serialization.NoEncryption())
        return self.private_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8, encryption)

    def thumbprint(self, algorithm: str = "sha1") -> str:
        return thumbprint(self.certificate, algorithm)

    def write(self, directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
        """Write ``<name>.pem`` (chain) and ``<name>.key`` (0600); returns both paths."""
        directory = Path(directory)
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(self.cert_pem())
        write_private(key_path, self.key_pem())
        return cert_path, key_path

    def to_pkcs12(self, password: bytes | None, friendly_name: str | None = None) -> bytes:
        """A PKCS#12 (PFX) bundle of key, certificate and intermediates."""
        encryption = (serialization.BestAvailableEncryption(password) if password
                      else serialization.NoEncryption())
        return pkcs12.serialize_key_and_certificates(
            friendly_name.encode() if friendly_name else None, self.private_key,
            self.certificate, list(self.chain) or None, encryption)


def new_key(kind: str = "rsa2048") -> PrivateKey:
    """A fresh private key: rsa2048, rsa3072, ec256 (P-256) or ec384."""
    try:
        return _KEY_KINDS[kind]()
    except KeyError:
        raise ValueError(f"unknown key kind {kind!r}: use one of {', '.join(_KEY_KINDS)}") from None


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _validity(not_before: dt.datetime | None, not_after: dt.datetime | None, days: int):
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    return start, not_after or start + dt.timedelta(days=days)


def _hash_for(key: PrivateKey):
    return hashes.SHA384() if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384 \
        else hashes.SHA256()


def _build(subject: x509.Name, key: PrivateKey, issuer_name: x509.Name, issuer_key: PrivateKey,
           start: dt.datetime, end: dt.datetime, extensions: list) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end))
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(issuer_key, _hash_for(issuer_key))


def _key_usage(*, signing: bool, key_encipherment: bool = False, cert_sign: bool = False):
    return x509.KeyUsage(digital_signature=signing, content_commitment=False,
                         key_encipherment=key_encipherment, data_encipherment=False,
                         key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def new_ca(common_name: str = "dcxsec Test CA", *, key_kind: str = "ec256", days: int = 3650,
           not_before: dt.datetime | None = None, issuer: Identity | None = None,
           path_length: int | None = None) -> Identity:
    """A root CA (self-signed), or an intermediate when ``issuer`` is given."""
    key = new_key(key_kind)
    start, end = _validity(not_before, None, days)
    subject = _name(common_name)
    extensions = [(x509.BasicConstraints(ca=True, path_length=path_length), True),
                  (_key_usage(signing=True, cert_sign=True), True)]
    if issuer is None:
        return Identity(_build(subject, key, subject, key, start, end, extensions), key)
    cert = _build(subject, key, issuer.certificate.subject, issuer.private_key, start, end, extensions)
    return Identity(cert, key, _issuing_chain(issuer))


def _issuing_chain(ca: Identity) -> tuple[x509.Certificate, ...]:
    """What a certificate issued by ``ca`` carries after itself: intermediates, no root."""
    if ca.certificate.issuer == ca.certificate.subject and not ca.chain:
        return ()
    return (ca.certificate, *ca.chain)


def _end_entity_extensions(key: PrivateKey, server: bool, client: bool, dns_names: Iterable[str],
                           ip_addresses: Iterable[str]) -> list:
    usages = [u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server),
                              (ExtendedKeyUsageOID.CLIENT_AUTH, client)) if on]
    extensions = [(x509.BasicConstraints(ca=False, path_length=None), True),
                  (_key_usage(signing=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)), True)]
    if usages:
        extensions.append((x509.ExtendedKeyUsage(usages), False))
    names = [x509.DNSName(n) for n in dns_names] + [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if names:
        extensions.append((x509.SubjectAlternativeName(names), False))
    return extensions


def issue(ca: Identity, common_name: str, *, key_kind: str = "ec256", days: int = 825,
          not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
          server: bool = True, client: bool = True, dns_names: Iterable[str] = (),
          ip_addresses: Iterable[str] = (), organization: str | None = None) -> Identity:
    """An AE certificate issued by ``ca``, for both TLS roles by default."""
    key = new_key(key_kind)
    start, end = _validity(not_before, not_after, days)
    cert = _build(_name(common_name, organization), key, ca.certificate.subject, ca.private_key,
                  start, end, _end_entity_extensions(key, server, client, dns_names, ip_addresses))
    return Identity(cert, key, _issuing_chain(ca))


def self_signed(common_name: str, *, key_kind: str = "ec256", days: int = 825,
                dns_names: Iterable[str] = (), ip_addresses: Iterable[str] = (),
                not_before: dt.datetime | None = None, not_after: dt.datetime | None = None) -> Identity:
    """A self-signed AE certificate, to be pinned by thumbprint."""
    key = new_key(key_kind)
    start, end = _validity(not_before, not_after, days)
    subject = _name(common_name)
    cert = _build(subject, key, subject, key, start, end,
                  _end_entity_extensions(key, True, True, dns_names, ip_addresses))
    return Identity(cert, key)


def make_crl(ca: Identity,
             revoked: Iterable[Identity | x509.Certificate | x509.RevokedCertificate | int] = (), *,
             this_update: dt.datetime | None = None, next_update: dt.datetime | None = None,
             days: int = 7, revoked_on: dt.datetime | None = None,
             reason: x509.ReasonFlags | None = None, number: int = 1) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca`` revoking ``revoked`` (identities, certificates or serials;
    entries of an earlier CRL are carried over as they are).

    ``this_update`` defaults to five minutes ago, ``next_update`` to ``days``
    later, and each revocation to ``revoked_on`` (default: ``this_update``).
    """
    start = this_update or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.certificate.subject)
               .last_update(start).next_update(next_update or start + dt.timedelta(days=days))
               .add_extension(x509.CRLNumber(number), False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.private_key.public_key()), False))
    for item in revoked:
        if isinstance(item, x509.RevokedCertificate):
            builder = builder.add_revoked_certificate(item)
            continue
        if isinstance(item, Identity):
            item = item.certificate
        entry = (x509.RevokedCertificateBuilder()
                 .serial_number(item.serial_number if isinstance(item, x509.Certificate) else int(item))
                 .revocation_date(revoked_on or start))
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.private_key, _hash_for(ca.private_key))


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in ``data``: one DER, or one or more PEM blocks."""
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError:
            raise ValueError("not an X.509 certificate: a PEM 'BEGIN CERTIFICATE' block is damaged") from None
    if b"-----BEGIN" in data:
        raise ValueError("not an X.509 certificate: PEM data without a 'BEGIN CERTIFICATE' block "
                         "(a private key or request?)")
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise ValueError("not an X.509 certificate: expected DER or PEM ('BEGIN CERTIFICATE')") from None
