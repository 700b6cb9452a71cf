"""``dcxsec cert``: manage the certificate store, as PowerShell's PKI cmdlets do on Windows."""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from dcxsec import certrequest, pki
from dcxsec.config import read_private_key
from dcxsec.crl import CRL_LOGICAL_STORE, StoredCRL, crl_thumbprint, is_crl, load_crls
from dcxsec.errors import ConfigurationError
from dcxsec.store import LOGICAL_STORES, CertificateStore, CertStore, StoredCertificate
from dcxsec.verify import normalize_thumbprint

_SCOPES = {"current-user": CertStore.CURRENT_USER, "local-computer": CertStore.LOCAL_COMPUTER}


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register ``cert`` and its subcommands."""
    cert = commands.add_parser("cert", help="manage the certificate store")
    cert.add_argument("--store", choices=_SCOPES, help="scope (default: local-computer for root, "
                      "current-user for anyone else)")
    sub = cert.add_subparsers(dest="action", required=True)

    p = sub.add_parser("list", help="list certificates")
    p.add_argument("logical", nargs="?", choices=LOGICAL_STORES, help="only this logical store")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("show", help="everything about one certificate: subject, issuer, "
                       "validity, thumbprints, key usages, chain")
    p.add_argument("thumbprint")
    p.add_argument("--from", dest="logical", choices=LOGICAL_STORES,
                   help="only this logical store (default: My, Root, CA)")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(run=certrequest.cmd_show)

    p = sub.add_parser("request", help="a private key and a CSR for the enterprise CA; "
                       "`cert import` of the issued certificate pairs it with the key")
    p.add_argument("common_name", help="subject CN, e.g. the AE title or host name")
    p.add_argument("--organization", help="subject O")
    p.add_argument("--key-type", choices=("ec256", "ec384", "rsa2048", "rsa3072"), default="ec256")
    p.add_argument("--dns", action="append", default=[], help="subjectAltName DNS name (repeatable)")
    p.add_argument("--ip", action="append", default=[], help="subjectAltName IP address (repeatable)")
    p.add_argument("--out", type=Path, help="the CSR file (default: COMMON_NAME.csr)")
    p.set_defaults(run=certrequest.cmd_request)

    p = sub.add_parser("import", help="import PEM, DER or PKCS#12 (.p12/.pfx), or a CRL (into CA)")
    p.add_argument("file", type=Path)
    p.add_argument("--key", type=Path, help="the private key, for a PEM/DER certificate going into My")
    p.add_argument("--password", help="PKCS#12 or key password (prompted for when needed)")
    p.add_argument("--to", choices=LOGICAL_STORES, help="logical store (default: My with a key, "
                   "Root for a self-signed CA, CA for an intermediate)")
    p.set_defaults(run=cmd_import)

    p = sub.add_parser("export", help="export a certificate (and its key as PKCS#12)")
    p.add_argument("thumbprint")
    p.add_argument("out", type=Path)
    p.add_argument("--from", dest="logical", choices=LOGICAL_STORES, default="My")
    p.add_argument("--format", choices=("pem", "der", "pkcs12"), default=None,
                   help="default: pkcs12 for a .pfx/.p12 file, der for .der, else pem")
    p.add_argument("--key", action="store_true", help="with its private key: inside a PKCS#12 file; "
                   "for PEM/DER a separate unencrypted .key file (PEM, 0600) next to it, as DCMTK needs")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--password", help="PKCS#12 password (asked for on a terminal when not given)")
    secret.add_argument("--no-password", action="store_true",
                        help="write the PKCS#12 file unencrypted: anyone who can read it has the key")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("remove", help="remove a certificate (and its key), or a CRL by its thumbprint")
    p.add_argument("thumbprint")
    p.add_argument("--from", dest="logical", choices=LOGICAL_STORES, default="My")
    p.set_defaults(run=cmd_remove)

    p = sub.add_parser("trust", help="trust a root CA (into Root)")
    p.add_argument("file", type=Path)
    p.set_defaults(run=cmd_trust)

    p = sub.add_parser("new", help="make an AE certificate (self-signed or issued by a test CA), "
                       "or a test CA")
    p.add_argument("common_name", help="subject CN, e.g. the AE title")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--ca", action="store_true", help="make a test root CA: key in My, certificate "
                      "also trusted in Root")
    kind.add_argument("--issuer", metavar="THUMBPRINT", help="issue it from this CA in My")
    p.add_argument("--key-type", choices=("ec256", "ec384", "rsa2048", "rsa3072"), default="ec256")
    p.add_argument("--days", type=int, default=None, help="validity (default 825; 3650 for a CA)")
    p.add_argument("--dns", action="append", default=[], help="subjectAltName DNS name (repeatable)")
    p.add_argument("--ip", action="append", default=[], help="subjectAltName IP address (repeatable)")
    p.set_defaults(run=cmd_new)

    p = sub.add_parser("crl", help="issue a CRL from a test CA in My, into CA: the revocations "
                       "of its latest stored CRL, and --revoke")
    p.add_argument("issuer", metavar="THUMBPRINT", help="the CA in My that signs it")
    p.add_argument("--revoke", action="append", default=[], metavar="SERIAL|THUMBPRINT",
                   help="a serial number (hex) or the thumbprint of a stored certificate (repeatable)")
    p.add_argument("--days", type=int, default=7, help="until its next update (default 7)")
    p.set_defaults(run=cmd_crl)
    _store_after_action(sub)


def _store_after_action(sub: argparse._SubParsersAction) -> None:
    """``dcxsec cert list --store local-computer`` as well as ``cert --store ... list``."""
    for parser in sub.choices.values():
        parser.add_argument("--store", choices=_SCOPES, default=argparse.SUPPRESS,
                            help="scope (as before the action)")


def run(args: argparse.Namespace) -> int:
    store = CertificateStore(_SCOPES[args.store] if args.store else None)
    try:
        return args.run(store, args)
    except (ConfigurationError, ValueError, OSError) as exc:
        print(f"dcxsec cert {args.action}: {exc}", file=sys.stderr)
        return 1


def _row(entry: StoredCertificate) -> list[str]:
    return [entry.store.name, entry.logical, entry.thumbprint, entry.subject, entry.issuer,
            f"{entry.not_after:%Y-%m-%d %H:%M}", "yes" if entry.has_key else "no"]


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def _crl_row(store: CertificateStore, entry: StoredCRL) -> list[str]:
    until = f"{entry.next_update:%Y-%m-%d %H:%M}" if entry.next_update else "-"
    return [store.scope.name, CRL_LOGICAL_STORE, entry.thumbprint, entry.issuer,
            f"{entry.this_update:%Y-%m-%d %H:%M}", until + (" EXPIRED" if entry.expired() else ""),
            str(len(entry.crl))]


def _json_list(store: CertificateStore, args: argparse.Namespace) -> int:
    import json

    certs = [certrequest.describe(e, store)
             for logical in ([args.logical] if args.logical else LOGICAL_STORES)
             for e in store.certificates(logical)]
    crls = [{"store": store.scope.name, "logical": CRL_LOGICAL_STORE, "thumbprint": e.thumbprint,
             "issuer": e.issuer, "this_update": f"{e.this_update:%Y-%m-%d %H:%M:%S} UTC",
             "next_update": f"{e.next_update:%Y-%m-%d %H:%M:%S} UTC" if e.next_update else None,
             "expired": e.expired(), "revoked": len(e.crl)}
            for e in store.crls()] if args.logical in (None, CRL_LOGICAL_STORE) else []
    print(json.dumps({"location": store.location(), "certificates": certs, "crls": crls},
                     indent=2))
    return 0


def cmd_list(store: CertificateStore, args: argparse.Namespace) -> int:
    if args.json:
        return _json_list(store, args)
    rows = [_row(e) for logical in ([args.logical] if args.logical else LOGICAL_STORES)
            for e in store.certificates(logical)]
    crls = [_crl_row(store, e) for e in store.crls()] if args.logical in (None, CRL_LOGICAL_STORE) else []
    if rows or not crls:
        _table(["Store", "Logical", "Thumbprint", "Subject", "Issuer", "NotAfter (UTC)", "HasKey"], rows)
    if crls:
        print("\nCertificate revocation lists:" if rows else "Certificate revocation lists:")
        _table(["Store", "Logical", "Thumbprint", "Issuer", "ThisUpdate (UTC)", "NextUpdate (UTC)",
                "Revoked"], crls)
    if not rows and not crls:
        print(f"(empty: {store.location()})")
    return 0


def _load_pkcs12(data: bytes, args: argparse.Namespace):
    try:
        return pkcs12.load_key_and_certificates(data, args.password.encode() if args.password else None)
    except ValueError:
        if args.password is not None or not sys.stdin.isatty():
            raise ValueError("cannot open the PKCS#12 file: wrong or missing password (--password)") from None
        return pkcs12.load_key_and_certificates(data, getpass.getpass("PKCS#12 password: ").encode())


def _default_logical(cert: x509.Certificate, has_key: bool) -> str:
    if has_key:
        return "My"
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError("a certificate without its private key goes into Root or CA (--to), "
                         "or give its key (--key)")
    return "Root" if cert.issuer == cert.subject else "CA"


def _load_key(path: Path, password: str | None = None):
    """A private key file (PEM or DER), refused when others can read it."""
    data, secret = read_private_key(path), password.encode() if password else None
    if b"-----BEGIN" in data:
        return serialization.load_pem_private_key(data, secret)
    return serialization.load_der_private_key(data, secret)


def _key_file(entry: StoredCertificate) -> Path:
    """The file of an entry's private key; a key in a Windows system store stays there."""
    if entry.key_path is None:
        raise ValueError(f"the private key of {entry.describe()} stays in the Windows certificate "
                         f"store: export it with Windows (certmgr.msc, or PowerShell's "
                         f"Export-PfxCertificate)")
    return entry.key_path


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _import_crls(store: CertificateStore, data: bytes, args: argparse.Namespace) -> int:
    if args.to not in (None, CRL_LOGICAL_STORE) or args.key:
        raise ValueError(f"{args.file} is a CRL: CRLs go into {CRL_LOGICAL_STORE}, without a key")
    for crl in load_crls(data):
        path = store.add_crl(crl)
        print(f"imported CRL {crl_thumbprint(crl)} from {crl.issuer.rfc4514_string()} "
              f"({len(crl)} revoked) into {store.scope.name}\\{CRL_LOGICAL_STORE} ({path})")
    return 0


