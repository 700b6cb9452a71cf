"""Peer verification methods, and thumbprints as people paste them."""
from __future__ import annotations

import enum
import re
from typing import Iterable


class VerificationMethod(enum.IntEnum):
    """How the peer's certificate is verified (IDCXSEC VerificationMethod)."""

    NONE = 0
    """Any certificate is accepted; the accepting side does not require one."""
    TRUST_CHAIN = 1
    """The peer's chain must end in a trusted root and be valid now."""
    THUMBPRINT = 2
    """The peer's SHA-1 or SHA-256 thumbprint must be among the accepted ones."""


# What the Windows certificate dialog and copy-paste leave around a thumbprint:
# direction marks, zero-width and no-break spaces, byte-order marks.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060\ufeff\u00a0\\s:\\-]")
_HEX = re.compile("[0-9A-F]+")


def normalize_thumbprint(text: str) -> str:
    """Upper-case hex of a SHA-1 (40) or SHA-256 (64) thumbprint.

    Accepts any case, spaces, colons, and the invisible left-to-right mark the
    Windows certificate dialog puts in front when its thumbprint is copied.
    """
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("ascii", "replace")
    cleaned = _INVISIBLE.sub("", str(text)).upper()
    if not _HEX.fullmatch(cleaned) or len(cleaned) not in (40, 64):
        raise ValueError(
            f"{text!r} is not a certificate thumbprint: expected 40 (SHA-1) or 64 (SHA-256) "
            "hexadecimal digits, optionally separated by spaces or colons"
        )
    return cleaned


def normalize_thumbprints(items: Iterable[str]) -> tuple[str, ...]:
    """Normalize a list of thumbprints, dropping duplicates, keeping order."""
    if isinstance(items, (str, bytes)):
        items = [items]
    return tuple(dict.fromkeys(normalize_thumbprint(t) for t in items))
