"""Peer AE identity: which certificates may speak for which AE titles.

The binding is checked in the transport, on the A-ASSOCIATE-RQ that passes
through it: the acceptor answers a calling AE title that is not bound to the
requestor's certificate with a real A-ASSOCIATE-RJ; the requestor refuses to
send its request when the acceptor's certificate is not bound to the called
AE title.
"""
from __future__ import annotations

import struct
from typing import Mapping, Sequence, Union

from dcxsec.verify import normalize_thumbprints

A_ASSOCIATE_RQ = 0x01
# A-ASSOCIATE-RJ: result 1 (rejected-permanent), source 1 (DICOM UL service-user).
_REJECT = struct.pack(">BBIBBBB", 0x03, 0, 4, 0, 1, 1, 0)
CALLING_AE_NOT_RECOGNIZED = 3
CALLED_AE_NOT_RECOGNIZED = 7


class AEBindings:
    """AE title -> the thumbprints (SHA-1 or SHA-256) of certificates bound to it.

    Empty means off.  AE titles compare without their padding spaces.
    """

    def __init__(self, mapping: Mapping[str, Union[str, Sequence[str]]] | None = None) -> None:
        self._bound: dict[str, frozenset[str]] = {}
        for title, thumbprints in (mapping or {}).items():
            key = title.strip()
            if not 0 < len(key) <= 16:
                raise ValueError(f"AE title {title!r} must have 1 to 16 characters")
            self._bound[key] = frozenset(normalize_thumbprints(thumbprints))

    def __bool__(self) -> bool:
        return bool(self._bound)

    def allows(self, ae_title: str, sha1: str, sha256: str) -> bool:
        """Is the certificate with these thumbprints bound to ``ae_title``?"""
        bound = self._bound.get(ae_title.strip(), frozenset())
        return sha1 in bound or sha256 in bound

    def as_dict(self) -> dict[str, tuple[str, ...]]:
        return {title: tuple(sorted(t)) for title, t in self._bound.items()}


def ae_titles(pdu: bytes) -> tuple[str, str]:
    """(called, calling) AE titles of an encoded A-ASSOCIATE-RQ."""
    if len(pdu) < 42 or pdu[0] != A_ASSOCIATE_RQ:
        raise ValueError("not an A-ASSOCIATE-RQ")
    return (pdu[10:26].decode("ascii", "replace").strip(),
            pdu[26:42].decode("ascii", "replace").strip())


def reject_pdu(reason: int) -> bytes:
    """An A-ASSOCIATE-RJ, rejected-permanent by the service user, for ``reason``."""
    return _REJECT[:-1] + bytes([reason])