def cmd_import(store: CertificateStore, args: argparse.Namespace) -> int:
    data = args.file.read_bytes()
    if is_crl(data):
        return _import_crls(store, data, args)
    key = None
    if args.file.suffix.lower() in (".p12", ".pfx") or not (b"-----BEGIN" in data or data[:1] == b"\x30"):
        key, cert, extra = _load_pkcs12(data, args)
        certs = [cert, *extra]
    else:
        try:
            certs = pki.load_certificates(data)
        except ValueError:
            key, cert, extra = _load_pkcs12(data, args)  # DER PKCS#12 without the usual suffix
            certs = [cert, *extra]
        if args.key:
            key = _load_key(args.key, args.password)
    if key is not None and key.public_key().public_numbers() != certs[0].public_key().public_numbers():
        raise ValueError("the private key does not belong to the certificate")
    waiting = certrequest.waiting_key(store, certs[0]) if key is None and args.to in (None, "My") else None
    if waiting is not None:  # the certificate a `cert request` asked for
        key = waiting[0]
    logical = args.to or _default_logical(certs[0], key is not None)
    path = store.add(logical, certs, _key_pem(key) if key is not None and logical == "My" else None)
    print(f"imported {pki.thumbprint(certs[0])} {certs[0].subject.rfc4514_string()} into "
          f"{store.scope.name}\\{logical} ({path})"
          + (f", with the key of its request ({waiting[1]})" if waiting is not None else ""))
    if waiting is not None:
        waiting[1].unlink()
    return 0


