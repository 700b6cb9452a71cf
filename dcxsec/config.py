"""SecurityConfig: the local identity, the trust, and how the peer is verified."""
from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence, Union

from dcxsec.crl import load_crls
from dcxsec.errors import ConfigurationError
from dcxsec.store import CertificateStore, CertStore
from dcxsec.verify import VerificationMethod, normalize_thumbprint, normalize_thumbprints

Source = Union[str, "os.PathLike[str]", bytes]
"""A certificate or key: a file path, or the PEM/DER bytes themselves."""

_VERSION_FLOOR = ssl.TLSVersion.TLSv1_2


@dataclass
class SecurityConfig:
    """Everything that decides how dcxsec secures an association.

    The local AE's identity comes from the certificate store ``cert_store``
    (default: by account, see ``CertStore.default``): the certificate in My
    whose thumbprint is ``certificate_thumbprint``, or the only usable one.
    ``certificate`` and ``private_key`` (PEM or DER, path or bytes; the
    certificate may carry its intermediates after the leaf) give it directly
    instead.  ``verification_method`` decides how the peer is checked:
    TRUST_CHAIN against the system trust store, the store's Root and
    ``trusted_certificates``; THUMBPRINT against ``accepted_thumbprints``.
    ``ae_bindings`` (AE title -> thumbprints) ties AE titles to the
    certificates allowed to use them, on both sides.  Versions are
    ``ssl.TLSVersion`` values; TLS 1.2 is the floor (DICOM PS3.15 B.12).

    Revocation (TRUST_CHAIN only): CRLs from ``crl_files`` (PEM, possibly
    several, or DER) and, with ``use_store_trust``, from the store's CA are
    always applied, so a certificate they revoke is refused.
    ``check_revocation`` also refuses a peer when a certificate of its chain
    has no current CRL.  On Windows the same holds: the CRLs of the system CA
    store (``certutil -addstore CA FILE.crl``) always count there, as do those
    Windows already holds; nothing is fetched.
    THUMBPRINT pins certificates, and NONE checks nothing, so neither takes
    CRLs or ``check_revocation``: to revoke a pinned peer, drop its thumbprint.
    """

    certificate: Source | None = None
    private_key: Source | None = None
    private_key_password: str | bytes | None = None
    verification_method: VerificationMethod = VerificationMethod.TRUST_CHAIN
    trusted_certificates: Sequence[Source] = ()
    accepted_thumbprints: Sequence[str] = ()
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED
    use_system_trust: bool = True
    check_hostname: bool = False
    handshake_timeout: float = 5.0
    session_cache: bool = True
    cert_store: CertStore | None = None
    certificate_thumbprint: str | None = None
    use_store_trust: bool = True
    ae_bindings: Mapping[str, Union[str, Sequence[str]]] | None = None
    check_revocation: bool = False
    crl_files: Sequence[Source] = ()
    trusted_folder: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.verification_method = VerificationMethod(self.verification_method)
        self.accepted_thumbprints = normalize_thumbprints(self.accepted_thumbprints)
        self.cert_store = CertStore.default() if self.cert_store is None else CertStore(self.cert_store)
        if self.certificate_thumbprint is not None:
            self.certificate_thumbprint = normalize_thumbprint(self.certificate_thumbprint)
        self.minimum_version = ssl.TLSVersion(self.minimum_version)
        self.maximum_version = ssl.TLSVersion(self.maximum_version)
        if isinstance(self.trusted_certificates, (str, bytes, os.PathLike)):
            self.trusted_certificates = [self.trusted_certificates]
        if isinstance(self.crl_files, (str, bytes, os.PathLike)):
            self.crl_files = [self.crl_files]
        self._check_revocation_settings()
        if self.handshake_timeout is None or self.handshake_timeout <= 0:
            raise ConfigurationError("handshake_timeout must be a positive number of seconds")
        if self.private_key is not None and self.certificate is None:
            raise ConfigurationError("a private key was given without its certificate")
        if self.certificate is not None and self.private_key is None:
            raise ConfigurationError("a certificate was given without its private key")
        if self.verification_method == VerificationMethod.THUMBPRINT and not self.accepted_thumbprints:
            raise ConfigurationError(
                "THUMBPRINT verification needs at least one accepted thumbprint")
        self.version_range()  # fail early on an impossible range

    @classmethod
    def from_file(cls, path: "str | os.PathLike[str]", **overrides: object) -> "SecurityConfig":
        """A configuration from a TOML file that uses the command line's names
        (``cert``, ``key``, ``identity``, ``store``, ``verify``, ``accept``,
        ``trust``, ``crl``, ``bind``, ``min-tls``; see ``dcxsec.configfile``).
        Paths are relative to the file's folder; keyword arguments (field
        names of this class) override what the file says."""
        from dcxsec import configfile

        path = Path(path)
        fields = configfile.fields_from_names(configfile.read_toml(path), f"'{path}'", path.parent)
        fields.update(overrides)
        return cls(**configfile.settled_method(fields))

    @classmethod
    def from_options(cls, names: Mapping[str, object],
                     base: "str | os.PathLike[str] | None" = None) -> "SecurityConfig":
        """A configuration from the command line's names, over those of the
        TOML file ``base`` if one is given."""
        from dcxsec import configfile

        fields: dict = {}
        if base is not None:
            base = Path(base)
            fields = configfile.fields_from_names(configfile.read_toml(base), f"'{base}'",
                                                  base.parent)
        fields.update(configfile.fields_from_names(names, "the command line"))
        return cls(**configfile.settled_method(fields))

    def _check_revocation_settings(self) -> None:
        # An option that cannot be honoured is refused, never silently ignored:
        # a security officer who asked for revocation must not get less.
        if self.verification_method == VerificationMethod.TRUST_CHAIN:
            return
        method = self.verification_method.name
        why = ("NONE checks no certificate" if method == "NONE" else
               "THUMBPRINT pins certificates (to revoke a pinned peer, remove its thumbprint)")
        if self.check_revocation:
            raise ConfigurationError(f"check_revocation cannot be honoured with {method} "
                                     f"verification: {why}; use TRUST_CHAIN")
        if self.crl_files:
            raise ConfigurationError(f"crl_files cannot be applied with {method} verification: "
                                     f"{why}; use TRUST_CHAIN")

    def version_range(self) -> tuple[int, int]:
        """The (lowest, highest) protocol versions as wire numbers, 0 = platform's newest."""
        low, high = self.minimum_version, self.maximum_version
        if low == ssl.TLSVersion.MINIMUM_SUPPORTED:
            low = _VERSION_FLOOR
        if low < _VERSION_FLOOR:
            raise ConfigurationError(
                f"minimum_version {low.name} is not allowed: TLS 1.0 and 1.1 are forbidden "
                "(RFC 8996, DICOM PS3.15 B.12); use TLSv1_2 or TLSv1_3")
        high_value = 0 if high == ssl.TLSVersion.MAXIMUM_SUPPORTED else int(high)
        if high_value and high_value < int(low):
            raise ConfigurationError(
                f"maximum_version {high.name} is below minimum_version {low.name}")
        return int(low), high_value

    def store(self) -> CertificateStore:
        """The folder store this configuration draws on (Linux, macOS)."""
        return CertificateStore(self.cert_store)

    def identity_bytes(self) -> tuple[bytes | None, bytes | None]:
        """(certificate chain, private key) of the local AE, or (None, None).

        Given files win; otherwise My of the store: by thumbprint, or its only
        usable identity.  An empty My means no identity (a requestor may go
        without); a key file that others can read is refused.
        """
        if self.certificate is not None:
            return read_source(self.certificate, "certificate"), read_private_key(self.private_key)
        entry = self.store().local_identity(self.certificate_thumbprint)
        if entry is None:
            return None, None
        return entry.chain_pem(), read_private_key(entry.key_path)

    def trusted_bytes(self) -> list[bytes]:
        """Each trusted certificate (or bundle) as bytes: given ones, then the store's Root."""
        given = [read_source(s, "trusted certificate") for s in self.trusted_certificates]
        return given + (self.store().pem_bundle("Root") if self.use_store_trust else [])

    def crl_bytes(self) -> list[bytes]:
        """Each CRL file's bytes, checked, then the store's CRLs (TRUST_CHAIN only)."""
        if self.verification_method != VerificationMethod.TRUST_CHAIN:
            return []
        given = []
        for source in self.crl_files:
            data = read_source(source, "CRL")
            try:
                load_crls(data)
            except ValueError as exc:
                where = f"file '{source}'" if not isinstance(source, (bytes, bytearray)) else "given as bytes"
                raise ConfigurationError(f"CRL {where} cannot be used: {exc}") from None
            given.append(data)
        return given + (self.store().crl_pem_bundle() if self.use_store_trust else [])

    def intermediate_bytes(self) -> list[bytes]:
        """Intermediate CAs from the store's CA, to complete peers' chains."""
        return self.store().pem_bundle("CA") if self.use_store_trust else []


