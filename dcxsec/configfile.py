"""SecurityConfig from the command line's names: a TOML file, or options.

The names are the network commands' options: ``cert``, ``key``,
``identity``, ``store``, ``verify``, ``accept``, ``trust``, ``crl``,
``bind``, ``min-tls``.  A TOML file holds them at its top level; paths in it
are relative to the file's folder.  For example::

    cert = "ct01.pem"
    key = "ct01.key"
    verify = "chain"
    trust = ["hospital-ca.pem"]
    crl = ["hospital-ca.crl"]
    min-tls = "1.2"
    [bind]
    CT01 = "2F:5A:...:90"
"""
from __future__ import annotations

import ssl
import sys
from pathlib import Path
from typing import Any, Mapping

from dcxsec.errors import ConfigurationError
from dcxsec.store import CertStore
from dcxsec.verify import VerificationMethod

SCOPES = {"current-user": CertStore.CURRENT_USER, "local-computer": CertStore.LOCAL_COMPUTER}
METHODS = {"none": VerificationMethod.NONE, "chain": VerificationMethod.TRUST_CHAIN,
           "thumbprint": VerificationMethod.THUMBPRINT}
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
NAMES = ("cert", "key", "identity", "store", "verify", "accept", "trust", "crl", "bind",
         "min-tls")


def read_toml(path: Path) -> dict[str, Any]:
    """The file's top-level table, or a ConfigurationError that says where it is wrong."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9 and 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigurationError(f"configuration file '{path}' does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"configuration file '{path}' cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"configuration file '{path}' is not valid TOML: {exc}") from None


def _list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _choice(value: Any, choices: Mapping[str, Any], name: str, where: str) -> Any:
    key = str(value).lower()
    if key not in choices:
        raise ConfigurationError(f"{name} = {value!r} in {where}: expected one of "
                                 f"{', '.join(choices)}")
    return choices[key]


def _bindings(value: Any, where: str) -> dict[str, list[str]]:
    """``bind``: a table {AE: thumbprint(s)} or a list of "AE=THUMBPRINT"."""
    if isinstance(value, Mapping):
        return {str(ae): [str(t) for t in _list(thumbs)] for ae, thumbs in value.items()}
    bindings: dict[str, list[str]] = {}
    for item in _list(value):
        ae, sep, thumb = str(item).partition("=")
        if not sep or not ae.strip() or not thumb.strip():
            raise ConfigurationError(f"bind {item!r} in {where}: expected AE=THUMBPRINT")
        bindings.setdefault(ae.strip(), []).append(thumb.strip())
    return bindings


def fields_from_names(names: Mapping[str, Any], where: str,
                      folder: Path | None = None) -> dict[str, Any]:
    """SecurityConfig keyword arguments for the given names (paths relative to ``folder``)."""
    def path(value: Any) -> Path:
        p = Path(value)
        return folder / p if folder is not None and not p.is_absolute() else p

    fields: dict[str, Any] = {}
    for raw, value in names.items():
        name = raw.replace("_", "-")
        if name not in NAMES:
            raise ConfigurationError(f"unknown setting '{raw}' in {where}; the settings are: "
                                     f"{', '.join(NAMES)}")
        if name == "cert":
            fields["certificate"] = path(value)
        elif name == "key":
            fields["private_key"] = path(value)
        elif name == "identity":
            fields["certificate_thumbprint"] = str(value)
        elif name == "store":
            fields["cert_store"] = _choice(value, SCOPES, name, where)
        elif name == "verify":
            fields["verification_method"] = _choice(value, METHODS, name, where)
        elif name == "accept":
            fields["accepted_thumbprints"] = [str(t) for t in _list(value)]
        elif name == "trust":
            fields["trusted_certificates"] = [path(p) for p in _list(value)]
        elif name == "crl":
            fields["crl_files"] = [path(p) for p in _list(value)]
        elif name == "bind":
            fields["ae_bindings"] = _bindings(value, where)
        else:
            fields["minimum_version"] = _choice(value, VERSIONS, name, where)
    return fields


def settled_method(fields: dict[str, Any]) -> dict[str, Any]:
    """Thumbprints given without a method mean THUMBPRINT; given with another
    method, or trust given to THUMBPRINT or NONE, they would be ignored: refused."""
    method = fields.get("verification_method")
    if method is None and fields.get("accepted_thumbprints"):
        fields["verification_method"] = method = VerificationMethod.THUMBPRINT
    if fields.get("accepted_thumbprints") and method != VerificationMethod.THUMBPRINT:
        raise ConfigurationError(f"accepted thumbprints apply to verify = thumbprint, not "
                                 f"{method.name if method is not None else 'chain'}")
    if fields.get("trusted_certificates") and method in (VerificationMethod.THUMBPRINT,
                                                         VerificationMethod.NONE):
        raise ConfigurationError(f"trusted certificates apply to verify = chain, not {method.name}")
    return fields
