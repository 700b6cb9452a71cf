"""The TLS options every network command shares, and what they make.

Each option maps onto one ``SecurityConfig`` field; ``--config FILE`` reads
the same names from a TOML file (``SecurityConfig.from_file``), and options
given on the command line win over the file.
"""
from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from dcxsec.config import SecurityConfig
from dcxsec.configfile import METHODS, SCOPES, VERSIONS


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    """--cert/--key or --identity/--store, --verify, --accept, --trust, --crl,
    --bind, --min-tls, --config and --plain."""
    group = parser.add_argument_group("TLS")
    group.add_argument("--cert", type=Path, help="this AE's certificate (PEM or DER; "
                       "intermediates may follow the leaf)")
    group.add_argument("--key", type=Path, help="its private key (mode 0600)")
    group.add_argument("--identity", metavar="THUMBPRINT",
                       help="this AE's certificate in the store's My, by thumbprint "
                       "(default: the only usable one)")
    group.add_argument("--store", choices=SCOPES, help="certificate store (default: "
                       "local-computer for root or a service, current-user for anyone else)")
    group.add_argument("--verify", choices=METHODS, help="how the peer is verified "
                       "(default: chain)")
    group.add_argument("--accept", action="append", metavar="THUMBPRINT",
                       help="a peer thumbprint accepted by --verify thumbprint (repeatable)")
    group.add_argument("--trust", action="append", type=Path, metavar="FILE",
                       help="a trusted CA certificate for --verify chain (repeatable)")
    group.add_argument("--crl", action="append", type=Path, metavar="FILE",
                       help="a CRL applied by --verify chain (repeatable)")
    group.add_argument("--bind", action="append", metavar="AE=THUMBPRINT",
                       help="only this certificate may use this AE title (repeatable)")
    group.add_argument("--min-tls", choices=VERSIONS, help="lowest TLS version (default 1.2)")
    group.add_argument("--config", type=Path, metavar="FILE",
                       help="a TOML file with the same names (cert, key, identity, store, "
                       "verify, accept, trust, crl, bind, min-tls)")
    group.add_argument("--plain", action="store_true",
                       help="no TLS at all: neither encrypted nor authenticated")


def config_from_args(args: argparse.Namespace) -> SecurityConfig | None:
    """The configuration the options describe; None with --plain (said on stderr)."""
    if args.plain:
        tls_given = [name for name in ("cert", "key", "identity", "verify", "accept", "trust",
                                       "crl", "bind", "min_tls", "config")
                     if getattr(args, name) not in (None, [], False)]
        if tls_given:
            raise ValueError(f"--plain leaves no TLS to configure, but --"
                             f"{tls_given[0].replace('_', '-')} was given")
        print("WARNING: --plain: this association is NOT encrypted and the peer is NOT "
              "authenticated", file=sys.stderr)
        return None
    settings: dict[str, Any] = {}
    for name in ("cert", "key", "identity", "store", "verify", "accept", "trust", "crl",
                 "bind", "min_tls"):
        value = getattr(args, name)
        if value not in (None, []):
            settings[name.replace("_", "-")] = value
    return SecurityConfig.from_options(settings, base=args.config)


def tls_args(config: SecurityConfig | None) -> tuple[Any, None] | None:
    """pynetdicom's ``tls_args`` for a requestor."""
    if config is None:
        return None
    from dcxsec.context import TLSContext

    return TLSContext(config), None


class Reasons(logging.Handler):
    """What pynetdicom and dcxsec said while associating: the reason for a failure."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.tls: list[str] = []     # dcxsec's own account of a failed connection
        self.other: list[str] = []   # pynetdicom's: a socket error, a rejection, an abort

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.name.startswith("dcxsec") and record.levelno >= logging.WARNING:
            self.tls.append(text)
        elif text.startswith("TCP Initialisation Error: "):
            self.other.append(text.split(": ", 1)[1])
        elif text.startswith(("Reason:", "Result:", "Association Aborted")):
            self.other.append(text)

    def reason(self, plain: bool = False) -> str:
        if self.tls:
            return self.tls[0]
        text = "; ".join(dict.fromkeys(self.other)) or "the association was not established"
        if plain and "Association Aborted" in text:
            text += " (is this a TLS port? --plain speaks plain DICOM)"
        return text


@contextmanager
def reasons_heard() -> Iterator[Reasons]:
    """What pynetdicom and dcxsec log meanwhile, gathered into a ``Reasons``."""
    reasons = Reasons()
    loggers = [logging.getLogger("pynetdicom"), logging.getLogger("dcxsec")]
    for logger in loggers:
        logger.addHandler(reasons)
    try:
        yield reasons
    finally:
        for logger in loggers:
            logger.removeHandler(reasons)
