"""``dcxsec cert request`` and ``cert show``: a key and a CSR for the
enterprise CA, the issued certificate paired with its key on import, and
everything about one stored certificate.

A request's private key waits in the store's ``Requests`` folder (mode
0600), named by its public key's SHA-256, until the certificate issued for
it is imported; then both go into My and the waiting key is removed.
"""
from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dcxsec import pki
from dcxsec.config import read_private_key
from dcxsec.pki import write_private
from dcxsec.store import CertificateStore, StoredCertificate

REQUESTS = "Requests"


def _key_id(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest().upper()


def _requests_folder(store: CertificateStore) -> Path:
    if sys.platform == "win32":
        raise ValueError("on Windows, make the request with Windows (certreq -new, or the "
                         "Certificates console), which keeps its key; then import the issued "
                         "certificate there")
    return Path(store.location()) / REQUESTS


def cmd_request(store: CertificateStore, args: argparse.Namespace) -> int:
    key = pki.new_key(args.key_type)
    names = [x509.NameAttribute(NameOID.COMMON_NAME, args.common_name)]
    if args.organization:
        names.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, args.organization))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    alt = [x509.DNSName(n) for n in args.dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in args.ip]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    builder = builder.add_extension(x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    folder = _requests_folder(store)
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / f"{_key_id(key.public_key())}.key"
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    out = args.out or Path(f"{args.common_name}.csr")
    out.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    print(f"wrote the request {out} for CN={args.common_name}; its key waits in {key_path}.\n"
          f"Send {out} to the CA, then: dcxsec cert import ISSUED.pem")
    return 0


def waiting_key(store: CertificateStore, cert: x509.Certificate):
    """The private key of a request this certificate answers, or None."""
    if sys.platform == "win32":
        return None
    path = Path(store.location()) / REQUESTS / f"{_key_id(cert.public_key())}.key"
    if not path.exists():
        return None
    return serialization.load_pem_private_key(read_private_key(path), None), path


def describe(entry: StoredCertificate, store: CertificateStore) -> dict[str, Any]:
    """Subject, issuer, validity, thumbprints, key usages and the chain, as a dict."""
    cert = entry.certificate
    der = cert.public_bytes(serialization.Encoding.DER)
    info: dict[str, Any] = {
        "store": entry.store.name, "logical": entry.logical,
        "subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:X}",
        "not_before": f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
        "not_after": f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
        "thumbprint_sha1": hashlib.sha1(der).hexdigest().upper(),
        "thumbprint_sha256": hashlib.sha256(der).hexdigest().upper(),
        "key": _key_text(cert.public_key()),
        "has_private_key": entry.has_key,
        "key_usage": _key_usage(cert), "extended_key_usage": _extended_key_usage(cert),
        "subject_alt_names": _alt_names(cert),
        "usable_as_identity": entry.unusable_because() is None if entry.logical == "My" else False,
        "chain": [c.subject.rfc4514_string() for c in _chain(cert, store)],
    }
    if entry.logical == "My" and entry.unusable_because():
        info["not_usable_because"] = entry.unusable_because()
    return info


def _key_text(key) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__


def _key_usage(cert: x509.Certificate) -> list[str]:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return []
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign"]
    return [n for n in names if getattr(usage, n)]


def _extended_key_usage(cert: x509.Certificate) -> list[str]:
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [getattr(oid, "_name", None) or oid.dotted_string for oid in usage]


def _alt_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return ([f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
            + [f"IP:{a}" for a in san.get_values_for_type(x509.IPAddress)])


def _chain(cert: x509.Certificate, store: CertificateStore) -> list[x509.Certificate]:
    """The certificate, then its issuers as far as the store's CA and Root know them."""
    known = [e.certificate for logical in ("CA", "Root", "My") for e in store.certificates(logical)]
    chain = [cert]
    while chain[-1].issuer != chain[-1].subject and len(chain) < 10:
        issuer = next((c for c in known if c.subject == chain[-1].issuer and c not in chain), None)
        if issuer is None:
            break
        chain.append(issuer)
    return chain


def cmd_show(store: CertificateStore, args: argparse.Namespace) -> int:
    entry = None
    for logical in ([args.logical] if args.logical else ("My", "Root", "CA")):
        try:
            entry = store.find(logical, args.thumbprint)
            break
        except Exception:  # noqa: BLE001 - not in this logical store; the next one
            continue
    if entry is None:
        raise ValueError(f"no certificate with thumbprint {args.thumbprint} in "
                         f"{store.scope.name} (My, Root, CA)")
    info = describe(entry, store)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        text = ", ".join(value) if isinstance(value, list) else value
        print(f"{key.replace('_', ' '):<{width}}  {text}")
    return 0