_SUFFIX_FORMATS = {".pfx": "pkcs12", ".p12": "pkcs12", ".der": "der"}


def _export_password(args: argparse.Namespace) -> bytes | None:
    """The PKCS#12 password: given, or asked for twice on a terminal.

    None only with an explicit ``--no-password``: a key never leaves
    unencrypted by default, nor because no one was there to type a password.
    """
    if args.no_password:
        return None
    if args.password:
        return args.password.encode()
    if args.password is not None:
        raise ValueError("an empty --password would write the private key unencrypted: give a "
                         "password, or --no-password to mean it")
    if not sys.stdin.isatty():
        raise ValueError("the PKCS#12 file would hold the private key, and no password was given: "
                         "give --password (or run on a terminal to be asked), or --no-password "
                         "to write it unencrypted")
    first = getpass.getpass("PKCS#12 password: ")
    if not first:
        raise ValueError("no password typed: give one, or --no-password to write the private key "
                         "unencrypted")
    if getpass.getpass("PKCS#12 password (again): ") != first:
        raise ValueError("the two passwords differ; nothing was written")
    return first.encode()


def cmd_export(store: CertificateStore, args: argparse.Namespace) -> int:
    entry = store.find(args.logical, args.thumbprint)
    certs = pki.load_certificates(entry.chain_pem())
    fmt = args.format or _SUFFIX_FORMATS.get(args.out.suffix.lower(), "pem")
    if fmt != "pkcs12" and (args.no_password or args.password is not None):
        raise ValueError(f"--password and --no-password are for PKCS#12; a {fmt.upper()} export "
                         f"writes its key (--key) unencrypted, as DCMTK reads it")
    key_file = None
    if fmt == "pkcs12" or args.key:
        if not entry.has_key:
            raise ValueError(f"{entry.describe()} has no private key to export")
        key_file = _key_file(entry)  # before anything is written: Windows keeps its keys
    key_out = args.out.with_suffix(".key") if args.key and fmt != "pkcs12" else None
    if key_out == args.out:
        raise ValueError(f"the key would overwrite the certificate: name the certificate's file "
                         f"other than '{args.out}' (e.g. .pem)")
    if fmt == "pkcs12":  # always with its key: that is what a PFX is for
        identity = pki.Identity(certs[0], _load_key(key_file), tuple(certs[1:]))
        password = _export_password(args)
        pki.write_private(args.out, identity.to_pkcs12(password, certs[0].subject.rfc4514_string()))
        print(f"exported {entry.describe()} with its private key to {args.out} "
              f"({'encrypted' if password else 'UNENCRYPTED, as --no-password asked'}, mode 0600)")
        return 0
    if fmt == "der":
        args.out.write_bytes(certs[0].public_bytes(serialization.Encoding.DER))
    else:
        args.out.write_bytes(entry.chain_pem())
    print(f"exported {entry.describe()} to {args.out}")
    if key_out is not None:
        # DCMTK (+tls KEY CERT) reads an unencrypted PEM key: it is created 0600.
        pki.write_private(key_out, read_private_key(key_file))
        print(f"exported its private key to {key_out} (unencrypted PEM, mode 0600)")
    return 0