def read_source(source: Source, what: str) -> bytes:
    """The bytes of a certificate given as bytes or as a path."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"{what} file '{path}' does not exist") from None
    except PermissionError:
        raise ConfigurationError(
            f"{what} file '{path}' cannot be read by this account (permission denied)") from None
    except OSError as exc:
        raise ConfigurationError(f"{what} file '{path}' cannot be read: {exc.strerror}") from None


def read_private_key(source: Source) -> bytes:
    """The private key's bytes; a key file that other accounts can read or write is refused.

    Readable by its group (0640, 0440) is accepted when that group is one of
    this process's own (a Kubernetes secret mounted with fsGroup, a service
    group): only the service's own accounts can read it then.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigurationError(f"private key file '{path}' does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"private key file '{path}' cannot be read: {exc.strerror}") from None
    if os.name == "posix":
        problem = _key_mode_problem(info)
        if problem:
            raise ConfigurationError(
                f"private key file '{path}' {problem}; make it private with: chmod 600 '{path}'"
                f" (or, for a service group: chmod 640 '{path}' and chgrp {_group_name(os.getegid())} "
                f"'{path}')")
    return read_source(path, "private key")


def _key_mode_problem(info: os.stat_result) -> str | None:
    """Why a key file's mode lets other accounts at it, or None when it does not."""
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IRWXO:
        return f"is readable or writable by other accounts (mode {mode:04o})"
    if mode & (stat.S_IWGRP | stat.S_IXGRP):
        return f"is writable by its group (mode {mode:04o})"
    if mode & stat.S_IRGRP and info.st_gid != os.getegid() and info.st_gid not in os.getgroups():
        return (f"is readable by group {_group_name(info.st_gid)} (mode {mode:04o}), "
                f"which this process is not in")
    return None


def _group_name(gid: int) -> str:
    """A group's name for messages, or its number when it has none."""
    import grp  # POSIX only

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
