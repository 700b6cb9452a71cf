"""A peer certificate as the dict ``ssl.SSLSocket.getpeercert()`` returns."""
from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

_NAMES = {
    NameOID.COMMON_NAME: "commonName",
    NameOID.COUNTRY_NAME: "countryName",
    NameOID.LOCALITY_NAME: "localityName",
    NameOID.STATE_OR_PROVINCE_NAME: "stateOrProvinceName",
    NameOID.ORGANIZATION_NAME: "organizationName",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnitName",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.DOMAIN_COMPONENT: "domainComponent",
}


def _name(name: x509.Name) -> tuple:
    return tuple(
        tuple((_NAMES.get(a.oid, a.oid.dotted_string), a.value) for a in rdn) for rdn in name.rdns
    )


def _time(moment) -> str:
    return moment.strftime("%b %d %H:%M:%S %Y GMT")


def certificate_dict(der: bytes) -> dict[str, Any]:
    """subject, issuer, version, serialNumber, notBefore, notAfter, subjectAltName."""
    cert = x509.load_der_x509_certificate(der)
    info: dict[str, Any] = {
        "subject": _name(cert.subject),
        "issuer": _name(cert.issuer),
        "version": cert.version.value + 1,
        "serialNumber": f"{cert.serial_number:X}",
        "notBefore": _time(cert.not_valid_before_utc),
        "notAfter": _time(cert.not_valid_after_utc),
    }
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return info
    info["subjectAltName"] = tuple(
        [("DNS", n) for n in san.get_values_for_type(x509.DNSName)]
        + [("IP Address", str(n)) for n in san.get_values_for_type(x509.IPAddress)]
    )
    return info


def subject_text(der: bytes) -> str:
    """The certificate's subject as an RFC 4514 string ("CN=...,O=...")."""
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()