def cmd_remove(store: CertificateStore, args: argparse.Namespace) -> int:
    # A thumbprint names one object: a CRL's is removed from CA whatever --from says.
    crl = next((c for c in store.crls() if normalize_thumbprint(args.thumbprint) in
                (c.thumbprint, crl_thumbprint(c.crl, "sha256"))), None)
    if crl is not None:
        store.remove_crl(crl.thumbprint)
        print(f"removed {crl.describe()} from {store.scope.name}\\{CRL_LOGICAL_STORE}")
        return 0
    entry = store.remove(args.logical, args.thumbprint)
    print(f"removed {entry.describe()} from {store.scope.name}\\{args.logical}")
    return 0


def cmd_trust(store: CertificateStore, args: argparse.Namespace) -> int:
    cert = pki.load_certificates(args.file.read_bytes())[0]
    path = store.add("Root", [cert])
    print(f"trusted {pki.thumbprint(cert)} {cert.subject.rfc4514_string()} in "
          f"{store.scope.name}\\Root ({path})")
    return 0


def cmd_new(store: CertificateStore, args: argparse.Namespace) -> int:
    if args.ca:
        identity = pki.new_ca(args.common_name, key_kind=args.key_type, days=args.days or 3650)
        store.add("Root", [identity.certificate])
    elif args.issuer:
        ca_entry = store.find("My", args.issuer)
        ca_key = _load_key(_key_file(ca_entry))
        ca_certs = pki.load_certificates(ca_entry.chain_pem())
        ca = pki.Identity(ca_certs[0], ca_key, tuple(ca_certs[1:]))
        identity = pki.issue(ca, args.common_name, key_kind=args.key_type, days=args.days or 825,
                             dns_names=args.dns, ip_addresses=args.ip)
    else:
        identity = pki.self_signed(args.common_name, key_kind=args.key_type, days=args.days or 825,
                                   dns_names=args.dns, ip_addresses=args.ip)
    path = store.add("My", [identity.certificate, *identity.chain], identity.key_pem())
    print(f"created {identity.thumbprint()} CN={args.common_name} in {store.scope.name}\\My ({path})")
    if args.ca:
        print(f"and trusted it in {store.scope.name}\\Root")
    return 0


def _serial(store: CertificateStore, text: str) -> int:
    """A serial number in hex, or that of a stored certificate with this thumbprint."""
    try:
        thumb = normalize_thumbprint(text)
    except ValueError:
        thumb = None
    for logical in LOGICAL_STORES if thumb else ():
        for entry in store.certificates(logical):
            if thumb in (entry.thumbprint, pki.thumbprint(entry.certificate, "sha256")):
                return entry.certificate.serial_number
    try:
        return int(text.replace(":", ""), 16)
    except ValueError:
        raise ValueError(f"--revoke {text}: neither a hex serial number nor the thumbprint of "
                         f"a stored certificate") from None


def _latest_crl(store: CertificateStore, issuer: x509.Name) -> tuple[int, list]:
    """The highest CRL number stored for this issuer (RFC 5280: it only grows) and
    that CRL's entries, which a new CRL carries over; (0, []) when there is none."""
    number, entries = 0, []
    for entry in store.crls():
        try:
            found = entry.crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            continue
        if entry.crl.issuer == issuer and found >= number:
            number, entries = found, list(entry.crl)
    return number, entries


def cmd_crl(store: CertificateStore, args: argparse.Namespace) -> int:
    ca_entry = store.find("My", args.issuer)
    ca_certs = pki.load_certificates(ca_entry.chain_pem())
    ca = pki.Identity(ca_certs[0], _load_key(_key_file(ca_entry)), tuple(ca_certs[1:]))
    number, earlier = _latest_crl(store, ca.certificate.subject)
    serials = {_serial(store, r) for r in args.revoke} - {e.serial_number for e in earlier}
    crl = pki.make_crl(ca, [*earlier, *sorted(serials)], days=args.days, number=number + 1)
    path = store.add_crl(crl)
    print(f"issued CRL {crl_thumbprint(crl)} from {ca.certificate.subject.rfc4514_string()} "
          f"({len(crl)} revoked) into {store.scope.name}\\{CRL_LOGICAL_STORE} ({path})")
    return 0
